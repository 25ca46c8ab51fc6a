"""Safe command composition: base + bounded residual, joint limits, per-step change limit; homing
trajectory for resets; observation-age watchdog. No rclpy.

The guarantee of `compose_command`, whatever its inputs (NaN, inf, None, wrong lengths, 1e308):
the command is finite, within [lower, upper], and within max_step of the previous command
(when the previous command is itself within the position limits; otherwise position limits win).
It equals `base` exactly when the residual is zero and base is within both limits.

All vectors are in the robot description's joint order, radians.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Sequence

import numpy as np

from resfit_ros.config import ConfigError, require
from resfit_ros.names import (SAFETY_BASE_ONLY, SAFETY_HOLD, SAFETY_NONFINITE_INPUT, SAFETY_OPERATOR,
                              SAFETY_POSITION_CLIPPED, SAFETY_RATE_LIMITED, SAFETY_RESIDUAL_CLIPPED)

NS_PER_S = 1_000_000_000


# |residual| per joint, rad, unless a config says otherwise: the residual node clips at it and the
# learner bounds its actor by it (learning/normaliser.py); a config gives both the same value.
DEFAULT_RESIDUAL_BOUND = 0.2


@dataclass
class CommandConfig:
    """Residual policy node's safety layer: residual bound, rate limit, watchdog, homing."""

    control_rate_hz: float = 20.0
    """Commands per second; the per-step change limit is each joint's max_velocity / this."""
    residual_bound: list[float] = field(default_factory=lambda: [DEFAULT_RESIDUAL_BOUND])
    """Largest |residual| per joint, rad: one value for all joints or one per joint (robot order).
    A safety bound in joint space, independent of the actor's own tanh * action_scale."""
    watchdog_timeout_s: float = 0.1
    """Observations older than this stop full (base + residual) commanding."""
    watchdog_mode: str = "hold"
    """What to do with stale observations: 'hold' (repeat the last safe command) or 'base_only'
    (keep executing the base policy's open-loop action chunk without the residual)."""
    base_only_max_s: float = 0.5
    """In 'base_only' mode, observations older than watchdog_timeout_s + this make it hold."""
    homing_speed_fraction: float = 0.5
    """Homing moves at most at this fraction of each joint's max_velocity."""
    homing_min_duration_s: float = 1.0
    """Shortest homing motion, even for tiny distances, seconds."""

    def __post_init__(self) -> None:
        require(math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0,
                f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(len(self.residual_bound) >= 1, f"residual_bound needs at least one value, got {self.residual_bound!r}")
        require(all(math.isfinite(b) and b >= 0 for b in self.residual_bound),
                f"residual_bound values must be finite and >= 0, got {self.residual_bound!r}")
        require(math.isfinite(self.watchdog_timeout_s) and self.watchdog_timeout_s > 0,
                f"watchdog_timeout_s must be > 0, got {self.watchdog_timeout_s}")
        require(self.watchdog_mode in WATCHDOG_MODES,
                f"watchdog_mode must be one of {sorted(WATCHDOG_MODES)}, got {self.watchdog_mode!r}")
        require(math.isfinite(self.base_only_max_s) and self.base_only_max_s >= 0,
                f"base_only_max_s must be >= 0, got {self.base_only_max_s}")
        require(0 < self.homing_speed_fraction <= 1,
                f"homing_speed_fraction must be in (0, 1], got {self.homing_speed_fraction}")
        require(math.isfinite(self.homing_min_duration_s) and self.homing_min_duration_s >= 0,
                f"homing_min_duration_s must be >= 0, got {self.homing_min_duration_s}")


@dataclass(frozen=True, eq=False)
class CommandLimits:
    """Everything compose_command clips against; (dof,) float64 arrays, validated."""

    lower: np.ndarray          # (dof,) rad
    upper: np.ndarray          # (dof,) rad
    home: np.ndarray           # (dof,) rad, within [lower, upper]
    max_step: np.ndarray       # (dof,) rad per control step (max_velocity / control_rate_hz) > 0
    residual_bound: np.ndarray  # (dof,) rad, >= 0
    control_rate_hz: float

    def __post_init__(self) -> None:
        arrays = {}
        for name in ("lower", "upper", "home", "max_step", "residual_bound"):
            a = np.array(getattr(self, name), dtype=np.float64).reshape(-1)
            a.setflags(write=False)
            object.__setattr__(self, name, a)
            arrays[name] = a
        dof = len(self.lower)
        require(dof > 0, "CommandLimits: no joints")
        for name, a in arrays.items():
            require(len(a) == dof, f"CommandLimits: {name} has {len(a)} values, lower has {dof}")
            require(bool(np.isfinite(a).all()), f"CommandLimits: {name} has non-finite values {a.tolist()}")
        require(bool((self.lower < self.upper).all()),
                f"CommandLimits: lower >= upper at joint(s) {np.flatnonzero(self.lower >= self.upper).tolist()}")
        require(bool(((self.lower <= self.home) & (self.home <= self.upper)).all()),
                f"CommandLimits: home outside limits at joint(s) "
                f"{np.flatnonzero((self.home < self.lower) | (self.home > self.upper)).tolist()}")
        require(bool((self.max_step > 0).all()),
                f"CommandLimits: max_step must be > 0, got {self.max_step.tolist()}")
        require(bool((self.residual_bound >= 0).all()),
                f"CommandLimits: residual_bound must be >= 0, got {self.residual_bound.tolist()}")
        require(math.isfinite(self.control_rate_hz) and self.control_rate_hz > 0,
                f"CommandLimits: control_rate_hz must be > 0, got {self.control_rate_hz}")

    @property
    def dof(self) -> int:
        return len(self.lower)

    @property
    def dt(self) -> float:
        return 1.0 / self.control_rate_hz

    @staticmethod
    def from_robot(robot: Any, control_rate_hz: float, residual_bound: float | Sequence[float]) -> "CommandLimits":
        """From a RobotDescription: max_step = max_velocity / control_rate_hz; scalar bound = all joints."""
        require(math.isfinite(control_rate_hz) and control_rate_hz > 0,
                f"control_rate_hz must be > 0, got {control_rate_hz}")
        bound = np.array(residual_bound, dtype=np.float64).reshape(-1)
        if len(bound) == 1:
            bound = np.full(robot.dof, bound[0])
        require(len(bound) == robot.dof,
                f"residual_bound has {len(bound)} values for {robot.dof} joints of robot '{robot.name}'")
        return CommandLimits(robot.lower, robot.upper, robot.home,
                             robot.max_velocity / float(control_rate_hz), bound, float(control_rate_hz))

    @staticmethod
    def from_config(robot: Any, config: CommandConfig) -> "CommandLimits":
        return CommandLimits.from_robot(robot, config.control_rate_hz, config.residual_bound)


def _valid_vector(x: Any, dof: int) -> np.ndarray | None:
    """x as a finite (dof,) float64 copy, or None if it is None/ragged/wrong length/non-finite."""
    if x is None:
        return None
    try:
        a = np.array(x, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None
    if a.shape != (dof,) or not np.isfinite(a).all():
        return None
    return a


def _safe_reference(previous: Any, limits: CommandLimits, fallback: Any) -> tuple[np.ndarray, int]:
    """The command to rate-limit against: previous if valid, else the clipped fallback, else home."""
    prev = _valid_vector(previous, limits.dof)
    if prev is not None:
        return prev, 0
    fb = _valid_vector(fallback, limits.dof)
    if fb is not None:
        return np.clip(fb, limits.lower, limits.upper), SAFETY_NONFINITE_INPUT
    return limits.home.copy(), SAFETY_NONFINITE_INPUT


def _limit_step(target: np.ndarray, reference: np.ndarray, max_step: np.ndarray) -> tuple[np.ndarray, bool]:
    """Move from reference towards target by at most max_step per joint; exact where not limited.

    Works on the difference so that `abs(out - reference) <= max_step` holds in floating point
    (clipping to reference +- max_step can overshoot by one rounding error).
    """
    with np.errstate(over="ignore", invalid="ignore"):
        delta = target - reference  # may overflow to +-inf for extreme values: handled below
    limited = ~(np.abs(delta) <= max_step)
    if not limited.any():
        return target, False
    out = target.copy()
    out[limited] = reference[limited] + np.sign(delta[limited]) * max_step[limited]
    for _ in range(4):  # undo a rounding overshoot, one ulp at a time
        over = np.abs(out - reference) > max_step
        if not over.any():
            break
        out[over] = np.nextafter(out[over], reference[over])
    return out, True


def _clip_position(x: np.ndarray, limits: CommandLimits) -> tuple[np.ndarray, bool]:
    clipped = np.clip(x, limits.lower, limits.upper)
    return clipped, bool((clipped != x).any())


def compose_command(base: Any, residual: Any, previous_command: Any, limits: CommandLimits,
                    fallback: Any = None, residual_enabled: bool = True) -> tuple[np.ndarray, int]:
    """(command (dof,) float64, safety_flags): clip(base + clip(residual, +-bound)) within limits.

    * base invalid (None, wrong length, NaN/inf): hold the previous command (NONFINITE_INPUT | HOLD).
    * residual invalid: base only (NONFINITE_INPUT | BASE_ONLY); `residual_enabled=False` (watchdog
      base-only mode): base only (BASE_ONLY).
    * previous_command invalid: the reference is `fallback` (the current joint positions) clipped
      into the limits, else home (NONFINITE_INPUT).
    Flags RESIDUAL_CLIPPED / POSITION_CLIPPED / RATE_LIMITED say which clip changed the command.
    """
    flags = 0
    reference, f = _safe_reference(previous_command, limits, fallback)
    flags |= f
    b = _valid_vector(base, limits.dof)
    if b is None:
        cmd, f = hold_command(reference, limits)
        return cmd, flags | f | SAFETY_NONFINITE_INPUT
    target = b
    if not residual_enabled:
        flags |= SAFETY_BASE_ONLY
    else:
        r = _valid_vector(residual, limits.dof)
        if r is None:
            flags |= SAFETY_NONFINITE_INPUT | SAFETY_BASE_ONLY
        else:
            r_clipped = np.clip(r, -limits.residual_bound, limits.residual_bound)
            if (r_clipped != r).any():
                flags |= SAFETY_RESIDUAL_CLIPPED
            with np.errstate(over="ignore"):
                target = b + r_clipped  # finite + bounded: at worst +-inf, clipped just below
    return _finish(target, reference, limits, flags)


def operator_command(target: Any, previous_command: Any, limits: CommandLimits,
                     fallback: Any = None) -> tuple[np.ndarray, int]:
    """(command, flags) for an operator's joint target (an intervention): within the joint limits and
    rate-limited from the previous command like every command, but not bound to the base (the
    operator drives). Taking over and handing back are smooth because both start from the previous
    command. An invalid target holds the previous command (NONFINITE_INPUT | HOLD)."""
    reference, flags = _safe_reference(previous_command, limits, fallback)
    t = _valid_vector(target, limits.dof)
    if t is None:
        cmd, f = hold_command(reference, limits)
        return cmd, flags | f | SAFETY_NONFINITE_INPUT | SAFETY_OPERATOR
    return _finish(t, reference, limits, flags | SAFETY_OPERATOR)


def _finish(target: np.ndarray, reference: np.ndarray, limits: CommandLimits, flags: int) -> tuple[np.ndarray, int]:
    cmd, clipped = _clip_position(target, limits)
    if clipped:
        flags |= SAFETY_POSITION_CLIPPED
    cmd, limited = _limit_step(cmd, reference, limits.max_step)
    if limited:
        flags |= SAFETY_RATE_LIMITED
    # only changes anything when the reference itself lies outside the limits: position wins
    cmd, clipped = _clip_position(cmd, limits)
    if clipped:
        flags |= SAFETY_POSITION_CLIPPED
    return cmd, flags


def hold_command(previous_command: Any, limits: CommandLimits, fallback: Any = None) -> tuple[np.ndarray, int]:
    """(command, flags) that holds the previous command (clipped into the limits): SAFETY_HOLD set."""
    reference, flags = _safe_reference(previous_command, limits, fallback)
    cmd, clipped = _clip_position(reference, limits)
    if clipped:
        flags |= SAFETY_POSITION_CLIPPED
    return cmd, flags | SAFETY_HOLD


# --- homing ------------------------------------------------------------------------------------
class HomingError(ValueError):
    """Homing cannot start (unknown/non-finite current position or wrong length)."""


def minimum_jerk(tau: np.ndarray | float) -> np.ndarray:
    """s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5 on [0, 1]: zero velocity and acceleration at both ends.
    Peak ds/dtau = 1.875 at tau = 0.5."""
    t = np.clip(np.asarray(tau, dtype=np.float64), 0.0, 1.0)
    return t ** 3 * (10.0 + t * (-15.0 + 6.0 * t))


MIN_JERK_PEAK_SLOPE = 1.875


class HomingTrajectory:
    """Minimum-jerk motion from `start` to `target` (default home), one point per control step.

    The duration is set by the slowest joint: T = max_j 1.875 |target_j - start_j| / (fraction *
    max_velocity_j), at least `min_duration_s`, rounded up to whole control steps. Because the
    per-step change of a min-jerk profile is at most its peak slope times the step, every step
    moves each joint by at most fraction * max_step (checked, and rate-limited again to be exact).
    Points are clipped into the position limits; the last point equals the (clipped) target.
    """

    def __init__(self, start: Any, limits: CommandLimits, target: Any = None,
                 speed_fraction: float = 0.5, min_duration_s: float = 1.0) -> None:
        if not 0 < speed_fraction <= 1:
            raise ValueError(f"speed_fraction must be in (0, 1], got {speed_fraction}")
        if not (math.isfinite(min_duration_s) and min_duration_s >= 0):
            raise ValueError(f"min_duration_s must be >= 0, got {min_duration_s}")
        q0 = _valid_vector(start, limits.dof)
        if q0 is None:
            raise HomingError(f"cannot home: current position must be {limits.dof} finite values, got {start!r}")
        goal = limits.home if target is None else _valid_vector(target, limits.dof)
        if goal is None:
            raise HomingError(f"cannot home: target must be {limits.dof} finite values, got {target!r}")
        self.limits = limits
        self.start = q0
        self.target = np.clip(goal, limits.lower, limits.upper)
        distance = np.abs(self.target - q0)
        step = speed_fraction * limits.max_step  # rad per control step
        steps_needed = float(np.max(MIN_JERK_PEAK_SLOPE * distance / step))
        min_steps = min_duration_s * limits.control_rate_hz
        self.num_steps = max(1, int(math.ceil(max(steps_needed, min_steps) - 1e-9)))
        tau = np.arange(1, self.num_steps + 1, dtype=np.float64) / self.num_steps
        raw = q0[None, :] + minimum_jerk(tau)[:, None] * (self.target - q0)[None, :]  # (N, dof)
        raw[-1] = self.target
        # Guard against rounding (and a start outside the limits): every point within max_step of
        # the one before and inside the limits (position wins, as in compose_command); then extra
        # steps, if any were needed, until the target is reached exactly.
        points = []
        prev = q0
        for k in range(self.num_steps + 100_000):
            goal = raw[k] if k < self.num_steps else self.target
            p, _ = _limit_step(np.clip(goal, limits.lower, limits.upper), prev, limits.max_step)
            p = np.clip(p, limits.lower, limits.upper)
            points.append(p)
            prev = p
            if k >= self.num_steps - 1 and np.array_equal(p, self.target):
                break
        self.num_steps = len(points)
        self.points = np.array(points)  # (N, dof)
        self.points.setflags(write=False)

    @property
    def duration_s(self) -> float:
        return self.num_steps / self.limits.control_rate_hz

    def command(self, k: int) -> np.ndarray:
        """The command of control step k = 1..num_steps (k <= 0: start, k > num_steps: target)."""
        if k <= 0:
            return self.start.copy()
        return self.points[min(k, self.num_steps) - 1].copy()

    def done(self, k: int) -> bool:
        return k >= self.num_steps

    def __len__(self) -> int:
        return self.num_steps

    def __iter__(self):
        return (self.points[k].copy() for k in range(self.num_steps))


# --- watchdog ----------------------------------------------------------------------------------
WATCHDOG_HOLD = "hold"
WATCHDOG_BASE_ONLY = "base_only"
WATCHDOG_MODES = {WATCHDOG_HOLD, WATCHDOG_BASE_ONLY}


class WatchdogAction(Enum):
    """What the residual policy node may do this control tick."""

    COMMAND = "command"      # observations fresh: base + residual
    BASE_ONLY = "base_only"  # stale: base chunk open loop, residual off (compose with residual_enabled=False)
    HOLD = "hold"            # stale / no observation / clock error: hold_command(previous)


@dataclass(frozen=True)
class WatchdogDecision:
    action: WatchdogAction
    age_s: float        # now - last observation stamp; NaN if none yet
    flags: int          # SAFETY_* to OR into the StepRecord
    reason: str         # human-readable, for a throttled log line

    @property
    def allowed(self) -> bool:
        """Full (base + residual) commanding allowed."""
        return self.action is WatchdogAction.COMMAND


class Watchdog:
    """Stateless observation-age check: check(now_ns, last_observation_ns) -> WatchdogDecision.

    ros2_control's forward command controllers hold a command forever; this is the command
    timeout they lack. age <= timeout: COMMAND. Older: HOLD, or in base_only mode BASE_ONLY until
    age > timeout + base_only_max, then HOLD. No observation yet, or an observation stamped more
    than `future_tolerance` ahead of now (clock problem): HOLD.
    """

    def __init__(self, timeout_s: float = 0.1, mode: str = WATCHDOG_HOLD, base_only_max_s: float = 0.5,
                 future_tolerance_s: float = 0.01) -> None:
        if not (math.isfinite(timeout_s) and timeout_s > 0):
            raise ConfigError(f"watchdog timeout_s must be > 0, got {timeout_s}")
        if mode not in WATCHDOG_MODES:
            raise ConfigError(f"watchdog mode must be one of {sorted(WATCHDOG_MODES)}, got {mode!r}")
        if not (math.isfinite(base_only_max_s) and base_only_max_s >= 0):
            raise ConfigError(f"watchdog base_only_max_s must be >= 0, got {base_only_max_s}")
        self.timeout_ns = int(round(timeout_s * NS_PER_S))
        self.mode = mode
        self.base_only_max_ns = int(round(base_only_max_s * NS_PER_S))
        self.future_tolerance_ns = int(round(future_tolerance_s * NS_PER_S))

    @staticmethod
    def from_config(config: CommandConfig) -> "Watchdog":
        return Watchdog(config.watchdog_timeout_s, config.watchdog_mode, config.base_only_max_s)

    def check(self, now_ns: int, last_observation_ns: int | None) -> WatchdogDecision:
        if last_observation_ns is None:
            return WatchdogDecision(WatchdogAction.HOLD, float("nan"), SAFETY_HOLD, "no observation yet")
        age = int(now_ns) - int(last_observation_ns)
        age_s = age / NS_PER_S
        if age < -self.future_tolerance_ns:
            return WatchdogDecision(WatchdogAction.HOLD, age_s, SAFETY_HOLD,
                                    f"observation stamped {-age_s:.3f} s in the future: clock problem")
        if age <= self.timeout_ns:
            return WatchdogDecision(WatchdogAction.COMMAND, age_s, 0, "ok")
        stale = f"observation {age_s * 1e3:.1f} ms old > timeout {self.timeout_ns / 1e6:.1f} ms"
        if self.mode == WATCHDOG_BASE_ONLY and age <= self.timeout_ns + self.base_only_max_ns:
            return WatchdogDecision(WatchdogAction.BASE_ONLY, age_s, SAFETY_BASE_ONLY, stale + ": base only")
        return WatchdogDecision(WatchdogAction.HOLD, age_s, SAFETY_HOLD, stale + ": holding")


def reach_beyond_bound(reach: np.ndarray, residual_bound: np.ndarray) -> list[int]:
    """Joints whose residual reach (rad, the policy's) exceeds residual_bound (rad) by more than float32
    rounding: where the node would clip what the actor was trained to ask for."""
    reach = np.asarray(reach, dtype=np.float64)
    bound = np.asarray(residual_bound, dtype=np.float64)
    return np.flatnonzero(reach > bound * (1 + 1e-5) + 1e-7).tolist()
