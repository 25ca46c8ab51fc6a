"""The catalogue of bad inputs: malformed messages for every subscribed topic and malformed or
wrong-state service calls, each naming the /diagnostics counter that must count it.

An entry (`BadInput`) says where the input goes (topic or service), how to build it from the
graph's current state (`Context`: the robot description, the graph's clock and the newest good
message seen on each topic, so duplicates and out-of-order stamps are relative to real traffic),
and which node must reject it with which counter (`Expect`: a DiagnosticStatus named
"resfit_ros: <node>", a key such as "rejected/joint_state_nonfinite" whose value must go up).
Entries whose consumer is not running, or that need a template message that never appeared, are
skipped, not failed.

`inject_bad_inputs(node, spin, robot)` sends every applicable entry into a running graph through
the caller's rclpy node, in rounds in which no two entries share a counter, waits for each
expected counter to rise and returns an `InjectionReport` (`.figures()` gives
`bad_inputs_rejected=<n> bad_inputs_injected=<m>`). It never clears an e-stop, never starts,
labels or resets an episode, and sends controller commands only when told the robot is simulated.
The graph is the one in the caller node's namespace (its names are node-relative): the diagnostics
read are those of the nodes in that namespace (/diagnostics is global, each status names its
node's namespace), the time that of the graph's simulator when it has one.

The catalogue (`catalogue(robot)`), by consumer:
  synchronizer    joint states: missing joint, names/values length mismatch, unknown name,
                  duplicate name, NaN position, inf velocity, no velocities, empty; stamps far in the
                  future, far in the past, out of order, duplicate. Camera: unknown encoding,
                  truncated data, step too small, empty image; future and duplicate stamps. Task
                  state: NaN, names/values mismatch, names changed.
  episode_manager the malformed joint states above (those it needs: it takes positions only);
                  step records: duplicate, of another episode while one runs.
  residual_policy observations: wrong dof, length mismatch, joint order, NaN, extra names/values
                  mismatch, bad image encoding, truncated image, state size the loaded network does
                  not take, camera image of another size; stamps in the future, duplicate, out of
                  order, far in the past. Weights: old version, wrong dof, NaN, wrong shape, bytes
                  not matching the shape, unreadable spec. Episode status: unknown state, unknown
                  label. Learner metrics: names/values mismatch. Intervention targets: unknown
                  joint, NaN, length mismatch, stamped far in the past or the future.
  sim_robot       controller commands: wrong length, NaN, inf; episode status as above;
                  reset_scene while an episode runs.
  recorder, judge episode status as above.
  learner         a step record claiming an impossible jump of the training-step count.
  base_chunk_server  GetActionChunk with an observation of the wrong dof, NaN, a bad image,
                  another joint order, extra names/values mismatch.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from resfit_ros import names

NS = 1_000_000_000
FAR_S = 1000.0            # "far" in the future / past, seconds
DIAG_PREFIX = "resfit_ros: "


@dataclass(frozen=True)
class Expect:
    """Node `node` must count the input: the sum of its diagnostic values `keys` goes up."""

    node: str
    keys: tuple[str, ...]


@dataclass
class Context:
    """What builders may use: the robot, the graph's time and the newest good message per topic."""

    robot: Any                                  # resfit_ros.robot.RobotDescription
    now_ns: int
    latest: dict[str, Any] = field(default_factory=dict)   # topic -> newest message seen
    extra_topic: str = names.TASK_STATE

    @property
    def joint_topic(self) -> str:
        return self.robot.joint_state_topics[0]

    @property
    def camera_topic(self) -> str | None:
        cams = list(self.robot.cameras.values())
        return cams[0] if cams else None

    def weights_spec(self) -> dict | None:
        w = self.latest.get(names.POLICY_WEIGHTS)
        if w is None:
            return None
        try:
            return json.loads(w.spec)
        except ValueError:
            return None

    def running_episode(self) -> int | None:
        s = self.latest.get(names.EPISODE_STATUS)
        return int(s.episode_id) if s is not None and s.state == 1 else None


@dataclass(frozen=True)
class BadInput:
    name: str
    description: str
    kind: str                                   # "topic" or "service"
    target: str                                 # topic or service name
    build: Callable[[Context], Any]             # -> message or service request
    expect: tuple[Expect, ...]
    applies: Callable[[Context], bool] = lambda ctx: True
    sim_only: bool = False                      # never sent to a real robot (controller topics)
    recorded: bool = False                      # the recorder writes it into the open episode bag as received


@dataclass
class EntryResult:
    name: str
    status: str                                 # rejected | missed | skipped
    detail: str = ""


@dataclass
class InjectionReport:
    results: list[EntryResult]
    catalogue_size: int

    @property
    def rejected(self) -> list[str]:
        return [r.name for r in self.results if r.status == "rejected"]

    @property
    def missed(self) -> list[EntryResult]:
        return [r for r in self.results if r.status == "missed"]

    @property
    def skipped(self) -> list[EntryResult]:
        return [r for r in self.results if r.status == "skipped"]

    @property
    def injected(self) -> int:
        return len(self.results) - len(self.skipped)

    def figures(self) -> str:
        return f"bad_inputs_rejected={len(self.rejected)} bad_inputs_injected={self.injected}"


# --- message helpers ------------------------------------------------------------------------------
def _set_stamp(msg, ns: int):
    ns = max(0, int(ns))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ns, NS)
    return msg


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * NS + int(msg.header.stamp.nanosec)


def _joint_state(ctx: Context):
    """A good joint state: the newest one seen, else the home pose at the graph's time."""
    from sensor_msgs.msg import JointState

    msg = ctx.latest.get(ctx.joint_topic)
    if msg is not None:
        return copy.deepcopy(msg)
    r = ctx.robot
    return _set_stamp(JointState(name=list(r.joint_names), position=[float(x) for x in r.home],
                                 velocity=[0.0] * r.dof), ctx.now_ns)


def _fresh_joint_state(ctx: Context):
    return _set_stamp(_joint_state(ctx), ctx.now_ns)


def _js(mutate: Callable) -> Callable[[Context], Any]:
    def build(ctx: Context):
        msg = _fresh_joint_state(ctx)
        name, pos, vel = list(msg.name), list(msg.position), list(msg.velocity) or [0.0] * len(msg.name)
        name, pos, vel = mutate(name, pos, vel)
        msg.name, msg.position, msg.velocity = name, [float(x) for x in pos], [float(x) for x in vel]
        return msg
    return build


def _js_stamped(offset: Callable[[Context], int]) -> Callable[[Context], Any]:
    return lambda ctx: _set_stamp(_joint_state(ctx), offset(ctx))


def _image(ctx: Context, stamp_ns: int | None = None, w: int = 16, h: int = 16, encoding: str = "rgb8",
           step: int | None = None, nbytes: int | None = None):
    from sensor_msgs.msg import Image

    step = w * 3 if step is None else step
    img = Image(height=h, width=w, encoding=encoding, step=step)
    img.data = bytes(step * h if nbytes is None else nbytes)
    return _set_stamp(img, ctx.now_ns if stamp_ns is None else stamp_ns)


def _camera_copy(ctx: Context, stamp_ns: int):
    return _set_stamp(copy.deepcopy(ctx.latest[ctx.camera_topic]), stamp_ns)


def _extra(mutate: Callable) -> Callable[[Context], Any]:
    def build(ctx: Context):
        msg = _set_stamp(copy.deepcopy(ctx.latest[ctx.extra_topic]), ctx.now_ns)
        name, pos = mutate(list(msg.name), list(msg.position))
        msg.name, msg.position = name, [float(x) for x in pos]
        return msg
    return build


def _observation(ctx: Context):
    return copy.deepcopy(ctx.latest[names.OBSERVATION])


def _obs(mutate: Callable, fresh: bool = True) -> Callable[[Context], Any]:
    def build(ctx: Context):
        msg = _observation(ctx)
        if fresh:
            _set_stamp(msg, ctx.now_ns)
        mutate(msg, ctx)
        return msg
    return build


def _bad_image(msg, ctx, encoding="bgr8", truncate=False, size=None):
    """Corrupt the observation's first image (or add one)."""
    from sensor_msgs.msg import Image

    images = list(msg.images)
    if images:
        img = images[0]
    else:
        img = Image(height=8, width=8, encoding="rgb8", step=24)
        img.data = bytes(8 * 8 * 3)
        msg.camera_names = list(msg.camera_names) + ["head"]
    if size is not None:
        img.height = img.width = size
        img.step = size * 3
        img.data = bytes(size * size * 3)
    img.encoding = encoding
    if truncate:
        img.data = bytes(len(img.data) - 3)
    msg.images = [img] + images[1:]


def _weights(mutate: Callable) -> Callable[[Context], Any]:
    def build(ctx: Context):
        msg = copy.deepcopy(ctx.latest[names.POLICY_WEIGHTS])
        mutate(msg)
        return msg
    return build


def _nan_tensor(msg):
    import numpy as np

    msg.version = int(msg.version) + 1000
    t = next(t for t in msg.tensors if t.name.startswith("actor.")) if any(
        t.name.startswith("actor.") for t in msg.tensors) else msg.tensors[0]
    t.data = np.full(len(t.data) // 4, np.nan, dtype="<f4").tobytes()


def _reshape_tensor(msg):
    msg.version = int(msg.version) + 1000
    t = max(msg.tensors, key=lambda t: len(t.shape))
    n = 1
    for d in t.shape:
        n *= int(d)
    t.shape = [n] if len(t.shape) > 1 else [1, n]


def _truncate_tensor(msg):
    msg.version = int(msg.version) + 1000
    t = msg.tensors[0]
    t.data = bytes(t.data)[:-4] if len(t.data) >= 4 else bytes(4)


def _spec_dof(msg, delta=-1):
    spec = json.loads(msg.spec)
    spec["action_dim"] = int(spec["action_dim"]) + delta
    msg.spec = json.dumps(spec)
    msg.version = int(msg.version) + 1000


def _status(**fields) -> Callable[[Context], Any]:
    def build(ctx: Context):
        from resfit_ros.msg import EpisodeStatus

        s = ctx.latest.get(names.EPISODE_STATUS)
        msg = copy.deepcopy(s) if s is not None else EpisodeStatus(label=-1)
        for k, v in fields.items():
            setattr(msg, k, v)
        return _set_stamp(msg, ctx.now_ns)
    return build


def _metrics(ctx: Context):
    from resfit_ros.msg import LearnerMetrics

    return LearnerMetrics(learner_step=0, names=["losses/critic", "losses/actor"], values=[1.0])


def _step(mutate: Callable) -> Callable[[Context], Any]:
    def build(ctx: Context):
        msg = copy.deepcopy(ctx.latest[names.STEP_RECORD])
        mutate(msg, ctx)
        return msg
    return build


def _command(values: Callable[[int], list]) -> Callable[[Context], Any]:
    def build(ctx: Context):
        from std_msgs.msg import Float64MultiArray

        group = next(iter(ctx.robot.controllers))
        n = len(ctx.robot.group_indices()[group])
        return Float64MultiArray(data=[float(v) for v in values(n)])
    return build


def _command_topic(robot) -> str:
    return names.CONTROLLER_COMMANDS.format(controller=next(iter(robot.controllers.values())))


def _chunk_request(mutate: Callable) -> Callable[[Context], Any]:
    def build(ctx: Context):
        from resfit_ros.srv import GetActionChunk

        msg = _set_stamp(_observation(ctx), ctx.now_ns)
        mutate(msg, ctx)
        return GetActionChunk.Request(observation=msg, episode_start=False)
    return build


def _reset_scene(ctx: Context):
    from resfit_ros.srv import ResetScene

    return ResetScene.Request()


def _set(attr: str, fn: Callable) -> Callable:
    def mutate(msg, ctx):
        setattr(msg, attr, fn(list(getattr(msg, attr))))
    return mutate


def _nan_at(i: int) -> Callable[[list], list]:
    def f(v):
        v = list(v)
        v[i] = math.nan
        return v
    return f


def _swap01(v):
    v = list(v)
    v[0], v[1] = v[1], v[0]
    return v


# --- the catalogue -------------------------------------------------------------------------------
SYNC, EM, RES, SIM, REC, JUDGE, LEARNER, BASE = ("synchronizer", "episode_manager", "residual_policy", "sim_robot",
                                                 "recorder", "judge", "learner", "base_chunk_server")


def _e(node: str, *keys: str) -> Expect:
    return Expect(node, tuple(keys))


# Context attributes naming one of the robot's topics; _has takes these or a topic name itself
_CONTEXT_TOPICS = ("joint_topic", "camera_topic", "extra_topic")


def _has(topic_attr: str) -> Callable[[Context], bool]:
    def f(ctx: Context) -> bool:
        topic = getattr(ctx, topic_attr) if topic_attr in _CONTEXT_TOPICS else topic_attr
        return topic is not None and topic in ctx.latest
    return f


def catalogue(robot, extra_topic: str = names.TASK_STATE) -> list[BadInput]:
    """Every bad input this project defends against, for `robot` (its topics and controllers) and
    the synchronizer's task-state topic `extra_topic`."""
    js_topic = robot.joint_state_topics[0]
    cam_topic = next(iter(robot.cameras.values()), None)
    out: list[BadInput] = []

    def topic(name, desc, target, build, *expect, **kw):
        out.append(BadInput(name, desc, "topic", target, build, tuple(expect), **kw))

    def js_reason(reason, em=True):
        keys = (_e(SYNC, f"rejected/joint_state_{reason}"),)
        return keys + ((_e(EM, f"rejected/joint_state_{reason}"),) if em else ())

    # joint states: synchronizer (and the episode manager, which plans the motion home from them)
    topic("js_missing_joint", "joint state without the robot's last joint", js_topic,
          _js(lambda n, p, v: (n[:-1], p[:-1], v[:-1])), *js_reason("missing"))
    topic("js_length_mismatch", "joint state with one position fewer than names", js_topic,
          _js(lambda n, p, v: (n, p[:-1], v)), *js_reason("wrong_length"))
    topic("js_unknown_name", "joint state naming a joint the robot does not have", js_topic,
          _js(lambda n, p, v: (["bogus_joint"] + n[1:], p, v)), *js_reason("unknown_name"))
    topic("js_duplicate_name", "joint state naming one joint twice", js_topic,
          _js(lambda n, p, v: ([n[0], n[0]] + n[2:], p, v)), *js_reason("duplicate_name"))
    topic("js_nan_position", "joint state with a NaN position", js_topic,
          _js(lambda n, p, v: (n, _nan_at(3)(p), v)), *js_reason("nonfinite"))
    topic("js_inf_velocity", "joint state with an infinite velocity", js_topic,
          _js(lambda n, p, v: (n, p, [math.inf] + v[1:])), *js_reason("nonfinite"))
    topic("js_no_velocity", "joint state without velocities", js_topic,
          _js(lambda n, p, v: (n, p, [])), *js_reason("wrong_length", em=False))
    topic("js_empty", "joint state with no joints at all", js_topic,
          _js(lambda n, p, v: ([], [], [])), *js_reason("empty"))
    topic("js_stamp_future", f"joint state stamped {FAR_S:.0f} s in the future", js_topic,
          _js_stamped(lambda ctx: ctx.now_ns + int(FAR_S * NS)), _e(SYNC, "dropped/future"))
    topic("js_stamp_far_past", "joint state stamped at time 0", js_topic,
          _js_stamped(lambda ctx: 0), _e(SYNC, "dropped/out_of_order", "dropped/stale"))
    topic("js_stamp_out_of_order", "joint state stamped 1 ms before the newest one", js_topic,
          _js_stamped(lambda ctx: _stamp_ns(ctx.latest[ctx.joint_topic]) - 1_000_000),
          _e(SYNC, "dropped/out_of_order"), applies=_has("joint_topic"))
    topic("js_stamp_duplicate", "the newest joint state again", js_topic,
          _js_stamped(lambda ctx: _stamp_ns(ctx.latest[ctx.joint_topic])),
          _e(SYNC, "dropped/duplicate", "dropped/out_of_order"), applies=_has("joint_topic"))

    # camera images: synchronizer
    if cam_topic is not None:
        topic("img_unknown_encoding", "image in encoding 32FC1", cam_topic,
              lambda ctx: _image(ctx, encoding="32FC1", step=16 * 4), _e(SYNC, "rejected/image_encoding"))
        topic("img_truncated", "rgb8 image with fewer bytes than height x step", cam_topic,
              lambda ctx: _image(ctx, nbytes=16 * 16 * 3 - 7), _e(SYNC, "rejected/image_layout"))
        topic("img_step_too_small", "rgb8 image whose step is shorter than a row", cam_topic,
              lambda ctx: _image(ctx, step=16 * 3 - 3, nbytes=(16 * 3 - 3) * 16), _e(SYNC, "rejected/image_layout"))
        topic("img_empty", "image of 0 x 0 pixels", cam_topic,
              lambda ctx: _image(ctx, w=0, h=0, step=0, nbytes=0), _e(SYNC, "rejected/image_layout"))
        topic("img_stamp_future", f"image stamped {FAR_S:.0f} s in the future", cam_topic,
              lambda ctx: _camera_copy(ctx, ctx.now_ns + int(FAR_S * NS)), _e(SYNC, "dropped/future"),
              applies=_has("camera_topic"))
        topic("img_stamp_duplicate", "the newest image again", cam_topic,
              lambda ctx: _camera_copy(ctx, _stamp_ns(ctx.latest[ctx.camera_topic])),
              _e(SYNC, "dropped/duplicate", "dropped/out_of_order"), applies=_has("camera_topic"))

    # task state (named values; simulation: the object pose): synchronizer
    topic("extra_nan", "task state with a NaN value", extra_topic, _extra(lambda n, p: (n, _nan_at(0)(p))),
          _e(SYNC, "rejected/extra_nonfinite"), applies=_has("extra_topic"))
    topic("extra_length_mismatch", "task state with one value fewer than names", extra_topic,
          _extra(lambda n, p: (n, p[:-1])), _e(SYNC, "rejected/extra_wrong_length"), applies=_has("extra_topic"))
    topic("extra_names_changed", "task state whose names differ from the first message's", extra_topic,
          _extra(lambda n, p: (["renamed_" + n[0]] + n[1:], p)), _e(SYNC, "rejected/extra_names_changed"),
          applies=_has("extra_topic"))

    # observations: residual policy
    obs = _has(names.OBSERVATION)

    def obs_reason(reason):
        return _e(RES, f"rejected/observation_{reason}")

    def with_weights(cameras: bool = False) -> Callable[[Context], bool]:
        def f(ctx):
            spec = ctx.weights_spec()
            return obs(ctx) and spec is not None and (not cameras or bool(spec.get("camera_names")))
        return f

    def drop_last_joint(msg, ctx):
        msg.joint_names, msg.position, msg.velocity = (list(msg.joint_names)[:-1], list(msg.position)[:-1],
                                                       list(msg.velocity)[:-1])

    def one_more_extra(msg, ctx):
        msg.extra_names, msg.extra = list(msg.extra_names) + ["bogus"], list(msg.extra) + [0.0]

    def camera_size(msg, ctx):
        spec = ctx.weights_spec() or {}
        size = int((spec.get("image_size") or [84])[0])
        _bad_image(msg, ctx, encoding="rgb8", size=max(8, size // 2))

    topic("obs_wrong_dof", "observation without the last joint", names.OBSERVATION, _obs(drop_last_joint),
          obs_reason("wrong_dof"), applies=obs)
    topic("obs_length_mismatch", "observation with one velocity fewer than joints", names.OBSERVATION,
          _obs(_set("velocity", lambda v: v[:-1])), obs_reason("wrong_length"), applies=obs)
    topic("obs_joint_order", "observation with two joints swapped", names.OBSERVATION,
          _obs(_set("joint_names", _swap01)), obs_reason("joint_names"), applies=obs)
    topic("obs_nan", "observation with a NaN joint position", names.OBSERVATION,
          _obs(_set("position", _nan_at(0))), obs_reason("nonfinite"), applies=obs)
    topic("obs_extra_mismatch", "observation with one extra name more than values", names.OBSERVATION,
          _obs(_set("extra_names", lambda v: v + ["bogus"])), obs_reason("extra"), applies=obs)
    topic("obs_image_encoding", "observation whose image is bgr8", names.OBSERVATION,
          _obs(lambda m, c: _bad_image(m, c, encoding="bgr8")), obs_reason("image"), applies=obs)
    topic("obs_image_truncated", "observation whose image lacks bytes", names.OBSERVATION,
          _obs(lambda m, c: _bad_image(m, c, encoding="rgb8", truncate=True)), obs_reason("image"), applies=obs)
    topic("obs_state_dim", "observation with one extra value the loaded network does not take", names.OBSERVATION,
          _obs(one_more_extra), obs_reason("state_dim"), applies=with_weights())
    topic("obs_camera_size", "observation whose camera image has another size than the network's", names.OBSERVATION,
          _obs(camera_size), obs_reason("camera"), applies=with_weights(cameras=True))
    topic("obs_stamp_future", f"observation stamped {FAR_S:.0f} s in the future", names.OBSERVATION,
          _obs(lambda m, c: _set_stamp(m, c.now_ns + int(FAR_S * NS)), fresh=False), obs_reason("future"), applies=obs)
    topic("obs_stamp_duplicate", "the newest observation again", names.OBSERVATION, _obs(lambda m, c: m, fresh=False),
          _e(RES, "rejected/observation_duplicate", "rejected/observation_out_of_order"), applies=obs)
    topic("obs_stamp_out_of_order", "observation stamped 1 ms before the newest one", names.OBSERVATION,
          _obs(lambda m, c: _set_stamp(m, _stamp_ns(m) - 1_000_000), fresh=False), obs_reason("out_of_order"),
          applies=obs)
    topic("obs_stamp_far_past", "observation stamped at time 0", names.OBSERVATION,
          _obs(lambda m, c: _set_stamp(m, 0), fresh=False), obs_reason("out_of_order"), applies=obs)

    # policy weights: residual policy (the template is the learner's newest message)
    weights = _has(names.POLICY_WEIGHTS)

    def w_reason(reason):
        return _e(RES, f"rejected/weights_{reason}")

    topic("weights_old_version", "weights with version 0", names.POLICY_WEIGHTS,
          _weights(lambda m: setattr(m, "version", 0)), w_reason("old_version"), applies=weights)
    topic("weights_wrong_dof", "weights for a robot with one joint fewer", names.POLICY_WEIGHTS,
          _weights(_spec_dof), w_reason("wrong_dof"), applies=weights)
    topic("weights_nan", "weights with a NaN tensor", names.POLICY_WEIGHTS, _weights(_nan_tensor),
          w_reason("invalid"), applies=weights)
    topic("weights_wrong_shape", "weights with a tensor of another shape", names.POLICY_WEIGHTS,
          _weights(_reshape_tensor), w_reason("invalid"), applies=weights)
    topic("weights_bad_bytes", "weights whose tensor bytes do not match its shape", names.POLICY_WEIGHTS,
          _weights(_truncate_tensor), w_reason("bad_tensor"), applies=weights)
    topic("weights_bad_spec", "weights with an unreadable spec", names.POLICY_WEIGHTS,
          _weights(lambda m: setattr(m, "spec", "{not json")), w_reason("bad_spec"), applies=weights)

    # episode status: every node that follows it
    status_expect = tuple(_e(n, "rejected/status_invalid") for n in (RES, SIM, REC, JUDGE))
    topic("status_unknown_state", "episode status with state 9", names.EPISODE_STATUS, _status(state=9),
          *status_expect)
    topic("status_unknown_label", "episode status with label 7", names.EPISODE_STATUS, _status(label=7),
          *status_expect)

    topic("metrics_length_mismatch", "learner metrics with 2 names and 1 value", names.LEARNER_METRICS, _metrics,
          _e(RES, "rejected/metrics_malformed"))

    # an operator's joint targets (interventions): residual policy; none is ever executed (the
    # take-over flag is not touched), and a bad one must not even be kept
    def operator_target(mutate, stamp=lambda ctx: ctx.now_ns):
        def build(ctx: Context):
            from sensor_msgs.msg import JointState

            r = ctx.robot
            name, pos = mutate(list(r.joint_names), [float(x) for x in r.home])
            return _set_stamp(JointState(name=name, position=[float(x) for x in pos]), stamp(ctx))
        return build

    topic("intervention_unknown_name", "intervention target naming a joint the robot does not have",
          names.INTERVENTION_TARGET, operator_target(lambda n, p: (["bogus_joint"] + n[1:], p)),
          _e(RES, "rejected/intervention_unknown_name"))
    topic("intervention_nan", "intervention target with a NaN position", names.INTERVENTION_TARGET,
          operator_target(lambda n, p: (n, _nan_at(5)(p))), _e(RES, "rejected/intervention_nonfinite"))
    topic("intervention_length_mismatch", "intervention target with one position fewer than names",
          names.INTERVENTION_TARGET, operator_target(lambda n, p: (n, p[:-1])),
          _e(RES, "rejected/intervention_wrong_length"))
    topic("intervention_stamp_far_past", "intervention target stamped at time 0", names.INTERVENTION_TARGET,
          operator_target(lambda n, p: (n, p), stamp=lambda ctx: 0), _e(RES, "rejected/intervention_stale"))
    topic("intervention_stamp_future", f"intervention target stamped {FAR_S:.0f} s in the future",
          names.INTERVENTION_TARGET, operator_target(lambda n, p: (n, p), stamp=lambda ctx: ctx.now_ns + int(FAR_S * NS)),
          _e(RES, "rejected/intervention_future"))

    # step records: episode manager (counts steps) and learner (paces its updates by them)
    def running_step(ctx):
        s = ctx.latest.get(names.STEP_RECORD)
        return s is not None and ctx.running_episode() == int(s.episode_id)

    topic("step_duplicate", "the newest step record again", names.STEP_RECORD, _step(lambda m, c: m),
          _e(EM, "rejected/step_duplicate", "rejected/step_out_of_order"), applies=running_step, recorded=True)
    topic("step_wrong_episode", "a step record of another episode while one runs", names.STEP_RECORD,
          _step(lambda m, c: setattr(m, "episode_id", int(m.episode_id) + 1000)),
          _e(EM, "rejected/step_wrong_episode"), applies=running_step, recorded=True)
    topic("step_training_jump", "a step record claiming 10 million more training steps", names.STEP_RECORD,
          _step(lambda m, c: (setattr(m, "training_steps", int(m.training_steps) + 10_000_000),
                              setattr(m, "episode_id", 0))),
          _e(LEARNER, "rejected/step_jump"), applies=_has(names.STEP_RECORD), recorded=True)

    # controller commands: the simulated robot only (a real robot's controllers are not ours)
    cmd_topic = _command_topic(robot)
    topic("cmd_wrong_length", "controller command with one value too many", cmd_topic,
          _command(lambda n: [0.0] * (n + 1)), _e(SIM, "rejected/command_wrong_length"), sim_only=True)
    topic("cmd_nan", "controller command with a NaN", cmd_topic, _command(lambda n: [math.nan] + [0.0] * (n - 1)),
          _e(SIM, "rejected/command_nonfinite"), sim_only=True)
    topic("cmd_inf", "controller command with an infinity", cmd_topic,
          _command(lambda n: [0.0] * (n - 1) + [-math.inf]), _e(SIM, "rejected/command_nonfinite"), sim_only=True)

    # services
    def service(name, desc, target, build, *expect, **kw):
        out.append(BadInput(name, desc, "service", target, build, tuple(expect), **kw))

    def base_reason(reason):
        return _e(BASE, f"rejected/observation_{reason}")

    service("chunk_wrong_dof", "GetActionChunk for an observation without the last joint", names.GET_ACTION_CHUNK,
            _chunk_request(drop_last_joint), base_reason("wrong_dof"), applies=obs)
    service("chunk_nan", "GetActionChunk for an observation with a NaN velocity", names.GET_ACTION_CHUNK,
            _chunk_request(_set("velocity", _nan_at(2))), base_reason("nonfinite"), applies=obs)
    service("chunk_bad_image", "GetActionChunk for an observation whose image is mono8", names.GET_ACTION_CHUNK,
            _chunk_request(lambda m, c: _bad_image(m, c, encoding="mono8")), base_reason("image"), applies=obs)
    service("chunk_joint_order", "GetActionChunk for an observation with two joints swapped", names.GET_ACTION_CHUNK,
            _chunk_request(_set("joint_names", _swap01)), base_reason("joint_names"), applies=obs)
    service("chunk_extra_mismatch", "GetActionChunk for an observation with extra values but no names",
            names.GET_ACTION_CHUNK, _chunk_request(_set("extra", lambda v: v + [0.0])), base_reason("extra"),
            applies=obs)
    service("reset_scene_while_running", "sim_robot reset_scene while an episode runs", names.RESET_SCENE,
            _reset_scene, _e(SIM, "rejected/reset_scene_running"), applies=lambda ctx: ctx.running_episode() is not None,
            sim_only=True)
    return out


# --- injection into a running graph ---------------------------------------------------------------
LATCHED_TOPICS = (names.EPISODE_STATUS, names.POLICY_WEIGHTS)
MAX_PER_TOPIC = 8   # per round: stream subscriptions keep 10 messages, latched ones only 1


def _rounds(entries: list[BadInput], present: set[str]) -> list[list[BadInput]]:
    """Group entries so that no two in a round expect overlapping counters of the same node, and
    no subscription's queue can overflow (one message per latched topic, a few per stream)."""
    rounds: list[tuple[list[BadInput], list[tuple[str, set]]]] = []
    for entry in entries:
        keys = [(x.node, set(x.keys)) for x in entry.expect if x.node in present]
        limit = 1 if entry.target in LATCHED_TOPICS else MAX_PER_TOPIC
        for members, used in rounds:
            if (not any(n == m and k & u for n, k in keys for m, u in used)
                    and sum(m.target == entry.target for m in members) < limit):
                members.append(entry)
                used.extend(keys)
                break
        else:
            rounds.append(([entry], list(keys)))
    return [members for members, _ in rounds]


def _msg_type(entry: BadInput, robot):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from resfit_ros.msg import EpisodeStatus, LearnerMetrics, Observation, PolicyWeights, StepRecord

    t = entry.target
    if t in robot.cameras.values():
        return Image
    fixed = {names.OBSERVATION: Observation, names.POLICY_WEIGHTS: PolicyWeights, names.EPISODE_STATUS: EpisodeStatus,
             names.LEARNER_METRICS: LearnerMetrics, names.STEP_RECORD: StepRecord}
    if t in fixed:
        return fixed[t]
    if t.endswith("/commands"):
        return Float64MultiArray
    return JointState


def inject_bad_inputs(node, spin: Callable[[float], None], robot, *, sim: bool = False,
                      entries: list[BadInput] | None = None, include_recorded: bool = True,
                      warmup_s: float = 2.0, round_timeout_s: float = 4.0, extra_topic: str | None = None,
                      templates: dict[str, Any] | None = None,
                      log: Callable[[str], None] | None = None) -> InjectionReport:
    """Send every applicable bad input into the graph reachable from `node`; count the rejections.

    node: an rclpy Node the caller spins with `spin(seconds)` (e.g. an executor's spin_once loop),
    in the graph's namespace (the root for a graph launched without namespace:=).
    robot: the graph's RobotDescription. sim: the robot is simulated (controller commands and the
    scene reset are included). include_recorded=False leaves out inputs the recorder would write
    into an open episode bag (step records). templates: topic -> the newest good message, for topics
    whose traffic the caller produced before calling (the injector sees what arrives from then on).
    Returns the report; nothing is left latched.
    """
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.serialization import deserialize_message, serialize_message
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image, JointState
    from std_srvs.srv import Trigger

    from resfit_ros.msg import EpisodeStatus, Observation, PolicyWeights, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import GetActionChunk, ResetScene

    say = log or (lambda _t: None)
    extra_topic = extra_topic or names.TASK_STATE
    entries = catalogue(robot, extra_topic) if entries is None else entries
    diag: dict[str, dict[str, str]] = {}
    latest: dict[str, Any] = dict(templates or {})
    clock = {"ns": None}
    created_subs, created_pubs, created_clients = [], {}, {}

    # /diagnostics is global: only the statuses of the nodes in our namespace ("resfit_ros: <node>"
    # at the root, "resfit_ros: /robot_a/<node>" in /robot_a; resfit_ros.nodes.common.diagnostic_name)
    namespace = node.get_namespace()
    prefix = DIAG_PREFIX if namespace == "/" else f"{DIAG_PREFIX}{namespace}/"

    def on_diag(msg):
        for s in msg.status:
            if s.name.startswith(prefix) and "/" not in s.name[len(prefix):]:
                diag[s.name[len(prefix):]] = {kv.key: kv.value for kv in s.values}

    # What we published ourselves is never a template. Compared as the repr of the deserialised
    # message (NaN-safe; raw CDR bytes may differ in padding between two serialisations).
    own: dict[str, set[str]] = {}

    def keep(topic):
        def on_msg(m):
            if topic in own and repr(m) in own[topic]:
                return
            latest[topic] = m
        return on_msg

    ctx = Context(robot, 0, latest, extra_topic)
    created_subs.append(node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, on_diag, 50))
    # a simulated graph's time is its simulator's, in the graph's namespace (/clock at the root)
    created_subs.append(node.create_subscription(Clock, names.SIM_CLOCK, lambda m: clock.__setitem__(
        "ns", int(m.clock.sec) * NS + int(m.clock.nanosec)), 10))
    watched = [(JointState, t, STREAM) for t in robot.joint_state_topics]
    watched += [(Image, t, STREAM) for t in robot.cameras.values()]
    watched += [(JointState, ctx.extra_topic, STREAM), (Observation, names.OBSERVATION, STREAM),
                (StepRecord, names.STEP_RECORD, STREAM), (PolicyWeights, names.POLICY_WEIGHTS, LATCHED),
                (EpisodeStatus, names.EPISODE_STATUS, LATCHED)]
    for msg_type, topic, qos in watched:
        created_subs.append(node.create_subscription(msg_type, topic, keep(topic), qos))
    spin(warmup_s)

    def now_ns() -> int:
        if clock["ns"] is not None:
            return clock["ns"]
        return node.get_clock().now().nanoseconds

    present = set(diag)
    say(f"bad inputs: consumers on /diagnostics: {sorted(present)}")
    results: dict[str, EntryResult] = {}
    todo = []
    for e in entries:
        if e.sim_only and not sim:
            results[e.name] = EntryResult(e.name, "skipped", "simulated robot only")
        elif e.recorded and not include_recorded:
            results[e.name] = EntryResult(e.name, "skipped", "would be recorded into an episode bag")
        elif not any(x.node in present for x in e.expect):
            consumers = ", ".join(x.node for x in e.expect)
            results[e.name] = EntryResult(e.name, "skipped", f"no consumer running ({consumers})")
        else:
            todo.append(e)

    def value(node_name: str, keys: tuple[str, ...]) -> int:
        d = diag.get(node_name, {})
        total = 0
        for k in keys:
            try:
                total += int(float(d.get(k, "0")))
            except ValueError:
                pass
        return total

    for round_entries in _rounds(todo, present):
        ctx.now_ns = now_ns()
        base = {e.name: [(x, value(x.node, x.keys)) for x in e.expect if x.node in present] for e in round_entries}
        sent, futures = [], {}
        for e in round_entries:
            if not e.applies(ctx):
                results[e.name] = EntryResult(e.name, "skipped", "not applicable now (no template message or state)")
                continue
            try:
                item = e.build(ctx)
            except (KeyError, IndexError, StopIteration, ValueError) as exc:
                results[e.name] = EntryResult(e.name, "skipped", f"cannot build: {exc!r}")
                continue
            if e.kind == "topic":
                pub = created_pubs.get(e.target)
                if pub is None:
                    qos = LATCHED if e.target in LATCHED_TOPICS else STREAM
                    pub = created_pubs[e.target] = node.create_publisher(_msg_type(e, robot), e.target, qos)
                    # a new writer: wait until it has matched every reader the graph knows of, not just the
                    # first (a consumer that matches later loses a volatile burst), then let the readers'
                    # side of the match settle
                    deadline = time.monotonic() + 5.0
                    while time.monotonic() < deadline and (
                            pub.get_subscription_count() == 0
                            or pub.get_subscription_count() < node.count_subscribers(e.target)):
                        spin(0.05)
                    spin(0.2)
                if pub.get_subscription_count() == 0:
                    results[e.name] = EntryResult(e.name, "skipped", f"nobody subscribes to {e.target}")
                    continue
                own.setdefault(e.target, set()).add(repr(deserialize_message(serialize_message(item), type(item))))
                pub.publish(item)
                spin(0.01)
            else:
                srv_type = {GetActionChunk.Request: GetActionChunk, ResetScene.Request: ResetScene}.get(type(item), Trigger)
                client = created_clients.get(e.target)
                if client is None:
                    client = created_clients[e.target] = node.create_client(srv_type, e.target)
                    deadline = time.monotonic() + 3.0
                    while not client.service_is_ready() and time.monotonic() < deadline:
                        spin(0.05)
                if not client.service_is_ready():
                    results[e.name] = EntryResult(e.name, "skipped", f"service {e.target} not available")
                    continue
                futures[e.name] = client.call_async(item)
            sent.append(e)

        def counted(e: BadInput) -> bool:
            return all(value(x.node, x.keys) > v0 for x, v0 in base[e.name])

        def answered(e: BadInput) -> bool:
            return e.name not in futures or futures[e.name].done()

        deadline = time.monotonic() + round_timeout_s
        while time.monotonic() < deadline and not all(counted(e) and answered(e) for e in sent):
            spin(0.05)
        # A message can be lost on the way without being accepted: latched topics keep one message
        # per subscriber, and the graph's own traffic (the status on every step) may overwrite
        # ours before the node takes it. Send an uncounted topic entry again (at most twice).
        for _attempt in range(2):
            again = [e for e in sent if e.kind == "topic" and not counted(e)]
            for e in again:
                item = e.build(ctx)
                own.setdefault(e.target, set()).add(repr(deserialize_message(serialize_message(item), type(item))))
                created_pubs[e.target].publish(item)
                spin(0.01)
            deadline = time.monotonic() + (round_timeout_s if again else 0.0)
            while time.monotonic() < deadline and not all(counted(e) for e in again):
                spin(0.05)
        for e in sent:
            problems = []
            if e.name in futures:
                f = futures[e.name]
                res = f.result() if f.done() else None
                if res is None:
                    problems.append("no answer")
                elif res.success:
                    problems.append(f"ACCEPTED: {res.message}")
            missing = [f"{x.node} {'|'.join(x.keys)}" for x, v0 in base[e.name] if value(x.node, x.keys) <= v0]
            if missing:
                problems.append("not counted by " + ", ".join(missing))
            results[e.name] = EntryResult(e.name, "missed" if problems else "rejected", "; ".join(problems))
            say(f"bad input {e.name}: {results[e.name].status} {results[e.name].detail}".rstrip())

    for sub in created_subs:
        node.destroy_subscription(sub)
    for pub in created_pubs.values():
        node.destroy_publisher(pub)
    for client in created_clients.values():
        node.destroy_client(client)
    ordered = [results[e.name] for e in entries if e.name in results]
    return InjectionReport(ordered, len(entries))


def run_bad_inputs(robot=None, *, sim: bool = False, domain_id: int | None = None, namespace: str = "",
                   **kw) -> InjectionReport:
    """inject_bad_inputs with its own rclpy context, node and executor (for `resfit-ros bench faults`):

        from resfit_ros_testing.bad_inputs import run_bad_inputs
        report = run_bad_inputs(sim=True)          # the graph on this ROS_DOMAIN_ID, at the root
        print(report.figures())                    # bad_inputs_rejected=<n> bad_inputs_injected=<m>

    robot: RobotDescription (default: the package's g1_sim.yaml). namespace: the graph's namespace:=
    ('' = the root). Keyword arguments go to
    inject_bad_inputs (entries, include_recorded, warmup_s, round_timeout_s, extra_topic, templates, log).
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from resfit_ros.graph import absolute_namespace

    if robot is None:
        from resfit_ros.robot import RobotDescription, config_dir

        robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain_id)
    node = rclpy.create_node("resfit_bad_inputs", context=ctx, namespace=absolute_namespace(namespace) or "/")
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    def spin(seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=min(0.05, max(0.0, deadline - time.monotonic())))

    try:
        return inject_bad_inputs(node, spin, robot, sim=sim, **kw)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
