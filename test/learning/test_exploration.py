"""Held exploration noise (learning/exploration.py) and the policy's caller-supplied noise."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent, ResidualPolicy
from resfit_ros.learning.exploration import HeldNoise


def test_each_draw_is_held_for_hold_steps_and_an_episode_start_draws_again():
    rng = np.random.default_rng(0)
    held = HeldNoise(hold_steps=3)
    values = [held.next(lambda: rng.normal(size=4)) for _ in range(7)]
    assert all(np.array_equal(values[0], v) for v in values[:3])
    assert all(np.array_equal(values[3], v) for v in values[3:6])
    assert not np.array_equal(values[0], values[3]) and not np.array_equal(values[3], values[6])
    held.reset()                                   # a new episode: a fresh draw at once
    assert not np.array_equal(held.next(lambda: rng.normal(size=4)), values[6])
    one = HeldNoise(1)
    a, b = one.next(lambda: rng.normal(size=2)), one.next(lambda: rng.normal(size=2))
    assert not np.array_equal(a, b)                # hold 1 = per-step noise (ResFiT's)
    with pytest.raises(ValueError, match="hold_steps"):
        HeldNoise(0)


def test_the_policy_adds_the_callers_noise_clamped_to_the_residual_bound():
    rng = np.random.default_rng(1)
    state_dim, dof = 6, 3
    config = AgentConfig(action_scale=0.1, actor_hidden_dims=(16,), critic_hidden_dims=(16,), num_critic_heads=2)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, state_dim)), rng.uniform(-1, 1, (50, dof)),
                                                config.action_scale)
    agent = ResidualAgent(config, state_dim, dof, [], 84, 0, normaliser)
    policy = ResidualPolicy(config, state_dim, dof, [], 84, 0, agent.get_weights())
    state, base = rng.normal(size=state_dim), np.zeros(dof)
    quiet = policy.act(state, base)
    assert np.allclose(quiet, 0.0)                 # zero-initialised last layer: no residual yet
    noise = np.array([0.05, -0.5, 0.0])            # the second beyond the bound: clamped to -0.1
    got = policy.act(state, base, explore=True, noise=noise)
    np.testing.assert_allclose(got, policy.compose(base, np.array([0.05, -0.1, 0.0])))
    assert np.array_equal(policy.act(state, base, explore=True, noise=noise), got)   # no hidden draw
    warm = policy.random_residual(base, rng, 0.03, noise=np.array([0.02, 0.3, -0.02]))
    np.testing.assert_allclose(warm, policy.compose(base, np.array([0.02, 0.1, -0.02])))


def test_the_random_warm_up_moves_only_the_joints_its_mask_names():
    from resfit_ros.learning.offline import OfflineSettings, SetupError

    rng = np.random.default_rng(2)
    state_dim, names = 4, ["left_arm_0", "right_hand_thumb", "right_hand_index"]
    settings = OfflineSettings(action_scale=0.1, hidden_dim=16, num_critic_heads=2,
                               random_warmup_joints=["right_hand_"])
    config = settings.agent_config(names)
    assert config.random_warmup_mask == (0.0, 1.0, 1.0)
    assert settings.agent_config().random_warmup_mask == ()          # no joint names: every joint
    with pytest.raises(SetupError, match="torso_"):
        OfflineSettings(random_warmup_joints=["torso_"]).agent_config(names)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, state_dim)), rng.uniform(-1, 1, (50, 3)), 0.1)
    agent = ResidualAgent(config, state_dim, 3, [], 84, 0, normaliser)
    policy = ResidualPolicy(config, state_dim, 3, [], 84, 0, agent.get_weights())
    draws = np.array([policy.random_residual(np.zeros(3), rng, 0.1) for _ in range(200)])
    assert np.all(draws[:, 0] == 0.0)                                 # the arm stays at the base
    assert np.all(np.abs(draws[:, 1:]).max(axis=0) > 0.5 * 0.1 * normaliser.action_half_range[1:])
    with pytest.raises(ValueError, match="random_warmup_mask has 3 entries for 2 actions"):
        ResidualPolicy(config, state_dim, 2, [], 84, 0)
