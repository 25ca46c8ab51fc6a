"""A scripted operator for simulation: the task's expert watches and takes over when the robot strays.

What a watchful person with a teleoperation device does (HG-DAgger's gated expert): the expert
runs in the background from the episode's start on its own timeline (sim/experts.py, privileged
object state), and as soon as the robot's command moves an arm joint more than `deviation_rad`
away from what the expert would command now, the operator takes over and drives the rest of the
episode with the expert's commands. The steps it drives are interventions: corrections at states
the policy itself reached, which the learner adds to the demonstration side of its replay.

Per episode: `start_episode(watch)` after the scene reset, then each control step
`target()` (the operator's joint target, None while the policy drives) and, after the step,
`observe(command)` with the command the robot was sent.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resfit_ros.config import require
from resfit_ros.sim.robot_model import JOINT_GROUPS


@dataclass
class InterventionConfig:
    share: float = 0.0
    """Fraction of the training episodes the operator watches (0: never intervenes)."""
    deviation_rad: float = 0.25
    """Take over when an arm joint's command is this far from the expert's (rad)."""

    def __post_init__(self) -> None:
        require(0.0 <= self.share <= 1.0, f"intervention share must be in [0, 1], got {self.share}")
        require(self.deviation_rad > 0, f"intervention deviation_rad must be > 0, got {self.deviation_rad}")


class ScriptedIntervener:
    def __init__(self, env, task: str, config: InterventionConfig):
        from resfit_ros.sim import make_expert

        self.config = config
        self.expert = make_expert(task, env)
        arm_joints = set(JOINT_GROUPS["left_arm"]) | set(JOINT_GROUPS["right_arm"])
        self.arm = np.array([i for i, name in enumerate(env.joint_names) if name in arm_joints])
        self.watching = self.active = False
        self.expert_command: np.ndarray | None = None
        self.takeover_step: int | None = None
        self.steps = 0

    def start_episode(self, watch: bool) -> None:
        self.expert.reset()
        self.watching, self.active = bool(watch), False
        self.expert_command, self.takeover_step, self.steps = None, None, 0

    def target(self) -> np.ndarray | None:
        """The operator's joint target for this step (None: the policy drives). The expert plans
        every step while watching, so its timeline is the episode's."""
        if not self.watching:
            return None
        self.expert_command = self.expert.act(None)
        return self.expert_command.copy() if self.active else None

    def observe(self, command: np.ndarray) -> None:
        """The command sent this step: strayed from the expert's -> the operator takes over."""
        if self.watching and not self.active and self.expert_command is not None:
            deviation = np.abs(np.asarray(command)[self.arm] - self.expert_command[self.arm]).max()
            if deviation > self.config.deviation_rad:
                self.active, self.takeover_step = True, self.steps + 1
        self.steps += 1
