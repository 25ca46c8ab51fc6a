"""Normaliser: widened min-max actions, floored z-score states, float32 round trip."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.learning import Normaliser, NormaliserConfig
from resfit_ros.learning.normaliser import residual_bounds


def test_action_range_is_widened_by_one_plus_action_scale_and_state_std_is_floored():
    states = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    actions = np.array([[-1.0, 10.0], [1.0, 10.0], [0.0, 10.0]])
    n = Normaliser.from_demonstrations(states, actions, action_scale=0.2,
                                       config=NormaliserConfig(state_min_std=0.1, action_min_half_range=0.5))
    np.testing.assert_allclose(n.action_low, [-1.2, 10 - 0.6], rtol=1e-6)
    np.testing.assert_allclose(n.action_high, [1.2, 10 + 0.6], rtol=1e-6)
    np.testing.assert_allclose(n.state_std, [np.std([0, 2, 4]), 0.1], rtol=1e-6)
    # a demo extreme maps to 1 / (1 + scale): a residual can push it action_scale * half range further
    assert n.normalise_action(np.array([1.0, 10.0]))[0] == pytest.approx(1 / 1.2)
    assert n.denormalise_action(np.array([1.0, 1.0]))[0] == pytest.approx(1.0 + 0.2 * 1.0)
    np.testing.assert_allclose(n.denormalise_action(n.normalise_action(actions)), actions, atol=1e-6)
    assert np.all(np.abs(n.normalise_state(np.array([1e9, -1e9]))) == n.state_clip)


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
    # widened by (1 + bound): the demo extreme maps to 1 / (1 + bound) on every joint
    np.testing.assert_allclose(n.action_half_range, 0.5 * np.array([1.1, 1.3, 1.0]), rtol=1e-6)
    back = Normaliser.from_arrays(n.to_arrays())
    np.testing.assert_array_equal(back.residual_gain, n.residual_gain)
    # arrays written before the gain existed: gain 1 everywhere
    old = {k: v for k, v in Normaliser.from_demonstrations(states, actions, 0.1).to_arrays().items()
           if k != "normaliser.residual_gain"}
    np.testing.assert_array_equal(Normaliser.from_arrays(old).residual_gain, [1.0] * 3)
    for bad in ([1.0], [1.0, -0.5, 1.0], [1.0, np.nan, 1.0], [1.0, 11.0, 1.0]):
        with pytest.raises(ValueError, match="residual_gain"):
            Normaliser.from_demonstrations(states, actions, 0.1, residual_gain=bad)
    with pytest.raises(ValueError, match="action_scale"):   # 0.2 * 6 > 1: past a whole half range
        Normaliser.from_demonstrations(states, actions, 0.2, residual_gain=[1.0, 6.0, 1.0])


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
