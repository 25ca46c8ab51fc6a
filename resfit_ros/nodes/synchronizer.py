"""synchronizer: camera images + joint states (+ task state) -> one Observation per control step.

Inputs: the robot description's cameras (sensor_msgs/Image) and joint-state topics
(sensor_msgs/JointState, merged by joint NAME), plus optional `extra_state_topics` (JointState
used as named values, e.g. the simulator's object pose). The matching and the control-rate gate
are resfit_ros.core.sync (message_filters' ApproximateTime semantics + max age), the very code the
offline bag replay runs, so offline observations equal live ones for equal input.
Statistics go to /diagnostics once per `diagnostics_period_s`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image, JointState

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.core.images import ImageConversionError
from resfit_ros.core.sync import (ControlRateSynchronizer, JointStateError, JointStateMerger, SyncConfig,
                                  assemble_observation)
from resfit_ros.msg import Observation
from resfit_ros.nodes.common import STREAM, make_node, node_config, run, stamp_to_ns, steady_timer
from resfit_ros.nodes.convert import observation_to_msg
from resfit_ros.robot import RobotDescription


@dataclass
class SynchronizerConfig:
    robot_description: str = "robots/g1_sim.yaml"  # robot YAML: joint order, cameras, joint-state topics
    image_size: int = 84                  # images are resized to image_size x image_size RGB
    use_cameras: bool = True              # false = state only (no image inputs at all)
    extra_state_topics: list[str] = field(default_factory=list)  # JointState topics of named task state
    control_rate_hz: float = 20.0         # at most one observation per control period
    slop_s: float = 0.02                  # largest stamp span of one synchronised set
    max_age_s: float = 0.2                # older sets are dropped and counted, never emitted
    queue_size: int = 10                  # per input
    future_tolerance_s: float = 0.01      # stamps further ahead than this are rejected
    clock_jump_s: float = 1.0             # time going back more than this resets the queues
    min_spacing_fraction: float = 0.5     # see core/sync.py ControlRateGate
    ignored_joint_names: list[str] = field(default_factory=list)  # skipped names (e.g. wheels)
    velocity_required: bool = True        # reject JointState without velocities
    diagnostics_period_s: float = 1.0     # /diagnostics publication period

    def __post_init__(self):
        require(8 <= self.image_size <= 1024, f"image_size must be in [8, 1024], got {self.image_size}")
        require(self.diagnostics_period_s > 0, f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")


class Synchronizer:
    def __init__(self):
        self.node = make_node("synchronizer")
        cfg = self.cfg = node_config(self.node, SynchronizerConfig)
        robot = RobotDescription.load(cfg.robot_description)
        cameras = dict(robot.cameras) if cfg.use_cameras else {}
        self.camera_inputs = {f"camera/{c}": c for c in cameras}
        js_inputs = [f"joints{t}" for t in robot.joint_state_topics]
        self.extra_inputs = [f"extra{t}" for t in cfg.extra_state_topics]
        self.inputs = list(self.camera_inputs) + js_inputs + self.extra_inputs
        self.sync = ControlRateSynchronizer(SyncConfig(
            inputs=self.inputs, reference_input=js_inputs[0], queue_size=cfg.queue_size, slop_s=cfg.slop_s,
            max_age_s=cfg.max_age_s, future_tolerance_s=cfg.future_tolerance_s, clock_jump_s=cfg.clock_jump_s,
            control_rate_hz=cfg.control_rate_hz, min_spacing_fraction=cfg.min_spacing_fraction,
            ignored_joint_names=cfg.ignored_joint_names, velocity_required=cfg.velocity_required))
        self.merger = JointStateMerger(robot.joint_names, cfg.ignored_joint_names, cfg.velocity_required)
        self.reference_index = self.inputs.index(js_inputs[0])
        self.sequence = 0
        self.rejected: dict[str, int] = {}
        self.pub = self.node.create_publisher(Observation, names.OBSERVATION, STREAM)
        self.pub_diag = self.node.create_publisher(DiagnosticArray, names.DIAGNOSTICS, 10)
        for i, (inp, cam) in enumerate(self.camera_inputs.items()):
            self.node.create_subscription(Image, cameras[cam], lambda m, i=i: self.offer(i, m, m), STREAM)
        for topic, inp in zip(robot.joint_state_topics, js_inputs):
            i = self.inputs.index(inp)
            self.node.create_subscription(JointState, topic, lambda m, i=i, t=topic: self.on_joints(i, m, t), STREAM)
        for topic, inp in zip(cfg.extra_state_topics, self.extra_inputs):
            i = self.inputs.index(inp)
            self.node.create_subscription(
                JointState, topic, lambda m, i=i: self.offer(i, m, (list(m.name), list(m.position))), STREAM)
        steady_timer(self.node, cfg.diagnostics_period_s, self.publish_diagnostics)
        self.node.get_logger().info(f"synchronising {self.inputs} at {cfg.control_rate_hz} Hz")

    def _reject(self, reason: str, text: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        self.node.get_logger().warn(text, throttle_duration_sec=2.0)

    def on_joints(self, index: int, msg: JointState, topic: str) -> None:
        try:
            sample = self.merger.parse(msg.name, msg.position, msg.velocity, source=topic)
        except JointStateError as exc:
            return self._reject(f"joint_state_{exc.reason}", str(exc))
        self.offer(index, msg, sample)

    def offer(self, index: int, msg, payload) -> None:
        now = self.node.get_clock().now().nanoseconds
        for synced in self.sync.add(index, stamp_to_ns(msg.header.stamp), payload, now):
            try:
                obs = assemble_observation(synced, self.inputs, self.camera_inputs, self.merger,
                                           (self.cfg.image_size, self.cfg.image_size), self.sequence,
                                           self.reference_index, self.extra_inputs)
            except (ImageConversionError, JointStateError, ValueError) as exc:
                self._reject(type(exc).__name__, f"dropped a synchronised set: {exc}")
                continue
            self.pub.publish(observation_to_msg(obs))
            self.sequence += 1

    def publish_diagnostics(self) -> None:
        stats = self.sync.stats()
        values = {k: v for k, v in stats.items() if isinstance(v, (int, float, str))}
        values.update({f"rejected/{k}": v for k, v in self.rejected.items()})
        status = DiagnosticStatus(name="resfit_ros: synchronizer", hardware_id="resfit_ros",
                                  level=DiagnosticStatus.OK, message=f"{self.sequence} observations emitted")
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in sorted(values.items())]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_diag.publish(diag)


def main(argv=None) -> int:
    return run(Synchronizer, argv, threads=1)
