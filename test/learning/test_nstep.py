"""n-step reward sums, bootstrap discounts and bootstrap observations vs hand-computed cases."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.learning import ReplayBuffer, ReplayConfig, nstep_targets

G = 0.9


def targets(T, success, truncated=False, n=3, bootstrap=False):
    return nstep_targets(T, success, truncated, n, G, bootstrap)


def test_success_terminal_inside_window_and_short_windows():
    reward, discount, offset = targets(5, success=True)
    # t=0,1: full windows that end before the last step -> bootstrap gamma^3 from obs t+3
    # t=2: window t=2..4 contains the terminal success step -> reward gamma^2, no bootstrap
    # t=3, t=4: short windows at the episode end
    np.testing.assert_allclose(reward, [0, 0, G**2, G, 1], rtol=1e-6)
    np.testing.assert_allclose(discount, [G**3, G**3, 0, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(offset, [3, 3, 3, 2, 1])


def test_failure_label_is_terminal_without_reward():
    reward, discount, offset = targets(4, success=False, truncated=False)
    np.testing.assert_array_equal(reward, 0)
    np.testing.assert_allclose(discount, [G**3, 0, 0, 0], rtol=1e-6)
    np.testing.assert_array_equal(offset, [3, 3, 2, 1])


def test_truncation_without_bootstrap_is_a_failure():
    assert all(np.array_equal(a, b) for a, b in zip(targets(4, False, truncated=True),
                                                     targets(4, False, truncated=False)))


def test_truncation_with_bootstrap_uses_short_windows():
    reward, discount, offset = targets(4, success=False, truncated=True, bootstrap=True)
    np.testing.assert_array_equal(reward, 0)
    # every window bootstraps from obs t+k, the last ones from the FINAL observation (index T=4)
    np.testing.assert_allclose(discount, [G**3, G**3, G**2, G], rtol=1e-6)
    np.testing.assert_array_equal(offset, [3, 3, 2, 1])


def test_success_wins_over_truncation_flag():
    reward, discount, _ = targets(3, success=True, truncated=True, bootstrap=True)
    np.testing.assert_allclose(reward, [G**2, G, 1], rtol=1e-6)
    np.testing.assert_array_equal(discount, 0)


def test_one_step_returns_and_single_step_episode():
    reward, discount, offset = targets(3, success=True, n=1)
    np.testing.assert_allclose(reward, [0, 0, 1])
    np.testing.assert_allclose(discount, [G, G, 0], rtol=1e-6)
    np.testing.assert_array_equal(offset, [1, 1, 1])
    reward, discount, offset = targets(1, success=True)
    assert reward.tolist() == [1.0] and discount.tolist() == [0.0] and offset.tolist() == [1]


@pytest.mark.parametrize("truncated,bootstrap", [(False, False), (True, True)])
def test_buffer_batches_carry_the_precomputed_targets(truncated, bootstrap):
    T, A = 6, 2
    buffer = ReplayBuffer(ReplayConfig(online_capacity=50, demo_capacity=50, nstep=3, gamma=G,
                                       bootstrap_on_truncation=bootstrap), 2, A, seed=3)
    states = np.stack([np.arange(T + 1), np.zeros(T + 1)], 1).astype(np.float32)   # state[0] = obs index
    base = np.stack([np.arange(T + 1) * 10.0, np.ones(T + 1)], 1).astype(np.float32)
    actions = np.stack([np.arange(T) * 100.0, np.ones(T)], 1).astype(np.float32)
    buffer.add_episode(states, base, actions, success=False, demo=False, truncated=truncated)
    reward, discount, offset = targets(T, False, truncated, 3, bootstrap)
    batch = buffer.sample(64)
    t = batch.obs["state"][:, 0].long().numpy()
    next_t = batch.next_obs["state"][:, 0].long().numpy()
    assert set(t.tolist()) <= set(range(T))                    # the final obs starts no transition
    np.testing.assert_array_equal(next_t, t + offset[t])
    np.testing.assert_array_equal(batch.next_base_action[:, 0].numpy(), (t + offset[t]) * 10.0)
    np.testing.assert_array_equal(batch.action[:, 0].numpy(), t * 100.0)
    np.testing.assert_allclose(batch.nstep_discount.numpy(), discount[t])
    np.testing.assert_allclose(batch.nstep_reward.numpy(), reward[t])
