"""Raw rosbag2 recordings for the raw-bag tests, written with rosbags only (no project writer).

`write_lockstep_bag` plays the simulated robot's protocol message by message: the simulator
publishes /clock, joint states, task state and the camera at each step (stamps on sim time), the
policy answers each observation with one Float64MultiArray per controller group, the episode
manager's statuses frame each episode, and the reset's homing commands follow each label. Log
times are "receive times" on a different clock (wall-like) unless `log_equals_stamp`.
`copy_bag` writes a copy without some topics (same log times), like recording fewer topics.
Topic names are those `ros2 bag record` sees from a graph at the root (or in `namespace`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader, StoragePlugin, Writer

from resfit_ros import names
from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from resfit_ros.robot import RobotDescription, config_dir

ROBOT = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
DT = 50_000_000                      # 20 Hz
WALL0 = 1_750_000_000_000_000_000    # the "receive" clock of the synthetic recorder
TASK_NAMES = ["object_x", "object_y", "object_z"]
CAMERA = names.resolve(ROBOT.cameras["head"])
TASK = names.resolve(names.TASK_STATE)
JOINT_STATES = names.resolve(names.JOINT_STATES)
EPISODE_STATUS = names.resolve(names.EPISODE_STATUS)
STEP_RECORD = names.resolve(names.STEP_RECORD)
CLOCK = names.resolve(names.SIM_CLOCK)
COMMAND_TOPICS = {g: names.resolve(names.CONTROLLER_COMMANDS.format(controller=c)) for g, c in ROBOT.controllers.items()}


@dataclass
class Truth:
    """What the synthetic run did: per episode, the stamps acted on and the commands sent."""

    episodes: dict[int, dict] = field(default_factory=dict)   # id -> {stamps, commands, label, explore}
    states: dict[int, np.ndarray] = field(default_factory=dict)  # stamp -> state vector (2*dof+3)


def _cls(name):
    return t.typestore().types[name]


def write_lockstep_bag(path: Path, episodes=((6, True, True), (4, False, False), (3, None, True)), *,
                       log_equals_stamp: bool = False, with_clock: bool = True, with_steps: bool = False,
                       skip: frozenset = frozenset(), seed: int = 0, races: bool = False,
                       late_command: bool = False, unlocked: bool = False, namespace: str = "") -> Truth:
    """episodes: (steps, success True/False/None = never labelled, explore). Returns the truth.

    namespace: the graph ran in this ROS namespace: every topic is recorded under it.
    races: the recorder receives each RUNNING status after the policy's first command, the end
    of each reset (IDLE ready) before the last homing command, and every camera image after the
    command that acted on it (all three seen on real DDS).
    late_command: in each episode the recorder receives the 3rd command only after the first
    input of the observation it produced (seen on real DDS: up to ~8 ms).
    unlocked: in each episode the simulator steps twice on its own after the 3rd step (not
    lockstep: a robot streaming observations), so the policy acts on every 3rd of those."""
    rng = np.random.default_rng(seed)
    store = t.typestore()
    w = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    w.open()
    conns = {}

    def conn(topic, msgtype):
        if topic not in conns:
            recorded = names.resolve(topic[1:], namespace)   # the root name, in the namespace
            conns[topic] = w.add_connection(recorded, msgtype, typestore=store)
        return conns[topic]

    clock = {"stamp": 0, "wall": WALL0 + 123_456, "tick_wall": WALL0, "last_log": 0}
    truth = Truth()
    state = {"q": rng.normal(scale=0.3, size=ROBOT.dof), "step": 0}

    def write(topic, msgtype, msg, delay_ns=200_000):
        clock["wall"] += delay_ns
        if topic in skip:
            return
        if log_equals_stamp:   # `ros2 bag record --use-sim-time`: receive time on the simulated clock
            log = max(clock["stamp"] + min(clock["wall"] - clock["tick_wall"], DT // 2), clock["last_log"] + 1)
        else:
            log = clock["wall"]
        clock["last_log"] = log
        w.write(conn(topic, msgtype), log, store.serialize_cdr(msg, msgtype))

    def sim_publish():
        stamp = clock["stamp"]
        hdr = convert.header_msg(stamp)
        q = state["q"]
        v = rng.normal(size=ROBOT.dof)
        task = rng.normal(size=3)
        truth.states[stamp] = np.concatenate([q, v, task]).astype(np.float32)
        if with_clock:
            write(CLOCK, "rosgraph_msgs/msg/Clock", _cls("rosgraph_msgs/msg/Clock")(clock=hdr.stamp))
        write(JOINT_STATES, t.JOINT_STATE, _cls(t.JOINT_STATE)(
            header=hdr, name=list(ROBOT.joint_names), position=q.copy(), velocity=v, effort=np.zeros(0)))
        write(TASK, t.JOINT_STATE, _cls(t.JOINT_STATE)(
            header=convert.header_msg(stamp), name=list(TASK_NAMES), position=task, velocity=np.zeros(0),
            effort=np.zeros(0)))
        img = rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)
        flush_images()
        late_images.append(convert.image_msg(img, stamp, "head_camera"))
        if not races:
            flush_images()

    late_images = []

    def flush_images():
        while late_images:
            write(CAMERA, t.IMAGE, late_images.pop(0), delay_ns=500_000)

    def sim_step(target):
        clock["stamp"] += DT
        clock["wall"] += 3_000_000
        clock["tick_wall"] = clock["wall"]
        state["q"] = np.asarray(target, dtype=np.float64).copy()
        sim_publish()

    def send(cmd):
        for g, idx in ROBOT.group_indices().items():
            write(COMMAND_TOPICS[g], "std_msgs/msg/Float64MultiArray",
                  _cls("std_msgs/msg/Float64MultiArray")(layout=convert.new_msg("std_msgs/msg/MultiArrayLayout"),
                                                         data=np.asarray(cmd[idx], dtype=np.float64)),
                  delay_ns=50_000)
        flush_images()   # races: the image of the observation acted on arrives only now

    def status(state_, eid, label=convert.LABEL_NONE, explore=False, steps=0, ready=False):
        msg = convert.new_msg(t.EPISODE_STATUS, header=convert.header_msg(clock["stamp"]), state=state_,
                              episode_id=eid, label=label, explore=explore, steps=steps, ready=ready)
        write(EPISODE_STATUS, t.EPISODE_STATUS, msg)

    status(convert.STATE_IDLE, 0, ready=True)
    clock["stamp"] = DT
    sim_publish()
    for _ in range(3):                         # idle before the first episode (homing, resets)
        clock["wall"] += 600_000_000
        sim_step(state["q"])
    for i, (steps, success, explore) in enumerate(episodes):
        eid = i + 1
        if not races:
            status(convert.STATE_RUNNING, eid, explore=explore)
        ep = truth.episodes[eid] = {"stamps": [], "commands": [], "explore": explore,
                                    "label": None if success is None else ("success" if success else "failure")}
        for k in range(steps):
            cmd = state["q"] + rng.normal(scale=0.01, size=ROBOT.dof)
            ep["stamps"].append(clock["stamp"])
            ep["commands"].append(cmd)
            clock["wall"] += 4_000_000          # the policy thinks
            if late_command and k == 2:
                sim_step(cmd)                   # the recorder gets the effect first ...
                send(cmd)                       # ... then the command
            else:
                send(cmd)
            if with_steps:
                base = cmd - 0.001
                write(STEP_RECORD, t.STEP_RECORD, convert.step_record_msg(convert.StepData(
                    step=k, observation_sequence=1000 + k, command=cmd, base_action=base, residual=cmd - base,
                    exploration=explore, weights_version=7), eid, clock["stamp"], list(ROBOT.joint_names)))
            if races and k == 0:
                status(convert.STATE_RUNNING, eid, explore=explore)
            if not (late_command and k == 2):
                sim_step(cmd)
            if unlocked and k == 2:
                for _ in range(2):
                    clock["wall"] += 20_000_000
                    sim_step(cmd)
            status(convert.STATE_RUNNING, eid, explore=explore, steps=k + 1)
        if success is None:
            break                                # the bag ends while it runs
        label = convert.LABEL_SUCCESS if success else convert.LABEL_FAILURE
        status(convert.STATE_IDLE, eid, label=label, explore=explore, steps=steps)
        clock["wall"] += 30_000_000
        status(convert.STATE_RESETTING, eid, label=label, explore=explore, steps=steps)
        home = ROBOT.home
        for h in range(3):                       # homing: commands that are not the policy's
            clock["wall"] += 50_000_000
            if races and h == 2:
                status(convert.STATE_IDLE, eid, label=label, explore=explore, steps=steps, ready=True)
            send(home)
            sim_step(home)
        if not races:
            status(convert.STATE_IDLE, eid, label=label, explore=explore, steps=steps, ready=True)
        for _ in range(2):
            clock["wall"] += 50_000_000
            sim_step(state["q"])
    flush_images()
    w.close()
    return truth


def copy_bag(src: Path, dst: Path, exclude: set[str]) -> Path:
    """A copy of the bag without the topics in `exclude`, same log times and bytes."""
    store = t.typestore()
    with Reader(src) as reader:
        w = Writer(dst, version=9, storage_plugin=StoragePlugin.MCAP)
        w.open()
        conns = {}
        for c in reader.connections:
            if c.topic not in exclude:
                conns[c.id] = w.add_connection(c.topic, c.msgtype, typestore=store)
        for c, stamp, data in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
            w.write(conns[c.id], stamp, data)
        w.close()
    return dst
