"""ObservationData <-> resfit_ros/Observation and other rclpy message conversions (nodes only)."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from resfit_ros.core.observation import ObservationData
from resfit_ros.msg import Observation
from resfit_ros.nodes.common import ns_to_stamp, stamp_to_ns


def observation_to_msg(obs: ObservationData, frame_id: str = "") -> Observation:
    msg = Observation(sequence=int(obs.sequence), joint_names=list(obs.joint_names),
                      position=np.asarray(obs.position, float).tolist(),
                      velocity=np.asarray(obs.velocity, float).tolist(),
                      camera_names=list(obs.images), extra_names=list(obs.extra_names),
                      extra=np.asarray(obs.extra, float).tolist())
    msg.header.stamp = ns_to_stamp(obs.stamp_ns)
    msg.header.frame_id = frame_id
    images = []
    for name, rgb in obs.images.items():
        img = Image(height=int(rgb.shape[0]), width=int(rgb.shape[1]), encoding="rgb8", step=int(rgb.shape[1]) * 3)
        img.header = msg.header
        img.header.frame_id = name
        img.data = np.ascontiguousarray(rgb, dtype=np.uint8).tobytes()
        images.append(img)
    msg.images = images
    msg.source_stamps = [ns_to_stamp(s) for s in obs.source_stamps_ns]
    return msg


class ObservationError(ValueError):
    """An Observation message is malformed (the text says how; `reason` names the check for counters:
    wrong_dof, wrong_length, nonfinite, joint_names, image, extra, state_dim, camera)."""

    def __init__(self, message: str, reason: str = "malformed") -> None:
        super().__init__(message)
        self.reason = reason


def msg_to_observation(msg: Observation, dof: int | None = None) -> ObservationData:
    """Observation message -> ObservationData; malformed messages raise ObservationError."""
    n = len(msg.joint_names)
    pos = np.asarray(msg.position, dtype=np.float64)
    vel = np.asarray(msg.velocity, dtype=np.float64)
    if dof is not None and n != dof:
        raise ObservationError(f"observation has {n} joints, expected {dof}", "wrong_dof")
    if pos.shape != (n,) or vel.shape != (n,):
        raise ObservationError(f"observation has {n} joint names but {pos.size} positions / {vel.size} velocities",
                               "wrong_length")
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(vel))):
        raise ObservationError("observation has non-finite joint positions/velocities", "nonfinite")
    if len(msg.camera_names) != len(msg.images):
        raise ObservationError(f"{len(msg.camera_names)} camera names for {len(msg.images)} images", "image")
    if len(set(msg.camera_names)) != len(msg.camera_names):
        raise ObservationError(f"duplicate camera names {list(msg.camera_names)}", "image")
    images = {}
    for name, img in zip(msg.camera_names, msg.images):
        if (img.encoding != "rgb8" or not img.height or not img.width
                or len(img.data) != img.height * img.width * 3 or img.step != img.width * 3):
            raise ObservationError(f"camera {name}: expected packed rgb8, got {img.encoding} "
                                   f"{img.width}x{img.height} step {img.step} with {len(img.data)} bytes", "image")
        images[name] = np.frombuffer(bytes(img.data), dtype=np.uint8).reshape(img.height, img.width, 3)
    extra = np.asarray(msg.extra, dtype=np.float64)
    if extra.shape != (len(msg.extra_names),):
        raise ObservationError(f"{len(msg.extra_names)} extra names for {extra.size} extra values", "extra")
    if not np.all(np.isfinite(extra)):
        raise ObservationError("observation has non-finite extra state", "nonfinite")
    return ObservationData(stamp_ns=stamp_to_ns(msg.header.stamp), sequence=int(msg.sequence),
                           joint_names=list(msg.joint_names), position=pos, velocity=vel, images=images,
                           extra=extra, extra_names=list(msg.extra_names),
                           source_stamps_ns=[stamp_to_ns(s) for s in msg.source_stamps])
