"""The rosbags typestore of the project: ROS 2 Kilted standard types + resfit_ros/msg/*, built once.

No rclpy: the custom types are parsed from the .msg text (rosbags `get_types_from_msg`), so bags
can be written and read on any machine. The RIHS01 type hashes rosbags computes for them equal
the ones rosidl generates (checked by test/bags/test_types.py against the installed .json).
"""
from __future__ import annotations

import functools
import os
import sys
import threading
from fnmatch import fnmatch
from pathlib import Path

from rosbags.typesys import Stores, get_typestore, get_types_from_msg
from rosbags.typesys.store import Typestore

import resfit_ros
from resfit_ros import names

PACKAGE = "resfit_ros"

# --- message type names ---------------------------------------------------------------------
OBSERVATION = "resfit_ros/msg/Observation"
STEP_RECORD = "resfit_ros/msg/StepRecord"
EPISODE_STATUS = "resfit_ros/msg/EpisodeStatus"
IMAGE = "sensor_msgs/msg/Image"
JOINT_STATE = "sensor_msgs/msg/JointState"


def bag_topic(name: str) -> str:
    """The name topic `name` has in an episode bag: resolved at the root (`resfit/step` ->
    `/resfit/step`) whichever namespace the recording robot ran in, so the bags of every robot,
    and those recorded before names were relative, read alike."""
    return names.resolve(name)


# --- topic names inside episode bags -----------------------------------------------------------
TOPIC_OBSERVATION = bag_topic(names.OBSERVATION)
TOPIC_STEP_RECORD = bag_topic(names.STEP_RECORD)
TOPIC_EPISODE_STATUS = bag_topic(names.EPISODE_STATUS)
TOPIC_JOINT_STATES = bag_topic(names.JOINT_STATES)
TOPIC_CAMERA = bag_topic(names.CAMERA_TOPIC)   # .format(name=camera)

# Topic (pattern) -> message type of every topic an episode bag holds.
TOPIC_TYPES: dict[str, str] = {
    TOPIC_OBSERVATION: OBSERVATION,
    TOPIC_STEP_RECORD: STEP_RECORD,
    TOPIC_EPISODE_STATUS: EPISODE_STATUS,
    TOPIC_JOINT_STATES: JOINT_STATE,
    TOPIC_CAMERA.format(name="*"): IMAGE,
}


def topic_type(topic: str) -> str | None:
    """The message type an episode bag uses for `topic` (a bag name, see bag_topic; camera topics
    by pattern), else None."""
    if topic in TOPIC_TYPES:
        return TOPIC_TYPES[topic]
    for pattern, msgtype in TOPIC_TYPES.items():
        if "*" in pattern and fnmatch(topic, pattern):
            return msgtype
    return None


def msg_dir() -> Path:
    """Directory with the project's .msg files: the source tree's msg/, else an installed
    share/resfit_ros/msg (on AMENT_PREFIX_PATH, or under sys.prefix)."""
    candidates = [Path(resfit_ros.__file__).resolve().parent.parent / "msg"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            candidates.append(Path(prefix) / "share" / PACKAGE / "msg")
    candidates.append(Path(sys.prefix) / "share" / PACKAGE / "msg")
    for c in candidates:
        if (c / "Observation.msg").is_file():
            return c
    raise FileNotFoundError(
        f"cannot find the {PACKAGE} .msg files; looked in {', '.join(str(c) for c in candidates)}")


_lock = threading.Lock()
_typestore: Typestore | None = None


def typestore() -> Typestore:
    """The process-wide typestore (ROS2_KILTED + every resfit_ros/msg type), built on first use."""
    global _typestore
    with _lock:
        if _typestore is None:
            store = get_typestore(Stores.ROS2_KILTED)
            added: dict = {}
            for path in sorted(msg_dir().glob("*.msg")):
                added.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
            store.register(added)
            _typestore = store
        return _typestore


@functools.lru_cache(maxsize=None)
def type_hash(msgtype: str) -> str:
    """RIHS01 hash of `msgtype` (what rosbag2 stores as type_description_hash)."""
    return typestore().hash_rihs01(msgtype)
