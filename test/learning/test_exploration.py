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
