"""The synchronizer node's whole per-message logic without ROS (`SynchronizerCore`), its config
and the assembly of one ObservationData from a synchronised set; the node and offline bag replay
(bags/raw_record.py) both run it. No rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from resfit_ros.config import require
from resfit_ros.core.images import ImageConversionError, check_image_layout, image_msg_to_rgb, resize_rgb
from resfit_ros.core.joint_states import ExtraStateParser, JointStateError, JointStateMerger
from resfit_ros.core.observation import ObservationData
from resfit_ros.core.sync import NS_PER_S, ControlRateSynchronizer, SyncConfig, SyncedSet


# --- observation assembly -----------------------------------------------------------------------
def assemble_observation(synced: SyncedSet, input_names: Sequence[str], camera_inputs: dict[str, str],
                         merger: JointStateMerger, image_size: tuple[int, int] | None, sequence: int,
                         reference_index: int, extra_inputs: Sequence[str] = ()) -> ObservationData:
    """ObservationData from a published set; the same function live and in offline replay.

    camera_inputs: input name -> camera name, for the inputs that carry images (an Image-like
    message, or an (H, W, 3) uint8 RGB array); every other input carries a JointSample from
    `merger.parse`, except `extra_inputs`, whose payload is a (names, values) pair of low-dimensional
    task state (for example the simulator's object pose) concatenated into `extra`. Images are converted/resized to `image_size` = (H, W); stamp = the reference
    input's stamp; source_stamps: cameras first (camera_inputs order), then joint-state inputs.
    Raises ImageConversionError / JointStateError (the node counts and drops the set).
    """
    idx = {n: i for i, n in enumerate(input_names)}
    unknown = sorted(set(camera_inputs) - set(idx))
    if unknown:
        raise ValueError(f"camera inputs {unknown} are not among the inputs {list(input_names)}")
    images: dict[str, np.ndarray] = {}
    for name, camera in camera_inputs.items():
        payload = synced.payloads[idx[name]]
        if isinstance(payload, np.ndarray):
            images[camera] = resize_rgb(payload, image_size) if image_size is not None else payload
        else:
            images[camera] = image_msg_to_rgb(payload, image_size)
    js_inputs = [i for i, n in enumerate(input_names) if n not in camera_inputs and n not in extra_inputs]
    position, velocity = merger.merge([synced.payloads[i] for i in js_inputs])
    extra_names: list[str] = []
    extra_values: list[float] = []
    for name in extra_inputs:
        names, values = synced.payloads[idx[name]]
        extra_names += [str(n) for n in names]
        extra_values += [float(v) for v in values]
    return ObservationData(
        stamp_ns=synced.stamps_ns[reference_index], sequence=int(sequence),
        joint_names=list(merger.joint_names), position=position, velocity=velocity, images=images,
        extra=np.asarray(extra_values, dtype=np.float64), extra_names=extra_names,
        source_stamps_ns=[synced.stamps_ns[idx[n]] for n in camera_inputs] + [synced.stamps_ns[i] for i in js_inputs])


# --- the synchronizer node's logic, shared with offline replay -----------------------------------
INPUT_CAMERA = "camera"
INPUT_JOINTS = "joints"
INPUT_EXTRA = "extra"


@dataclass
class SynchronizerConfig:
    """Parameters of the synchronizer node (section `synchronizer` of config/sim.yaml, real.yaml).

    Lives here, not in the node, so that offline replay of raw bags (bags/raw_record.py) reads the
    same YAML section into the same dataclass without rclpy."""

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
    min_spacing_fraction: float = 0.5     # see ControlRateGate
    ignored_joint_names: list[str] = field(default_factory=list)  # skipped names (e.g. wheels)
    velocity_required: bool = True        # reject JointState without velocities
    diagnostics_period_s: float = 1.0     # /diagnostics publication period

    def __post_init__(self):
        require(8 <= self.image_size <= 1024, f"image_size must be in [8, 1024], got {self.image_size}")
        require(self.diagnostics_period_s > 0, f"diagnostics_period_s must be > 0, got {self.diagnostics_period_s}")

    def sync_config(self, inputs: list[str], reference_input: str) -> SyncConfig:
        return SyncConfig(
            inputs=list(inputs), reference_input=reference_input, queue_size=self.queue_size,
            slop_s=self.slop_s, max_age_s=self.max_age_s, future_tolerance_s=self.future_tolerance_s,
            clock_jump_s=self.clock_jump_s, control_rate_hz=self.control_rate_hz,
            min_spacing_fraction=self.min_spacing_fraction, ignored_joint_names=list(self.ignored_joint_names),
            velocity_required=self.velocity_required)


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


class SynchronizerCore:
    """Everything the synchronizer node does between a received message and a published
    observation, without ROS: which topic feeds which input (cameras in the robot description's
    order, then its joint-state topics, then `extra_state_topics`; the first joint-state topic is
    the reference), the per-message JointState check (a rejected message is never offered), the
    ControlRateSynchronizer, assemble_observation and the sequence counter.

    The node calls `offer(index, msg, now)` from its subscriptions with rclpy messages; offline
    replay of a raw bag (resfit_ros/bags/raw_record.py) calls it with rosbags messages (same
    fields). So the same input sequence gives the same observations, live and offline.
    """

    def __init__(self, config: SynchronizerConfig, robot: Any,
                 on_reject: Callable[[str, str], None] | None = None, trace: bool = False) -> None:
        self.config = config
        cameras = dict(robot.cameras) if config.use_cameras else {}
        self.camera_inputs = {f"camera/{c}": c for c in cameras}
        js_inputs = [f"joints/{t}" for t in robot.joint_state_topics]
        self.extra_inputs = [f"extra/{t}" for t in config.extra_state_topics]
        self.inputs = list(self.camera_inputs) + js_inputs + self.extra_inputs
        self.topics = list(cameras.values()) + list(robot.joint_state_topics) + list(config.extra_state_topics)
        self.kinds = ([INPUT_CAMERA] * len(cameras) + [INPUT_JOINTS] * len(js_inputs)
                      + [INPUT_EXTRA] * len(self.extra_inputs))
        self.reference_index = self.inputs.index(js_inputs[0])
        self.sync = ControlRateSynchronizer(config.sync_config(self.inputs, js_inputs[0]), trace=trace)
        self.merger = JointStateMerger(robot.joint_names, config.ignored_joint_names, config.velocity_required)
        self.extra_parser = ExtraStateParser()
        self.image_size = (config.image_size, config.image_size)
        self.sequence = 0
        self.rejected: dict[str, int] = {}
        self.on_reject = on_reject

    def indices_of(self, topic: str) -> list[int]:
        """The input indices `topic` feeds (normally one)."""
        return [i for i, t in enumerate(self.topics) if t == topic]

    def _reject(self, reason: str, text: str) -> None:
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        if self.on_reject is not None:
            self.on_reject(reason, text)

    def offer(self, index: int, msg: Any, now_ns: int) -> list[ObservationData]:
        """One received message of input `index` (an Image or JointState with the ROS fields);
        returns the observations to publish now (0 or 1), numbered by `sequence`."""
        kind = self.kinds[index]
        if kind == INPUT_JOINTS:
            try:
                payload: Any = self.merger.parse(msg.name, msg.position, msg.velocity, source=self.topics[index])
            except JointStateError as exc:
                self._reject(f"joint_state_{exc.reason}", str(exc))
                return []
            if self.kinds.count(INPUT_JOINTS) == 1 and len(payload.indices) != self.merger.dof:
                # the only joint-state topic must cover every joint (else no set could ever merge)
                missing = sorted(set(self.merger.joint_names) - {self.merger.joint_names[i] for i in payload.indices})
                self._reject("joint_state_missing", f"{self.topics[index]}: no value for joint(s) {missing}")
                return []
        elif kind == INPUT_EXTRA:
            try:
                payload = self.extra_parser.parse(self.topics[index], msg.name, msg.position)
            except JointStateError as exc:
                self._reject(f"extra_{exc.reason}", str(exc))
                return []
        else:
            # layout checked on arrival (cheap, no conversion): a malformed frame is counted and
            # never queued, so it cannot take a good joint state down with it in a synchronised set
            try:
                check_image_layout(msg.height, msg.width, msg.encoding, msg.step, msg.data)
            except ImageConversionError as exc:
                self._reject(f"image_{exc.reason}", f"{self.topics[index]}: {exc}")
                return []
            payload = msg
        out = []
        stamp = _stamp_ns(msg.header.stamp)
        synced_sets = self.sync.add(index, stamp, payload, now_ns)
        drop = self.sync.sync.last_rejection
        if drop is not None and self.on_reject is not None:  # counted by the sync core as dropped/<reason>
            self.on_reject(drop, f"{self.topics[index]}: message stamped {stamp / NS_PER_S:.3f} s dropped "
                                 f"({drop}; now {now_ns / NS_PER_S:.3f} s)")
        for synced in synced_sets:
            try:
                obs = assemble_observation(synced, self.inputs, self.camera_inputs, self.merger, self.image_size,
                                           self.sequence, self.reference_index, self.extra_inputs)
            except JointStateError as exc:
                self._reject(f"joint_state_{exc.reason}", f"dropped a synchronised set: {exc}")
                continue
            except ImageConversionError as exc:
                self._reject(f"image_{exc.reason}", f"dropped a synchronised set: {exc}")
                continue
            except ValueError as exc:
                self._reject("set_invalid", f"dropped a synchronised set: {exc}")
                continue
            out.append(obs)
            self.sequence += 1
        return out
