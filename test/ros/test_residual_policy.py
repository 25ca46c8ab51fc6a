"""The residual policy node validates weights from the network and keeps the old ones on a bad message."""
import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import config_dir
from test.support import node_argv

pytestmark = pytest.mark.ros


def _weights_msg(version, agent, spec, corrupt=False):
    from resfit_ros.core.weights import pack_weights
    from resfit_ros.msg import PolicyWeights, Tensor

    w = agent.get_weights()
    if corrupt:
        key = next(k for k in w if k.startswith("actor."))
        w[key] = np.full_like(w[key], np.nan)
    msg = PolicyWeights(version=version, spec=spec.to_json())
    msg.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data) for t in pack_weights(w)]
    return msg


def _diagnostics_and_weights_publisher(ros_context):
    """The residual node's diagnostics (key -> value, kept up to date) and a latched weights publisher."""
    from diagnostic_msgs.msg import DiagnosticArray

    from resfit_ros.msg import PolicyWeights
    from resfit_ros.nodes.common import LATCHED

    diag = {}
    ros_context.node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: [diag.update(
        {kv.key: kv.value for kv in s.values}) for s in m.status if s.name.endswith("residual_policy")], 10)
    return diag, ros_context.node.create_publisher(PolicyWeights, names.POLICY_WEIGHTS, LATCHED)


def test_bad_weights_are_rejected_and_the_old_ones_stay(ros_context, spawn):
    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent

    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={config_dir() / 'robots' / 'g1_sim.yaml'}",
                           "-p", "diagnostics_period_s:=0.2"), name="residual")
    rng = np.random.default_rng(0)
    agent = ResidualAgent(AgentConfig(), 58, 29, [], 84, 0,
                          Normaliser.from_demonstrations(rng.normal(size=(20, 58)), rng.normal(size=(20, 29)), 0.1))
    spec = PolicySpec(agent_config=dict(vars(agent.config)), state_dim=58, action_dim=29, camera_names=(),
                      image_size=(84, 84), feature_dim=0)
    diag, pub = _diagnostics_and_weights_publisher(ros_context)

    pub.publish(_weights_msg(1, agent, spec))
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "1", 30), open(proc.log_path).read()
    pub.publish(_weights_msg(2, agent, spec, corrupt=True))          # NaN in the actor
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "1", 10)
    assert diag["weights_version"] == "1"
    pub.publish(_weights_msg(1, agent, spec))                         # not newer
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "2", 10)
    wrong = PolicySpec(**{**spec.__dict__, "action_dim": 7})
    pub.publish(_weights_msg(3, agent, wrong))                        # for another robot
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "3", 10)
    pub.publish(_weights_msg(4, agent, spec))                         # a good one is taken again
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "4", 10)
    # weights that read the base's image features, to a node given no base_artifact to compute them
    on_features = ResidualAgent(AgentConfig(), 58, 29, [], 84, 16, agent.normaliser)
    pub.publish(_weights_msg(5, on_features, PolicySpec.of_agent(on_features, "a1b2c3d4e5f60718")))
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "4", 10)
    assert diag["weights_version"] == "4" and diag.get("rejected/weights_no_base") == "1", diag
    log = open(proc.log_path).read()
    assert "non-finite" in log or "NaN" in log or "finite" in log, log
    assert "set base_artifact to the frozen base" in log, log


def test_pacing_survives_a_restarted_learner_that_missed_our_first_step_records(ros_context, spawn, tmp_path):
    """Simulation pacing: training ticks wait until the learner is on its update schedule (the
    training steps it allows, published with its metrics). A restarted learner counts the steps it
    has heard of (none) for its update budget, so it waits for our step records while we would wait
    for its updates. Here a stand-in learner plays the
    restart and ignores our first step records (lost while DDS still matches a new process): the
    policy node must go on ticking unpaced until the learner's metrics show it has our count, and
    wait again (paced) once they do."""

    from resfit_ros.msg import EpisodeStatus, LearnerMetrics, Observation, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros_testing.hold_base import make_hold_base
    from resfit_ros.robot import RobotDescription

    robot_file = config_dir() / "robots" / "g1_sim.yaml"
    robot = RobotDescription.load(robot_file)
    base = tmp_path / "hold.pt"
    make_hold_base(base, robot.joint_names)
    spawn(node_argv("base_chunk_server", "-p", f"base_artifact:={base}"), name="base")
    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={robot_file}", "-p", "pace_learner:=true",
                           "-p", "pace_free_steps:=0", "-p", "pace_learner_timeout_s:=60.0",
                           "-p", "watchdog_timeout_s:=0.5"), name="residual")
    node = ros_context.node
    records = []
    node.create_subscription(StepRecord, names.STEP_RECORD, records.append, STREAM)
    status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    obs_pub = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    metrics = node.create_publisher(LearnerMetrics, names.LEARNER_METRICS, STREAM)
    learner = {"updates": 10_000, "env_steps": 1_000}

    def tick_robot() -> None:
        now = node.get_clock().now()
        obs = Observation(sequence=len(records), joint_names=robot.joint_names, position=robot.home.tolist(),
                          velocity=[0.0] * robot.dof)
        obs.header.stamp = now.to_msg()
        obs_pub.publish(obs)
        metrics.publish(LearnerMetrics(learner_step=learner["updates"], env_steps=learner["env_steps"],
                                       names=[names.PACE_STEPS_ALLOWED], values=[learner["updates"] / 2.0]))

    node.create_timer(0.05, tick_robot)
    status.publish(EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, explore=True))
    # the old learner, far ahead: every observation is acted on
    assert ros_context.spin_until(lambda: len(records) >= 5, 60), open(proc.log_path).read()[-3000:]
    # it restarts from an older checkpoint and has heard none of our steps; it drops the records
    # that reach it for now (we keep publishing env_steps 0): ticks must go on, not one and stop
    learner.update(updates=500, env_steps=0)
    ros_context.spin_until(lambda: False, 0.3)
    n0 = len(records)
    assert ros_context.spin_until(lambda: len(records) >= n0 + 10, 10), \
        f"{len(records) - n0} ticks after the learner restarted: the policy waits for a learner that waits for it"
    # a record got through: the learner has our count and is behind it -> paced again
    learner["env_steps"] = int(records[-1].training_steps)
    ros_context.spin_until(lambda: False, 0.5)
    n1 = len(records)
    ros_context.spin_until(lambda: False, 1.0)
    assert len(records) <= n1 + 1, f"{len(records) - n1} unpaced ticks after the learner counted our steps"
    assert records[-1].training_steps > 1_000                # the count continued across the restart


def test_an_operator_takes_over_through_the_safety_layer_and_hands_back_smoothly(ros_context, spawn, tmp_path):
    """Over DDS: with the take-over flag set, the operator's joint target (one joint named) replaces
    base + residual, approached at the rate limit; the step records say so (SAFETY_OPERATOR); a target
    with an unknown joint or NaN is refused and counted, never executed; a silent device makes the
    robot hold; the hand-back moves back to the base at the rate limit."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Bool

    from resfit_ros.core.command import CommandLimits
    from resfit_ros.msg import EpisodeStatus, Observation, StepRecord
    from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros_testing.hold_base import make_hold_base
    from resfit_ros.robot import RobotDescription

    robot_file = config_dir() / "robots" / "g1_sim.yaml"
    robot = RobotDescription.load(robot_file)
    base = tmp_path / "hold.pt"
    make_hold_base(base, robot.joint_names)
    spawn(node_argv("base_chunk_server", "-p", f"base_artifact:={base}"), name="base")
    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={robot_file}",
                           "-p", "watchdog_timeout_s:=0.5", "-p", "diagnostics_period_s:=0.2",
                           "-p", "intervention_max_age_s:=0.3"), name="residual")
    node = ros_context.node
    records, diag = [], {}
    node.create_subscription(StepRecord, names.STEP_RECORD, records.append, STREAM)
    node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: [diag.update(
        {kv.key: kv.value for kv in s.values}) for s in m.status if s.name.endswith("residual_policy")], 10)
    status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    obs_pub = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    active = node.create_publisher(Bool, names.INTERVENTION_ACTIVE, LATCHED)
    target_pub = node.create_publisher(JointState, names.INTERVENTION_TARGET, STREAM)
    joint = robot.joint_names.index("right_elbow_joint")
    goal = float(np.clip(robot.home[joint] + 0.6, robot.lower[joint], robot.upper[joint]))
    max_step = CommandLimits.from_robot(robot, 20.0, [0.2]).max_step[joint]
    sending = {"target": None}

    def tick_robot() -> None:
        now = node.get_clock().now()
        obs = Observation(sequence=len(records), joint_names=robot.joint_names, position=robot.home.tolist(),
                          velocity=[0.0] * robot.dof)
        obs.header.stamp = now.to_msg()
        obs_pub.publish(obs)
        if sending["target"] is not None:
            names_, positions = sending["target"]
            msg = JointState(name=names_, position=positions)
            msg.header.stamp = now.to_msg()
            target_pub.publish(msg)

    node.create_timer(0.05, tick_robot)
    status.publish(EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, explore=False))
    assert ros_context.spin_until(lambda: len(records) >= 5, 60), open(proc.log_path).read()[-3000:]
    assert not any(r.safety_flags & SAFETY_OPERATOR for r in records)

    sending["target"] = (["right_elbow_joint"], [goal])
    active.publish(Bool(data=True))
    assert ros_context.spin_until(lambda: any(r.safety_flags & SAFETY_OPERATOR for r in records), 10)
    first = next(i for i, r in enumerate(records) if r.safety_flags & SAFETY_OPERATOR)
    assert ros_context.spin_until(lambda: len(records) >= first + 40, 20)
    driven = records[first:first + 40]
    elbow = np.array([records[first - 1].command[joint]] + [r.command[joint] for r in driven])
    assert np.all(np.abs(np.diff(elbow)) <= max_step + 1e-9)                # taken over at the rate limit
    assert abs(elbow[-1] - goal) < 1e-6                                      # and the target reached
    other = [i for i in range(robot.dof) if i != joint]
    for r in driven:                                                         # unnamed joints follow the base
        np.testing.assert_allclose(np.array(r.command)[other], np.array(r.base_action)[other], atol=1e-9)
        np.testing.assert_allclose(r.residual, np.array(r.command) - np.array(r.base_action), atol=1e-9)

    # bad targets: refused, counted, never executed (the last good target stays)
    sending["target"] = (["right_elbow_joint", "no_such_joint"], [goal - 0.5, 0.0])
    assert ros_context.spin_until(lambda: int(diag.get("rejected/intervention_unknown_name", 0)) >= 3, 10)
    sending["target"] = (["right_elbow_joint"], [float("nan")])
    assert ros_context.spin_until(lambda: int(diag.get("rejected/intervention_nonfinite", 0)) >= 3, 10)
    # the device stopped (every target refused): the robot holds
    assert ros_context.spin_until(lambda: int(diag.get("intervention_holds", 0)) >= 3, 10)
    assert all(abs(r.command[joint] - goal) < 1e-6 for r in records[first + 40:])
    assert records[-1].safety_flags & SAFETY_HOLD

    # hand back: rate-limited from the operator's last command back to the base
    sending["target"] = None
    active.publish(Bool(data=False))
    assert ros_context.spin_until(
        lambda: not records[-1].safety_flags & SAFETY_OPERATOR and abs(records[-1].command[joint] - robot.home[joint]) < 1e-6, 20)
    back = [r.command[joint] for r in records[first + 40:]]
    assert np.all(np.abs(np.diff(back)) <= max_step + 1e-9)


def test_weights_that_reach_past_the_nodes_residual_bound_are_used_with_a_warning(ros_context, spawn):
    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent

    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={config_dir() / 'robots' / 'g1_sim.yaml'}",
                           "-p", "residual_bound:=[0.2]", "-p", "diagnostics_period_s:=0.2"), name="residual")
    rng = np.random.default_rng(0)
    states, actions = rng.normal(size=(20, 58)), np.tile([[-3.0], [3.0]], (10, 29))  # reach 0.1 * 3 / 0.9 rad
    within = ResidualAgent(AgentConfig(), 58, 29, [], 84, 0,
                           Normaliser.from_demonstrations(states, actions, 0.1, residual_limit=[0.2]))
    beyond = ResidualAgent(AgentConfig(), 58, 29, [], 84, 0, Normaliser.from_demonstrations(states, actions, 0.1))
    spec = PolicySpec(agent_config=dict(vars(within.config)), state_dim=58, action_dim=29, camera_names=(),
                      image_size=(84, 84), feature_dim=0)
    diag, pub = _diagnostics_and_weights_publisher(ros_context)
    pub.publish(_weights_msg(1, within, spec))
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "1", 30), open(proc.log_path).read()
    ros_context.spin_until(lambda: False, 0.5)
    assert "exceeds residual_bound" not in open(proc.log_path).read()
    pub.publish(_weights_msg(2, beyond, spec))
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "2", 10)
    assert ros_context.spin_until(lambda: "exceeds residual_bound" in open(proc.log_path).read(), 5)
    log = open(proc.log_path).read()
    assert "exceeds residual_bound on 29 joint(s): waist_yaw_joint (" in log, log
