"""When the learner updates: the one schedule of critic updates against the robot's training steps.

    training steps  0 .. W-1        random residual, no update (after `initial_updates` on the demos)
    at step W                       `critic_warmup_updates` critic-only updates on that buffer
    every decision after            `utd` critic updates (+ 1 actor update); a decision is every
                                    `action_repeat`-th step (AgentConfig.action_repeat), so the
                                    updates per step are utd / action_repeat

The learner node caps its updates at `budget(steps seen)`; in simulation the policy node waits
until the learner is on schedule (`steps_allowed`, published with the learner's metrics), so the
achieved UTD is the configured one. The in-process trainer (bench/residual_gain.py) uses the same
class. W is AgentConfig.random_warmup_steps: ResFiT's order (10k random steps, then 10k critic-only
updates on the finished buffer, then training), where the critic has seen what residuals near their
bound do before the actor moves.
"""
from __future__ import annotations

from dataclasses import dataclass

from resfit_ros.config import require


@dataclass(frozen=True)
class UpdateSchedule:
    utd: int
    initial_updates: int = 0          # critic updates on the demos before the first training step
    random_warmup_steps: int = 0      # W: training steps with a random residual and no update
    critic_warmup_updates: int = 0    # updates (counted from the start, initial ones included) before the actor
    action_repeat: int = 1            # training steps per decision of the actor

    def __post_init__(self) -> None:
        require(self.utd >= 1, f"utd must be >= 1, got {self.utd}")
        require(self.action_repeat >= 1, f"action_repeat must be >= 1, got {self.action_repeat}")
        require(min(self.initial_updates, self.random_warmup_steps, self.critic_warmup_updates) >= 0,
                "initial_updates, random_warmup_steps and critic_warmup_updates must be >= 0")

    @classmethod
    def of(cls, settings) -> "UpdateSchedule":
        """The schedule of a learner's settings (LearnerConfig, OfflineSettings or alike)."""
        return cls(settings.utd, getattr(settings, "initial_updates", 0), settings.random_warmup_steps,
                   settings.critic_warmup_updates, settings.action_repeat)

    @property
    def warmup_updates(self) -> int:
        """Critic updates done by the end of step W (the critic-only warm-up included)."""
        return max(self.initial_updates, self.critic_warmup_updates)

    def budget(self, steps: int) -> int:
        """The most critic updates the learner may have made once the robot took `steps` training steps."""
        if steps < self.random_warmup_steps:
            return self.initial_updates
        return self.warmup_updates + self.utd * ((steps - self.random_warmup_steps) // self.action_repeat)

    def steps_allowed(self, updates: int) -> int:
        """The most training steps the robot may have taken while the learner, at `updates`, is on
        schedule: pacing makes the robot wait beyond it."""
        if updates < self.initial_updates:
            return 0
        if updates < self.warmup_updates:
            return self.random_warmup_steps
        # the last step before the decision whose updates are not made yet
        repeat = self.action_repeat
        return self.random_warmup_steps + repeat * ((updates - self.warmup_updates) // self.utd) + repeat - 1

    def achieved_utd(self, updates: int, steps: int) -> float:
        """Critic updates per decision after the warm-up (0 during it): comparable with `utd`."""
        trained = steps - self.random_warmup_steps
        return max(0, updates - self.warmup_updates) * self.action_repeat / trained if trained > 0 else 0.0
