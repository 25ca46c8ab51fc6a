"""The bad-input catalogue and the ROS-free checks behind the rejections (no DDS)."""
from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros_testing.bad_inputs import LATCHED_TOPICS, Context, _msg_type, _rounds, catalogue
from test.safety import helpers

REPO = Path(__file__).resolve().parents[2]


def _context(rob):
    from sensor_msgs.msg import Image, JointState

    from resfit_ros.msg import EpisodeStatus, Observation, StepRecord

    now = 10**12
    js = JointState(name=list(rob.joint_names), position=list(map(float, rob.home)), velocity=[0.0] * rob.dof)
    img = Image(height=84, width=84, encoding="rgb8", step=252)
    img.data = bytes(84 * 84 * 3)
    task = JointState(name=["object_x", "object_y"], position=[0.1, 0.2])
    obs = Observation(joint_names=list(rob.joint_names), position=list(map(float, rob.home)), velocity=[0.0] * rob.dof,
                      camera_names=["head"], images=[img])
    step = StepRecord(episode_id=3, step=5, training_steps=100)
    status = EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=3, label=-1)
    latest = {names.JOINT_STATES: js, rob.cameras["head"]: img, names.TASK_STATE: task, names.OBSERVATION: obs,
              names.STEP_RECORD: step, names.EPISODE_STATUS: status, names.POLICY_WEIGHTS: helpers.weights_msg(4)}
    for m in latest.values():
        if hasattr(m, "header"):
            m.header.stamp.sec, m.header.stamp.nanosec = divmod(now - 10**8, 10**9)
    return Context(rob, now, latest)


def test_catalogue_is_complete_and_every_entry_builds_its_topic_type():
    from resfit_ros.srv import GetActionChunk

    rob = helpers.robot()
    entries = catalogue(rob)
    assert len(entries) == 60
    assert len({e.name for e in entries}) == len(entries)
    assert {e.name for e in entries if e.sim_only} == {"cmd_wrong_length", "cmd_nan", "cmd_inf",
                                                       "reset_scene_while_running"}
    ctx = _context(rob)
    consumers = set()
    for e in entries:
        assert e.expect and all(x.keys for x in e.expect), e.name
        assert e.applies(ctx), e.name
        item = e.build(ctx)
        consumers |= {x.node for x in e.expect}
        if e.kind == "topic":
            assert isinstance(item, _msg_type(e, rob)), e.name
        elif e.target == names.GET_ACTION_CHUNK:
            assert isinstance(item, GetActionChunk.Request), e.name
    assert consumers == {"synchronizer", "episode_manager", "residual_policy", "sim_robot", "recorder", "judge",
                         "learner", "base_chunk_server"}
    # builders never change the templates they copy
    assert list(ctx.latest[names.OBSERVATION].joint_names) == rob.joint_names
    assert ctx.latest[names.POLICY_WEIGHTS].version == 4


def test_content_entries_are_rejected_by_the_checks_the_nodes_run():
    """Each malformed observation of the catalogue fails msg_to_observation (or the network's
    spec check) with the reason its entry expects."""
    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.nodes.convert import ObservationError, msg_to_observation

    rob = helpers.robot()
    ctx = _context(rob)
    spec = PolicySpec.from_json(ctx.latest[names.POLICY_WEIGHTS].spec)
    checked = 0
    for e in catalogue(rob):
        keys = [k for x in e.expect if x.node in ("residual_policy", "base_chunk_server") for k in x.keys]
        reasons = {k.split("rejected/observation_")[1] for k in keys if k.startswith("rejected/observation_")}
        if not reasons or e.name.startswith("obs_stamp"):
            continue
        msg = e.build(ctx)
        msg = getattr(msg, "observation", msg)
        try:
            obs = msg_to_observation(msg, dof=rob.dof)
            if obs.joint_names != rob.joint_names:
                raise ObservationError("order", "joint_names")
            problem = spec.observation_problem(len(obs.state_vector()), obs.images)
            if problem:
                raise ObservationError(problem[1], problem[0])
        except ObservationError as exc:
            assert exc.reason in reasons, (e.name, exc.reason, reasons)
            checked += 1
        else:
            raise AssertionError(f"{e.name} was accepted")
    assert checked == 14


def test_intervention_entries_are_refused_by_the_residual_nodes_operator_input():
    """Each bad intervention target of the catalogue fails core/intervention.OperatorInput with the
    reason its entry expects, and is not kept as the operator's target."""
    from resfit_ros.core.intervention import OperatorInput
    from resfit_ros.core.joint_states import JointStateError

    rob = helpers.robot()
    ctx = _context(rob)
    entries = [e for e in catalogue(rob) if e.target == names.INTERVENTION_TARGET]
    assert len(entries) == 5
    for e in entries:
        msg = e.build(ctx)
        operator = OperatorInput(rob.joint_names, max_age_s=0.5, future_tolerance_s=1.0)
        with pytest.raises(JointStateError) as err:
            operator.on_target(msg.name, msg.position, msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec,
                               ctx.now_ns)
        assert [f"rejected/intervention_{err.value.reason}"] == [k for x in e.expect for k in x.keys], e.name
        operator.set_active(True)
        assert operator.tick(ctx.now_ns, np.zeros(rob.dof)).target is None, e.name


def test_rounds_never_share_a_counter_or_overflow_a_latched_topic():
    rob = helpers.robot()
    entries = catalogue(rob)
    present = {x.node for e in entries for x in e.expect}
    rounds = _rounds(entries, present)
    assert sum(len(r) for r in rounds) == len(entries)
    assert len(rounds) <= 8
    for r in rounds:
        used = []
        for e in r:
            for x in e.expect:
                assert not any(n == x.node and set(k) & set(x.keys) for n, k in used), (e.name, r)
            used += [(x.node, x.keys) for x in e.expect]
        for topic in LATCHED_TOPICS:
            assert sum(e.target == topic for e in r) <= 1


def test_stamp_order():
    from resfit_ros.core.stamps import StampOrder

    s = StampOrder(future_tolerance_s=0.5, clock_jump_s=1.0)
    now = 100 * 10**9
    assert s.check(now, now) is None
    assert s.check(now, now) == "duplicate"
    assert s.check(now - 1, now) == "out_of_order"
    assert s.check(now + 6 * 10**8, now) == "future"
    assert s.check(now + 10**6, now) is None and s.last_stamp == now + 10**6
    # time going back (simulator restart): the old stamps are forgotten
    assert s.check(10**9, 2 * 10**9) is None


def test_extra_state_parser():
    from resfit_ros.core.joint_states import ExtraStateParser, JointStateError

    p = ExtraStateParser()
    assert p.parse("/t", ["x", "y"], [1.0, 2.0]) == (["x", "y"], [1.0, 2.0])
    for names_, values, reason in ((["x", "y"], [1.0, math.nan], "nonfinite"), (["x", "y"], [1.0], "wrong_length"),
                                   (["y", "x"], [1.0, 2.0], "names_changed"), ([], [], "empty")):
        with pytest.raises(JointStateError) as info:
            p.parse("/t", names_, values)
        assert info.value.reason == reason
    assert p.rejected == {"empty": 1, "wrong_length": 1, "nonfinite": 1, "names_changed": 1}


def test_image_layout_reasons():
    from resfit_ros.core.images import ImageConversionError, check_image_layout

    check_image_layout(2, 2, "rgb8", 6, bytes(12))
    for args, reason in (((2, 2, "32FC1", 8, bytes(16)), "encoding"), ((2, 2, "rgb8", 6, bytes(11)), "layout"),
                         ((2, 2, "rgb8", 5, bytes(10)), "layout"), ((0, 0, "rgb8", 0, b""), "layout")):
        with pytest.raises(ImageConversionError) as info:
            check_image_layout(*args)
        assert info.value.reason == reason


def test_observation_problems_against_the_network():
    from resfit_ros.core.policy_spec import PolicySpec

    spec = PolicySpec(agent_config={}, state_dim=58, action_dim=29, camera_names=("head",), image_size=(84, 84),
                      feature_dim=0)
    img = np.zeros((84, 84, 3), np.uint8)
    assert spec.observation_problem(58, {"head": img}) is None
    assert spec.observation_problem(59, {"head": img})[0] == "state_dim"
    assert spec.observation_problem(58, {})[0] == "camera"
    assert spec.observation_problem(58, {"head": img[:40]})[0] == "camera"


def test_nodes_never_call_the_deprecated_warn():
    """rclpy's Logger.warn() is a typing_extensions wrapper: every warn() call in a process shares
    one logging call site, so two of them with different throttles raise ValueError inside the
    callback and kill the node. Nodes must call warning()."""
    offenders = []
    for path in (REPO / "resfit_ros").rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"get_logger\(\)\.warn\(|\blog\.warn\(|logger\.warn\(", line):
                offenders.append(f"{path.relative_to(REPO)}:{i}")
    assert not offenders, offenders


def test_learner_ignores_an_impossible_jump_of_the_training_step_count():
    """Learner.on_step on a stand-in for the node (the method's state only): the first record sets
    the count, later ones may grow it by at most MAX_TRAINING_STEP_JUMP."""
    import threading
    from types import SimpleNamespace

    from resfit_ros.msg import StepRecord
    from resfit_ros.nodes.learner import MAX_TRAINING_STEP_JUMP, Learner

    rejected = []
    me = SimpleNamespace(lock=threading.Lock(), robot_steps={"": 0, "robot_1": 0}, robot_records={"": 0, "robot_1": 0},
                         rejections=SimpleNamespace(reject=lambda reason, text: rejected.append(reason)))
    for steps in (5000, 5001, 5001 + MAX_TRAINING_STEP_JUMP + 1, 5002, 10**9):
        Learner.on_step(me, StepRecord(training_steps=steps))
    assert me.robot_steps[""] == 5002 and rejected == ["step_jump", "step_jump"]
    # a fleet: each robot's count on its own (one robot's large count is no jump of another's)
    Learner.on_step(me, StepRecord(training_steps=7000), "robot_1")
    Learner.on_step(me, StepRecord(training_steps=7001 + MAX_TRAINING_STEP_JUMP + 1), "robot_1")
    assert me.robot_steps == {"": 5002, "robot_1": 7000} and rejected == ["step_jump"] * 3
