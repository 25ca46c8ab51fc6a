"""One control step: what the robot does this tick, given the base action of this tick.

    residual = 0                                   no residual weights yet
             | random_residual(held uniform draw)  training step < the policy's random_warmup_steps
             | actor(state, base) + held noise     training step (explore)
             | actor(state, base)                  evaluation step
    command  = compose_command(base, residual, previous command)   (core/command.py)
             | operator_command(target, previous command)   an operator's target (an intervention):
                                                             the residual recorded is command - base

With the policy's action_repeat R > 1 the residual is decided at the episode's steps 0, R, 2R, ...
and held (joint units) for the R - 1 steps after each, in evaluation as in training: the learner's
online transitions start at exactly those steps (replay.ReplayConfig.action_repeat). The held
exploration draw then counts decisions, not steps.

The residual policy node and every in-process loop (evaluation, the benches, the in-process
trainer) call this one class, so a success rate measured in process means what it means on the
robot. The class holds the only per-episode state of a step besides the base's chunk queue: the
previous command (rate limit), the held exploration draw and the held residual. No rclpy; torch only through the
policy it is handed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resfit_ros.core.command import CommandLimits, compose_command, operator_command
from resfit_ros.learning.exploration import HeldNoise


@dataclass
class StepResult:
    command: np.ndarray           # (dof,) what is sent to the controllers
    residual: np.ndarray          # (dof,) joint units as the policy proposed it (NaN: not computed)
    flags: int                    # SAFETY_* of compose_command
    error: str | None = None      # why the residual was not computed (the command fell back to the base)
    intervention: bool = False    # the command is an operator's target (the residual: what it did beyond the base)


class ControlStep:
    """Per episode: `start_episode(position)`, then `step(...)` once per control tick."""

    def __init__(self, limits: CommandLimits, hold_steps: int = 1, seed: int = 0):
        self.limits = limits
        self.noise = HeldNoise(hold_steps)
        self.rng = np.random.default_rng(seed)
        self.previous: np.ndarray | None = None
        self.held: np.ndarray | None = None        # the last decision's residual (action_repeat > 1)
        self.held_left = 0                         # steps it is still held for

    def start_episode(self, position) -> None:
        """A new episode: the first command is rate-limited from where the robot IS (it was reset
        since the last command), and the next exploration draw is a fresh one."""
        self.noise.reset()
        self.held, self.held_left = None, 0        # step 0 of an episode is a decision
        position = None if position is None else np.asarray(position, dtype=np.float64).reshape(-1)
        valid = position is not None and position.shape == (self.limits.dof,) and np.isfinite(position).all()
        # an unusable position: compose_command then starts from its fallback (the observed position) or home
        self.previous = np.clip(position, self.limits.lower, self.limits.upper) if valid else None

    def residual(self, policy, state, base: np.ndarray, images=None, features=None, explore: bool = False,
                 train_steps: int = 0) -> np.ndarray:
        """(dof,) residual in joint units (zeros without a policy). Raises what the policy raises.
        The random warm-up's length and size come with the policy's weights (AgentConfig), so the
        learner that skips its updates for those steps and the robot agree on them."""
        dof = self.limits.dof
        if policy is None:
            return np.zeros(dof)
        if self.held_left > 0:
            self.held_left -= 1
            return self.held
        residual = self.decide(policy, state, base, images, features, explore, train_steps)
        self.held, self.held_left = residual, getattr(policy.config, "action_repeat", 1) - 1
        return residual

    def decide(self, policy, state, base: np.ndarray, images=None, features=None, explore: bool = False,
               train_steps: int = 0) -> np.ndarray:
        """A decision: the random warm-up's residual, or the actor's (+ held noise when exploring)."""
        dof = self.limits.dof
        rng = self.rng
        if explore and train_steps < policy.config.random_warmup_steps:
            scale = policy.config.random_warmup_fraction * policy.config.action_scale
            return policy.random_residual(base, rng, scale, noise=self.noise.next(lambda: rng.uniform(-scale, scale, dof)))
        noise = None
        if explore:
            std = policy.config.exploration_std
            noise = self.noise.next(lambda: rng.normal(0.0, std, dof))
        return policy.act(state, base, images=images, features=features, explore=explore, rng=rng, noise=noise)

    def step(self, policy, state, base: np.ndarray, position, images=None, features=None, explore: bool = False,
             train_steps: int = 0, operator: np.ndarray | None = None) -> StepResult:
        """This tick's command. A residual that cannot be computed (the policy raised) gives the base
        alone for this tick, with the reason in `error`; the command is safe whatever the inputs.
        With an `operator` target (dof,) the operator drives this tick instead of the policy."""
        if operator is not None:
            command, flags = operator_command(operator, self.previous, self.limits, fallback=position)
            self.previous = command
            self.noise.reset()                        # the policy's next decision after the hand-back is fresh
            self.held, self.held_left = None, 0
            base = np.asarray(base, dtype=np.float64).reshape(-1)
            beyond_base = command - base if base.shape == command.shape else np.full_like(command, np.nan)
            return StepResult(command, beyond_base, int(flags), None, intervention=True)
        error = None
        try:
            residual = self.residual(policy, state, base, images, features, explore, train_steps)
        except (ValueError, KeyError, RuntimeError, TypeError) as exc:
            error = str(exc)
            residual = np.full(self.limits.dof, np.nan)   # compose_command's non-finite fallback: base only
        command, flags = compose_command(base, residual, self.previous, self.limits, fallback=position)
        self.previous = command
        return StepResult(command, np.asarray(residual, dtype=np.float64), int(flags), error)

    def base_only(self, base: np.ndarray, position) -> np.ndarray:
        """The base alone (the watchdog's base-only mode), rate-limited like every command."""
        command, _ = compose_command(base, None, self.previous, self.limits, fallback=position,
                                     residual_enabled=False)
        self.previous = command
        return command
