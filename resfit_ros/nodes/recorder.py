"""recorder: every episode into its own rosbag2 directory (mcap), the project's data format.

Subscribes with raw=True (CDR bytes pass straight into the bag, no decode/encode) to the
observations, per-step records, episode status and, with `record_raw_inputs`, the robot's raw
joint-state and camera topics (so a bag can be re-synchronised offline); each is subscribed in
the node's namespace and written under its name at the root (bags/types.py, bag_topic), so the
bags of robots side by side read alike. An episode bag opens when the episode manager reports
RUNNING and is finished (labelled or marked aborted, closed, renamed from `<name>.incomplete`)
`finish_delay_s` after the episode ended, so messages still in flight on other topics land in it. A crash leaves earlier episodes intact and the interrupted one
as `<name>.incomplete`, which readers skip (resfit_ros/bags/writer.py).

A write error (disk full, permissions) stops recording with a clear error AND engages the
e-stop: a robot must not go on acting while its data is silently lost.

The bag is flushed to disk when the label arrives, and a (re)started recorder first finishes the
labelled episodes a killed predecessor left open (resfit_ros/bags/recover.py): a kill between the
label and the close loses nothing. The bag writer keeps up to
1 MB of an episode in memory and writes it in chunks, so a full disk may only show as a write error
when the episode's bag is closed, after its label; the recorder therefore also watches the free
space of `output_dir` (`min_free_mb`, checked every 0.25 s) and stops (e-stop) as soon as it runs
low, which aborts the running episode instead of losing a labelled one.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Bool

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus, Observation, RecorderProgress, StepRecord
from resfit_ros.nodes.common import (LATCHED, RECORDED, STREAM, Rejections, make_node, node_config, run, status_problem,
                                     steady_timer)
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
    min_free_mb: float = 100.0         # stop recording (and e-stop) when output_dir has less free space

    def __post_init__(self):
        require(bool(self.output_dir), "output_dir must not be empty")
        require(0 <= self.finish_delay_s <= 10, f"finish_delay_s must be in [0, 10], got {self.finish_delay_s}")
        require(self.min_free_mb >= 0, f"min_free_mb must be >= 0, got {self.min_free_mb}")


# A recorder must not lose messages while it is busy (opening or closing a bag): a deep reliable queue.
RECORDING = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Every episode status matters (RUNNING, then the label, then RESETTING may follow within ms): a deep
# transient-local queue, compatible with the episode manager's latched publisher.
STATUS_HISTORY = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                            durability=DurabilityPolicy.TRANSIENT_LOCAL)


class Recorder:
    def __init__(self):
        self.node = make_node("recorder")
        cfg = self.cfg = node_config(self.node, RecorderConfig)
        self.robot = RobotDescription.load(cfg.robot_description)
        self.writer = None
        self.episode_id = 0
        self.finish_at: float | None = None
        self.failed = False
        self.next_space_check = 0.0
        self.saved = 0
        self.newest: dict[str, bytes] = {}
        self.recent_obs: deque[tuple[int, bytes]] = deque(maxlen=64)   # (sequence, raw observation), newest last
        self.obs_in_bag: set[int] = set()                  # sequences of the observations in the open bag
        self.steps_waiting: set[int] = set()
        self.complete_steps = 0
        from resfit_ros.bags import EpisodeWriter  # noqa: F401  (import now, not while the first episode starts)
        self.pub_estop = self.node.create_publisher(Bool, names.ESTOP, LATCHED)
        self.pub_progress = self.node.create_publisher(RecorderProgress, names.RECORDER_PROGRESS, STREAM)
        # the episode's own data as deep as its writers' history (a burst resent after a link's hiccup)
        topics = [(Observation, names.OBSERVATION, RECORDED), (StepRecord, names.STEP_RECORD, RECORDED)]
        if cfg.record_raw_inputs:
            topics += [(JointState, t, RECORDING) for t in self.robot.joint_state_topics]
            topics += [(Image, t, RECORDING) for t in self.robot.cameras.values()]
            topics += [(JointState, t, RECORDING) for t in cfg.extra_raw_topics]
        for msg_type, topic, qos in topics:
            self.node.create_subscription(msg_type, topic, lambda data, t=topic: self.on_raw(t, data), qos, raw=True)
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status_raw, STATUS_HISTORY, raw=True)
        steady_timer(self.node, 0.05, self.on_timer)
        # raw inputs are recorded as they came (validated by their consumers); only the episode
        # status, which opens and closes bags, is checked here: rejected/status_invalid
        self.rejections = Rejections(self.node)
        self.rejections.start_diagnostics(1.0, extra=lambda: {"episodes_saved": self.saved, "failed": self.failed})
        self.recover()
        self.node.get_logger().info(f"recording episodes into {cfg.output_dir}")

    def now_ns(self) -> int:
        return self.node.get_clock().now().nanoseconds

    def on_raw(self, topic: str, data: bytes) -> None:
        # The first step of an episode acts on the newest observation from BEFORE the episode
        # started (maybe while the previous bag was still open): keep the newest message of each
        # topic to write into the next bag when it opens.
        if topic != names.STEP_RECORD:
            self.newest[topic] = data
        seq = None
        if topic == names.OBSERVATION:
            seq = self.sequence_of(data)
            self.recent_obs.append((seq, data))
        if self.writer is None or self.failed:
            return
        if topic == names.STEP_RECORD:
            episode = self.episode_of(data)
            if episode != self.episode_id:
                # a step of an earlier episode delivered late (a link that came back resends its
                # backlog after the next episode's latched status): it belongs to no open bag
                return self.rejections.reject("step_other_episode", f"step record of episode {episode} arrived "
                                              f"while episode {self.episode_id} records: not written")
            wanted, have = self.write_step_observation(data)
            self.write(topic, data)
            if have:
                self.complete_steps += 1
            else:
                self.steps_waiting.add(wanted)      # its observation may still be on its way here
            return self.publish_progress()
        if seq is not None:
            self.obs_in_bag.add(seq)
        self.write(topic, data)
        if seq is not None and seq in self.steps_waiting:
            self.steps_waiting.discard(seq)
            self.complete_steps += 1
            self.publish_progress()

    def publish_progress(self) -> None:
        # The episode manager accepts a label only when we have the episode's steps, each with the
        # observation it acted on (a step without it is useless: the bag could not be trained on).
        msg = RecorderProgress(episode_id=int(self.episode_id), steps_recorded=int(self.complete_steps))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pub_progress.publish(msg)

    @staticmethod
    def episode_of(step_data: bytes) -> int:
        from rclpy.serialization import deserialize_message

        return int(deserialize_message(step_data, StepRecord).episode_id)

    @staticmethod
    def sequence_of(obs_data: bytes) -> int:
        from rclpy.serialization import deserialize_message

        return int(deserialize_message(obs_data, Observation).sequence)

    def write_step_observation(self, step_data: bytes) -> tuple[int, bool]:
        # A step acted on an observation that is not in the bag when it arrived before the bag
        # opened: the first step's always does (the newest one is written at open, but another
        # may have arrived meanwhile), and, when this node lags (a loaded machine: the status that
        # opens the bag processed after the next observations), a few more. Take it from the recent ones.
        from rclpy.serialization import deserialize_message

        wanted = int(deserialize_message(step_data, StepRecord).observation_sequence)
        if wanted in self.obs_in_bag:
            return wanted, True
        for seq, data in reversed(self.recent_obs):
            if seq == wanted:
                self.obs_in_bag.add(seq)
                self.write(names.OBSERVATION, data)
                return wanted, True
        return wanted, False

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
        problem = status_problem(status)
        if problem is not None:   # never let a malformed status open, end or pollute an episode bag
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        if self.failed:
            return
        if status.state == EpisodeStatus.RUNNING and status.episode_id != self.episode_id:
            self.finish_now()  # a previous episode still open: finish it with what it has
            self.open(status.episode_id, status.explore)
        if self.writer is not None and status.episode_id == self.episode_id:
            self.write(names.EPISODE_STATUS, data)
            if status.state != EpisodeStatus.RUNNING and self.finish_at is None:
                self.finish_at = time.monotonic() + self.cfg.finish_delay_s
                self.flush()   # killed before the bag closes: the labelled episode is recovered at restart

    def flush(self) -> None:
        try:
            self.writer.flush()
        except OSError as exc:
            self.fail(f"cannot write episode {self.episode_id} to {self.cfg.output_dir}: {exc}")

    def recover(self) -> None:
        """Finish the labelled episodes a killed recorder left open (bags/recover.py); say what stays incomplete."""
        from resfit_ros.bags.recover import recover_episodes

        for path, result in recover_episodes(self.cfg.output_dir, self.bag_metadata()):
            if isinstance(result, Path):
                self.saved += 1
                self.node.get_logger().warning(f"recovered labelled episode {path.name} -> {result.name}")
            else:
                self.node.get_logger().warning(f"{path.name} stays incomplete: {result}")

    def bag_metadata(self) -> dict[str, str]:
        return {"source": "recorder", "task": self.cfg.task, "robot": self.robot.name}

    def open(self, episode_id: int, explore: bool) -> None:
        from resfit_ros.bags import EpisodeWriter

        try:
            self.writer = EpisodeWriter(self.cfg.output_dir, episode_id, joint_names=self.robot.joint_names,
                                        metadata=self.bag_metadata(),
                                        compress=self.cfg.compress, explore=explore)
        except OSError as exc:
            self.fail(f"cannot open a bag for episode {episode_id} in {self.cfg.output_dir}: {exc}")
            return
        self.episode_id = episode_id
        self.finish_at = None
        for topic, data in list(self.newest.items()):
            self.write(topic, data)
        self.obs_in_bag = {self.sequence_of(self.newest[names.OBSERVATION])} if names.OBSERVATION in self.newest else set()
        self.steps_waiting: set[int] = set()     # observations of written steps not in the bag (yet)
        self.complete_steps = 0                  # steps written with their observation

    def on_timer(self) -> None:
        if self.finish_at is not None and time.monotonic() >= self.finish_at:
            self.finish_now()
        if not self.failed and time.monotonic() >= self.next_space_check:
            self.next_space_check = time.monotonic() + 0.25
            self.check_free_space()

    def check_free_space(self) -> None:
        import os

        try:
            st = os.statvfs(self.cfg.output_dir)
        except FileNotFoundError:
            return                      # created with the first bag
        except OSError as exc:
            return self.fail(f"cannot check the free space of {self.cfg.output_dir}: {exc}")
        free_mb = st.f_bavail * st.f_frsize / 2**20
        if free_mb < self.cfg.min_free_mb:
            if self.finish_at is not None:
                self.finish_now()       # an episode already labelled: try to keep it (what space is left)
            running = f"; episode {self.episode_id} is not kept" if self.writer is not None else ""
            self.fail(f"disk nearly full: {free_mb:.1f} MB free in {self.cfg.output_dir} "
                      f"(< min_free_mb {self.cfg.min_free_mb:g}){running}")

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
            self.node.get_logger().warning(f"episode {writer.episode_id} left incomplete: {exc}")
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
    return run(Recorder, argv, events=True)
