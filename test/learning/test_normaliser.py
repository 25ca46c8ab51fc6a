"""Normaliser: widened min-max actions, floored z-score states, float32 round trip."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.learning import Normaliser, NormaliserConfig
from resfit_ros.learning.normaliser import residual_bounds


def test_action_range_is_widened_so_the_whole_bound_stays_reachable_and_state_std_is_floored():
    states = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    actions = np.array([[-1.0, 10.0], [1.0, 10.0], [0.0, 10.0]])
    n = Normaliser.from_demonstrations(states, actions, action_scale=0.2,
                                       config=NormaliserConfig(state_min_std=0.1, action_min_half_range=0.5))
    np.testing.assert_allclose(n.action_low, [-1 / 0.8, 10 - 0.5 / 0.8], rtol=1e-6)
    np.testing.assert_allclose(n.action_high, [1 / 0.8, 10 + 0.5 / 0.8], rtol=1e-6)
    np.testing.assert_allclose(n.state_std, [np.std([0, 2, 4]), 0.1], rtol=1e-6)
    # a demo extreme maps to 1 - scale: the full residual bound lands exactly on the range's edge
    assert n.normalise_action(np.array([1.0, 10.0]))[0] == pytest.approx(1 - 0.2)
    np.testing.assert_allclose(n.denormalise_action(n.normalise_action(actions)), actions, atol=1e-6)
    assert np.all(np.abs(n.normalise_state(np.array([1e9, -1e9]))) == n.state_clip)


def test_the_whole_residual_bound_is_reachable_at_the_demos_extremes():
    """At the demos' closed (or open) finger pose the residual must still add its whole bound:
    clamping the combined action to the widened range used to cap it at bound / (1 + bound)."""
    from resfit_ros.learning import AgentConfig, ResidualAgent, ResidualPolicy

    rng = np.random.default_rng(0)
    actions = rng.uniform(-0.3, 0.9, size=(50, 3))
    n = Normaliser.from_demonstrations(rng.normal(size=(50, 2)), actions, 0.05, residual_gain=[1.0, 6.0, 0.0])
    bounds = residual_bounds(0.05, n)                                            # normalised
    config = AgentConfig(action_scale=0.05, actor_hidden_dims=(8,), critic_hidden_dims=(8,), num_critic_heads=2)
    policy = ResidualPolicy(config, 2, 3, [], 8, 0, weights=ResidualAgent(config, 2, 3, [], 8, 0, n).get_weights())
    for extreme, sign in ((actions.max(axis=0), 1.0), (actions.min(axis=0), -1.0)):
        residual = policy.compose(extreme, sign * bounds)                        # joint units
        np.testing.assert_allclose(residual, sign * bounds * n.action_half_range, rtol=1e-6)
        assert np.all(np.abs(n.normalise_action(extreme + residual)) <= 1 + 1e-9)


def test_a_joint_the_demos_never_move_is_no_demo_versus_online_shortcut():
    """Demos hold joint 0 still (its range is 0); online, the base misses that pose by a few mrad.
    In the critic's clamped units the two must overlap (both near 0), not sit at 0 and at +-1."""
    rng = np.random.default_rng(1)
    demo = np.column_stack([np.full(200, 0.3), rng.uniform(-1, 1, 200)])
    online = demo + np.column_stack([rng.normal(0, 0.004, 200), np.zeros(200)])   # 4 mrad errors
    n = Normaliser.from_demonstrations(np.zeros((200, 1)), demo, 0.1)
    demo_n = np.clip(n.normalise_action(demo)[:, 0], -1, 1)
    online_n = np.clip(n.normalise_action(online)[:, 0], -1, 1)
    assert np.max(np.abs(demo_n)) < 1e-6                                         # float32 centre
    assert np.max(np.abs(online_n)) < 0.35 and np.mean(np.abs(online_n)) < 0.1
    assert np.mean(np.abs(online_n) >= 1.0) == 0.0                                # nothing saturates


def test_the_runs_normaliser_spans_the_base_actions_on_the_demos_too():
    """The critic sees the base's actions as executed (demo base actions, online commands near
    them): a base action outside the demo commands' range must still map inside [-1, 1]."""
    from resfit_ros.learning.offline import OfflineSettings, demo_normaliser

    commands = np.column_stack([np.linspace(0, 1, 20), np.linspace(-1, 1, 20)])
    bases = commands + np.array([0.5, 0.0])          # the base overshoots joint 0 by 0.5 rad
    n = demo_normaliser(np.zeros((20, 1)), commands, bases, OfflineSettings(action_scale=0.1), ["a", "b"])
    assert np.all(np.abs(n.normalise_action(bases)) <= 1.0)
    assert n.normalise_action(np.array([1.5, 0.0]))[0] == pytest.approx(0.9)   # the base's extreme: 1 - bound


def test_arrays_round_trip_and_validation():
    rng = np.random.default_rng(0)
    n = Normaliser.from_demonstrations(rng.normal(size=(10, 3)), rng.normal(size=(10, 2)), 0.1)
    arrays = n.to_arrays()
    assert all(v.dtype == np.float32 for v in arrays.values())
    m = Normaliser.from_arrays(arrays)
    np.testing.assert_array_equal(m.to_arrays()["normaliser.action_low"], arrays["normaliser.action_low"])
    with pytest.raises(ValueError, match="missing"):
        Normaliser.from_arrays({})
    with pytest.raises(ValueError, match="NaN"):
        Normaliser.from_demonstrations(np.full((2, 3), np.nan), np.zeros((2, 2)), 0.1)


def test_residual_gain_sets_each_joints_bound_and_widening_and_travels_with_the_arrays():
    states = np.zeros((3, 1))
    actions = np.array([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.5, 0.5]])
    n = Normaliser.from_demonstrations(states, actions, 0.1, residual_gain=[1.0, 3.0, 0.0])
    np.testing.assert_allclose(residual_bounds(0.1, n), [0.1, 0.3, 0.0], rtol=1e-6)
    # widened by 1 / (1 - bound): the demo extreme maps to 1 - bound on every joint
    np.testing.assert_allclose(n.action_half_range, 0.5 / np.array([0.9, 0.7, 1.0]), rtol=1e-6)
    back = Normaliser.from_arrays(n.to_arrays())
    np.testing.assert_array_equal(back.residual_gain, n.residual_gain)
    # arrays written before the gain existed: gain 1 everywhere
    old = {k: v for k, v in Normaliser.from_demonstrations(states, actions, 0.1).to_arrays().items()
           if k != "normaliser.residual_gain"}
    np.testing.assert_array_equal(Normaliser.from_arrays(old).residual_gain, [1.0] * 3)
    for bad in ([1.0], [1.0, -0.5, 1.0], [1.0, np.nan, 1.0], [1.0, 11.0, 1.0]):
        with pytest.raises(ValueError, match="residual_gain"):
            Normaliser.from_demonstrations(states, actions, 0.1, residual_gain=bad)
    with pytest.raises(ValueError, match="action_scale"):   # 0.2 * 3 > 0.5: mostly residual
        Normaliser.from_demonstrations(states, actions, 0.2, residual_gain=[1.0, 3.0, 1.0])


def test_residual_gain_settings_resolve_joint_prefixes_first_match_wins():
    from resfit_ros.config import ConfigError
    from resfit_ros.learning.offline import OfflineSettings, SetupError

    names = ["waist_yaw_joint", "right_shoulder_joint", "right_hand_index_0_joint", "left_hand_index_0_joint"]
    settings = OfflineSettings(residual_gains=["right_hand_=5", "left_hand_=5", "right_=0"])
    np.testing.assert_array_equal(settings.residual_gain_vector(names), [1.0, 0.0, 5.0, 5.0])
    np.testing.assert_array_equal(OfflineSettings().residual_gain_vector(names), [1.0] * 4)
    with pytest.raises(SetupError, match="torso_"):
        OfflineSettings(residual_gains=["torso_=2"]).residual_gain_vector(names)
    for bad in ("right_hand_", "=2", "right_hand_=x", "right_hand_=-1", "right_hand_=20"):
        with pytest.raises(ConfigError, match="residual_gains"):
            OfflineSettings(residual_gains=[bad])


def test_state_statistics_refit_on_demos_and_online_states_keeps_online_states_off_the_clip():
    """Smooth demos (a velocity of ~0.01) against a base that jerks (~1.5): with the demos'
    statistics online states sit at the clip and apart from every demo state; refit on both,
    they overlap and nothing is clipped. The action map does not change."""
    rng = np.random.default_rng(2)
    demo = np.column_stack([rng.normal(0.3, 0.02, 500), rng.normal(0.0, 0.01, 500)])     # position (m), velocity
    online = np.column_stack([rng.normal(0.3, 0.03, 500), rng.normal(0.0, 1.5, 500)])
    actions = rng.uniform(-1, 1, (500, 2))
    n = Normaliser.from_demonstrations(demo, actions, 0.1, NormaliserConfig(state_min_std=0.1))
    assert np.mean(np.abs(n.normalise_state(online)[:, 1]) >= n.state_clip) > 0.4
    refit = n.with_state_statistics(np.concatenate([demo, online]), state_min_std=0.01)
    z_demo, z_online = refit.normalise_state(demo), refit.normalise_state(online)
    assert np.all(np.abs(z_online) < refit.state_clip)
    assert np.abs(z_demo[:, 1]).max() < np.abs(z_online[:, 1]).max()                     # demos inside online's spread
    assert 0.5 < z_demo[:, 0].std() < 2.0          # the 2 cm position keeps its range (the old 0.1 floor: 0.2)
    for name in ("action_low", "action_high", "residual_gain"):
        np.testing.assert_array_equal(getattr(refit, name), getattr(n, name))
    with pytest.raises(ValueError, match="NaN"):
        n.with_state_statistics(np.full((3, 2), np.nan), 0.01)
    with pytest.raises(ValueError, match="shape"):
        n.with_state_statistics(np.zeros((3, 5)), 0.01)


def test_the_residual_limit_caps_each_joints_reach_in_joint_units():
    from resfit_ros.learning.normaliser import RESIDUAL_LIMIT

    states = np.random.default_rng(0).normal(size=(4, 2))
    actions = np.array([[-1.0, -0.1, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 0.0], [0.5, 0.05, 0.0]])
    gain = np.array([3.0, 3.0, 1.0])
    n = Normaliser.from_demonstrations(states, actions, 0.1, residual_gain=gain, residual_limit=[0.2])
    reach = residual_bounds(0.1, n) * n.action_half_range                          # joint units
    # joint 0: the gain's reach 0.3 * 1/0.7 = 0.43 rad, capped at 0.2; joints 1, 2: the gain's own
    np.testing.assert_allclose(reach, [0.2, 0.3 * 0.1 / 0.7, 0.1 * 0.05 / 0.9], rtol=1e-5)
    again = Normaliser.from_arrays(n.to_arrays())
    np.testing.assert_allclose(residual_bounds(0.1, again), residual_bounds(0.1, n), rtol=1e-6)
    older = {k: v for k, v in n.to_arrays().items() if k != RESIDUAL_LIMIT}       # before the limit existed
    np.testing.assert_allclose(residual_bounds(0.1, Normaliser.from_arrays(older)), 0.1 * gain, rtol=1e-6)
    unlimited = Normaliser.from_demonstrations(states, actions, 0.1, residual_gain=gain)
    np.testing.assert_allclose(residual_bounds(0.1, unlimited), 0.1 * gain, rtol=1e-6)   # never shaved
    for bad in ([-0.1], [0.1, 0.2], [float("nan")]):
        with pytest.raises(ValueError, match="residual_limit"):
            Normaliser.from_demonstrations(states, actions, 0.1, residual_limit=bad)
