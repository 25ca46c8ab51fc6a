"""Residual agent contracts: zero initial residual, bounded residual, 2-of-N target heads,
LayerNorm, which losses reach the encoder."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from resfit_ros.learning import AgentConfig, ResidualPolicy
from resfit_ros.learning.networks import FEATURE_CLIP, CriticEnsemble
from test.learning.conftest import (ACTION_DIM, CAMERAS, FEATURE_DIM, IMAGE, STATE_DIM, filled_buffer,
                                    make_agent, tiny_config)


def policy_for(agent, cameras=True, features=True) -> ResidualPolicy:
    return ResidualPolicy(agent.config, STATE_DIM, ACTION_DIM, CAMERAS if cameras else [], IMAGE,
                          FEATURE_DIM if features else 0, agent.get_weights())


def test_zero_initialised_actor_commands_exactly_the_base_action():
    agent = make_agent()
    policy = policy_for(agent)
    rng = np.random.default_rng(0)
    normaliser = agent.normaliser
    for _ in range(20):
        base = rng.uniform(normaliser.action_low, normaliser.action_high)       # inside the widened range
        residual = policy.act(rng.normal(size=STATE_DIM) * 5, base,
                              rng.integers(0, 256, (2, 3, IMAGE, IMAGE), dtype=np.uint8),
                              rng.normal(size=FEATURE_DIM))
        assert residual.dtype == np.float64 and residual.shape == (ACTION_DIM,)
        assert np.array_equal(residual, np.zeros(ACTION_DIM))
        assert np.array_equal(base + residual, base)


def test_state_only_and_feature_only_modes_start_at_zero_too():
    for cameras, features in ((False, False), (False, True)):
        agent = make_agent(cameras=cameras, features=features)
        policy = policy_for(agent, cameras, features)
        residual = policy.act(np.ones(STATE_DIM), np.zeros(ACTION_DIM),
                              features=np.ones(FEATURE_DIM) if features else None)
        assert np.array_equal(residual, np.zeros(ACTION_DIM))


def _randomised_policy(scale: float) -> ResidualPolicy:
    agent = make_agent(action_scale=scale)
    weights = agent.get_weights()
    rng = np.random.default_rng(1)
    for name in weights:
        if name.startswith("actor."):   # large random weights: tanh saturates for many inputs
            weights[name] = (rng.normal(size=weights[name].shape) * 5).astype(np.float32)
    return ResidualPolicy(agent.config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM, weights)


POLICY = _randomised_policy(0.2)
finite = st.floats(allow_nan=False, allow_infinity=False)   # includes +-1.8e308 and subnormals


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(state=st.lists(finite, min_size=STATE_DIM, max_size=STATE_DIM),
       base=st.lists(finite, min_size=ACTION_DIM, max_size=ACTION_DIM),
       feats=st.lists(finite, min_size=FEATURE_DIM, max_size=FEATURE_DIM),
       pixel=st.integers(0, 255), explore=st.booleans())
def test_residual_is_bounded_by_action_scale_for_any_input(state, base, feats, pixel, explore):
    policy, normaliser = POLICY, POLICY.normaliser
    images = np.full((2, 3, IMAGE, IMAGE), pixel, np.uint8)
    base = np.array(base)
    base_n = normaliser.normalise_action(base)
    residual_n = policy._residual_normalised(np.array(state), base_n, images, np.array(feats))
    assert np.all(np.isfinite(residual_n)) and np.all(np.abs(residual_n) <= 0.2)
    residual = policy.act(np.array(state), base, images, np.array(feats), explore=explore,
                          rng=np.random.default_rng(0))
    command = base + residual
    assert np.all(np.isfinite(residual))
    # the residual is at most action_scale (normalised) for every base, inside the range or not
    assert np.all(np.abs(residual) <= 0.2 * normaliser.action_half_range * (1 + 1e-9))
    # ... and for a base inside the widened demo range the command stays inside it
    inside = np.abs(base_n) <= 1
    tol = 1e-3 * np.maximum(1, np.abs(base))
    assert np.all((command >= normaliser.action_low - tol)[inside]) and np.all((command <= normaliser.action_high + tol)[inside])


def test_non_finite_inputs_give_a_nan_residual():
    residual = POLICY.act(np.full(STATE_DIM, np.nan), np.zeros(ACTION_DIM),
                          np.zeros((2, 3, IMAGE, IMAGE), np.uint8), np.zeros(FEATURE_DIM))
    assert np.all(np.isnan(residual))


def test_td_target_uses_exactly_two_random_target_heads():
    agent = make_agent(num_critic_heads=6)
    buffer = filled_buffer()
    calls = []
    original = agent.critic_target.forward

    def recording_forward(critic_input, heads=None):
        out = original(critic_input, heads)
        full = original(critic_input)          # all heads, same weights (before the Polyak step)
        calls.append((heads.clone() if heads is not None else None, full, out.clone()))
        return out

    agent.critic_target.forward = recording_forward
    pairs = set()
    for _ in range(30):
        batch = buffer.sample(8)
        agent.update(batch, update_actor=False)
        heads, full, out = calls[-1]
        assert heads is not None and heads.shape == (2,) and len(set(heads.tolist())) == 2
        assert out.shape == (2, 8)
        pairs.add(tuple(sorted(heads.tolist())))
        # the selected heads are exactly those heads of the full ensemble
        assert torch.allclose(out, full[heads], atol=1e-6)
    assert len(calls) == 30 and len(pairs) > 3           # randomly chosen, not fixed


def test_td_target_is_min_of_the_two_heads():
    agent = make_agent()
    batch = filled_buffer().sample(8)
    seen = {}
    original = agent.critic_target.forward

    def recording_forward(critic_input, heads=None):
        seen["q"] = original(critic_input, heads)
        return seen["q"]

    agent.critic_target.forward = recording_forward
    captured = {}
    critic_forward = agent.critic.forward

    def critic_recording(critic_input, heads=None):
        out = critic_forward(critic_input, heads)
        captured.setdefault("q", out.detach())
        return out

    agent.critic.forward = critic_recording
    stats = agent.update(batch, update_actor=False)
    target = (batch.nstep_reward + batch.nstep_discount * seen["q"].min(0).values).clamp(0.0, 1.0)
    per_head = ((captured["q"] - target) ** 2).mean(1)
    assert stats["losses/critic"] == pytest.approx(per_head.mean().item(), rel=1e-5)


@pytest.mark.parametrize("head_value", [-5.0, 5.0])
def test_td_target_stays_within_the_return_range_whatever_the_target_heads_say(head_value):
    # every return is in [0, 1] (one reward of 1 on a success's last step): a target head far
    # outside it must not become the target
    agent = make_agent()
    batch = filled_buffer().sample(64)
    assert float(batch.nstep_discount.max()) > 0          # some transitions bootstrap
    agent.critic_target.forward = lambda critic_input, heads=None: torch.full(
        (len(heads) if heads is not None else agent.config.num_critic_heads, critic_input.shape[0]), head_value)
    stats = agent.update(batch, update_actor=False)
    assert 0.0 <= stats["values/target_mean"] <= 1.0
    unclamped = batch.nstep_reward + batch.nstep_discount * head_value
    assert not bool(((unclamped >= 0) & (unclamped <= 1)).all())   # the clamp had work to do


def test_layernorm_in_actor_and_critic():
    agent = make_agent()
    layer_norms = [m for m in agent.actor.modules() if isinstance(m, nn.LayerNorm)]
    assert len(layer_norms) == len(agent.config.actor_hidden_dims)
    # LayerNorm after every hidden Linear makes each head invariant to scaling that Linear's output
    critic = CriticEnsemble(7, (16, 16), 4)
    x = torch.randn(5, 7)
    before = critic(x)
    with torch.no_grad():
        for layer in range(2):
            critic.weights[layer].mul_(9.0)
            critic.biases[layer].mul_(9.0)
    assert torch.allclose(critic(x), before, atol=1e-4)
    assert len(critic.norm_weights) == 2 and critic.norm_weights[0].shape == (4, 1, 16)


def test_critic_gradients_reach_the_encoder_and_actor_gradients_do_not():
    agent = make_agent()
    batch = filled_buffer().sample(8)
    counts = {"encoder": 0, "actor": 0, "critic": 0}
    nonzero = {"encoder": 0}

    def hook(group):
        def count(grad):
            counts[group] += 1
            if group == "encoder":
                nonzero["encoder"] += int(grad.abs().sum() > 0)
            return grad
        return count

    for group, module in (("encoder", agent.encoder), ("actor", agent.actor), ("critic", agent.critic)):
        for parameter in module.parameters():
            parameter.register_hook(hook(group))
    n_encoder = len(list(agent.encoder.parameters()))
    n_actor = len(list(agent.actor.parameters()))
    n_critic = len(list(agent.critic.parameters()))
    agent.update(batch, update_actor=True)
    assert agent.actor_updates == 1
    assert counts["encoder"] == n_encoder          # once: from the critic loss only
    assert nonzero["encoder"] > 0
    assert counts["critic"] == n_critic            # once: the actor loss does not train the critic
    assert counts["actor"] == n_actor              # once: from the actor loss


def test_actor_waits_for_the_critic_warmup():
    agent = make_agent(critic_warmup_updates=3)
    buffer = filled_buffer()
    actor_before = [p.clone() for p in agent.actor.parameters()]
    for _ in range(3):
        stats = agent.update(buffer.sample(8), update_actor=True)
        assert "losses/actor" not in stats
    assert all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))
    stats = agent.update(buffer.sample(8), update_actor=True)
    assert "losses/actor" in stats and agent.actor_updates == 1
    assert not all(torch.equal(a, b) for a, b in zip(actor_before, agent.actor.parameters()))


def test_train_iteration_does_utd_critic_updates_and_one_actor_update():
    from resfit_ros.learning import train_iteration
    agent = make_agent()
    stats = train_iteration(agent, filled_buffer(), utd=4, update_actor=True)
    assert (agent.critic_updates, agent.actor_updates) == (4, 1)
    assert stats["counters/critic_updates"] == 4 and "losses/actor" in stats


def test_config_rejects_bad_values_with_the_value_in_the_message():
    from resfit_ros.config import ConfigError
    with pytest.raises(ConfigError, match="-0.5"):
        tiny_config(action_scale=-0.5)
    with pytest.raises(ConfigError, match="num_target_heads"):
        tiny_config(num_critic_heads=2, num_target_heads=3)


def test_random_shift_is_a_replicate_padded_crop():
    from resfit_ros.learning.networks import random_shift
    h = w = 12
    image = torch.arange(h * w, dtype=torch.int64).view(1, 1, h, w).repeat(64, 3, 1, 1)
    shifted = random_shift(image, pad=4, generator=torch.Generator().manual_seed(0))
    seen = set()
    for n in range(64):
        dy = int(shifted[n, 0, 6, 6] // w) - 6          # read the shift off an interior pixel
        dx = int(shifted[n, 0, 6, 6] % w) - 6
        assert -4 <= dy <= 4 and -4 <= dx <= 4
        rows = (torch.arange(h) + dy).clamp(0, h - 1)
        cols = (torch.arange(w) + dx).clamp(0, w - 1)
        expected = image[n, :, rows][:, :, cols]
        assert torch.equal(shifted[n], expected)
        seen.add((dy, dx))
    assert len(seen) > 20
    assert torch.equal(random_shift(image, pad=0, generator=None), image)


def test_zero_residual_leaves_any_base_action_unchanged_even_outside_the_demo_range():
    """The initial combined policy IS the base, also for base actions beyond the demo range."""
    import numpy as np

    from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent, ResidualPolicy

    rng = np.random.default_rng(0)
    norm = Normaliser.from_demonstrations(rng.normal(size=(50, 6)), rng.uniform(-0.5, 0.5, size=(50, 3)), 0.1)
    agent = ResidualAgent(AgentConfig(), 6, 3, [], 84, 0, norm)
    policy = ResidualPolicy(AgentConfig(), 6, 3, [], 84, 0, agent.get_weights())
    for base in (np.zeros(3), np.array([3.0, -7.0, 0.2]), np.array([1e6, -1e6, 0.5])):
        residual = policy.act(rng.normal(size=6), base)
        assert np.all(residual == 0.0) and np.array_equal(base + residual, base)


@pytest.mark.parametrize("penalty", [0.0, 1.0])
def test_residual_penalty_pulls_the_residual_back_to_the_base_where_the_critic_is_flat(penalty):
    # A critic with a zero output layer (and a learning rate too small to change it) has no action
    # gradient: only the penalty can move the actor. Without it the residual stays where it is.
    agent = make_agent(residual_penalty=penalty, critic_lr=1e-12, encoder_lr=1e-12, weight_decay=0.0)
    with torch.no_grad():
        agent.critic.weights[-1].zero_()
        agent.critic.biases[-1].zero_()
        agent.actor.output.bias.fill_(1.0)       # tanh(1) * action_scale: a residual at 76 % of the bound
    buffer = filled_buffer()
    probe = buffer.sample(16)

    def mean_abs_residual() -> float:
        with torch.no_grad():
            state = agent._normalise_state(probe.obs["state"])
            base = agent._normalise_action(probe.base_action).clamp(-1, 1)
            features = agent.encoder(probe.obs, augment=False)
            return agent.actor(torch.cat([features, state, base], dim=1)).abs().mean().item()

    before = mean_abs_residual()
    for _ in range(100):
        agent.update(buffer.sample(8), update_actor=True)
    after = mean_abs_residual()
    if penalty:
        assert after < 0.7 * before
    else:
        assert after == pytest.approx(before, rel=1e-4)


def test_per_joint_residual_gain_bounds_each_joint_and_a_zero_gain_joint_never_moves():
    from resfit_ros.learning import Normaliser, ResidualAgent
    from test.learning.conftest import tiny_config

    rng = np.random.default_rng(0)
    gain = np.array([0.0, 1.0, 5.0][:ACTION_DIM] + [1.0] * max(0, ACTION_DIM - 3))
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(64, STATE_DIM)),
                                                rng.uniform(-2.0, 2.0, size=(64, ACTION_DIM)), 0.1, residual_gain=gain)
    config = tiny_config(action_scale=0.1)
    agent = ResidualAgent(config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM, normaliser, seed=0)
    weights = agent.get_weights()
    for name in weights:
        if name.startswith("actor."):   # saturate tanh: every residual at its bound
            weights[name] = (rng.normal(size=weights[name].shape) * 50).astype(np.float32)
    policy = ResidualPolicy(config, STATE_DIM, ACTION_DIM, CAMERAS, IMAGE, FEATURE_DIM, weights)
    bound_joint_units = 0.1 * gain * normaliser.action_half_range
    seen = np.zeros(ACTION_DIM)
    for explore in (False, True):
        for _ in range(20):
            residual = policy.act(rng.normal(size=STATE_DIM), np.zeros(ACTION_DIM),
                                  rng.integers(0, 256, (2, 3, IMAGE, IMAGE), dtype=np.uint8),
                                  rng.normal(size=FEATURE_DIM), explore=explore, rng=rng)
            assert np.all(np.abs(residual) <= bound_joint_units * (1 + 1e-6))
            seen = np.maximum(seen, np.abs(residual))
        warmup = policy.random_residual(np.zeros(ACTION_DIM), rng, 0.1)
        assert np.all(np.abs(warmup) <= bound_joint_units * (1 + 1e-6)) and warmup[0] == 0.0
    assert seen[0] == 0.0                                   # gain 0: no residual, not even exploration
    assert seen[2] > 1.5 * 0.1 * normaliser.action_half_range[2]   # gain 5 reaches past a gain-1 bound
    # the learner's actor (and target actor) carry the same per-joint bounds
    agent.load_weights(weights)
    with torch.no_grad():
        probe = torch.randn(64, agent.actor.hidden[0].in_features)
        for actor in (agent.actor, agent.actor_target):
            out = actor(probe).abs().amax(dim=0).numpy()
            assert out[0] == 0.0 and np.all(out <= 0.1 * gain + 1e-6) and out[2] > 0.15


def regression_errors(agent, batch) -> torch.Tensor:
    """(B,) sum_j ((r_j - target_j) / bound_j)^2: how far the actor's residual is from what each row's
    command did beyond the base (clamped to the bound), the regression target of demo/intervention BC."""
    base = agent._normalise_action(batch.base_action)
    action = agent._normalise_action(batch.action).clamp(-1.0, 1.0)
    target = torch.clamp(action - base.clamp(-1.0, 1.0), -agent._residual_scale, agent._residual_scale)
    with torch.no_grad():
        feats = agent.encoder(batch.obs, augment=False)
        residual = agent.actor(torch.cat([feats, agent._normalise_state(batch.obs["state"]),
                                          base.clamp(-1.0, 1.0)], dim=1))
    return ((residual - target) / agent._residual_scale).pow(2).sum(dim=1)


def test_demo_bc_pulls_the_residual_toward_what_the_demos_did_beyond_the_base_on_demo_rows_only():
    from resfit_ros.learning.agent import LOSS_DEMO_BC

    buffer = filled_buffer(cameras=False, features=False)
    batch = buffer.sample(64)
    assert batch.demo is not None and int(batch.demo.sum()) == 32 and bool(batch.demo[:32].all())

    def residual_error(weight: float) -> tuple[float, dict]:
        agent = make_agent(cameras=False, features=False, demo_bc_weight=weight, residual_penalty=0.0)
        stats = {}
        for _ in range(300):
            stats = agent.update(batch, update_actor=True)
        return float(regression_errors(agent, batch)[batch.demo].mean()), stats

    with_bc, stats = residual_error(10.0)
    without, stats0 = residual_error(0.0)
    assert LOSS_DEMO_BC in stats and LOSS_DEMO_BC not in stats0
    assert with_bc < 0.5 * without, (with_bc, without)


def test_the_learner_device_is_cpu_or_an_available_gpu_and_a_missing_gpu_is_one_clear_error():
    """device 'cuda' trains on the GPU where torch sees one; elsewhere (these CPU machines) the
    learner refuses it at start-up, naming the torch build, instead of failing in its first update."""
    from resfit_ros.config import ConfigError
    from resfit_ros.learning.agent import batch_to, check_device
    from resfit_ros.nodes.learner import LearnerConfig

    assert check_device("cpu") == "cpu" and LearnerConfig(device="cpu").device == "cpu"
    with pytest.raises(ConfigError, match="cpu or cuda"):
        LearnerConfig(device="gpu")
    if torch.cuda.is_available():
        agent = make_agent(cameras=True, features=True, device="cuda")
        stats = agent.update(filled_buffer(cameras=True, features=True).sample(8), update_actor=True)
        assert np.isfinite(stats["losses/critic"]) and next(agent.critic.parameters()).is_cuda
    else:
        with pytest.raises(ConfigError, match="no CUDA device"):
            LearnerConfig(device="cuda")
    # the batch mover keeps every field (and the demo mask) in place
    batch = filled_buffer(cameras=True, features=True).sample(8)
    moved = batch_to(batch, "cpu")
    assert moved._fields == batch._fields and torch.equal(moved.demo, batch.demo)
    assert set(moved.obs) == set(batch.obs) and torch.equal(moved.obs["state"], batch.obs["state"])


def test_intervention_bc_pulls_the_residual_toward_the_operators_correction_on_operator_rows_only():
    from resfit_ros.learning.agent import LOSS_DEMO_BC, LOSS_INTERVENTION_BC

    batch = filled_buffer(cameras=False, features=False).sample(64)
    operator = torch.zeros(64, dtype=torch.bool)
    operator[16:32] = True                       # a quarter of the rows: the operator's (within the demo share)
    batch = batch._replace(intervention=operator)

    def errors(weight: float) -> tuple[float, float, dict]:
        agent = make_agent(cameras=False, features=False, intervention_bc_weight=weight, residual_penalty=0.0)
        stats = {}
        for _ in range(300):
            stats = agent.update(batch, update_actor=True)
        err = regression_errors(agent, batch)
        return float(err[operator].mean()), float(err[batch.demo & ~operator].mean()), stats

    on_operator, on_demos, stats = errors(10.0)
    without, without_demos, stats0 = errors(0.0)
    assert LOSS_INTERVENTION_BC in stats and LOSS_INTERVENTION_BC not in stats0 and LOSS_DEMO_BC not in stats
    assert on_operator < 0.5 * without, (on_operator, without)


def test_by_default_the_actor_reads_the_frozen_features_as_they_are_so_critic_updates_never_move_its_input():
    # A projection trained by the critic (at critic speed) would change what the slow actor sees.
    agent = make_agent(cameras=False, features=True, feature_projection_dim=AgentConfig().feature_projection_dim)
    buffer = filled_buffer(cameras=False, features=True)
    batch = buffer.sample(8)
    with torch.no_grad():
        before = agent.encoder(batch.obs, augment=False).clone()
    for _ in range(5):
        agent.update(buffer.sample(8), update_actor=True)
    with torch.no_grad():
        after = agent.encoder(batch.obs, augment=False)
    assert list(agent.encoder.parameters()) == []
    assert torch.equal(before, after)
    assert torch.equal(after, batch.obs["features"].clamp(-FEATURE_CLIP, FEATURE_CLIP))


def test_a_pessimistic_actor_prefers_actions_its_critic_heads_agree_on():
    from resfit_ros.learning.agent import LOSS_ACTOR, actor_objective
    from resfit_ros.learning.offline import OfflineSettings

    q = torch.tensor([[0.5, 0.9],      # (N=2 heads, B=2): the same mean 0.5; the second transition's heads disagree
                      [0.5, 0.1]])
    assert torch.equal(actor_objective(q, 0.0), torch.tensor([0.5, 0.5]))
    pessimistic = actor_objective(q, 1.0)
    assert pessimistic[0] == pytest.approx(0.5) and pessimistic[1] < 0.5 - 0.5   # std of (0.9, 0.1) is 0.57
    assert torch.equal(actor_objective(q[:1], 1.0), q[0])                          # one head: no spread to measure
    # the setting reaches the agent from the learner's parameters, and a negative one is refused
    assert OfflineSettings(actor_pessimism=0.5).agent_config().actor_pessimism == 0.5
    from resfit_ros.config import ConfigError
    with pytest.raises(ConfigError, match="actor_pessimism must be >= 0, got -1"):
        AgentConfig(actor_pessimism=-1.0)
    agent = make_agent(cameras=False, features=False, actor_pessimism=1.0, critic_warmup_updates=0)
    before = [p.detach().clone() for p in agent.actor.parameters()]
    stats = agent.update(filled_buffer(cameras=False, features=False).sample(32), update_actor=True)
    assert np.isfinite(stats[LOSS_ACTOR])
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.actor.parameters()))
