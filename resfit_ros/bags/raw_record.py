"""Bags from `ros2 bag record`: raw robot topics -> the project's episodes. No rclpy.

A rosbag2 directory (mcap or sqlite3) recorded with the standard recorder on a robot, holding
only the robot's own topics:

    camera Images (robot description `cameras`), JointState (`joint_state_topics`),
    task-state JointState (synchronizer `extra_state_topics`), the controllers' commands
    (std_msgs/Float64MultiArray on /<controller>/commands, one per joint group, no header),
    /resfit/episode_status (the labels), optionally /clock and /resfit/step,

is turned into the `Episode`s the project's own recording of the same run gives:

* Observations: every camera / joint-state / task-state message goes, in log-time order, through
  `core.synchronizer.SynchronizerCore`, the code the live synchronizer node runs, with the synchronizer's
  parameters (config/sim.yaml section `synchronizer` by default). The synchronizer's `now` is
  the clock the live node would have read (`clock=`): `log` = the bag's log (receive) time, when
  the stamps are on the same clock (a robot on the system clock, or `ros2 bag record
  --use-sim-time`); `clock` = the newest /clock message received before the message (simulation
  recorded with /clock); `stamps` = the newest stamp received so far (simulation without /clock);
  `auto` picks `log` when the joint-state stamps lie within `clock_jump_s` of their log times,
  else `clock` when /clock was recorded, else `stamps`.
* Episodes: split by EpisodeStatus. Episode N starts at its first RUNNING status and ends at its
  first status with state != RUNNING carrying a label or `aborted`; commands are the policy's
  until the next status (the reset's RESETTING: homing commands are not the policy's; the window
  opens slightly before RUNNING, see `_command_windows`), at most
  `late_command_window_s` after the label (a policy still acting on the observation it had when
  the label was published, as the project recorder keeps step records for `finish_delay_s`).
* Steps: without /resfit/step, the commands of all controller groups are assembled into one
  command per control step (a "command set": one message per group, log time = the first). Which
  observation a command acted on (`steps=`): "lockstep" (the simulator steps once per command:
  an episode's n commands act on n consecutive observations, the start found by aligning the
  whole episode against the receive times, see `_lockstep_alignment`) or "time" (a robot
  streaming observations: the latest observation whose FIRST input was received at or before
  the command; not the message that completed the set, which the recorder may receive after the
  command). "auto" = "lockstep" when the parameter file's `sim_robot` section says `lockstep:
  true`. The first step acts on the newest observation from before the episode started, like
  the live residual node; an episode with fewer steps than the episode manager counted
  (EpisodeStatus.steps at the label), or that does not fit the lockstep rule, is a problem, not
  an episode. With /resfit/step in the bag, its records are the steps (base action, residual,
  command, flags) and each is matched to the replayed observation with its stamp
  (StepRecord.header.stamp = the observation's stamp).
* Base actions are not in a raw bag: `import_raw_bag` recomputes them with the frozen base
  (`learning.from_bags.demo_base_actions`, cached in `<out>/.base_actions`, as for demos) and
  stores residual = command - base; without a base the steps carry only the command (like demos).

`read_raw_bag` returns the Episodes (each transition's observation, command, label, next
observation); `import_raw_bag` writes them as episode bags (`resfit-ros bags import-raw`).

A graph started in a namespace (`namespace:=robot_a`) records `/robot_a/joint_states` and so on:
`namespace=` resolves the node-relative names (resfit_ros/names.py) in it; the episode bags hold
the topics as at the root, like every episode bag.
"""
from __future__ import annotations

import bisect
import dataclasses
import datetime as _dt
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from resfit_ros import names
from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.bags.errors import BagError
from resfit_ros.bags.reader import (IMPORT_HINT, Episode, check_types, is_raw_bag, raw_bag_hint, raw_messages,
                                    read_metadata, topic_types)
from resfit_ros.bags.writer import FORMAT_VERSION, EpisodeWriter, episode_dir_name
from resfit_ros.config import load_config
from resfit_ros.core.observation import ObservationData
from resfit_ros.core.synchronizer import INPUT_CAMERA, INPUT_EXTRA, SynchronizerConfig, SynchronizerCore
from resfit_ros.robot import RobotDescription, config_dir

__all__ = ["CLOCK_MODES", "IMPORT_HINT", "STEP_RULES", "ImportResult", "RawRecording", "import_raw_bag", "is_raw_bag",
           "load_sync_config", "lockstep_from_config", "raw_bag_hint", "read_raw_bag"]

CLOCK_MODES = ("auto", "log", "clock", "stamps")
STEP_RULES = ("auto", "lockstep", "time")
FLOAT64_MULTI_ARRAY = "std_msgs/msg/Float64MultiArray"
CLOCK_TYPE = "rosgraph_msgs/msg/Clock"
IMPORT_SOURCE = "raw_bag"          # custom_data["source"] of an imported episode bag
# event priorities at equal log times: the clock first, then inputs, labels, commands, records
_P_CLOCK, _P_INPUT, _P_STATUS, _P_COMMAND, _P_STEP = range(5)


@dataclass(frozen=True)
class RawTopics:
    """The project's topic names in a raw bag recorded from a graph in `namespace` ('' = root)."""

    namespace: str = ""

    def __call__(self, name: str) -> str:
        return names.resolve(name, self.namespace)

    @property
    def status(self) -> str:
        return self(names.EPISODE_STATUS)

    @property
    def steps(self) -> str:
        return self(names.STEP_RECORD)

    @property
    def clock(self) -> str:
        return self(names.SIM_CLOCK)      # the simulated graphs keep their clock in their namespace

    def commands(self, robot: RobotDescription) -> dict[str, str]:
        """command topic -> joint group."""
        return {self(names.CONTROLLER_COMMANDS.format(controller=c)): g for g, c in robot.controllers.items()}

    def robot(self, robot: RobotDescription) -> RobotDescription:
        """`robot` with its camera and joint-state topics as the bag names them."""
        return dataclasses.replace(robot, cameras={c: self(tp) for c, tp in robot.cameras.items()},
                                   joint_state_topics=tuple(self(tp) for tp in robot.joint_state_topics))

    def sync_config(self, cfg: SynchronizerConfig) -> SynchronizerConfig:
        """`cfg` with its task-state topics as the bag names them."""
        return dataclasses.replace(cfg, extra_state_topics=[self(tp) for tp in cfg.extra_state_topics])

    def in_episode_bag(self, topic: str) -> str:
        """A topic of this bag under its episode-bag name: out of the namespace, resolved at the root."""
        prefix = self("")
        return "/" + topic[len(prefix):] if topic.startswith(prefix) else topic


@dataclass
class RawRecording:
    """What `read_raw_bag` found in one raw bag."""

    path: Path
    clock: str                                 # the clock mode used for the synchronizer's `now`
    steps_rule: str                            # "lockstep", "time" or "records" (/resfit/step)
    episodes: list[Episode]                    # labelled (or aborted) episodes, in id order
    problems: list[tuple[int, str]]            # (episode id, why it is not an episode) for the others
    observations: list[ObservationData]        # every observation the synchronizer emitted
    emitted_log_ns: np.ndarray                 # (N,) log time of the message that completed each set
    first_input_log_ns: np.ndarray             # (N,) log time of the first-received message of each set
    sync_stats: dict[str, Any]                 # the synchronizer's counters after the replay
    rejected: dict[str, int]                   # JointState/assembly rejections by reason
    counts: dict[str, int] = field(default_factory=dict)  # command sets, dropped repeats, incomplete ones
    inputs: dict[str, list[tuple[int, int, memoryview]]] = field(default_factory=dict)
    """input topic -> [(header stamp, log time, CDR bytes)]: the raw messages (for import)."""
    input_types: dict[str, str] = field(default_factory=dict)
    statuses: dict[int, list[tuple[int, memoryview]]] = field(default_factory=dict)
    """episode id -> [(header stamp, CDR bytes)] of its statuses from RUNNING to the label."""
    topics: RawTopics = field(default_factory=RawTopics)   # how the bag names the project's topics


def load_sync_config(config: SynchronizerConfig | str | Path | None = None) -> SynchronizerConfig:
    """The synchronizer's parameters: a SynchronizerConfig, a parameter YAML (its `synchronizer`
    section, checked like the node does), or None = the package's config/sim.yaml."""
    if isinstance(config, SynchronizerConfig):
        return config
    path = Path(config) if config is not None else config_dir() / "sim.yaml"
    return load_config(SynchronizerConfig, path, "synchronizer")


def lockstep_from_config(config: SynchronizerConfig | str | Path | None) -> bool:
    """Does the parameter file describe the lockstep simulator (`sim_robot: lockstep: true`)?"""
    if isinstance(config, SynchronizerConfig):
        return False
    from resfit_ros.config import read_parameters

    path = Path(config) if config is not None else config_dir() / "sim.yaml"
    return bool(read_parameters(path, "sim_robot").get("lockstep", False)) if _has_section(path, "sim_robot") else False


def _has_section(path: Path, section: str) -> bool:
    import yaml

    from resfit_ros.config import section_keys

    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(doc, dict) and any(key in doc for key in section_keys(section)[1:])


def _stamp(header_stamp) -> int:
    return int(header_stamp.sec) * 1_000_000_000 + int(header_stamp.nanosec)


def _header_stamp(data: memoryview, path: Path, topic: str) -> int:
    """header.stamp of a CDR message whose first field is a std_msgs/Header, without decoding it."""
    if len(data) < 12 or data[1] not in (0, 1):
        raise BagError(path, f"corrupt message on {topic}: not CDR with a header")
    sec, nanosec = struct.unpack_from("<iI" if data[1] == 1 else ">iI", data, 4)
    return int(sec) * 1_000_000_000 + int(nanosec)


def _topics_needed(path: Path, topics: dict[str, tuple[str, str]], counts: dict[str, int],
                   core: SynchronizerCore, robot: RobotDescription, bag: RawTopics) -> tuple[bool, dict[str, str]]:
    """Check the bag has what an episode needs; returns (has /resfit/step, command topic -> group).
    `core` and `robot` name their topics as the bag does (RawTopics)."""
    def present(topic: str) -> bool:
        return topic in topics and counts.get(topic, 1) > 0

    def check_type(topic: str, expected: str) -> None:
        if topics[topic][0] != expected:
            raise BagError(path, f"{topic} has type {topics[topic][0]}, expected {expected}")

    if not present(bag.status):
        raise BagError(path, f"no {bag.status}: label the episodes first (record the episode "
                             f"manager's {bag.status} with the raw topics; it marks where each "
                             "episode starts and ends and carries its success/failure label)")
    for topic, kind in zip(core.topics, core.kinds):
        if present(topic):
            check_type(topic, t.IMAGE if kind == INPUT_CAMERA else t.JOINT_STATE)
            continue
        if kind == INPUT_CAMERA:
            raise BagError(path, f"no camera images on {topic}, but the synchronizer config uses the cameras "
                                 "(use_cameras: true): record the camera topics, or convert with a "
                                 "state-only synchronizer config (use_cameras: false, --no-cameras)")
        if topic in robot.joint_state_topics:
            raise BagError(path, f"no joint states on {topic} (joint_state_topics of robot "
                                 f"'{robot.name}'): observations cannot be built without them; record it")
        raise BagError(path, f"no task state on {topic} (synchronizer extra_state_topics): record it, "
                             "or convert with a synchronizer config without it")
    has_steps = present(bag.steps)
    command_topics = bag.commands(robot)
    if not has_steps:
        missing = [tp for tp in command_topics if not present(tp)]
        if len(missing) == len(command_topics):
            raise BagError(path, f"no controller commands ({', '.join(command_topics)}) and no "
                                 f"{bag.steps}: the actions are missing; record the controllers' "
                                 "command topics")
        if missing:
            raise BagError(path, f"controller commands missing on {', '.join(missing)}: a step's command "
                                 "needs every joint group")
        for tp in command_topics:
            check_type(tp, FLOAT64_MULTI_ARRAY)
    if present(bag.clock):
        check_type(bag.clock, CLOCK_TYPE)
    return has_steps, command_topics


def _clock_mode(clock: str, js_events: list[tuple[int, int]], has_clock: bool, clock_jump_ns: int) -> str:
    if clock not in CLOCK_MODES:
        raise ValueError(f"clock must be one of {CLOCK_MODES}, got {clock!r}")
    if clock != "auto":
        return clock
    if js_events:
        offset = np.median([log - stamp for log, stamp in js_events])
        if abs(offset) <= clock_jump_ns:
            return "log"
    return "clock" if has_clock else "stamps"


def _message_counts(info: dict) -> dict[str, int]:
    out = {}
    for entry in info.get("topics_with_message_count") or []:
        try:
            out[str(entry["topic_metadata"]["name"])] = int(entry["message_count"])
        except (KeyError, TypeError, ValueError):
            continue
    return out


_Event = tuple[int, int, int, int, str, memoryview]   # (log time, priority, topic no, k, topic, CDR bytes)
_Decode = Callable[[Any, str, str], Any]            # (CDR bytes, msgtype, topic) -> message


@dataclass(frozen=True)
class _RawBag:
    """A raw bag checked to hold what an episode needs, with its topics as the bag names them."""

    path: Path
    cfg: SynchronizerConfig            # task-state topics as the bag names them (RawTopics)
    robot: RobotDescription            # camera and joint-state topics as the bag names them
    topics: RawTopics
    core: SynchronizerCore             # fresh: the replay feeds it every input
    steps_rule: str                    # "lockstep" or "time": the rule when there is no /resfit/step
    has_steps: bool                    # /resfit/step recorded: its records are the steps
    has_clock: bool
    command_topics: dict[str, str]     # command topic -> joint group
    input_types: dict[str, str]        # input topic -> its message type
    raw: dict[str, list[tuple[int, memoryview]]]   # wanted topic -> [(log time, CDR bytes)]


class _Replay(NamedTuple):
    """What the synchronizer emitted from the bag's inputs, and the commands and records beside them."""

    observations: list[ObservationData]
    emitted_log: list[int]             # log time of the message that completed each observation
    first_input_log: list[int]         # log time of the first-received input of each observation
    commands: list[tuple[int, str, np.ndarray]]   # (log time, joint group, command)
    records: list[tuple[int, Any]]     # (log time, StepRecord)


def read_raw_bag(path: str | Path, *, sync_config: SynchronizerConfig | str | Path | None = None,
                 robot: RobotDescription | str | Path | None = None, clock: str = "auto", steps: str = "auto",
                 images: bool = True, late_command_window_s: float = 0.3, namespace: str = "") -> RawRecording:
    """Episodes of a bag recorded with `ros2 bag record` from the raw topics (see the module doc).

    namespace: the ROS namespace the robot's graph ran in ('' = the root): the bag's topics are
    the node-relative names resolved in it (`/robot_a/joint_states`).

    steps: how commands are matched to observations without /resfit/step: "lockstep" (the robot
    steps once per command: the simulator), "time" (a robot streaming at the control rate), or
    "auto" = "lockstep" when the parameter file's `sim_robot` section says `lockstep: true`.

    Raises BagError (path + what is missing) when the bag cannot give any episode: no labels, no
    joint states, no cameras the synchronizer needs, no commands. Episodes that cannot be used
    (no label, no step, no observation) are listed in `problems`, the others in `episodes`.
    """
    bag = _open_raw_bag(Path(path), sync_config, robot, steps, namespace)
    decode = _cdr_decoder(bag.path)
    events = _replay_events(bag)
    # first pass, cheap: the input stamps (the clock mode depends on them) and the episode windows
    inputs, reference_stamps, statuses = _scan_inputs_and_statuses(events, bag, decode)
    mode = _clock_mode(clock, reference_stamps, bag.has_clock, int(round(bag.cfg.clock_jump_s * 1e9)))
    if mode == "clock" and not bag.has_clock:
        raise BagError(bag.path, f"clock='clock' but the bag has no {bag.topics.clock}")
    windows = _episode_windows(statuses, int(round(late_command_window_s * 1e9)))
    if not windows:
        raise BagError(bag.path, f"{bag.topics.status} never reports an episode RUNNING: no episode in this bag")
    replay = _replay(events, bag, decode, mode, _first_receive_times(inputs),
                     _image_keeper(windows) if images else None)
    rec = _raw_recording(bag, mode, replay, inputs)
    step_lists = _step_lists(rec, bag, windows, replay)
    rec.statuses = {eid: [(_stamp(s.header.stamp), d) for s, d in win["statuses"]]
                    for eid, win in sorted(windows.items())}
    rec.episodes, rec.problems = _episodes_and_problems(rec, windows, step_lists, bag.robot, images)
    return rec


def _open_raw_bag(path: Path, sync_config: SynchronizerConfig | str | Path | None,
                  robot: RobotDescription | str | Path | None, steps: str, namespace: str) -> _RawBag:
    """The checked raw bag: its topics as it names them and its wanted messages (BagError: no episode)."""
    if not path.is_dir():
        raise BagError(path, "no such bag directory")
    info = read_metadata(path)
    custom = info.get("custom_data")
    if isinstance(custom, dict) and str(custom.get("format", "")) == FORMAT_VERSION:
        raise BagError(path, "this is an episode bag of the project, not a raw recording: read it with "
                             "read_episode / `resfit-ros bags`")
    cfg = load_sync_config(sync_config)
    if steps not in STEP_RULES:
        raise ValueError(f"steps must be one of {STEP_RULES}, got {steps!r}")
    if steps == "auto":
        steps = "lockstep" if lockstep_from_config(sync_config) else "time"
    if robot is None:
        robot = cfg.robot_description
    if not isinstance(robot, RobotDescription):
        robot = RobotDescription.load(robot)
    bag_topics = RawTopics(namespace)
    robot, cfg = bag_topics.robot(robot), bag_topics.sync_config(cfg)    # every topic as the bag names it
    core = SynchronizerCore(cfg, robot)
    topics = topic_types(path, info)
    counts = _message_counts(info)
    check_types(path, topics, {bag_topics.status: t.EPISODE_STATUS, bag_topics.steps: t.STEP_RECORD})
    has_steps, command_topics = _topics_needed(path, topics, counts, core, robot, bag_topics)
    has_clock = bag_topics.clock in topics and counts.get(bag_topics.clock, 1) > 0
    wanted = set(core.topics) | {bag_topics.status}
    wanted |= {bag_topics.steps} if has_steps else set(command_topics)
    if has_clock:
        wanted.add(bag_topics.clock)
    input_types = {tp: (t.IMAGE if kind == INPUT_CAMERA else t.JOINT_STATE)
                   for tp, kind in zip(core.topics, core.kinds)}
    return _RawBag(path=path, cfg=cfg, robot=robot, topics=bag_topics, core=core, steps_rule=steps, has_steps=has_steps,
                   has_clock=has_clock, command_topics=command_topics, input_types=input_types,
                   raw=raw_messages(path, info, wanted))


def _cdr_decoder(path: Path) -> _Decode:
    """decode(data, msgtype, topic) -> the message; a corrupt one raises BagError naming the topic."""
    store = t.typestore()

    def decode(data, msgtype: str, topic: str):
        try:
            return store.deserialize_cdr(data, msgtype)
        except Exception as exc:  # rosbags raises several types for bad CDR
            raise BagError(path, f"corrupt {msgtype} message on {topic}: {exc}") from None
    return decode


def _replay_events(bag: _RawBag) -> list[_Event]:
    """Every wanted message as (log time, priority, topic no, k, topic, CDR bytes), in replay order."""
    topics = bag.topics
    events: list[_Event] = []
    for topic_no, topic in enumerate(sorted(bag.raw)):
        if topic == topics.clock:
            prio = _P_CLOCK
        elif topic in bag.core.topics:
            prio = _P_INPUT
        elif topic == topics.status:
            prio = _P_STATUS
        elif topic == topics.steps:
            prio = _P_STEP
        else:
            prio = _P_COMMAND
        events.extend((int(log), prio, topic_no, k, topic, data) for k, (log, data) in enumerate(bag.raw[topic]))
    events.sort(key=lambda e: e[:4])
    return events


def _scan_inputs_and_statuses(events: list[_Event], bag: _RawBag, decode: _Decode) -> tuple[
        dict[str, list[tuple[int, int, memoryview]]], list[tuple[int, int]], list[tuple[int, Any, memoryview]]]:
    """(input topic -> [(stamp, log, CDR bytes)], [(log, stamp)] of the reference input, [(log, status, CDR bytes)])."""
    inputs: dict[str, list[tuple[int, int, memoryview]]] = {tp: [] for tp in bag.core.topics}
    reference_topic = bag.core.topics[bag.core.reference_index]
    reference_stamps: list[tuple[int, int]] = []
    statuses: list[tuple[int, Any, memoryview]] = []
    for log, prio, topic_no, k, topic, data in events:
        if prio == _P_INPUT:
            stamp = _header_stamp(data, bag.path, topic)
            inputs[topic].append((stamp, log, data))
            if topic == reference_topic:
                reference_stamps.append((log, stamp))
        elif prio == _P_STATUS:
            statuses.append((log, decode(data, t.EPISODE_STATUS, topic), data))
    return inputs, reference_stamps, statuses


def _image_keeper(windows: dict[int, dict]) -> Callable[[int, list[int]], bool]:
    """needed(i, emission log times): can observation i be part of an episode (only those keep images)?"""
    margin = 1_000_000_000   # receive-time slack around a window: out-of-order arrivals, the final observation
    spans = sorted((w["start"] - margin, min(w["end"], np.iinfo(np.int64).max - margin) + margin)
                   for w in windows.values())
    starts = [a for a, _ in spans]
    ends = sorted(e for _, e in spans)

    def needed(i: int, emitted: list[int]) -> bool:
        """Can observation i be part of an episode: emitted within 1 s of a window, the last one
        before that (the first step acts on it after an idle robot) or the first after it? Known
        once observation i+1 was emitted. Only those keep their images."""
        e = emitted[i]
        j = bisect.bisect_right(spans, (e, np.iinfo(np.int64).max)) - 1
        if j >= 0 and e <= spans[j][1]:
            return True
        if i + 1 < len(emitted) and bisect.bisect_right(starts, emitted[i + 1]) > bisect.bisect_right(starts, e):
            return True
        prev = emitted[i - 1] if i > 0 else np.iinfo(np.int64).min
        return bisect.bisect_left(ends, e) > bisect.bisect_left(ends, prev)
    return needed


def _first_receive_times(inputs: dict[str, list[tuple[int, int, memoryview]]]) -> dict[str, dict[int, int]]:
    """input topic -> {stamp: first log time}: the synchronizer takes the first of duplicates."""
    first_log: dict[str, dict[int, int]] = {}
    for topic, msgs in inputs.items():
        seen = first_log[topic] = {}
        for stamp, log, _ in msgs:
            seen.setdefault(stamp, log)
    return first_log


def _replay(events: list[_Event], bag: _RawBag, decode: _Decode, mode: str, first_log: dict[str, dict[int, int]],
            keep_images: Callable[[int, list[int]], bool] | None) -> _Replay:
    """The synchronizer core's observations of the events (`now` on the `mode` clock), commands and records."""
    # keep_images None (images=False): no observation keeps its images, the last one included
    core = bag.core
    source_topics = [tp for tp, kind in zip(core.topics, core.kinds) if kind != INPUT_EXTRA]
    observations: list[ObservationData] = []
    emitted_log: list[int] = []
    first_input_log: list[int] = []
    commands: list[tuple[int, str, np.ndarray]] = []
    records: list[tuple[int, Any]] = []
    clock_now = 0
    newest_stamp = None
    for log, prio, topic_no, k, topic, data in events:
        if prio == _P_CLOCK:
            c = decode(data, CLOCK_TYPE, topic).clock
            clock_now = _stamp(c)
        elif prio == _P_INPUT:
            msg = decode(data, bag.input_types[topic], topic)
            stamp = _stamp(msg.header.stamp)
            newest_stamp = stamp if newest_stamp is None else max(newest_stamp, stamp)
            now = log if mode == "log" else (clock_now if mode == "clock" else newest_stamp)
            for index in core.indices_of(topic):
                for obs in core.offer(index, msg, now):
                    observations.append(obs)
                    emitted_log.append(log)
                    stamps = obs.source_stamps_ns   # cameras, then joint-state inputs (assemble_observation)
                    first_input_log.append(min([first_log[tp].get(st, log) for tp, st in zip(source_topics, stamps)]
                                               + [log]) if len(stamps) == len(source_topics) else log)
                    n = len(observations)
                    if n >= 2 and (keep_images is None or not keep_images(n - 2, emitted_log)):
                        observations[n - 2].images = {}   # bounded memory on long bags
        elif prio == _P_STEP:
            records.append((log, decode(data, t.STEP_RECORD, topic)))
        elif prio == _P_COMMAND:
            commands.append((log, bag.command_topics[topic],
                             np.asarray(decode(data, FLOAT64_MULTI_ARRAY, topic).data, dtype=np.float64)))
    if observations and keep_images is None:
        observations[-1].images = {}
    return _Replay(observations, emitted_log, first_input_log, commands, records)


def _raw_recording(bag: _RawBag, mode: str, replay: _Replay,
               inputs: dict[str, list[tuple[int, int, memoryview]]]) -> RawRecording:
    """The RawRecording of the replay, still without episodes; BagError when nothing was emitted."""
    core = bag.core
    rec = RawRecording(path=bag.path, clock=mode, steps_rule="records" if bag.has_steps else bag.steps_rule,
                       episodes=[], problems=[], observations=replay.observations,
                       emitted_log_ns=np.asarray(replay.emitted_log, dtype=np.int64),
                       first_input_log_ns=np.asarray(replay.first_input_log, dtype=np.int64),
                       sync_stats=core.sync.stats(), rejected=dict(core.rejected), inputs=inputs,
                       input_types=bag.input_types, topics=bag.topics)
    if not replay.observations:
        drops = {k: v for k, v in rec.sync_stats.items() if k.startswith('dropped/') and v}
        raise BagError(bag.path, f"the synchronizer emitted no observation from {', '.join(core.topics)} "
                                 f"(clock '{mode}'; drops: {drops}, rejected: {rec.rejected or 'none'})")
    return rec


def _step_lists(rec: RawRecording, bag: _RawBag, windows: dict[int, dict],
                replay: _Replay) -> dict[int, list[dict] | str]:
    """episode id -> its steps (or why they do not fit), from the step records or the command sets."""
    if bag.has_steps:
        return _steps_from_records(replay.records, windows, rec)
    sets, rec.counts["incomplete_command_sets"], rec.counts["bad_commands"] = _command_sets(replay.commands, bag.robot)
    rec.counts["command_sets"] = len(sets)
    return _steps_from_commands(sets, windows, rec, bag.cfg.control_rate_hz)


def _episodes_and_problems(rec: RawRecording, windows: dict[int, dict], step_lists: dict[int, list[dict] | str],
              robot: RobotDescription, images: bool) -> tuple[list[Episode], list[tuple[int, str]]]:
    """(episodes, (episode id, why not an episode) for the others) of the windows, in id order."""
    episodes: list[Episode] = []
    problems: list[tuple[int, str]] = []
    for eid, win in sorted(windows.items()):
        if win["terminal"] is None:
            problems.append((eid, "no label: the episode was never labelled success/failure or aborted"
                                  + (" (the bag ends while it runs)" if win["open_at_end"] else "")))
            continue
        if isinstance(step_lists.get(eid), str):
            problems.append((eid, step_lists[eid]))
            continue
        try:
            episodes.append(_episode(rec, eid, win, step_lists.get(eid, []), robot, images))
        except ValueError as exc:
            problems.append((eid, str(exc)))
    return episodes, problems


def _episode_windows(statuses: list[tuple[int, Any, memoryview]], late_ns: int) -> dict[int, dict]:
    """episode id -> its window: start/end log times, RUNNING and terminal status, its statuses."""
    windows: dict[int, dict] = {}
    current = None  # the window of the episode that started last
    prev_log = None
    for log, s, data in statuses:
        eid = int(s.episode_id)
        running = s.state == convert.STATE_RUNNING
        if running and eid not in windows:
            if current is not None and current["terminal"] is None:
                current["end"] = log  # a new episode started before the old one was labelled
            current = windows[eid] = {"id": eid, "start": log, "running": s, "terminal": None, "end": None,
                                      "statuses": [], "prev_status": prev_log}
        prev_log = log
        if current is None or eid != current["id"]:
            continue
        if current["terminal"] is None:
            if current["end"] is None:
                current["statuses"].append((s, data))
                if not running and (s.label != convert.LABEL_NONE or s.aborted):
                    current["terminal"] = s
                    current["end"] = log + late_ns
        elif log < current["end"] and s.state != current["terminal"].state:
            current["end"] = log  # the reset (homing commands) or an e-stop begins
    for w in windows.values():
        w["open_at_end"] = w["end"] is None
        if w["end"] is None:
            w["end"] = int(np.iinfo(np.int64).max)
    return windows


def _command_sets(commands: list[tuple[int, str, np.ndarray]], robot: RobotDescription):
    """[(first log time, (dof,) command)] from the per-group messages; (sets, incomplete, bad)."""
    groups = robot.group_indices()
    sets: list[tuple[int, np.ndarray]] = []
    current: dict[str, np.ndarray] = {}
    first = None
    incomplete = bad = 0
    for log, group, data in commands:
        if data.shape != (len(groups[group]),) or not np.all(np.isfinite(data)):
            bad += 1   # the controller rejects it too (wrong size or NaN): not a command sent
            continue
        if group in current:  # a new burst began before the previous one had every group
            incomplete += 1
            current, first = {}, None
        if first is None:
            first = log
        current[group] = data
        if len(current) == len(groups):
            cmd = np.zeros(robot.dof)
            for g, idx in groups.items():
                cmd[idx] = current[g]
            sets.append((first, cmd))
            current, first = {}, None
    return sets, incomplete + (1 if current else 0), bad


def _acted_on(rec: RawRecording) -> np.ndarray:
    """(N,) non-decreasing: the receive time of the first input of each observation (running max).
    A command acts on the latest observation whose first input was received at or before it."""
    return np.maximum.accumulate(rec.first_input_log_ns) if len(rec.first_input_log_ns) else rec.first_input_log_ns


def _command_windows(windows: dict[int, dict], acted_on: np.ndarray) -> dict[int, tuple[int, int]]:
    """episode id -> (after, until): its commands are those received in (after, until].

    The RUNNING status may reach the recorder a few milliseconds AFTER the policy's first command
    (two topics, two paths through the middleware), so the window opens earlier: right after the
    first input of the observation the first step acts on (the newest one when the RUNNING status
    was received), but never before the status preceding RUNNING was received (the end of the
    reset: the homing commands come before it). In the lockstep simulator a late homing command
    cannot slip in either: each command makes the simulator step, so the inputs of the
    observation it produced come after it. Windows never overlap: an episode's late commands stop
    where the next episode's window opens."""
    out: dict[int, tuple[int, int]] = {}
    for eid, win in windows.items():
        k = int(np.searchsorted(acted_on, win["start"], side="right")) - 1
        bounds = [b for b in (win["prev_status"], int(acted_on[k]) if k >= 0 else None) if b is not None]
        out[eid] = (max(bounds) if bounds else win["start"] - 1, win["end"])
    ordered = sorted(out, key=lambda e: windows[e]["start"])
    for a, b in zip(ordered, ordered[1:]):
        out[a] = (out[a][0], min(out[a][1], out[b][0]))
    return out


def _steps_from_commands(sets, windows, rec: RawRecording, control_rate_hz: float) -> dict[int, list[dict] | str]:
    """The steps of each episode from the command sets in its window (a problem string when the
    lockstep rule does not fit the episode)."""
    acted_on = _acted_on(rec)
    set_logs = [log for log, _ in sets]          # sorted: commands are taken in log-time order
    out: dict[int, list[dict] | str] = {}
    repeats = 0
    for eid, (after, until) in _command_windows(windows, acted_on).items():
        lo, hi = bisect.bisect_right(set_logs, after), bisect.bisect_right(set_logs, until)
        mine = sets[lo:hi]
        if not mine:
            out[eid] = []
            continue
        if rec.steps_rule == "lockstep":
            obs = _lockstep_alignment(np.array([log for log, _ in mine], dtype=np.int64), acted_on, rec,
                                      int(round(1e9 / control_rate_hz)))
            if isinstance(obs, str):
                out[eid] = obs
                continue
            pairs = list(zip(obs, mine))
        else:
            pairs = []
            for log, cmd in mine:
                k = int(np.searchsorted(acted_on, log, side="right")) - 1
                if k < 0:
                    continue
                if pairs and pairs[-1][0] >= k:
                    repeats += 1   # another command on the same observation: the policy ticked once
                    continue
                pairs.append((k, (log, cmd)))
        out[eid] = [{"obs": int(k), "command": cmd,
                     "latency": max(0, log - int(rec.emitted_log_ns[k])) / 1e9}   # approximate: two receivers
                    for k, (log, cmd) in pairs]
    rec.counts["repeated_commands"] = repeats
    return out


def _lockstep_alignment(commands: np.ndarray, acted_on: np.ndarray, rec: RawRecording,
                        period_ns: int) -> list[int] | str:
    """Lockstep: the n command sets act on n consecutive observations k0..k0+n-1 (each command
    makes the simulator step once). k0 is the alignment with the fewest receive-time violations
    (the observation acted on first received after the command, or the one the command produced
    received before it) among k0 near the time rule's answer for the first command. The recorder
    receives commands up to ~30 ms after the observation they produced here, more than a
    simulator step, so single commands can be misplaced by time, but a whole episode shifted by
    one observation violates nearly every step while the true alignment violates a few (0-7 of
    25-31 in 40 recorded episodes). Returns the observation index of every command, or why the
    episode does not fit (reported as a problem)."""
    n, N = len(commands), len(acted_on)
    nxt = np.append(acted_on, np.iinfo(np.int64).max)   # no next observation (bag ended): no violation
    k_time = int(np.searchsorted(acted_on, commands[0], side="right")) - 1

    def violations(k0: int) -> np.ndarray:
        j = k0 + np.arange(n)
        return (nxt[j + 1] <= commands) | (acted_on[j] > commands)

    scores = sorted((int(violations(k0).sum()), k0) for k0 in range(max(0, k_time - 3), k_time + 4) if k0 + n - 1 < N)
    if not scores:
        return f"{n} commands but only {N - max(k_time, 0)} observations from the first one on (lockstep)"
    best, k0 = scores[0]
    runner_up = scores[1][0] if len(scores) > 1 else n
    late = violations(k0)
    if best > n // 4 or runner_up < best + max(2, n // 2) or (n >= 2 and late[-2:].all()):
        return (f"the {n} commands do not line up one per step with the observations (lockstep: the best "
                f"alignment breaks {best} receive-time orders, the next {runner_up}); record /resfit/step, or "
                "convert with --steps time if the robot does not step exactly once per command")
    stamps = np.array([rec.observations[k].stamp_ns for k in range(k0, k0 + n)], dtype=np.int64)
    if n > 1 and np.any(np.diff(stamps) != period_ns):
        return ("lockstep: the observations acted on are not one control period apart "
                f"(stamp steps {sorted(set(np.diff(stamps).tolist()))} ns): the robot stepped without commands")
    # a lockstep robot makes no observation nobody commanded: between the first and the last command
    # only those the commands produced (n - 1, one more if the last one's arrived before it)
    produced = int(np.sum((acted_on > commands[0]) & (acted_on <= commands[-1])))
    if produced > n or nxt[k0 + n + 1] <= commands[-1]:
        return (f"lockstep: {produced} observations arrived during the episode's {n} commands: the robot "
                "stepped without commands (convert with --steps time if it streams observations)")
    return list(range(k0, k0 + n))


def _steps_from_records(records, windows, rec: RawRecording) -> dict[int, list[dict]]:
    """Step records by episode, matched to the replayed observation with their stamp (the latest
    emitted at or before the record's log time when a stamp repeats, e.g. after a clock reset)."""
    by_stamp: dict[int, list[int]] = {}
    for i, o in enumerate(rec.observations):
        by_stamp.setdefault(o.stamp_ns, []).append(i)
    by_episode: dict[int, list] = {}
    for log, r in records:
        by_episode.setdefault(int(r.episode_id), []).append((int(r.step), log, r))
    out: dict[int, list[dict]] = {}
    for eid in windows:
        steps, seen = [], set()
        for step, log, r in sorted(by_episode.get(eid, []), key=lambda x: (x[0], x[1])):
            if step in seen:
                continue
            seen.add(step)
            stamp = _stamp(r.header.stamp)
            cands = by_stamp.get(stamp, [])
            before = [i for i in cands if rec.emitted_log_ns[i] <= log]
            obs = (before[-1] if before else cands[0]) if cands else -1
            steps.append({"obs": obs, "record": r, "log": log})
        out[eid] = steps
    return out


def _why_not_emitted(rec: RawRecording, missing: list[dict]) -> str:
    """For the first few step records whose observation the replay did not emit: which inputs of
    that stamp the bag holds and when they were received (a recorder that lost or received an input
    late reads differently from a synchronizer that dropped a complete set)."""
    parts = []
    for s in missing[:3]:
        r = s["record"]
        stamp = _stamp(r.header.stamp)
        got = []
        for topic, msgs in rec.inputs.items():
            logs = [log for st, log, _ in msgs if st == stamp]
            got.append(f"{topic} " + (f"received {len(logs)}x, first {(logs[0] - s['log']) / 1e6:+.1f} ms from the record"
                                      if logs else "never received"))
        parts.append(f"step {int(r.step)} stamp {stamp} ns: " + ", ".join(got))
    drops = {k: v for k, v in rec.sync_stats.items() if k.startswith("dropped/") and v}
    return "; ".join(parts) + f" (synchronizer drops over the bag: {drops or 'none'})"


def _episode(rec: RawRecording, eid: int, win: dict, steps: list[dict], robot: RobotDescription,
             images: bool) -> Episode:
    obs = rec.observations
    terminal = win["terminal"]
    counted = int(terminal.steps)
    if not terminal.aborted and counted and len(steps) > counted:
        # as read_episode: a labelled episode is the steps the episode manager counted before the
        # label (a lockstep robot goes on stepping until the policy hears that the episode ended)
        steps = steps[:counted]
    if steps and "record" in steps[0]:
        if any(s["obs"] < 0 for s in steps):
            missing = [s for s in steps if s["obs"] < 0]
            raise ValueError(f"{len(missing)} step records act on observations the synchronizer did not emit "
                             f"from the raw topics: {_why_not_emitted(rec, missing)}")
    if not steps:
        raise ValueError("no step: no command (or step record) between the episode's start and its label")
    T = len(steps)
    if T < counted:   # the episode manager counted the policy's step records up to the label
        raise ValueError(f"{T} steps found but the episode manager counted {counted} before the label: "
                         "commands (or step records) are missing from the bag")
    step_obs = np.array([s["obs"] for s in steps], dtype=np.int64)
    if np.any(np.diff(step_obs) <= 0):
        raise ValueError("steps do not act on increasing observations")
    lo = int(step_obs[0])
    hi = int(step_obs[-1]) + 1 if int(step_obs[-1]) + 1 < len(obs) else int(step_obs[-1])
    sel = obs[lo:hi + 1]
    dof = robot.dof
    cams = list(sel[0].images) if images else []
    if any(set(o.images) != set(cams) for o in sel):
        raise ValueError("the observations of the episode do not all have the same camera images")
    step_idx = step_obs - lo
    nxt = np.full(T, -1, dtype=np.int64)
    nxt[:-1] = step_idx[1:]
    nxt[-1] = hi - lo if hi > int(step_obs[-1]) else -1
    label = None if terminal.aborted else {convert.LABEL_SUCCESS: "success",
                                           convert.LABEL_FAILURE: "failure"}.get(int(terminal.label))
    explore = bool(win["running"].explore)
    if "record" in steps[0]:
        recs = [s["record"] for s in steps]

        def arr(name):
            rows = [np.asarray(getattr(r, name), dtype=np.float64) for r in recs]
            return np.stack(rows) if all(len(x) == dof for x in rows) else np.zeros((0, dof))
        command, base, residual = arr("command"), arr("base_action"), arr("residual")
        if command.shape[0] != T:
            raise ValueError(f"step records have commands of another length than the robot's {dof} joints")
        exploration = np.array([bool(r.exploration) for r in recs])
        weights = np.array([int(r.weights_version) for r in recs], dtype=np.uint64)
        flags = np.array([int(r.safety_flags) for r in recs], dtype=np.uint32)
        latency = np.array([float(r.latency) for r in recs])
        step_no = np.array([int(r.step) for r in recs], dtype=np.int64)
    else:
        command = np.stack([s["command"] for s in steps])
        base = residual = np.zeros((0, dof))
        exploration = np.full(T, explore)
        weights = np.zeros(T, dtype=np.uint64)
        flags = np.zeros(T, dtype=np.uint32)
        latency = np.array([s["latency"] for s in steps])
        step_no = np.arange(T, dtype=np.int64)
    metadata = {"source": IMPORT_SOURCE, "raw_bag": str(rec.path), "clock": rec.clock,
                "episode_id": str(eid), "label": label or "none", "aborted": str(bool(terminal.aborted)).lower(),
                "steps": str(T), "explore": str(explore).lower(), "robot": robot.name,
                "start_log_ns": str(win["start"]), "manager_steps": str(counted), "steps_rule": rec.steps_rule}
    ep = Episode(
        path=rec.path / f"episode_{eid:06d}", episode_id=eid, label=label, aborted=bool(terminal.aborted),
        metadata=metadata, joint_names=list(robot.joint_names), camera_names=cams,
        extra_names=list(sel[0].extra_names),
        obs_stamp_ns=np.array([o.stamp_ns for o in sel], dtype=np.int64),
        obs_sequence=np.array([o.sequence for o in sel], dtype=np.int64),
        position=np.stack([o.position for o in sel]), velocity=np.stack([o.velocity for o in sel]),
        extra=np.stack([np.asarray(o.extra, dtype=np.float64) for o in sel]),
        images={c: np.stack([o.images[c] for o in sel]) for c in cams},
        step=step_no, step_stamp_ns=np.array([sel[i].stamp_ns for i in step_idx], dtype=np.int64),
        step_obs_index=step_idx, next_obs_index=nxt, base_action=base, residual=residual, command=command,
        exploration=exploration, weights_version=weights, safety_flags=flags, latency=latency)
    ep.extras["observations"] = sel
    return ep


# --- import: raw bag -> episode bags ---------------------------------------------------------------
@dataclass
class ImportResult:
    written: list[Path]
    skipped: list[tuple[str, str]]     # (episode or bag, why)
    recording: RawRecording


def import_raw_bag(src: str | Path, out: str | Path, *, base_policy=None, base_artifact: str | Path | None = None,
                   sync_config: SynchronizerConfig | str | Path | None = None,
                   robot: RobotDescription | str | Path | None = None, clock: str = "auto", steps: str = "auto",
                   metadata: Mapping[str, object] | None = None, copy_inputs: bool = True,
                   namespace: str = "") -> ImportResult:
    """Write every usable episode of the raw bag `src` as an episode bag under `out`.

    With `base_policy` (and its `base_artifact`, whose hash keys the cache), the base action of
    every step is recomputed like for a demonstration (learning.from_bags.demo_base_actions,
    cached in `<out>/.base_actions`) and residual = command - base; without, the steps hold the
    command only (a demonstration, whose base actions the learner computes). Episodes already
    imported (same directory name) are skipped, so importing twice changes nothing. `namespace`:
    as for read_raw_bag.
    """
    # imported here: resfit_ros.learning loads torch, which reading a raw bag does not need
    from resfit_ros.learning.from_bags import demo_base_actions, file_digest

    out = Path(out)
    rec = read_raw_bag(src, sync_config=sync_config, robot=robot, clock=clock, steps=steps, images=True,
                       namespace=namespace)
    digest = file_digest(base_artifact) if base_artifact else ""
    written: list[Path] = []
    skipped = [(f"episode {eid}", why) for eid, why in rec.problems]
    for ep in rec.episodes:
        start = int(ep.metadata["start_log_ns"])
        name = episode_dir_name(ep.episode_id, _dt.datetime.fromtimestamp(start / 1e9, _dt.timezone.utc))
        if (out / name).exists():
            skipped.append((name, "exists already (imported before)"))
            continue
        ep.path = out / name
        base, residual = ep.base_action, ep.residual
        if base.shape[0] == 0 and base_policy is not None:
            base = demo_base_actions(ep, base_policy, digest, out / ".base_actions")[:ep.num_steps]
            residual = ep.command - base
        written.append(_write_episode(rec, ep, out, name, base, residual, metadata, base_artifact, copy_inputs))
    return ImportResult(written, skipped, rec)


def _write_episode(rec: RawRecording, ep: Episode, out: Path, name: str, base: np.ndarray, residual: np.ndarray,
                   metadata: Mapping[str, object] | None, base_artifact, copy_inputs: bool) -> Path:
    meta = {k: v for k, v in ep.metadata.items() if k not in ("episode_id", "label", "aborted", "steps")}
    meta.update({str(k): str(v) for k, v in (metadata or {}).items()})
    if base.shape[0]:
        meta["base_actions"] = f"recomputed with {Path(base_artifact).name}" if base_artifact else "recorded"
    observations: list[ObservationData] = ep.extras["observations"]
    first, last = observations[0].stamp_ns, observations[-1].stamp_ns
    with EpisodeWriter(out, ep.episode_id, name=name, joint_names=list(ep.joint_names), metadata=meta,
                       explore=meta.get("explore") == "true") as w:
        if copy_inputs:  # the raw inputs of these observations, bytes unchanged (re-synchronisable)
            for topic, msgs in rec.inputs.items():
                for stamp, _, data in msgs:
                    if first <= stamp <= last:
                        w.write_raw(rec.topics.in_episode_bag(topic), data, stamp, rec.input_types[topic])
        for obs in observations:
            w.write_observation(obs, inputs=False)
        for i in range(ep.num_steps):
            o = observations[int(ep.step_obs_index[i])]
            w.write_step(convert.StepData(
                step=int(ep.step[i]), observation_sequence=o.sequence, command=ep.command[i],
                base_action=base[i] if base.shape[0] else np.zeros(0),
                residual=residual[i] if residual.shape[0] else np.zeros(0),
                exploration=bool(ep.exploration[i]), weights_version=int(ep.weights_version[i]),
                safety_flags=int(ep.safety_flags[i]), latency=float(ep.latency[i])), o.stamp_ns)
        for stamp, data in rec.statuses[ep.episode_id]:
            w.write_raw(t.TOPIC_EPISODE_STATUS, data, stamp)
        return w.finish()
