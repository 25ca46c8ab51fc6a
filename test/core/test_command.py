"""compose_command's safety guarantee under arbitrary input; limits, homing and watchdog."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from resfit_ros.config import ConfigError
from resfit_ros.core.command import (CommandConfig, CommandLimits, HomingError, HomingTrajectory, Watchdog,
                                     WatchdogAction, compose_command, hold_command, minimum_jerk)
from resfit_ros.names import (SAFETY_BASE_ONLY, SAFETY_HOLD, SAFETY_NONFINITE_INPUT, SAFETY_POSITION_CLIPPED,
                              SAFETY_RATE_LIMITED, SAFETY_RESIDUAL_CLIPPED)
from resfit_ros.robot import RobotDescription

ALL_FLAGS = (SAFETY_BASE_ONLY | SAFETY_HOLD | SAFETY_NONFINITE_INPUT | SAFETY_POSITION_CLIPPED
             | SAFETY_RATE_LIMITED | SAFETY_RESIDUAL_CLIPPED)

ROBOT = RobotDescription.from_dict({
    "name": "tiny",
    "joints": [
        {"name": "a", "group": "arm", "lower": -1.0, "upper": 1.0, "home": 0.0, "max_velocity": 2.0},
        {"name": "b", "group": "arm", "lower": -3.0, "upper": 0.5, "home": -1.0, "max_velocity": 1.0},
        {"name": "c", "group": "arm", "lower": 0.1, "upper": 0.2, "home": 0.15, "max_velocity": 0.5},
        {"name": "d", "group": "hand", "lower": -1e3, "upper": 1e3, "home": 10.0, "max_velocity": 100.0},
    ],
    "controllers": {"arm": "arm_controller", "hand": "hand_controller"},
})
LIMITS = CommandLimits.from_robot(ROBOT, control_rate_hz=20.0, residual_bound=[0.1, 0.2, 0.05, 1.0])
DOF = LIMITS.dof

any_float = st.floats(allow_nan=True, allow_infinity=True, width=64)
sane = st.floats(-5.0, 5.0)


def vectors(elements=any_float):
    """A (DOF,) vector most of the time; sometimes the wrong length, None, a scalar or ragged junk."""
    right = st.lists(elements, min_size=DOF, max_size=DOF).map(np.array)
    wrong = st.lists(elements, min_size=0, max_size=DOF + 2).filter(lambda v: len(v) != DOF)
    junk = st.sampled_from([None, 3.0, "abc", [[1.0, 2.0], [3.0]], np.zeros((DOF, 1))])
    return st.one_of(right, right, right, wrong, junk)


def in_limits_vector():
    return st.tuples(*[st.floats(lo, hi) for lo, hi in zip(LIMITS.lower, LIMITS.upper)]).map(np.array)


@st.composite
def base_near_previous(draw):
    """(base, previous): both within the limits, base within one max_step of previous."""
    prev = draw(in_limits_vector())
    frac = np.array(draw(st.lists(st.floats(-1.0, 1.0), min_size=DOF, max_size=DOF)))
    base = np.clip(prev + frac * LIMITS.max_step, LIMITS.lower, LIMITS.upper)
    assume((np.abs(base - prev) <= LIMITS.max_step).all())  # rounding, rarely
    return base, prev


def valid(v):
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return False
    return a.shape == (DOF,) and bool(np.isfinite(a).all())


def in_limits(v):
    return bool(((LIMITS.lower <= v) & (v <= LIMITS.upper)).all())


@settings(max_examples=800, deadline=None)
@given(base=vectors(), residual=vectors(), previous=vectors(), fallback=vectors())
def test_command_always_finite_in_limits_and_rate_limited(base, residual, previous, fallback):
    cmd, flags = compose_command(base, residual, previous, LIMITS, fallback=fallback)
    assert cmd.shape == (DOF,) and cmd.dtype == np.float64
    assert np.isfinite(cmd).all()
    assert in_limits(cmd)
    assert flags & ~ALL_FLAGS == 0
    if valid(previous):
        prev = np.asarray(previous, dtype=float)
        if in_limits(prev):
            assert (np.abs(cmd - prev) <= LIMITS.max_step).all()
    else:
        assert flags & SAFETY_NONFINITE_INPUT
        ref = np.clip(np.asarray(fallback, dtype=float), LIMITS.lower, LIMITS.upper) if valid(fallback) else LIMITS.home
        assert (np.abs(cmd - ref) <= LIMITS.max_step).all()
    if not valid(base):
        assert flags & SAFETY_HOLD and flags & SAFETY_NONFINITE_INPUT
    elif not valid(residual):
        assert flags & SAFETY_BASE_ONLY and flags & SAFETY_NONFINITE_INPUT


@settings(max_examples=500, deadline=None)
@given(pair=base_near_previous(), residual=st.lists(st.floats(-1e300, 1e300), min_size=DOF, max_size=DOF).map(np.array))
def test_residual_part_within_bound(pair, residual):
    base, previous = pair
    cmd, flags = compose_command(base, residual, previous, LIMITS)
    # the position and rate boxes both contain base: clipping only moves the command towards it
    tol = 1e-12 * (1 + np.abs(base))
    assert (np.abs(cmd - base) <= LIMITS.residual_bound + tol).all()
    assert bool(flags & SAFETY_RESIDUAL_CLIPPED) == bool((np.abs(residual) > LIMITS.residual_bound).any())


@settings(max_examples=500, deadline=None)
@given(pair=base_near_previous())
def test_zero_residual_in_range_base_is_exact(pair):
    base, previous = pair
    cmd, flags = compose_command(base, np.zeros(DOF), previous, LIMITS)
    assert flags == 0
    assert np.array_equal(cmd, base)


@settings(max_examples=300, deadline=None)
@given(base=st.lists(st.floats(-1e308, 1e308), min_size=DOF, max_size=DOF).map(np.array),
       previous=in_limits_vector())
def test_extreme_base_is_clipped_and_flagged(base, previous):
    cmd, flags = compose_command(base, np.zeros(DOF), previous, LIMITS)
    assert in_limits(cmd) and (np.abs(cmd - previous) <= LIMITS.max_step).all()
    if not in_limits(base):
        assert flags & (SAFETY_POSITION_CLIPPED | SAFETY_RATE_LIMITED)


def test_nonfinite_residual_gives_base_only():
    base = LIMITS.home + 0.01
    r = np.array([0.05, np.nan, 0.0, 0.0])
    cmd, flags = compose_command(base, r, LIMITS.home, LIMITS)
    assert np.array_equal(cmd, base)
    assert flags == SAFETY_NONFINITE_INPUT | SAFETY_BASE_ONLY


def test_residual_disabled_by_watchdog_gives_base_only_without_error_flag():
    cmd, flags = compose_command(LIMITS.home, np.full(DOF, 0.01), LIMITS.home, LIMITS, residual_enabled=False)
    assert np.array_equal(cmd, LIMITS.home) and flags == SAFETY_BASE_ONLY


@pytest.mark.parametrize("base", [None, np.full(DOF, np.inf), np.zeros(DOF - 1), [np.nan] * DOF])
def test_invalid_base_holds_previous(base):
    prev = LIMITS.home + np.array([0.1, 0.1, 0.01, 1.0])
    cmd, flags = compose_command(base, np.zeros(DOF), prev, LIMITS)
    assert np.array_equal(cmd, prev)
    assert flags == SAFETY_NONFINITE_INPUT | SAFETY_HOLD


def test_invalid_previous_uses_clipped_fallback_then_home():
    current = np.array([5.0, 0.0, 0.15, 0.0])              # joint a measured beyond its upper limit
    cmd, flags = compose_command(None, None, [np.nan] * DOF, LIMITS, fallback=current)
    assert cmd.tolist() == [1.0, 0.0, 0.15, 0.0] and flags & SAFETY_HOLD
    cmd, _ = compose_command(None, None, None, LIMITS, fallback=None)
    assert np.array_equal(cmd, LIMITS.home)


def test_each_clip_sets_its_flag():
    home = LIMITS.home
    cmd, flags = compose_command(home, np.array([0.5, 0, 0, 0]), home, LIMITS)
    assert flags == SAFETY_RESIDUAL_CLIPPED and cmd[0] == 0.1   # bound 0.1 == max_step 0.1
    prev = home + [0, 0, 0.04, 0]                                # joint c at 0.19, upper 0.2
    cmd, flags = compose_command(home + [0, 0, 0.1, 0], np.zeros(DOF), prev, LIMITS)
    assert flags == SAFETY_POSITION_CLIPPED and cmd[2] == 0.2
    cmd, flags = compose_command(home + [0.5, 0, 0, 0], np.zeros(DOF), home, LIMITS)
    assert flags == SAFETY_RATE_LIMITED and cmd[0] == pytest.approx(0.1)


def test_previous_outside_limits_position_wins():
    prev = np.array([3.0, -1.0, 0.15, 10.0])                # joint a far above its upper limit 1.0
    cmd, flags = compose_command(prev, np.zeros(DOF), prev, LIMITS)
    assert cmd[0] == 1.0 and flags & SAFETY_POSITION_CLIPPED


def test_hold_command():
    prev = LIMITS.home + 0.01
    cmd, flags = hold_command(prev, LIMITS)
    assert np.array_equal(cmd, prev) and flags == SAFETY_HOLD


# --- limits / config ----------------------------------------------------------------------------------
def test_limits_from_robot():
    assert LIMITS.max_step.tolist() == [0.1, 0.05, 0.025, 5.0]
    scalar = CommandLimits.from_robot(ROBOT, 10.0, 0.3)
    assert scalar.residual_bound.tolist() == [0.3] * DOF and scalar.dt == 0.1
    with pytest.raises(ConfigError, match="residual_bound has 2 values for 4 joints"):
        CommandLimits.from_robot(ROBOT, 20.0, [0.1, 0.2])
    with pytest.raises(ConfigError, match="control_rate_hz must be > 0, got 0"):
        CommandLimits.from_robot(ROBOT, 0.0, 0.1)
    with pytest.raises(ConfigError, match="residual_bound must be >= 0"):
        CommandLimits.from_robot(ROBOT, 20.0, -0.1)
    with pytest.raises(ValueError):
        LIMITS.lower[0] = 5.0                               # read-only


def test_command_config_validation():
    cfg = CommandConfig(residual_bound=[0.1])
    assert CommandLimits.from_config(ROBOT, cfg).residual_bound.tolist() == [0.1] * DOF
    with pytest.raises(ConfigError, match="watchdog_mode must be one of .* got 'stop'"):
        CommandConfig(watchdog_mode="stop")
    with pytest.raises(ConfigError, match="residual_bound values must be finite and >= 0, got \\[nan\\]"):
        CommandConfig(residual_bound=[float("nan")])


# --- homing -------------------------------------------------------------------------------------------
@settings(max_examples=100, deadline=None)
@given(start=st.tuples(*[st.floats(lo - 0.05, hi + 0.05) for lo, hi in zip(LIMITS.lower, LIMITS.upper)]).map(np.array),
       fraction=st.floats(0.1, 1.0))
def test_homing_reaches_home_within_step_limits(start, fraction):
    traj = HomingTrajectory(start, LIMITS, speed_fraction=fraction, min_duration_s=0.0)
    pts = traj.points
    assert np.array_equal(pts[-1], LIMITS.home)
    assert all(in_limits(p) for p in pts)
    start_in = np.clip(start, LIMITS.lower, LIMITS.upper)
    steps = np.abs(np.diff(np.vstack([start_in, pts]), axis=0))
    # the first step may have to jump INTO the limits when the start is outside them
    assert (steps[1:] <= LIMITS.max_step).all()
    assert (steps[0] <= LIMITS.max_step + np.abs(start - start_in)).all()


def test_homing_is_smooth_and_timed_by_the_slowest_joint():
    start = LIMITS.home + np.array([0.5, -1.0, 0.04, 100.0])
    traj = HomingTrajectory(start, LIMITS, speed_fraction=0.5, min_duration_s=0.0)
    # joint b: 1.0 rad at 0.5 * 1 rad/s with peak slope 1.875 -> 3.75 s -> 75 steps at 20 Hz
    assert traj.num_steps == 75 and traj.duration_s == pytest.approx(3.75)
    q = np.vstack([start, traj.points])
    v = np.diff(q, axis=0)
    acc = np.diff(v, axis=0)
    dist = np.abs(LIMITS.home - start)
    # min-jerk: peak |acceleration| is 5.774 * distance / T^2 (per step^2 here); no jumps
    assert (np.abs(acc) <= 5.78 * dist / traj.num_steps ** 2 + 1e-12).all()
    # starts and stops gently: the first/last steps are tiny compared with the peak step
    assert (np.abs(v[0]) <= 0.01 * np.abs(v).max(axis=0) + 1e-12).all()
    assert (np.abs(v[-1]) <= 0.01 * np.abs(v).max(axis=0) + 1e-12).all()
    assert (np.abs(v) <= 0.5 * LIMITS.max_step + 1e-12).all()
    assert traj.command(0).tolist() == start.tolist() and np.array_equal(traj.command(10_000), LIMITS.home)
    assert traj.done(75) and not traj.done(74)


def test_homing_minimum_duration_and_already_home():
    traj = HomingTrajectory(LIMITS.home, LIMITS, min_duration_s=1.0)
    assert traj.num_steps == 20 and all(np.array_equal(p, LIMITS.home) for p in traj)


@pytest.mark.parametrize("start", [None, [0.0] * (DOF - 1), [np.nan] + [0.0] * (DOF - 1)])
def test_homing_refuses_unknown_start(start):
    with pytest.raises(HomingError, match="current position"):
        HomingTrajectory(start, LIMITS)


def test_minimum_jerk_profile():
    assert minimum_jerk(0.0) == 0.0 and minimum_jerk(1.0) == 1.0 and minimum_jerk(0.5) == 0.5
    t = np.linspace(0, 1, 10001)
    assert np.diff(minimum_jerk(t)).max() * 10000 == pytest.approx(1.875, rel=1e-6)


# --- watchdog -----------------------------------------------------------------------------------------
MS = 1_000_000


def test_watchdog_hold_mode():
    w = Watchdog(timeout_s=0.1)
    assert w.check(1000 * MS, 1000 * MS - 100 * MS).action is WatchdogAction.COMMAND   # exactly timeout
    d = w.check(1000 * MS, 1000 * MS - 100 * MS - 1)
    assert d.action is WatchdogAction.HOLD and d.flags == SAFETY_HOLD and not d.allowed
    assert "ms old" in d.reason
    assert w.check(5, None).action is WatchdogAction.HOLD


def test_watchdog_base_only_mode_then_hold():
    w = Watchdog(timeout_s=0.1, mode="base_only", base_only_max_s=0.5)
    assert w.check(1000 * MS, 950 * MS).allowed
    d = w.check(1000 * MS, 850 * MS)
    assert d.action is WatchdogAction.BASE_ONLY and d.flags == SAFETY_BASE_ONLY
    assert w.check(1000 * MS, 400 * MS).action is WatchdogAction.BASE_ONLY                # 600 ms
    assert w.check(1000 * MS, 400 * MS - 1).action is WatchdogAction.HOLD


def test_watchdog_future_stamp_is_a_clock_problem():
    w = Watchdog(timeout_s=0.1, future_tolerance_s=0.01)
    assert w.check(1000 * MS, 1005 * MS).allowed
    d = w.check(1000 * MS, 1020 * MS)
    assert d.action is WatchdogAction.HOLD and "future" in d.reason


def test_watchdog_rejects_bad_settings():
    with pytest.raises(ConfigError, match="'stop'"):
        Watchdog(mode="stop")
    with pytest.raises(ConfigError, match="got 0"):
        Watchdog(timeout_s=0)
