"""EpisodeWriter: one rosbag2 directory (mcap storage + metadata.yaml) per episode, crash-safe.

The writer creates `<root>/<name>.incomplete/` and renames it to `<root>/<name>/` only in
`finish()`, after the episode is labelled (or marked aborted) and the bag is closed and synced.
A process that dies mid-episode therefore leaves every earlier episode untouched and the
interrupted one under a name that says it is incomplete; readers skip it.

The same writer serves the simulated-demo job (`write_observation` / `write_step` from numpy)
and the live recorder node (`write_raw`: CDR bytes from a `raw=True` subscription, passed
straight through; EpisodeStatus bytes are decoded to learn the label).
"""
from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Mapping

from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.rosbag2.enums import CompressionFormat, CompressionMode
from rosbags.rosbag2.storage_mcap import McapWriter

from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.bags.errors import BagError
from resfit_ros.core.observation import ObservationData

INCOMPLETE_SUFFIX = ".incomplete"
FORMAT_VERSION = "resfit_ros.episode/1"  # custom_data["format"] of every episode bag


class EpisodeUnlabelledError(BagError):
    """finish() was called without a label and no labelled EpisodeStatus was written."""


def episode_dir_name(episode_id: int, when: _dt.datetime | None = None) -> str:
    """`episode_000042_20250101T120000Z`: sorts by id, then by UTC start time."""
    when = when or _dt.datetime.now(_dt.timezone.utc)
    return f"episode_{int(episode_id):06d}_{when.astimezone(_dt.timezone.utc):%Y%m%dT%H%M%SZ}"


class _McapStorage(McapWriter):
    """rosbags' mcap storage, but the file is named after the FINAL directory name
    (`<name>.mcap`, not `<name>.incomplete.mcap`), so metadata.yaml stays valid after the rename.
    The file is renamed while open (POSIX keeps the handle); Writer.close() reads `self.path`."""

    def __init__(self, path: Path, compression: CompressionMode) -> None:
        super().__init__(path, compression)
        final = path / f"{path.name.removesuffix(INCOMPLETE_SUFFIX)}.mcap"
        if final != self.path:
            self.path.rename(final)
            self.path = final


class _Rosbag2Writer(Writer):
    STORAGE_PLUGINS = {**Writer.STORAGE_PLUGINS, StoragePlugin.MCAP: _McapStorage}


_LATCHED = Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False)


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class EpisodeWriter:
    """Writes one episode bag. Use as a context manager; call `finish()` to keep it.

        with EpisodeWriter(root, episode_id=3, metadata={"task": "g1_pick_lift"}) as w:
            w.write_observation(obs)                       # /resfit/observation (+ raw inputs)
            w.write_step(StepData(step=0, observation_sequence=obs.sequence, command=a), obs.stamp_ns)
            ...
            path = w.finish(success=True)                  # labels, closes, renames

    An exception inside the block closes the bag and leaves it as `<name>.incomplete`.
    """

    def __init__(self, root: str | Path, episode_id: int, *, metadata: Mapping[str, object] | None = None,
                 name: str | None = None, joint_names: list[str] | None = None, compress: bool = False,
                 explore: bool = False) -> None:
        self.root = Path(root)
        self.episode_id = int(episode_id)
        self.name = name or episode_dir_name(self.episode_id)
        if self.name.endswith(INCOMPLETE_SUFFIX) or "/" in self.name:
            raise ValueError(f"bad episode name '{self.name}'")
        self.final_path = self.root / self.name
        self.path = self.root / (self.name + INCOMPLETE_SUFFIX)
        if self.final_path.exists():
            raise FileExistsError(f"episode bag {self.final_path} exists already")
        self.root.mkdir(parents=True, exist_ok=True)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self.joint_names = list(joint_names) if joint_names is not None else None
        self.explore = bool(explore)
        self._writer = _Rosbag2Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        if compress:
            self._writer.set_compression(CompressionMode.STORAGE, CompressionFormat.ZSTD)
        self._writer.open()
        self._connections: dict[str, object] = {}
        self._last_stamp = 0
        self._label = convert.LABEL_NONE
        self._aborted = False
        self.steps = 0
        self.observations = 0
        self.closed = False

    # --- low level ---------------------------------------------------------------------------
    def _connection(self, topic: str, msgtype: str | None):
        conn = self._connections.get(topic)
        if conn is None:
            msgtype = msgtype or t.topic_type(topic)
            if msgtype is None:
                raise ValueError(f"no message type known for topic '{topic}'; pass msgtype=")
            qos = [_LATCHED] if topic == t.TOPIC_EPISODE_STATUS else []
            conn = self._writer.add_connection(topic, msgtype, typestore=t.typestore(),
                                               offered_qos_profiles=qos)
            self._connections[topic] = conn
        elif msgtype is not None and conn.msgtype != msgtype:
            raise ValueError(f"topic '{topic}' is {conn.msgtype} in this bag, not {msgtype}")
        return conn

    def _check_open(self) -> None:
        if self.closed:
            raise BagError(self.path, "the episode writer is closed")

    def write_raw(self, topic: str, data: bytes | memoryview, stamp_ns: int, msgtype: str | None = None) -> None:
        """Write already-serialized CDR bytes (e.g. from a raw=True subscription) unchanged.

        `topic` may be node-relative (as the recorder subscribed it): the bag holds it resolved at
        the root (types.bag_topic). The type defaults to the episode-bag type of the topic
        (types.TOPIC_TYPES). EpisodeStatus messages are decoded to track the label that `finish()` uses.
        """
        self._check_open()
        conn = self._connection(t.bag_topic(topic), msgtype)
        if conn.msgtype == t.EPISODE_STATUS:
            status = t.typestore().deserialize_cdr(data, t.EPISODE_STATUS)
            self._track_status(status)
        self._writer.write(conn, int(stamp_ns), data)
        self._last_stamp = max(self._last_stamp, int(stamp_ns))

    def write_message(self, topic: str, msg, stamp_ns: int, msgtype: str | None = None) -> None:
        """Serialize a rosbags message object and write it."""
        msgtype = msgtype or getattr(msg, "__msgtype__", None) or t.topic_type(t.bag_topic(topic))
        self.write_raw(topic, t.typestore().serialize_cdr(msg, msgtype), stamp_ns, msgtype)

    def _track_status(self, status) -> None:
        if status.episode_id in (0, self.episode_id) and status.state != convert.STATE_RUNNING:
            if status.label != convert.LABEL_NONE or status.aborted:
                self._label, self._aborted = int(status.label), bool(status.aborted)

    def flush(self) -> None:
        """Put everything written so far on disk (a complete MCAP chunk, fsynced). The bag stays
        open and `.incomplete`, but a process killed after this leaves these messages readable:
        `recover_episode` (bags/recover.py) can finish a labelled episode from them."""
        self._check_open()
        storage = self._writer.storage
        if storage.chunk.bio.tell():
            storage.close_chunk()
        storage.bio.flush()
        os.fsync(storage.bio.fileno())

    # --- high level (simulation, tests) -------------------------------------------------------
    def write_observation(self, obs: ObservationData, *, inputs: bool = True) -> None:
        """/resfit/observation; with `inputs`, also the raw inputs it stands for (what the robot's
        recorder records): /joint_states and /camera/<name>/image_raw, with the same stamp."""
        if self.joint_names is None:
            self.joint_names = list(obs.joint_names)
        if inputs:
            for cam, img in obs.images.items():
                self.write_message(t.TOPIC_CAMERA.format(name=cam),
                                   convert.image_msg(img, obs.stamp_ns, cam), obs.stamp_ns, t.IMAGE)
            self.write_message(t.TOPIC_JOINT_STATES, convert.joint_state_msg(obs), obs.stamp_ns, t.JOINT_STATE)
        self.write_message(t.TOPIC_OBSERVATION, convert.observation_msg(obs), obs.stamp_ns, t.OBSERVATION)
        self.observations += 1

    def write_step(self, step: convert.StepData, stamp_ns: int) -> None:
        """/resfit/step for one control step; `stamp_ns` is the stamp of the observation acted on."""
        if self.joint_names is None:
            raise BagError(self.path, "write_step before any observation: joint names unknown "
                                      "(pass joint_names= to EpisodeWriter)")
        msg = convert.step_record_msg(step, self.episode_id, stamp_ns, self.joint_names)
        self.write_message(t.TOPIC_STEP_RECORD, msg, stamp_ns, t.STEP_RECORD)
        self.steps += 1

    def write_status(self, state: int, stamp_ns: int, *, label: int = convert.LABEL_NONE,
                     aborted: bool = False, message: str = "") -> None:
        """/resfit/episode_status for this episode (state: convert.STATE_*)."""
        msg = convert.episode_status_msg(
            stamp_ns, state=state, episode_id=self.episode_id, label=label, aborted=aborted,
            explore=self.explore, steps=self.steps, message=message)
        self.write_message(t.TOPIC_EPISODE_STATUS, msg, stamp_ns, t.EPISODE_STATUS)

    # --- ending --------------------------------------------------------------------------------
    def finish(self, success: bool | None = None, *, aborted: bool = False, message: str = "") -> Path:
        """Label the episode (unless a labelled status was already written), close, rename.

        success True/False labels it; aborted=True ends it without a label (kept, marked
        aborted). With neither, the label of the last EpisodeStatus written is used; if there is
        none the bag is closed but stays `.incomplete` and EpisodeUnlabelledError is raised.
        Returns the final directory.
        """
        self._check_open()
        if success is not None or aborted:
            label = convert.LABEL_NONE if success is None else (
                convert.LABEL_SUCCESS if success else convert.LABEL_FAILURE)
            self.write_status(convert.STATE_IDLE, self._last_stamp, label=label, aborted=aborted,
                              message=message)
        if self._label == convert.LABEL_NONE and not self._aborted:
            self.close()
            raise EpisodeUnlabelledError(self.path, "episode has no label: closed and left incomplete")
        label_name = {convert.LABEL_SUCCESS: "success", convert.LABEL_FAILURE: "failure"}.get(self._label, "none")
        custom = dict(self.metadata)
        custom.update(format=FORMAT_VERSION, episode_id=str(self.episode_id), label=label_name,
                      aborted=str(self._aborted).lower(), steps=str(self.steps))
        self._close_storage(custom)
        for f in self.path.iterdir():
            _fsync(f)
        os.rename(self.path, self.final_path)
        _fsync(self.root)
        self.path = self.final_path
        return self.final_path

    def _close_storage(self, custom: Mapping[str, str]) -> None:
        for key, value in custom.items():
            self._writer.set_custom_data(key, value)
        self.closed = True
        self._writer.close()

    def close(self) -> None:
        """Close the bag WITHOUT labelling it: it stays `<name>.incomplete` (still readable for
        diagnosis with iter_messages, but skipped by read_episode/scan_episodes)."""
        if not self.closed:
            custom = dict(self.metadata)
            custom.update(format=FORMAT_VERSION, episode_id=str(self.episode_id), label="none",
                          aborted="false", steps=str(self.steps))
            self._close_storage(custom)

    def __enter__(self) -> "EpisodeWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.closed:
            self.close()
