"""ControlStep (core/control_step.py), the one definition of a control tick: its behaviour with a
real ResidualPolicy, and that the residual policy node commands over DDS exactly what ControlStep
computes in process from the same inputs."""
from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resfit_ros.core.command import CommandLimits
from resfit_ros.core.control_step import ControlStep
from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent, ResidualPolicy
from resfit_ros.names import SAFETY_BASE_ONLY, SAFETY_NONFINITE_INPUT, SAFETY_RATE_LIMITED

STATE_DIM, DOF = 6, 3
LIMITS = CommandLimits(lower=[-1.0] * DOF, upper=[1.0] * DOF, home=[0.0] * DOF, max_step=[0.1] * DOF,
                       residual_bound=[0.2] * DOF, control_rate_hz=20.0)
# the random warm-up's length and size come with the weights: 3 training steps, uniform in +-0.05
CONFIG = AgentConfig(action_scale=0.1, exploration_std=0.1, random_warmup_steps=3, random_warmup_fraction=0.5,
                     actor_hidden_dims=(16,), critic_hidden_dims=(16,), num_critic_heads=2)


def trained_like_weights(agent: ResidualAgent, seed: int = 1) -> dict:
    """agent.get_weights() with a random actor: a zero-initialised one would hide the actor's part."""
    weights = agent.get_weights()
    rng = np.random.default_rng(seed)
    for name in weights:
        if name.startswith("actor."):
            weights[name] = (rng.normal(size=weights[name].shape) * 0.5).astype(np.float32)
    return weights


def make_policy(config: AgentConfig = CONFIG) -> ResidualPolicy:
    rng = np.random.default_rng(0)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, STATE_DIM)), rng.uniform(-0.8, 0.8, (50, DOF)),
                                                config.action_scale)
    agent = ResidualAgent(config, STATE_DIM, DOF, [], 84, 0, normaliser)
    return ResidualPolicy(config, STATE_DIM, DOF, [], 84, 0, trained_like_weights(agent))


POLICY = make_policy()


def test_the_first_command_of_an_episode_is_rate_limited_from_the_given_position():
    control = ControlStep(LIMITS)
    state, base = np.zeros(STATE_DIM), np.array([-0.5, 0.5, 0.0])
    control.start_episode([0.5, -0.5, 3.0])                  # the third joint beyond its limit: clipped to 1
    first = control.step(POLICY, state, base, position=[0.5, -0.5, 3.0])
    np.testing.assert_allclose(first.command, [0.4, -0.4, 0.9], atol=1e-12)
    assert first.flags & SAFETY_RATE_LIMITED and first.error is None
    second = control.step(POLICY, state, base, position=[0.5, -0.5, 3.0])     # from the previous command now
    np.testing.assert_allclose(second.command, [0.3, -0.3, 0.8], atol=1e-12)
    control.start_episode([0.5, -0.5, 0.5])                  # a new episode: from where the robot is
    np.testing.assert_allclose(control.step(POLICY, state, base, position=[0.5, -0.5, 0.5]).command,
                               [0.4, -0.4, 0.4], atol=1e-12)


def test_warm_up_draws_before_random_warmup_steps_then_the_actor_with_noise():
    control = ControlStep(LIMITS, hold_steps=1, seed=7)
    reference = np.random.default_rng(7)                     # the same stream, drawn in the same order
    rng = np.random.default_rng(1)
    control.start_episode(np.zeros(DOF))
    for t in range(6):
        state, base = rng.normal(size=STATE_DIM), rng.uniform(-0.3, 0.3, DOF)
        got = control.step(POLICY, state, base, position=base, explore=True, train_steps=t).residual
        if t < 3:
            scale = CONFIG.random_warmup_fraction * CONFIG.action_scale
            want = POLICY.random_residual(base, reference, scale, noise=reference.uniform(-scale, scale, DOF))
        else:
            want = POLICY.act(state, base, explore=True, noise=reference.normal(0.0, CONFIG.exploration_std, DOF))
        assert np.array_equal(got, want), t
        assert not np.array_equal(got, POLICY.act(state, base)), t          # the noise is in it
    # evaluation: the deterministic actor, and no draw taken from the stream
    state, base = rng.normal(size=STATE_DIM), rng.uniform(-0.3, 0.3, DOF)
    assert np.array_equal(control.step(POLICY, state, base, position=base).residual, POLICY.act(state, base))
    got = control.step(POLICY, state, base, position=base, explore=True, train_steps=10).residual
    assert np.array_equal(got, POLICY.act(state, base, explore=True,
                                          noise=reference.normal(0.0, CONFIG.exploration_std, DOF)))
    # no weights yet: zero residual, the base itself, whatever the phase
    for t in (0, 10):
        result = control.step(None, state, base, position=base, explore=True, train_steps=t)
        assert np.array_equal(result.residual, np.zeros(DOF)) and result.error is None


@pytest.mark.parametrize("warmup", [100, 0], ids=["warm-up", "actor"])
def test_a_draw_is_held_for_hold_steps_ticks_and_redrawn_after_start_episode(warmup):
    policy = make_policy(AgentConfig(**{**vars(CONFIG), "random_warmup_steps": warmup}))
    control = ControlStep(LIMITS, hold_steps=3, seed=3)
    state, base = np.full(STATE_DIM, 0.3), np.array([0.1, -0.2, 0.3])      # the same inputs every tick

    def residuals(n):
        return [control.step(policy, state, base, position=base, explore=True, train_steps=5).residual
                for _ in range(n)]

    control.start_episode(base)
    r = residuals(7)
    assert np.array_equal(r[0], r[1]) and np.array_equal(r[0], r[2])
    assert np.array_equal(r[3], r[4]) and np.array_equal(r[3], r[5]) and not np.array_equal(r[0], r[3])
    assert not np.array_equal(r[6], r[3])                    # r[6] is held for 2 more ticks ...
    control.start_episode(base)                              # ... but a new episode draws again at once
    again = residuals(3)
    assert not np.array_equal(again[0], r[6])
    assert np.array_equal(again[0], again[1]) and np.array_equal(again[0], again[2])


def test_with_action_repeat_the_residual_is_decided_every_r_steps_from_the_episode_start_and_held():
    """Decisions at steps 0, R, 2R, ... of each episode (where the learner's transitions start), in
    evaluation as in training; in between the decided residual, not the actor's answer to the new
    state; the exploration draw counts decisions."""
    policy = make_policy(AgentConfig(**{**vars(CONFIG), "random_warmup_steps": 0, "action_repeat": 3}))
    rng = np.random.default_rng(5)
    for explore in (False, True):
        control = ControlStep(LIMITS, hold_steps=1, seed=3)
        control.start_episode(np.zeros(DOF))
        inputs = [(rng.normal(size=STATE_DIM), rng.uniform(-0.3, 0.3, DOF)) for _ in range(8)]
        got = [control.step(policy, s, b, position=b, explore=explore, train_steps=5).residual for s, b in inputs]
        for t in range(8):
            decision = t - t % 3
            assert np.array_equal(got[t], got[decision]), (explore, t)
        assert not np.array_equal(got[0], got[3]) and not np.array_equal(got[3], got[6])
        if not explore:
            for t in (0, 3, 6):
                assert np.array_equal(got[t], policy.act(*inputs[t]))
        # a new episode decides at once, whatever was left of the last hold (step 7 held step 6's)
        control.start_episode(np.zeros(DOF))
        s, b = inputs[1]
        first = control.step(policy, s, b, position=b, explore=explore, train_steps=5).residual
        assert not np.array_equal(first, got[6])
        if not explore:
            assert np.array_equal(first, policy.act(s, b))
    with pytest.raises(ValueError, match="action_repeat"):
        AgentConfig(action_repeat=0)


def test_a_policy_that_raises_gives_the_base_alone_with_the_reason():
    control = ControlStep(LIMITS)
    base = np.array([0.05, -0.05, 0.0])
    control.start_episode(np.zeros(DOF))
    wrong_state = control.step(POLICY, np.zeros(STATE_DIM + 1), base, position=np.zeros(DOF))   # ValueError
    assert wrong_state.error is not None and "state" in wrong_state.error
    assert np.all(np.isnan(wrong_state.residual))
    assert np.array_equal(wrong_state.command, base)
    assert wrong_state.flags & SAFETY_BASE_ONLY and wrong_state.flags & SAFETY_NONFINITE_INPUT
    unloaded = ResidualPolicy(CONFIG, STATE_DIM, DOF, [], 84, 0)                                   # RuntimeError
    for t in (0, 5):                                         # warm-up and actor
        result = control.step(unloaded, np.zeros(STATE_DIM), base, position=base, explore=True, train_steps=t)
        assert result.error is not None and "no weights" in result.error
        assert np.array_equal(result.command, base) and result.flags & SAFETY_BASE_ONLY
    fine = control.step(POLICY, np.zeros(STATE_DIM), base, position=base)
    assert fine.error is None and np.all(np.isfinite(fine.residual))
    # the watchdog's base-only mode: the base without the residual, rate-limited like any command
    target, before = np.array([0.9, 0.0, 0.0]), fine.command
    limited = np.where(np.abs(target - before) > 0.1, before + 0.1 * np.sign(target - before), target)
    command = control.base_only(target, base)
    np.testing.assert_allclose(command, limited, atol=1e-12)
    assert np.array_equal(control.previous, command)        # the next tick is rate-limited from it


values = st.floats(allow_nan=True, allow_infinity=True)
vectors = st.lists(values, min_size=0, max_size=DOF + 1).map(lambda v: np.array(v, dtype=np.float64))
positions = st.lists(values, min_size=DOF, max_size=DOF).map(lambda v: np.array(v, dtype=np.float64))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=positions, ticks=st.lists(st.tuples(vectors, vectors, positions, st.booleans(),
                                                    st.integers(0, 4)), min_size=1, max_size=4))
def test_the_command_is_within_the_limits_whatever_the_inputs(position, ticks):
    """Garbage (NaN, inf, 1e308, wrong lengths) in state, base and position: the command is still
    finite, within the position limits and within max_step of the one before. Positions have the
    robot's length: the observation check guarantees that before a tick."""
    control = ControlStep(LIMITS, hold_steps=2)
    control.start_episode(position)
    reference = np.clip(position, LIMITS.lower, LIMITS.upper) if np.all(np.isfinite(position)) else None
    for state, base, pos, explore, train_steps in ticks:
        result = control.step(POLICY, state, base, pos, explore=explore, train_steps=train_steps)
        command = result.command
        assert command.shape == (DOF,) and np.all(np.isfinite(command))
        assert np.all(command >= LIMITS.lower) and np.all(command <= LIMITS.upper)
        if reference is not None:
            assert np.all(np.abs(command - reference) <= LIMITS.max_step)
        reference = command


# --- the node over DDS ---------------------------------------------------------------------------
@pytest.mark.ros
def test_the_node_commands_what_control_step_computes_in_process(ros_context, spawn, tmp_path):
    """The real residual_policy node, a fixed residual checkpoint and seed, exploration with a
    warm-up and held draws: three episodes (two training, one evaluation) of scripted
    observations, and base chunks from a scripted chunk server in this process. Every StepRecord's
    command (and residual and safety flags) must equal, bit for bit, those of one ControlStep fed
    the same (state, base, position, explore, train_steps) sequence here."""
    import torch
    from diagnostic_msgs.msg import DiagnosticArray

    from resfit_ros import names
    from resfit_ros.msg import ActionChunk, EpisodeStatus, Observation, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.nodes.convert import msg_to_observation
    from resfit_ros.robot import RobotDescription, config_dir
    from resfit_ros.srv import GetActionChunk
    from test.support import node_argv

    robot_file = config_dir() / "robots" / "g1_sim.yaml"
    robot = RobotDescription.load(robot_file)
    dof, state_dim = robot.dof, 2 * robot.dof
    home, room = robot.home, robot.upper - robot.home
    far = home + 0.5 * room                                  # episode 2 starts well beyond one max_step

    rng = np.random.default_rng(0)
    seed, warmup, hold, chunk_length = 5, 4, 3, 5
    config = AgentConfig(action_scale=0.1, exploration_std=0.1, random_warmup_steps=warmup, random_warmup_fraction=0.5,
                         actor_hidden_dims=(16, 16), critic_hidden_dims=(16,), num_critic_heads=2)
    demo_positions = home + rng.uniform(0.0, 0.6, (80, dof)) * room
    normaliser = Normaliser.from_demonstrations(
        np.concatenate([demo_positions, rng.normal(0.0, 0.1, (80, dof))], axis=1),
        demo_positions + rng.normal(0.0, 0.05, (80, dof)), config.action_scale)
    agent = ResidualAgent(config, state_dim, dof, [], 84, 0, normaliser)
    agent.load_weights(trained_like_weights(agent))
    checkpoint = agent.save_checkpoint(tmp_path / "residual")

    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={robot_file}",
                           "-p", f"residual_checkpoint:={checkpoint}", "-p", f"seed:={seed}",
                           "-p", f"exploration_hold_steps:={hold}", "-p", f"chunk_length:={chunk_length}",
                           "-p", "prefetch_steps:=1", "-p", "watchdog_timeout_s:=1.0",
                           "-p", "diagnostics_period_s:=0.2"), name="residual")

    def log() -> str:
        return open(proc.log_path).read()[-4000:]

    node = ros_context.node
    served: list[np.ndarray] = []                            # every chunk answered, in order

    def on_chunk_request(request, response):
        position = np.asarray(request.observation.position, dtype=np.float64)
        rows = np.arange(1, chunk_length + 1)[:, None] * 0.03 * np.sin(np.arange(dof) + len(served))[None]
        chunk = position[None] + rows                         # (k, dof): drifting away from the robot
        served.append(chunk)
        response.success = True
        response.chunk = ActionChunk(observation_sequence=request.observation.sequence,
                                     joint_names=robot.joint_names, chunk_length=chunk_length, dof=dof,
                                     actions=chunk.reshape(-1).tolist())
        return response

    node.create_service(GetActionChunk, names.GET_ACTION_CHUNK, on_chunk_request)
    records: list = []
    node.create_subscription(StepRecord, names.STEP_RECORD, records.append, STREAM)
    status_pub = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    obs_pub = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    sent: dict[int, Observation] = {}
    spinning = []                                            # its diagnostics: built, checkpoint loaded, spinning
    node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: spinning.extend(
        s for s in m.status if s.name.endswith("residual_policy")), 10)
    assert ros_context.spin_until(lambda: spinning, 90), log()

    def act_on(position: np.ndarray) -> None:
        """One scripted observation, published until the node has acted on it (a first one may
        go stale while the node finds the chunk server)."""
        seq = len(sent)
        k = np.arange(dof) + seq
        msg = Observation(sequence=seq, joint_names=robot.joint_names,
                          position=(position + 0.01 * np.sin(k)).tolist(), velocity=(0.1 * np.cos(k)).tolist())
        sent[seq] = msg
        deadline = time.monotonic() + 90.0
        while time.monotonic() < deadline:
            msg.header.stamp = node.get_clock().now().to_msg()
            obs_pub.publish(msg)
            if ros_context.spin_until(lambda: any(r.observation_sequence == seq for r in records), 3.0):
                return
        pytest.fail(f"the node never acted on observation {seq}:\n{log()}")

    scripted: dict[int, list[int]] = {}                      # episode -> the observations sent in it

    def run_episode(episode_id: int, explore: bool, start: np.ndarray, steps: int) -> None:
        if episode_id > 1:
            # the manager's "reset done" (newer observations only), and past the watchdog timeout:
            # either keeps the node from acting on the last observation of the episode before
            status = EpisodeStatus(state=EpisodeStatus.IDLE, ready=True, episode_id=episode_id - 1)
            status.header.stamp = node.get_clock().now().to_msg()
            status_pub.publish(status)
            ros_context.spin_until(lambda: False, 1.5)
        status_pub.publish(EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=episode_id, explore=explore))
        scripted[episode_id] = list(range(len(sent), len(sent) + steps))
        for _ in range(steps):
            act_on(start)

    run_episode(1, True, home, 8)                            # warm-up (training steps 0-3), then the actor
    run_episode(2, True, far, 5)                             # a fresh held draw; first command from `far`
    run_episode(3, False, home, 3)                           # evaluation: the deterministic actor
    ros_context.spin_until(lambda: False, 0.5)               # a late duplicate record, if any

    # every step of the node, in order (a republished observation may have been acted on twice)
    steps = sorted(records, key=lambda r: (r.episode_id, r.step))
    episodes = {e: [r for r in steps if r.episode_id == e] for e in scripted}
    assert sum(map(len, episodes.values())) == len(steps), log()
    for e, rs in episodes.items():
        assert [r.step for r in rs] == list(range(len(rs))), (e, [r.step for r in rs])
        assert {r.observation_sequence for r in rs} == set(scripted[e]), e   # never one of another episode
        assert all(r.exploration == (e != 3) for r in rs), e
    training = episodes[1] + episodes[2]
    assert [r.training_steps for r in training] == list(range(1, len(training) + 1))
    assert all(r.training_steps == len(training) for r in episodes[3])
    assert all(any(np.array_equal(r.base_action, row) for c in served for row in c) for r in steps)

    # the same sequence through one ControlStep, as the node built it
    limits = CommandLimits.from_robot(robot, 20.0, [0.2])
    control = ControlStep(limits, hold_steps=hold, seed=seed)
    loaded = type(agent).from_checkpoint(checkpoint)
    policy = ResidualPolicy(loaded.config, state_dim, dof, [], 84, 0, loaded.get_weights())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                                 # as the node (num_threads 1)
    try:
        for r in steps:
            obs = msg_to_observation(sent[r.observation_sequence], dof=dof)
            if r.step == 0:
                control.start_episode(obs.position)
            result = control.step(policy, obs.state_vector(), np.asarray(r.base_action), obs.position,
                                  explore=r.exploration, train_steps=r.training_steps - int(r.exploration))
            where = f"episode {r.episode_id} step {r.step}"
            assert result.error is None, where
            assert np.array_equal(result.command, np.asarray(r.command)), where
            assert np.array_equal(np.nan_to_num(result.residual), np.asarray(r.residual)), where
            assert result.flags == r.safety_flags, where
    finally:
        torch.set_num_threads(threads)

    # what the sequence exercised: a residual in every step, warm-up steps (training steps 0-3)
    # and actor steps, and episode 2's first command rate-limited from its own start, not from
    # episode 1's last command
    assert all(np.any(np.asarray(r.residual) != 0.0) for r in steps)
    assert len(episodes[1]) > warmup
    first_of_2, last_of_1 = episodes[2][0], episodes[1][-1]
    assert np.any(np.abs(np.asarray(first_of_2.command) - np.asarray(last_of_1.command)) > limits.max_step)


@pytest.mark.ros
def test_the_node_refuses_weights_for_another_state_size_with_one_clear_error(ros_context, spawn, tmp_path):
    """Weights trained on 67-D simulator states (joints + task state) meet a robot's 58-D
    observations: every observation is refused (counted; no command from a network that cannot
    read it), and one error line says why and how to fix it (demos without the task state)."""
    from diagnostic_msgs.msg import DiagnosticArray

    from resfit_ros import names
    from resfit_ros.msg import EpisodeStatus, Observation, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.robot import RobotDescription, config_dir
    from test.support import node_argv

    robot_file = config_dir() / "robots" / "g1_sim.yaml"
    robot = RobotDescription.load(robot_file)
    dof, trained_dim = robot.dof, 2 * robot.dof + 9
    rng = np.random.default_rng(0)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, trained_dim)),
                                                robot.home + rng.normal(0.0, 0.05, (50, dof)), CONFIG.action_scale)
    agent = ResidualAgent(CONFIG, trained_dim, dof, [], 84, 0, normaliser)
    checkpoint = agent.save_checkpoint(tmp_path / "residual")
    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={robot_file}",
                           "-p", f"residual_checkpoint:={checkpoint}", "-p", "diagnostics_period_s:=0.2"),
                 name="residual")
    node = ros_context.node
    records: list = []
    node.create_subscription(StepRecord, names.STEP_RECORD, records.append, STREAM)
    status: list = []
    node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: status.extend(
        s for s in m.status if s.name.endswith("residual_policy")), 10)
    assert ros_context.spin_until(lambda: status, 90), open(proc.log_path).read()[-3000:]
    node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED).publish(
        EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, explore=False))
    obs_pub = node.create_publisher(Observation, names.OBSERVATION, STREAM)

    def refused() -> int:
        return max((int(v.value) for s in status for v in s.values if v.key == "rejected/observation_state_dim"),
                   default=0)

    for seq in range(20):
        msg = Observation(sequence=seq, joint_names=robot.joint_names, position=robot.home.tolist(),
                          velocity=[0.0] * dof)
        msg.header.stamp = node.get_clock().now().to_msg()
        obs_pub.publish(msg)
        ros_context.spin_until(lambda: False, 0.05)
    assert ros_context.spin_until(lambda: refused() >= 15, 20), open(proc.log_path).read()[-3000:]
    log = open(proc.log_path).read()
    assert records == []                                   # no command computed from those weights
    errors = [line for line in log.splitlines() if "cannot act on this robot's observations" in line]
    assert len(errors) == 1 and "58-D" in errors[0] and "67-D" in errors[0] and "--no-task-state" in errors[0], errors


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64), min_size=DOF, max_size=DOF))
def test_an_operators_target_drives_within_the_limits_and_hands_back_smoothly(target):
    from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR

    control = ControlStep(LIMITS)
    state, base = np.zeros(STATE_DIM), np.zeros(DOF)
    control.start_episode([0.0, 0.0, 0.0])
    previous = control.step(POLICY, state, base, position=[0.0] * DOF).command
    taken = control.step(POLICY, state, base, position=[0.0] * DOF, operator=np.array(target))
    assert taken.intervention and taken.flags & SAFETY_OPERATOR
    # whatever the operator sends: inside the joint limits, one rate-limited step from the last command
    assert np.all(taken.command >= -1.0) and np.all(taken.command <= 1.0)
    assert np.all(np.abs(taken.command - previous) <= 0.1 + 1e-12)
    if not np.isfinite(target).all():
        assert taken.flags & SAFETY_HOLD and taken.flags & SAFETY_NONFINITE_INPUT
        np.testing.assert_array_equal(taken.command, previous)
    # what the operator did beyond the base is recorded as the step's residual
    np.testing.assert_allclose(taken.residual, taken.command - base)
    # the hand-back to the policy is rate-limited from the operator's last command
    back = control.step(POLICY, state, base, position=[0.0] * DOF)
    assert not back.intervention and np.all(np.abs(back.command - taken.command) <= 0.1 + 1e-12)


def test_an_operator_target_beyond_the_residual_bound_is_followed_at_the_rate_limit():
    control = ControlStep(LIMITS)
    control.start_episode([0.0, 0.0, 0.0])
    commands = [control.step(POLICY, np.zeros(STATE_DIM), np.zeros(DOF), position=[0.0] * DOF,
                             operator=np.array([0.9, -0.9, 0.0])).command for _ in range(12)]
    # the residual bound (0.2) does not apply to the operator: the target is reached, 0.1 per step
    np.testing.assert_allclose(commands[3], [0.4, -0.4, 0.0], atol=1e-12)
    np.testing.assert_allclose(commands[-1][:2], [0.9, -0.9], atol=1e-12)
