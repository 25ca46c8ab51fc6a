"""recorder: every episode into its own rosbag2 directory (mcap), the project's data format.

Subscribes with raw=True (CDR bytes pass straight into the bag, no decode/encode) to the
observations, per-step records, episode status and, with `record_raw_inputs`, the robot's raw
joint-state and camera topics (so a bag can be re-synchronised offline). An episode bag opens
when the episode manager reports RUNNING and is finished (labelled or marked aborted, closed,
renamed from `<name>.incomplete`) `finish_delay_s` after the episode ended, so messages still in
flight on other topics land in it. A crash leaves earlier episodes intact and the interrupted one
as `<name>.incomplete`, which readers skip (resfit_ros/bags/writer.py).

A write error (disk full, permissions) stops recording with a clear error AND engages the
e-stop: a robot must not go on acting while its data is silently lost.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus, Observation, StepRecord
from resfit_ros.nodes.common import LATCHED, STREAM, make_node, node_config, run, steady_timer
from resfit_ros.robot import RobotDescription


@dataclass
class RecorderConfig:
    output_dir: str = "outputs/run/episodes"  # one episode bag directory per episode goes here
    robot_description: str = "robots/g1_sim.yaml"  # for the raw camera / joint-state topics
    record_raw_inputs: bool = True     # also record /joint_states and the raw camera topics
    extra_raw_topics: list[str] = field(default_factory=list)  # more JointState topics to record (task state)
    finish_delay_s: float = 0.3        # wait this long after the episode ended before closing its bag
    compress: bool = False             # zstd chunk compression (smaller, slower)
    task: str = ""                     # written into each bag's metadata

    def __post_init__(self):
        require(bool(self.output_dir), "output_dir must not be empty")
        require(0 <= self.finish_delay_s <= 10, f"finish_delay_s must be in [0, 10], got {self.finish_delay_s}")


class Recorder:
    def __init__(self):
        self.node = make_node("recorder")
        cfg = self.cfg = node_config(self.node, RecorderConfig)
        self.robot = RobotDescription.load(cfg.robot_description)
        self.writer = None
        self.episode_id = 0
        self.finish_at: float | None = None
        self.failed = False
        self.saved = 0
        self.newest: dict[str, bytes] = {}
        self.pub_estop = self.node.create_publisher(Bool, names.ESTOP, LATCHED)
        topics = [(Observation, names.OBSERVATION), (StepRecord, names.STEP_RECORD)]
        if cfg.record_raw_inputs:
            topics += [(JointState, t) for t in self.robot.joint_state_topics]
            topics += [(Image, t) for t in self.robot.cameras.values()]
            topics += [(JointState, t) for t in cfg.extra_raw_topics]
        for msg_type, topic in topics:
            self.node.create_subscription(msg_type, topic, lambda data, t=topic: self.on_raw(t, data),
                                          STREAM, raw=True)
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status_raw, LATCHED, raw=True)
        steady_timer(self.node, 0.05, self.on_timer)
        self.node.get_logger().info(f"recording episodes into {cfg.output_dir}")

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def on_raw(self, topic: str, data: bytes) -> None:
        # The first step of an episode acts on the newest observation from BEFORE the episode
        # started (maybe while the previous bag was still open): keep the newest message of each
        # topic to write into the next bag when it opens.
        if topic != names.STEP_RECORD:
            self.newest[topic] = data
        if self.writer is None or self.failed:
            return
        self.write(topic, data)

    def write(self, topic: str, data: bytes) -> None:
        try:
            msgtype = "sensor_msgs/msg/JointState" if topic in self.cfg.extra_raw_topics else None
            self.writer.write_raw(topic, data, self.now_ns(), msgtype)
            if topic == names.STEP_RECORD:
                self.writer.steps += 1
        except OSError as exc:
            self.fail(f"cannot write episode {self.episode_id} to {self.cfg.output_dir}: {exc}")

    def on_status_raw(self, data: bytes) -> None:
        from rclpy.serialization import deserialize_message

        status = deserialize_message(data, EpisodeStatus)
        if self.failed:
            return
        if status.state == EpisodeStatus.RUNNING and status.episode_id != self.episode_id:
            self.finish_now()  # a previous episode still open: finish it with what it has
            self.open(status.episode_id, status.explore)
        if self.writer is not None and status.episode_id == self.episode_id:
            self.write(names.EPISODE_STATUS, data)
            if status.state != EpisodeStatus.RUNNING and self.finish_at is None:
                self.finish_at = time.monotonic() + self.cfg.finish_delay_s

    def open(self, episode_id: int, explore: bool) -> None:
        from resfit_ros.bags import EpisodeWriter

        try:
            self.writer = EpisodeWriter(self.cfg.output_dir, episode_id, joint_names=self.robot.joint_names,
                                        metadata={"source": "recorder", "task": self.cfg.task,
                                                  "robot": self.robot.name},
                                        compress=self.cfg.compress, explore=explore)
        except OSError as exc:
            self.fail(f"cannot open a bag for episode {episode_id} in {self.cfg.output_dir}: {exc}")
            return
        self.episode_id = episode_id
        self.finish_at = None
        for topic, data in list(self.newest.items()):
            self.write(topic, data)

    def on_timer(self) -> None:
        if self.finish_at is not None and time.monotonic() >= self.finish_at:
            self.finish_now()

    def finish_now(self) -> None:
        from resfit_ros.bags import BagError

        writer, self.writer, self.finish_at = self.writer, None, None
        if writer is None:
            return
        try:
            path = writer.finish()
            self.saved += 1
            self.node.get_logger().info(f"episode {writer.episode_id}: {writer.steps} steps -> {path}")
        except BagError as exc:  # ended without a label (e.g. the manager restarted): kept incomplete
            self.node.get_logger().warn(f"episode {writer.episode_id} left incomplete: {exc}")
        except OSError as exc:
            self.fail(f"cannot finish episode {writer.episode_id}: {exc}")

    def fail(self, message: str) -> None:
        if not self.failed:
            self.failed = True
            self.node.get_logger().fatal(message + " -- recording stopped, e-stop engaged")
            self.pub_estop.publish(Bool(data=True))
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:
                pass
            self.writer = None

    def close(self) -> None:
        # Shutdown: an episode that already ended is finished now; one still running has no
        # label and is closed as recognisably incomplete.
        if self.writer is not None:
            if self.finish_at is not None:
                self.finish_now()
            else:
                self.writer.close()


def main(argv=None) -> int:
    return run(Recorder, argv, threads=1)
