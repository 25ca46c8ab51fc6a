"""A tiny continuous task for testing residual RL end to end: a 2-D point mass reaching a goal.

State (4,): [position x, y, goal x, y]. Action (2,): velocity command in [-1, 1]^2; position moves by
dt * action and stays in the arena [-1, 1]^2. Success (sparse reward 1, episode ends) when the point
is within `goal_radius` of the goal; otherwise the episode is truncated after `horizon` steps.

The BASE policy is a proportional controller with a constant, deliberately wrong offset, the kind of
systematic error (miscalibration) a residual corrects best: it converges to goal + offset / gain,
outside the goal radius, and only succeeds when its straight path happens to cross the goal disc
(~20 %). The EXPERT is the same controller without the offset (always succeeds): its episodes are
the demonstrations. Both are deterministic functions of the state, like a frozen BC policy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from resfit_ros.config import require

STATE_DIM = 4
ACTION_DIM = 2


@dataclass
class PointMassConfig:
    horizon: int = 30
    """Steps before truncation."""
    dt: float = 0.1
    """Integration step: position += dt * action."""
    goal_radius: float = 0.1
    """Success distance."""
    goal_range: float = 0.5
    """Goals are uniform in [-goal_range, goal_range]^2."""
    gain: float = 2.0
    """Proportional gain of the base and expert controllers."""
    base_offset: tuple[float, ...] = (0.3, -0.3)
    """Constant bias added to the base policy's action (the error the residual must learn away)."""

    def __post_init__(self) -> None:
        self.base_offset = tuple(self.base_offset)
        require(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        require(self.dt > 0, f"dt must be > 0, got {self.dt}")
        require(self.goal_radius > 0, f"goal_radius must be > 0, got {self.goal_radius}")
        require(len(self.base_offset) == ACTION_DIM, f"base_offset must have 2 entries, got {self.base_offset}")


@dataclass
class Episode:
    """One rollout in the layout ReplayBuffer.add_episode takes."""
    states: np.ndarray                 # (T+1, 4)
    base_actions: np.ndarray           # (T+1, 2) base policy at every observation (incl. the last)
    actions: np.ndarray                # (T, 2) executed commands
    success: bool
    truncated: bool
    extra: dict = field(default_factory=dict)


class PointMassEnv:
    def __init__(self, config: PointMassConfig | None = None):
        self.config = config or PointMassConfig()
        self.position = np.zeros(2)
        self.goal = np.zeros(2)
        self.steps = 0

    def reset(self, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        self.position = rng.uniform(-1.0, 1.0, 2)
        self.goal = rng.uniform(-self.config.goal_range, self.config.goal_range, 2)
        while np.linalg.norm(self.position - self.goal) < 3 * self.config.goal_radius:  # no free wins
            self.position = rng.uniform(-1.0, 1.0, 2)
        self.steps = 0
        return self.state()

    def state(self) -> np.ndarray:
        return np.concatenate([self.position, self.goal]).astype(np.float32)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        """-> (next state, success, truncated)."""
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.position = np.clip(self.position + self.config.dt * action, -1.0, 1.0)
        self.steps += 1
        success = bool(np.linalg.norm(self.position - self.goal) < self.config.goal_radius)
        truncated = (not success) and self.steps >= self.config.horizon
        return self.state(), success, truncated


def expert_action(state: np.ndarray, config: PointMassConfig) -> np.ndarray:
    return np.clip(config.gain * (state[2:4] - state[0:2]), -1.0, 1.0)


def base_action(state: np.ndarray, config: PointMassConfig) -> np.ndarray:
    return np.clip(config.gain * (state[2:4] - state[0:2]) + np.asarray(config.base_offset), -1.0, 1.0)


def rollout(env: PointMassEnv, seed: int,
            residual_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
            expert: bool = False) -> Episode:
    """Run one episode. The command is base + residual_fn(state, base) (or the expert's action);
    base actions are recorded at every observation, including the final one."""
    cfg = env.config
    state = env.reset(seed)
    states, bases, actions = [state], [base_action(state, cfg)], []
    success = truncated = False
    while not (success or truncated):
        base = bases[-1]
        if expert:
            command = expert_action(state, cfg)
        elif residual_fn is None:
            command = base
        else:
            command = base + residual_fn(state, base)
        command = np.clip(command, -1.0, 1.0)
        state, success, truncated = env.step(command)
        actions.append(command)
        states.append(state)
        bases.append(base_action(state, cfg))
    return Episode(np.array(states, np.float32), np.array(bases, np.float32), np.array(actions, np.float32),
                   success, truncated)


def success_rate(env: PointMassEnv, seeds: list[int] | range,
                 residual_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> float:
    return float(np.mean([rollout(env, seed, residual_fn).success for seed in seeds]))
