"""ObservationData / step / status <-> rosbags message objects (the bag's message types), no rclpy."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from resfit_ros.bags import types as t
from resfit_ros.core.observation import ObservationData

# EpisodeStatus constants (msg/EpisodeStatus.msg)
STATE_IDLE, STATE_RUNNING, STATE_RESETTING, STATE_ESTOPPED = 0, 1, 2, 3
LABEL_NONE, LABEL_FAILURE, LABEL_SUCCESS = -1, 0, 1


def _cls(msgtype: str):
    return t.typestore().types[msgtype]


_NUMPY = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8, "uint8": np.uint8,
          "int16": np.int16, "uint16": np.uint16, "int32": np.int32, "uint32": np.uint32,
          "int64": np.int64, "uint64": np.uint64, "float32": np.float32, "float64": np.float64}


def _default(desc):
    from rosbags.typesys.base import Nodetype

    kind, arg = desc
    if kind == Nodetype.NAME:
        return new_msg(arg)
    if kind == Nodetype.BASE:
        base = arg[0]
        return "" if base in ("string", "wstring") else (False if base == "bool" else (
            0.0 if base.startswith("float") else 0))
    sub, size = arg
    if sub[0] == Nodetype.BASE and sub[1][0] in _NUMPY:
        return np.zeros(size if kind == Nodetype.ARRAY else 0, dtype=_NUMPY[sub[1][0]])
    return [_default(sub) for _ in range(size if kind == Nodetype.ARRAY else 0)]


def new_msg(msgtype: str, **fields):
    """A rosbags message of `msgtype` with `fields` set and every other field at its default
    (so code keeps working when a .msg gains a field)."""
    _, defs = t.typestore().fielddefs[msgtype]
    unknown = set(fields) - {name for name, _ in defs}
    if unknown:
        raise TypeError(f"{msgtype} has no field(s) {sorted(unknown)}")
    values = {name: fields[name] if name in fields else _default(desc) for name, desc in defs}
    return _cls(msgtype)(**values)


def time_msg(stamp_ns: int):
    sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return _cls("builtin_interfaces/msg/Time")(sec=sec, nanosec=nanosec)


def stamp_ns(time) -> int:
    return int(time.sec) * 1_000_000_000 + int(time.nanosec)


def header_msg(stamp: int, frame_id: str = ""):
    return _cls("std_msgs/msg/Header")(stamp=time_msg(stamp), frame_id=frame_id)


def image_msg(image: np.ndarray, stamp: int, frame_id: str = ""):
    """sensor_msgs/Image (rgb8) from an (H, W, 3) uint8 RGB array."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    return _cls(t.IMAGE)(
        header=header_msg(stamp, frame_id), height=h, width=w, encoding="rgb8", is_bigendian=0,
        step=w * 3, data=np.ascontiguousarray(image).reshape(-1))


def image_to_rgb(data: np.ndarray, height: int, width: int, encoding: str, step: int) -> np.ndarray:
    """(..., H, W, 3) uint8 RGB from raw Image bytes (..., height * step); rgb8/bgr8/rgba8/bgra8/mono8."""
    channels = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}.get(encoding)
    if channels is None:
        raise ValueError(f"unsupported image encoding '{encoding}' (want rgb8, bgr8, rgba8, bgra8 or mono8)")
    lead = data.shape[:-1]
    if data.shape[-1] != height * step or step < width * channels:
        raise ValueError(f"image data has {data.shape[-1]} bytes, expected {height} rows of {step}")
    px = data.reshape(*lead, height, step)[..., : width * channels].reshape(*lead, height, width, channels)
    if encoding == "rgb8":
        return px
    if encoding == "bgr8":
        return px[..., ::-1]
    if encoding == "rgba8":
        return px[..., :3]
    if encoding == "bgra8":
        return px[..., 2::-1]
    return np.repeat(px, 3, axis=-1)  # mono8


def observation_msg(obs: ObservationData):
    """resfit_ros/Observation from an ObservationData (images as rgb8 in camera order)."""
    cams = obs.camera_names
    return new_msg(
        t.OBSERVATION, header=header_msg(obs.stamp_ns),
        sequence=int(obs.sequence),
        joint_names=list(obs.joint_names),
        position=np.asarray(obs.position, dtype=np.float64),
        velocity=np.asarray(obs.velocity, dtype=np.float64),
        camera_names=cams,
        images=[image_msg(obs.images[c], obs.stamp_ns, c) for c in cams],
        extra_names=list(obs.extra_names),
        extra=np.asarray(obs.extra, dtype=np.float64),
        source_stamps=[time_msg(s) for s in obs.source_stamps_ns])


def observation_from_msg(msg) -> ObservationData:
    """ObservationData from a decoded resfit_ros/Observation."""
    images = {}
    for name, img in zip(msg.camera_names, msg.images):
        images[name] = image_to_rgb(np.asarray(img.data, dtype=np.uint8), img.height, img.width,
                                    img.encoding, img.step)
    return ObservationData(
        stamp_ns=stamp_ns(msg.header.stamp), sequence=int(msg.sequence),
        joint_names=list(msg.joint_names), position=np.array(msg.position, dtype=np.float64),
        velocity=np.array(msg.velocity, dtype=np.float64), images=images,
        extra=np.array(msg.extra, dtype=np.float64), extra_names=list(msg.extra_names),
        source_stamps_ns=[stamp_ns(s) for s in msg.source_stamps])


def joint_state_msg(obs: ObservationData):
    """sensor_msgs/JointState (position, velocity; no effort) from an ObservationData."""
    return _cls(t.JOINT_STATE)(
        header=header_msg(obs.stamp_ns), name=list(obs.joint_names),
        position=np.asarray(obs.position, dtype=np.float64),
        velocity=np.asarray(obs.velocity, dtype=np.float64), effort=np.zeros(0, dtype=np.float64))


@dataclass
class StepData:
    """What the policy did in one control step (the fields of resfit_ros/StepRecord).

    base_action / residual may be empty (a scripted-expert demo has neither: only `command`).
    """

    step: int
    observation_sequence: int
    command: np.ndarray                                   # (dof,) what was sent
    base_action: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (dof,) or (0,)
    residual: np.ndarray = field(default_factory=lambda: np.zeros(0))      # (dof,) or (0,)
    exploration: bool = False
    training_steps: int = 0
    weights_version: int = 0
    safety_flags: int = 0
    latency: float = 0.0


def step_record_msg(step: StepData, episode_id: int, stamp: int, joint_names: list[str]):
    return new_msg(
        t.STEP_RECORD, header=header_msg(stamp), episode_id=int(episode_id), step=int(step.step),
        observation_sequence=int(step.observation_sequence), joint_names=list(joint_names),
        base_action=np.asarray(step.base_action, dtype=np.float64).reshape(-1),
        residual=np.asarray(step.residual, dtype=np.float64).reshape(-1),
        command=np.asarray(step.command, dtype=np.float64).reshape(-1),
        exploration=bool(step.exploration), training_steps=int(step.training_steps),
        weights_version=int(step.weights_version),
        safety_flags=int(step.safety_flags), latency=float(step.latency))


def episode_status_msg(stamp: int, *, state: int, episode_id: int, label: int = LABEL_NONE,
                       aborted: bool = False, explore: bool = False, steps: int = 0,
                       episodes_completed: int = 0, successes: int = 0, message: str = ""):
    return new_msg(
        t.EPISODE_STATUS, header=header_msg(stamp), state=state, episode_id=episode_id, label=label,
        aborted=aborted, explore=explore, steps=steps, episodes_completed=episodes_completed,
        successes=successes, message=message)
