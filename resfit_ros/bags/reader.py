"""Reading episode bags into numpy: `read_episode`, `scan_episodes`, `iter_messages`.

Only the three topics an Episode needs (/resfit/observation, /resfit/step,
/resfit/episode_status) are read, with the fast MCAP scanner (mcap_scan) and the vectorised CDR
decoder (cdr_fast): a 200-step episode with one 84x84 camera reads in a few milliseconds.
The raw input topics (/joint_states, /camera/*/image_raw) stay in the bag for `ros2 bag play` and
diagnosis (`iter_messages`). The rosbag2 steps underneath (`read_metadata`, `topic_types`,
`check_types`, `raw_messages`) also read the raw recordings of bags/raw_record.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import yaml

from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.bags.cdr_fast import LayoutError, decode_observations, decode_step_records
from resfit_ros.bags.errors import AbortedBeforeFirstStep, BagError
from resfit_ros.bags.mcap_scan import McapError, read_mcap
from resfit_ros.bags.writer import FORMAT_VERSION, INCOMPLETE_SUFFIX
from resfit_ros.core.observation import ObservationData

# Everything read from metadata.yaml is a string: the base loader (no type resolution) is faster.
_Loader = getattr(yaml, "CBaseLoader", yaml.BaseLoader)

# the topics an Episode is built from, and their types
EPISODE_TOPICS = {
    t.TOPIC_OBSERVATION: t.OBSERVATION,
    t.TOPIC_STEP_RECORD: t.STEP_RECORD,
    t.TOPIC_EPISODE_STATUS: t.EPISODE_STATUS,
}


@dataclass
class Episode:
    """One episode as numpy arrays. N observations (sequence order), T steps (step order).

    Every step acted on one observation: `step_obs_index[t]` indexes the observation arrays
    (-1 if that observation is missing from the bag) and `next_obs_index[t]` is the observation
    after it (the next step's observation, or for the last step the first later observation
    in the bag, typically the final observation written after the last command; -1 if none).
    A transition is (obs[step_obs_index[t]], command[t], obs[next_obs_index[t]]).
    """

    path: Path
    episode_id: int
    label: str | None                     # "success" | "failure"; None when aborted
    aborted: bool
    metadata: dict[str, str]              # custom_data of metadata.yaml (task, seed, source, ...)
    joint_names: list[str]
    camera_names: list[str]
    extra_names: list[str]
    # --- observations (N) ---
    obs_stamp_ns: np.ndarray              # (N,) int64
    obs_sequence: np.ndarray              # (N,) int64
    position: np.ndarray                  # (N, dof) float64
    velocity: np.ndarray                  # (N, dof) float64 (may be (N, 0))
    extra: np.ndarray                     # (N, E) float64
    images: dict[str, np.ndarray]         # camera -> (N, H, W, 3) uint8 RGB
    # --- steps (T) ---
    step: np.ndarray                      # (T,) int64, the StepRecord.step counter
    step_stamp_ns: np.ndarray             # (T,) int64, stamp of the observation acted on
    step_obs_index: np.ndarray            # (T,) int64 into the observation arrays, -1 = missing
    next_obs_index: np.ndarray            # (T,) int64, -1 = none
    base_action: np.ndarray               # (T, dof) float64, or (0, dof) when not recorded (demos)
    residual: np.ndarray                  # (T, dof) float64, or (0, dof)
    command: np.ndarray                   # (T, dof) float64: what was sent
    exploration: np.ndarray               # (T,) bool
    weights_version: np.ndarray           # (T,) uint64
    safety_flags: np.ndarray              # (T,) uint32
    latency: np.ndarray                   # (T,) float64, seconds
    extras: dict = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return self.label == "success"

    @property
    def num_steps(self) -> int:
        return int(self.command.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.position.shape[0])

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def states(self) -> np.ndarray:
        """(N, 2*dof + E) float32: ObservationData.state_vector() of every observation."""
        return np.concatenate([self.position, self.velocity, self.extra], axis=1).astype(np.float32)

    def image_stack(self, camera_names: list[str] | None = None) -> np.ndarray:
        """(N, n_cameras, 3, H, W) uint8, like ObservationData.image_stack() per observation."""
        cams = self.camera_names if camera_names is None else camera_names
        if not cams:
            return np.zeros((self.num_observations, 0, 3, 0, 0), dtype=np.uint8)
        return np.stack([self.images[c].transpose(0, 3, 1, 2) for c in cams], axis=1)

    def observation(self, i: int) -> ObservationData:
        """Observation i as the ObservationData the policies take."""
        return ObservationData(
            stamp_ns=int(self.obs_stamp_ns[i]), sequence=int(self.obs_sequence[i]),
            joint_names=list(self.joint_names), position=self.position[i].copy(),
            velocity=self.velocity[i].copy(), images={c: self.images[c][i] for c in self.images},
            extra=self.extra[i].copy(), extra_names=list(self.extra_names))


# --- metadata ------------------------------------------------------------------------------------
def read_metadata(path: Path) -> dict:
    """The rosbag2_bagfile_information of a bag's metadata.yaml; BagError when missing or malformed."""
    meta_path = path / "metadata.yaml"
    if not meta_path.is_file():
        raise BagError(path, "missing metadata.yaml (the bag was never closed, or this is not a rosbag2 directory)")
    try:
        doc = yaml.load(meta_path.read_text(), Loader=_Loader)
        info = doc["rosbag2_bagfile_information"]
        if not isinstance(info["relative_file_paths"], list) or not isinstance(info["storage_identifier"], str):
            raise TypeError("relative_file_paths / storage_identifier malformed")
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BagError(path, f"metadata.yaml is not rosbag2 metadata ({type(exc).__name__}: {exc})") from None
    return info


def topic_types(path: Path, info: dict) -> dict[str, tuple[str, str]]:
    """topic -> (type, type_description_hash) from metadata.yaml."""
    out = {}
    entries = info.get("topics_with_message_count")
    for entry in entries if isinstance(entries, list) else []:
        meta = entry.get("topic_metadata", {})
        out[meta.get("name", "")] = (meta.get("type", ""), meta.get("type_description_hash", "") or "")
    return out


def check_types(path: Path, topics: dict[str, tuple[str, str]], wanted: dict[str, str]) -> None:
    """Nothing; raises BagError when a topic of `wanted` (topic -> type) is recorded with another type or definition."""
    store = t.typestore()
    for topic, expected in wanted.items():
        if topic not in topics:
            continue
        msgtype, digest = topics[topic]
        if msgtype != expected:
            known = "known" if msgtype in store.types else "unknown"
            raise BagError(path, f"{known} message type '{msgtype}' on {topic} (expected {expected})")
        if digest and digest.startswith("RIHS01_") and digest != t.type_hash(expected):
            raise BagError(path, f"{topic}: {expected} was written with another definition "
                                 f"(type hash {digest}, this code has {t.type_hash(expected)}); "
                                 "convert the bag or use the matching resfit_ros version")


def raw_messages(path: Path, info: dict, topics: set[str]) -> dict[str, list[tuple[int, memoryview]]]:
    """topic -> [(log_time, CDR bytes)] of `topics`, over all files of the bag."""
    storage = info["storage_identifier"]
    out: dict[str, list] = {tp: [] for tp in topics}
    if storage == "mcap":
        for rel in info["relative_file_paths"]:
            f = path / rel
            if not f.is_file():
                raise BagError(path, f"bag file {rel} listed in metadata.yaml is missing")
            try:
                contents = read_mcap(f, topics)
            except McapError as exc:
                raise BagError(path, f"{rel}: {exc}") from None
            for tp, msgs in contents.messages.items():
                out[tp].extend(msgs)
        return out
    if storage == "sqlite3":  # slower generic path (rosbags)
        from rosbags.rosbag2 import Reader

        try:
            with Reader(path) as reader:
                conns = [c for c in reader.connections if c.topic in topics]
                for conn, stamp, data in reader.messages(connections=conns):
                    out[conn.topic].append((stamp, memoryview(data)))
        except Exception as exc:  # rosbags raises several types for corrupt databases
            raise BagError(path, f"cannot read sqlite3 storage: {exc}") from None
        return out
    raise BagError(path, f"unsupported storage '{storage}' (want mcap or sqlite3)")


# --- episodes ------------------------------------------------------------------------------------
def _label(path: Path, statuses: list[tuple[int, memoryview]], episode_id: int | None):
    """(label, aborted, episode_id, steps counted by the episode manager when it ended the
    episode) from the last terminal EpisodeStatus."""
    store = t.typestore()
    final = None
    for _, data in statuses:
        try:
            msg = store.deserialize_cdr(data, t.EPISODE_STATUS)
        except Exception as exc:
            raise BagError(path, f"corrupt {t.TOPIC_EPISODE_STATUS} message: {exc}") from None
        if episode_id is not None and msg.episode_id not in (0, episode_id):
            continue
        if msg.state != convert.STATE_RUNNING and (msg.label != convert.LABEL_NONE or msg.aborted):
            final = msg
    if final is None:
        raise BagError(path, "no label: the episode was never labelled success/failure or aborted "
                             "(incomplete episode)")
    label = {convert.LABEL_SUCCESS: "success", convert.LABEL_FAILURE: "failure"}.get(int(final.label))
    return (None if final.aborted else label), bool(final.aborted), int(final.episode_id), int(final.steps)


def read_episode(path: str | Path, *, images: bool = True) -> Episode:
    """Read one episode bag directory. Raises BagError (path + problem) when it is incomplete,
    unlabelled, empty, corrupt, or uses message types this code does not know.

    images=False skips decoding the camera images (state-only training; faster).
    """
    path = Path(path)
    if path.name.endswith(INCOMPLETE_SUFFIX):
        raise BagError(path, "incomplete episode: the writer did not finish it (crashed or still recording)")
    if not path.is_dir():
        raise BagError(path, "no such episode directory")
    info = read_metadata(path)
    check_types(path, topic_types(path, info), EPISODE_TOPICS)
    custom_data = info.get("custom_data")
    custom = {str(k): str(v) for k, v in custom_data.items()} if isinstance(custom_data, dict) else {}
    raw = raw_messages(path, info, set(EPISODE_TOPICS))
    obs_raw = [d for _, d in raw[t.TOPIC_OBSERVATION]]
    step_raw = [d for _, d in raw[t.TOPIC_STEP_RECORD]]
    episode_id = int(custom["episode_id"]) if custom.get("episode_id", "").isdigit() else None
    if not obs_raw or not step_raw:
        empty = f"{len(obs_raw)} observations and {len(step_raw)} step records"
        try:
            aborted = _label(path, raw[t.TOPIC_EPISODE_STATUS], episode_id)[1]
        except BagError:
            aborted = False
        if aborted:
            raise AbortedBeforeFirstStep(path, f"aborted before its first step ({empty})")
        raise BagError(path, f"empty episode: {empty}")
    label, aborted, status_episode, counted = _label(path, raw[t.TOPIC_EPISODE_STATUS], episode_id)

    keep: Callable[[str], bool] | None = None if images else (lambda n: not n.startswith("images."))
    try:
        ob = decode_observations(obs_raw, keep)
    except LayoutError as exc:
        raise BagError(path, f"bad {t.TOPIC_OBSERVATION} message: {exc}") from None
    try:
        st = decode_step_records(step_raw)
    except LayoutError as exc:
        raise BagError(path, f"bad {t.TOPIC_STEP_RECORD} message: {exc}") from None
    return _assemble(path, ob, st, label, aborted, episode_id if episode_id is not None else status_episode,
                     custom, images, counted)


def _assemble(path, ob, st, label, aborted, episode_id, custom, with_images, counted: int = 0) -> Episode:
    om, of = ob.meta, ob.fields
    joint_names = list(om["joint_names"])
    dof = len(joint_names)
    if om["n_position"] != dof:
        raise BagError(path, f"observations have {om['n_position']} positions for {dof} joint names")
    if om["n_velocity"] not in (0, dof):
        raise BagError(path, f"observations have {om['n_velocity']} velocities for {dof} joint names")
    if list(st.meta["joint_names"]) != joint_names:
        raise BagError(path, "step records and observations use different joint names/orders")

    sequence = of["sequence"][:, 0].astype(np.int64)
    order = np.argsort(sequence, kind="stable")
    if np.array_equal(order, np.arange(len(order))):
        order = slice(None)  # already in order (the usual case): no copies
    sequence = sequence[order]
    if len(sequence) > 1 and np.any(np.diff(sequence) == 0):
        raise BagError(path, "observation sequence numbers repeat (synchronizer restarted mid-episode?)")
    obs_stamp = (of["stamp.sec"][:, 0].astype(np.int64) * 1_000_000_000 + of["stamp.nanosec"][:, 0])[order]

    camera_names = list(om["camera_names"])
    images: dict[str, np.ndarray] = {}
    if with_images:
        if len(om["images"]) != len(camera_names):
            raise BagError(path, f"{len(om['images'])} images for {len(camera_names)} camera names")
        for i, (cam, (height, width, encoding, _, step, n)) in enumerate(zip(camera_names, om["images"])):
            try:
                rgb = convert.image_to_rgb(of[f"images.{i}.data"], height, width, encoding, step)
            except ValueError as exc:
                raise BagError(path, f"camera '{cam}': {exc}") from None
            images[cam] = np.ascontiguousarray(rgb[order])  # no copy when rgb8 in order

    sf = st.fields
    step_no = sf["step"][:, 0].astype(np.int64)
    sorder = np.argsort(step_no, kind="stable")
    if label is not None and counted > 0:
        # A labelled episode is the steps the episode manager counted before the label. In a
        # lockstep simulator the policy goes on stepping until it hears that the episode ended,
        # and the recorder keeps those records too: they are not part of the episode (the reward
        # belongs on the step the manager counted last).
        sorder = sorder[step_no[sorder] < counted]
        if len(sorder) == 0:
            raise BagError(path, f"no step record numbered below the {counted} steps the episode manager counted")
    if np.array_equal(sorder, np.arange(len(step_no))):
        sorder = slice(None)
    step_no = step_no[sorder]
    obs_seq_of_step = sf["observation_sequence"][sorder, 0].astype(np.int64)
    idx = np.searchsorted(sequence, obs_seq_of_step)
    idx_c = np.minimum(idx, len(sequence) - 1)
    step_obs = np.where(sequence[idx_c] == obs_seq_of_step, idx_c, -1)
    nxt = np.full(len(step_no), -1, dtype=np.int64)
    nxt[:-1] = step_obs[1:]
    last_after = np.searchsorted(sequence, obs_seq_of_step[-1], side="right")
    nxt[-1] = last_after if last_after < len(sequence) else -1

    def actions(name: str) -> np.ndarray:
        n = st.meta[f"n_{name}"]
        if n == 0:
            return np.zeros((0, dof))
        if n != dof:
            raise BagError(path, f"step records have {n} values of {name} for {dof} joints")
        return sf[name][sorder]

    command = actions("command")
    if command.shape[0] == 0:
        raise BagError(path, "step records have no command")
    return Episode(
        path=path, episode_id=int(episode_id), label=label, aborted=aborted, metadata=custom,
        joint_names=joint_names, camera_names=camera_names if with_images else [],
        extra_names=list(om["extra_names"]),
        obs_stamp_ns=obs_stamp, obs_sequence=sequence, position=of["position"][order],
        velocity=of["velocity"][order], extra=of["extra"][order], images=images,
        step=step_no,
        step_stamp_ns=(sf["stamp.sec"][sorder, 0].astype(np.int64) * 1_000_000_000 + sf["stamp.nanosec"][sorder, 0]),
        step_obs_index=step_obs.astype(np.int64), next_obs_index=nxt,
        base_action=actions("base_action"), residual=actions("residual"), command=command,
        exploration=sf["exploration"][sorder, 0].astype(bool),
        weights_version=sf["weights_version"][sorder, 0], safety_flags=sf["safety_flags"][sorder, 0],
        latency=sf["latency"][sorder, 0])


def is_episode_dir(path: Path) -> bool:
    return path.is_dir() and path.name.startswith("episode_")


IMPORT_HINT = "resfit-ros bags import-raw {path} --out EPISODES_DIR [--base BASE]"


def is_raw_bag(path: str | Path) -> bool:
    """A rosbag2 directory (metadata.yaml) that is not one of the project's episode bags, e.g. the
    output of `ros2 bag record` (converted by bags/raw_record.py)."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file() or is_episode_dir(path):
        return False
    try:
        info = read_metadata(path)
    except BagError:
        return False
    custom = info.get("custom_data")
    return not (isinstance(custom, dict) and str(custom.get("format", "")) == FORMAT_VERSION)


def raw_bag_hint(path: str | Path) -> str:
    """The problem text for a raw recording found where episode bags were expected."""
    return ("raw rosbag2 recording (ros2 bag record), not an episode bag: import it with `"
            + IMPORT_HINT.format(path=path) + "`")


def store_folders(root: str | Path) -> list[Path]:
    """`root` and its robot folders. An episode store holds the episode bags of one robot directly
    and those of a fleet in one folder per robot (`robot_0/episode_...`, `robot_1/...`: each robot's
    recorder keeps its own episode ids and recovers only its own bags). Hidden folders (caches) and
    raw recordings are not robot folders."""
    root = Path(root)
    if not root.is_dir():
        return []
    return [root] + [p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")
                     and not is_episode_dir(p) and not is_raw_bag(p)]


def episode_name(path: Path, root: str | Path) -> str:
    """An episode's name in its store: the bag's own name, with its robot folder in a fleet's
    (`robot_1/episode_000003_...`: two robots' episode ids overlap)."""
    return path.relative_to(root).as_posix()


def scan_episodes(root: str | Path, *, images: bool = True) -> list[tuple[Path, Episode | str]]:
    """Every episode directory under `root` and its robot folders (store_folders; sorted by name)
    with its Episode, or the problem (a string) that keeps it from loading. Never raises for one
    bad episode. A raw rosbag2 recording (`ros2 bag record`: root itself or a subdirectory) is
    listed with the problem "raw rosbag2 recording ... import it with `resfit-ros bags import-raw`"
    (bags/raw_record.py)."""
    root = Path(root)
    if not root.is_dir():
        raise BagError(root, "episode directory does not exist")
    if is_raw_bag(root):  # a `ros2 bag record` directory where episode bags were expected
        return [(root, raw_bag_hint(root))]
    out: list[tuple[Path, Episode | str]] = []
    subdirs = sorted(p for folder in store_folders(root) for p in folder.iterdir() if p.is_dir())
    out.extend((p, raw_bag_hint(p)) for p in subdirs if not is_episode_dir(p) and is_raw_bag(p))
    for path in (p for p in subdirs if is_episode_dir(p)):
        try:
            out.append((path, read_episode(path, images=images)))
        except BagError as exc:
            out.append((path, exc.problem))
        except Exception as exc:  # a bug or a file we did not foresee must not stop the scan
            out.append((path, f"unreadable ({type(exc).__name__}: {exc})"))
    return out


def load_episodes(root: str | Path, *, success_only: bool = False, images: bool = True,
                  on_problem: Callable[[Path, str], None] | None = None) -> list[Episode]:
    """The loadable episodes under `root` (optionally only the successful ones); each bad one is
    passed to `on_problem(path, problem)` and skipped."""
    episodes = []
    for path, item in scan_episodes(root, images=images):
        if isinstance(item, str):
            if on_problem is not None:
                on_problem(path, item)
        elif not success_only or item.success:
            episodes.append(item)
    return episodes


def iter_messages(path: str | Path, topics: list[str] | None = None) -> Iterator[tuple[str, int, object]]:
    """(topic, log time ns, decoded rosbags message) of any bag directory (also an .incomplete
    one that was closed), in file order per topic. For diagnosis and tests, not speed. A
    node-relative name in `topics` means the topic at the root (types.bag_topic)."""
    path = Path(path)
    info = read_metadata(path)
    types = topic_types(path, info)
    topics = [t.bag_topic(tp) for tp in topics] if topics is not None else None
    wanted = set(topics) if topics is not None else set(types)
    raw = raw_messages(path, info, wanted)
    store = t.typestore()
    for topic in (topics or sorted(wanted)):
        msgtype = types.get(topic, ("", ""))[0]
        if topic in raw and raw[topic] and msgtype not in store.types:
            raise BagError(path, f"unknown message type '{msgtype}' on {topic}")
        for stamp, data in raw.get(topic, []):
            yield topic, stamp, store.deserialize_cdr(data, msgtype)
