"""State and action normalisation, computed once from the demonstrations and then frozen.

Actions (ResFiT): min-max over every action the critic sees as executed in the demonstrations
(the demo commands AND the base's actions on the demo observations), each half range floored at
`action_min_half_range`, then WIDENED so that the residual's whole bound stays reachable beyond the
demos: with b = action_scale * residual_gain[j] (normalised units), the half range is divided by
(1 - b), so a demo extreme maps to 1 - b and base + the full residual lands exactly on 1. Everything
the critic sees is clamped to [-1, 1], exactly as the command is clamped before execution.

Why the floor is a physical size (0.05 rad), not a rounding guard: a joint the demos never move
would otherwise get a half range of ~1 mrad, so the base's own few-mrad errors on it fill the whole
[-1, 1] range online while every demo step sits at 0, and the critic tells a demonstration from an
online step by that joint alone (the reference code floors the demo range at 0.1).

Per-joint residual gain (optional, 1 by default): joint j's residual is bounded by
action_scale * residual_gain[j] (normalised units) instead of action_scale. A gain of 0 keeps the
residual off that joint.

Residual limit (joint units, optional): the residual node clips every residual to its
`residual_bound` before the robot moves, so the learner bounds the actor by the same value: joint j's
bound is min(action_scale * gain[j], residual_limit[j] / half_range[j]). Without it the actor could
ask for more than the robot executes; the critic only ever sees executed actions, so the actor
would be optimised where the critic extrapolates (measured: fingers asking -0.31 rad, getting -0.2,
their sign swinging between checkpoints; docs/experiments.md).

States: z-score with a minimum std. The demos alone are a poor sample of the states the critic
trains on: a scripted or teleoperated demo moves smoothly and never knocks the object, while the
base's own episodes do both (joint velocities and the object's tilt spread orders of magnitude
wider online; docs/experiments.md), so demo statistics map ordinary online states to the clip and
make them a demo-vs-online shortcut. The learner therefore
refits the state statistics once, on the demos AND the random warm-up's online states, before its
first update on them (`with_state_statistics`); the action map stays as it is. The floor
(`state_min_std`, 0.01 in state units: 1 cm, 0.01 rad) only guards a dimension that never varies;
a larger one would squash real variation (the object's position varies by ~2 cm). Normalised
states are also clipped to +-state_clip std so that an absurd reading cannot saturate every
LayerNorm downstream.

The statistics travel as named float32 arrays (`to_arrays`/`from_arrays`) inside every checkpoint
and every weights message, so the learner and the policy node always normalise identically.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resfit_ros.config import require

# Names of the arrays in weights dicts and checkpoints.
STATE_MEAN = "normaliser.state_mean"          # (S,)
STATE_STD = "normaliser.state_std"            # (S,) already floored at state_min_std
ACTION_LOW = "normaliser.action_low"          # (A,) widened demo minimum, joint units
ACTION_HIGH = "normaliser.action_high"        # (A,) widened demo maximum, joint units
ACTION_SCALE = "normaliser.action_scale"      # (1,) the action_scale the range was widened with
STATE_CLIP = "normaliser.state_clip"          # (1,)
RESIDUAL_GAIN = "normaliser.residual_gain"    # (A,) per-joint multiplier of action_scale (absent: all 1)
RESIDUAL_LIMIT = "normaliser.residual_limit"  # (A,) joint units: the residual node's residual_bound (absent: none)
ARRAY_NAMES = (STATE_MEAN, STATE_STD, ACTION_LOW, ACTION_HIGH, ACTION_SCALE, STATE_CLIP, RESIDUAL_GAIN,
               RESIDUAL_LIMIT)
MAX_RESIDUAL_GAIN = 10.0
MAX_RESIDUAL_BOUND = 0.5   # action_scale * gain: the widened range is the demos' / (1 - bound)


@dataclass
class NormaliserConfig:
    state_min_std: float = 0.01
    """Floor on the per-dimension state std, in state units (m, rad, rad/s). Only guards a dimension
    that never varies: the reference code's 0.1 would squash an object position spread over a few
    centimetres."""
    action_min_half_range: float = 0.05
    """Floor on half the demo range of an action dimension, in joint units (rad): a joint that never
    moves in the demos gets this scale, so small online deviations on it stay small in normalised
    units (see the module doc; the reference code: a minimum range of 0.1)."""
    state_clip: float = 10.0
    """Normalised states are clipped to [-state_clip, state_clip] (in units of std)."""

    def __post_init__(self) -> None:
        require(self.state_min_std > 0, f"state_min_std must be > 0, got {self.state_min_std}")
        require(self.action_min_half_range > 0,
                f"action_min_half_range must be > 0, got {self.action_min_half_range}")
        require(self.state_clip > 0, f"state_clip must be > 0, got {self.state_clip}")


class Normaliser:
    """Frozen affine maps state -> z-score and action (joint units) <-> [-1, 1]."""

    def __init__(self, state_mean: np.ndarray, state_std: np.ndarray, action_low: np.ndarray,
                 action_high: np.ndarray, action_scale: float, state_clip: float = 10.0,
                 residual_gain: np.ndarray | None = None, residual_limit: np.ndarray | None = None):
        self.state_mean = np.asarray(state_mean, dtype=np.float32).reshape(-1)
        self.state_std = np.asarray(state_std, dtype=np.float32).reshape(-1)
        self.action_low = np.asarray(action_low, dtype=np.float32).reshape(-1)
        self.action_high = np.asarray(action_high, dtype=np.float32).reshape(-1)
        self.action_scale = float(action_scale)
        self.state_clip = float(state_clip)
        self.residual_gain = (np.ones(self.action_low.shape, dtype=np.float32) if residual_gain is None
                              else np.asarray(residual_gain, dtype=np.float32).reshape(-1))
        if self.state_mean.shape != self.state_std.shape:
            raise ValueError(f"state_mean {self.state_mean.shape} and state_std {self.state_std.shape} differ")
        if self.action_low.shape != self.action_high.shape:
            raise ValueError(f"action_low {self.action_low.shape} and action_high {self.action_high.shape} differ")
        for name, arr in (("state_mean", self.state_mean), ("state_std", self.state_std),
                          ("action_low", self.action_low), ("action_high", self.action_high)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"normaliser {name} is not finite: {arr}")
        if np.any(self.state_std <= 0):
            raise ValueError(f"normaliser state_std must be > 0, got {self.state_std}")
        if np.any(self.action_high <= self.action_low):
            raise ValueError("normaliser action_high must be > action_low in every dimension")
        if not (np.isfinite(self.action_scale) and 0 < self.action_scale <= 1):
            raise ValueError(f"normaliser action_scale must be in (0, 1], got {self.action_scale}")
        if not (np.isfinite(self.state_clip) and self.state_clip > 0):
            raise ValueError(f"normaliser state_clip must be > 0, got {self.state_clip}")
        check_residual_gain(self.residual_gain, self.action_low.shape[0], self.action_scale)
        # Affine action map in float64: the policy composes commands in joint units with it.
        self.action_center = (self.action_low.astype(np.float64) + self.action_high) / 2  # (A,)
        self.action_half_range = (self.action_high.astype(np.float64) - self.action_low) / 2  # (A,)
        # No limit given: the gain's own reach (so the limit never binds), kept finite for the weights.
        natural = self.action_scale * self.residual_gain.astype(np.float64) * self.action_half_range
        self.residual_limit = (natural.astype(np.float32) if residual_limit is None
                               else residual_limit_vector(residual_limit, self.action_dim))

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    @property
    def action_dim(self) -> int:
        return int(self.action_low.shape[0])

    @classmethod
    def from_demonstrations(cls, states: np.ndarray, actions: np.ndarray, action_scale: float,
                            config: NormaliserConfig | None = None,
                            residual_gain: np.ndarray | None = None,
                            residual_limit: np.ndarray | None = None) -> "Normaliser":
        """Statistics of demo `states` (N, S) and demo `actions` (N, A), in joint units.

        Pass every action the critic will see as 'executed' in the demos: the demo commands and the
        base's actions on the demo observations (`demo_action_statistics` in learning/offline.py).

        `residual_gain` (A,), optional (see the module doc): joint j's residual reaches
        action_scale * residual_gain[j]. Why: one bound for all 29 joints does not fit this robot:
        a residual that moves the arm by a few millimetres is already too much noise for a grasp,
        while the fingers need ~0.2 rad more closure to hold what slips (docs/experiments.md).
        `residual_limit` (1 or A values, joint units): the residual node's residual_bound (module doc)."""
        config = config or NormaliserConfig()
        states = np.asarray(states, dtype=np.float64)
        actions = np.asarray(actions, dtype=np.float64)
        if states.ndim != 2 or states.shape[0] == 0:
            raise ValueError(f"states must be (N, S) with N > 0, got shape {states.shape}")
        if actions.ndim != 2 or actions.shape[0] == 0:
            raise ValueError(f"actions must be (N, A) with N > 0, got shape {actions.shape}")
        if not (np.all(np.isfinite(states)) and np.all(np.isfinite(actions))):
            raise ValueError("demonstration states/actions contain NaN or inf")
        gain = np.ones(actions.shape[1]) if residual_gain is None else np.asarray(residual_gain, dtype=np.float64)
        check_residual_gain(gain, actions.shape[1], action_scale)
        state_std = np.maximum(states.std(axis=0), config.state_min_std)
        low, high = actions.min(axis=0), actions.max(axis=0)
        center = (low + high) / 2
        # Widen so that a demo extreme maps to 1 - bound: the residual's whole bound stays reachable there.
        half = np.maximum((high - low) / 2, config.action_min_half_range) / (1.0 - action_scale * gain)
        return cls(states.mean(axis=0), state_std, center - half, center + half, action_scale,
                   config.state_clip, gain, residual_limit)

    def with_state_statistics(self, states: np.ndarray, state_min_std: float) -> "Normaliser":
        """A copy whose state mean/std come from `states` (N, S) (std floored at state_min_std);
        the action map is unchanged, so stored actions and the residual's bounds mean the same."""
        states = np.asarray(states, dtype=np.float64)
        if states.ndim != 2 or states.shape[0] == 0 or states.shape[1] != self.state_dim:
            raise ValueError(f"states must be (N, {self.state_dim}) with N > 0, got shape {states.shape}")
        if not np.all(np.isfinite(states)):
            raise ValueError("states contain NaN or inf")
        if not state_min_std > 0:
            raise ValueError(f"state_min_std must be > 0, got {state_min_std}")
        return Normaliser(states.mean(axis=0), np.maximum(states.std(axis=0), state_min_std), self.action_low,
                          self.action_high, self.action_scale, self.state_clip, self.residual_gain,
                          self.residual_limit)

    # --- numpy maps (the policy node's side) ---------------------------------------------------
    def normalise_state(self, state: np.ndarray) -> np.ndarray:
        """(..., S) -> (..., S) float32 z-score, clipped to +-state_clip."""
        with np.errstate(over="ignore"):    # absurd readings overflow to inf, then clip to the bound
            z = (np.asarray(state, dtype=np.float32) - self.state_mean) / self.state_std
        return np.clip(z, -self.state_clip, self.state_clip)

    def normalise_action(self, action: np.ndarray) -> np.ndarray:
        """(..., A) joint units -> (..., A) float64, NOT clamped (callers clamp to [-1, 1])."""
        return (np.asarray(action, dtype=np.float64) - self.action_center) / self.action_half_range

    def denormalise_action(self, action: np.ndarray) -> np.ndarray:
        """(..., A) normalised -> (..., A) float64 joint units."""
        return np.asarray(action, dtype=np.float64) * self.action_half_range + self.action_center

    # --- serialisation ---------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """Named float32 arrays (for weights dicts and checkpoints)."""
        return {
            STATE_MEAN: self.state_mean.copy(),
            STATE_STD: self.state_std.copy(),
            ACTION_LOW: self.action_low.copy(),
            ACTION_HIGH: self.action_high.copy(),
            ACTION_SCALE: np.array([self.action_scale], dtype=np.float32),
            STATE_CLIP: np.array([self.state_clip], dtype=np.float32),
            RESIDUAL_GAIN: self.residual_gain.copy(),
            RESIDUAL_LIMIT: self.residual_limit.copy(),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Normaliser":
        # checkpoints written before the per-joint gain (limit) existed have no RESIDUAL_GAIN (LIMIT):
        # gain 1 (no limit)
        missing = [n for n in ARRAY_NAMES if n not in arrays and n not in (RESIDUAL_GAIN, RESIDUAL_LIMIT)]
        if missing:
            raise ValueError(f"normaliser arrays missing: {missing}")
        return cls(arrays[STATE_MEAN], arrays[STATE_STD], arrays[ACTION_LOW], arrays[ACTION_HIGH],
                   float(np.asarray(arrays[ACTION_SCALE]).reshape(-1)[0]),
                   float(np.asarray(arrays[STATE_CLIP]).reshape(-1)[0]), arrays.get(RESIDUAL_GAIN),
                   arrays.get(RESIDUAL_LIMIT))


def residual_bounds(action_scale: float, normaliser: "Normaliser") -> np.ndarray:
    """(A,) float64 bound of the residual per joint, normalised units: action_scale * gain, never
    past the residual limit (the robot's residual_bound). Pass the config's action_scale (exact),
    not the normaliser's float32 copy of it."""
    reach = float(action_scale) * normaliser.residual_gain.astype(np.float64)
    limit = normaliser.residual_limit.astype(np.float64) / normaliser.action_half_range
    # a limit that does not bind (stored in float32) must not shave the reach by a rounding error
    return np.where(limit < reach * (1 - 1e-6), limit, reach)


def residual_limit_vector(values, action_dim: int) -> np.ndarray:
    """(A,) float32 residual limit in joint units from 1 value (every joint) or A values;
    ValueError unless finite and >= 0."""
    limit = np.asarray(values, dtype=np.float64).reshape(-1)
    if limit.shape[0] == 1:
        limit = np.full(action_dim, limit[0])
    if limit.shape != (action_dim,) or not np.all(np.isfinite(limit)) or np.any(limit < 0):
        raise ValueError(f"residual_limit must be 1 or {action_dim} finite values >= 0 (joint units), "
                         f"got {np.asarray(values).tolist()}")
    return limit.astype(np.float32)


def check_residual_gain(gain: np.ndarray, action_dim: int, action_scale: float) -> None:
    """ValueError unless `gain` is action_dim finite values in [0, MAX_RESIDUAL_GAIN] with
    action_scale * gain <= MAX_RESIDUAL_BOUND (beyond it the widened range would be mostly residual)."""
    gain = np.asarray(gain, dtype=np.float64).reshape(-1)
    if gain.shape != (action_dim,) or not np.all(np.isfinite(gain)) or np.any(gain < 0) \
            or np.any(gain > MAX_RESIDUAL_GAIN) or np.any(action_scale * gain > MAX_RESIDUAL_BOUND + 1e-6):
        raise ValueError(f"residual_gain must be {action_dim} values in [0, {MAX_RESIDUAL_GAIN:g}] with "
                         f"action_scale ({action_scale:g}) * gain <= {MAX_RESIDUAL_BOUND:g}, got {gain.tolist()}")
