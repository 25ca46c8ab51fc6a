"""synchronizer: camera images + joint states (+ task state) -> one Observation per control step.

Inputs: the robot description's cameras (sensor_msgs/Image) and joint-state topics
(sensor_msgs/JointState, merged by joint NAME), plus optional `extra_state_topics` (JointState
used as named values, e.g. the simulator's object pose). The matching and the control-rate gate
are resfit_ros.core.sync (message_filters' ApproximateTime semantics + max age), the very code the
offline bag replay runs, so offline observations equal live ones for equal input.
Statistics go to /diagnostics once per `diagnostics_period_s`.
"""
from __future__ import annotations

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState

from resfit_ros import names
from resfit_ros.core.sync import DROP_DUPLICATE
from resfit_ros.core.synchronizer import INPUT_CAMERA, SynchronizerConfig, SynchronizerCore
from resfit_ros.msg import Observation
from resfit_ros.nodes.common import RECORDED, SENSORS, Throttle, diagnostic_name, make_node, node_config, run, steady_timer
from resfit_ros.nodes.convert import observation_to_msg
from resfit_ros.robot import RobotDescription


class Synchronizer:
    def __init__(self):
        self.node = make_node("synchronizer")
        cfg = self.cfg = node_config(self.node, SynchronizerConfig)
        robot = RobotDescription.load(cfg.robot_description)
        # topics -> inputs, JointState checks, matching, control-rate gate, assembly: the ROS-free
        # core that offline replay of raw bags runs too (resfit_ros/bags/raw_record.py)
        self.log_throttle = Throttle(2.0)
        self.core = SynchronizerCore(cfg, robot, on_reject=self._warn)
        self.sync = self.core.sync
        self.inputs = self.core.inputs
        self.pub = self.node.create_publisher(Observation, names.OBSERVATION, RECORDED)
        self.pub_diag = self.node.create_publisher(DiagnosticArray, names.DIAGNOSTICS, 10)
        for i, (topic, kind) in enumerate(zip(self.core.topics, self.core.kinds)):
            msg_type = Image if kind == INPUT_CAMERA else JointState
            self.node.create_subscription(msg_type, topic, lambda m, i=i: self.offer(i, m), SENSORS)
        steady_timer(self.node, cfg.diagnostics_period_s, self.publish_diagnostics)
        self.node.get_logger().info(f"synchronising {self.inputs} at {cfg.control_rate_hz} Hz")

    def _warn(self, reason: str, text: str) -> None:
        if reason == DROP_DUPLICATE:
            return   # counted on /diagnostics; drivers (and the idle simulator) re-publish a state as is
        if self.log_throttle.due(reason):
            self.node.get_logger().warning(f"rejected ({reason}): {text}")

    def offer(self, index: int, msg) -> None:
        for obs in self.core.offer(index, msg, self.node.get_clock().now().nanoseconds):
            self.pub.publish(observation_to_msg(obs))

    def publish_diagnostics(self) -> None:
        stats = self.sync.stats()
        values = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        values.update({f"rejected/{k}": v for k, v in self.core.rejected.items()})
        status = DiagnosticStatus(name=diagnostic_name(self.node), hardware_id="resfit_ros",
                                  level=DiagnosticStatus.OK, message=f"{self.core.sequence} observations emitted")
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in sorted(values.items())]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_diag.publish(diag)


def main(argv=None) -> int:
    return run(Synchronizer, argv, events=True)
