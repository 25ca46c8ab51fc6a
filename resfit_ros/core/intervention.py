"""An operator's take-over (an intervention): what replaces the policy's command this tick, if anything.

The operator (a teleoperation device: VR or mocap retargeting, a leader arm, a spacemouse through
IK; or the scripted operator of the simulator) publishes
  * joint targets: a stamped sensor_msgs/JointState, names + positions, any subset of the robot's
    joints (joints it does not name follow the base policy while it drives);
  * a take-over flag (std_msgs/Bool, latched): true = the operator drives, false = hand back.
While the flag is set, each control tick sends the newest target through the same safety layer as
every command (core/command.operator_command: joint limits and the per-step change limit, so both
the take-over and the hand-back are rate-limited moves; the e-stop and the watchdog as always).
A target with unknown joints, NaN, or a stamp older than `max_age_s` (the device stopped) is never
executed: rejected (counted by reason) or, while the operator holds the flag, the robot holds its
last command. The learner counts only the steps an operator target actually drove (the step
record's SAFETY_OPERATOR without SAFETY_HOLD) as interventions. No rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from resfit_ros.core.joint_states import JointStateError, JointStateMerger

# rejection reasons beyond JointStateMerger's (unknown_name, duplicate_name, wrong_length, nonfinite, empty)
TARGET_STALE = "stale"
TARGET_FUTURE = "future"


@dataclass
class OperatorTick:
    target: np.ndarray | None   # (dof,) joint target for this tick; None = the policy drives
    hold: bool = False          # the operator holds the flag but has no usable target: hold the last command


class OperatorInput:
    """The newest validated target and the take-over flag; `tick(now_ns, base)` decides each tick."""

    def __init__(self, joint_names: Sequence[str], max_age_s: float = 0.5, future_tolerance_s: float = 1.0):
        self.parser = JointStateMerger(joint_names, velocity_required=False)
        self.max_age_ns = int(max_age_s * 1e9)
        self.future_ns = int(future_tolerance_s * 1e9)
        self.active = False
        self.indices: np.ndarray | None = None     # joints the newest target names
        self.positions: np.ndarray | None = None
        self.stamp_ns: int | None = None

    def set_active(self, active: bool) -> None:
        self.active = bool(active)

    def on_target(self, names: Sequence[str], positions, stamp_ns: int, now_ns: int) -> None:
        """Validate and keep one target; raises JointStateError(reason, message) when it is refused."""
        if stamp_ns > now_ns + self.future_ns:
            raise JointStateError(TARGET_FUTURE, f"intervention target stamped {(stamp_ns - now_ns) / 1e9:.3f} s "
                                                 "ahead of this node's clock")
        if now_ns - stamp_ns > self.max_age_ns:
            raise JointStateError(TARGET_STALE, f"intervention target is {(now_ns - stamp_ns) / 1e9:.3f} s old "
                                                f"(max {self.max_age_ns / 1e9:.3f} s)")
        sample = self.parser.parse(names, positions, (), source="intervention target")
        self.indices, self.positions, self.stamp_ns = sample.indices, sample.position, int(stamp_ns)

    def tick(self, now_ns: int, base: np.ndarray) -> OperatorTick:
        if not self.active:
            return OperatorTick(None)
        if self.stamp_ns is None or now_ns - self.stamp_ns > self.max_age_ns:
            return OperatorTick(None, hold=True)
        target = np.array(base, dtype=np.float64, copy=True)
        target[self.indices] = self.positions
        return OperatorTick(target)


def intervention_steps(safety_flags: np.ndarray) -> np.ndarray:
    """(T,) bool: the steps an operator's target drove, from the step records' safety flags."""
    from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR

    flags = np.asarray(safety_flags, dtype=np.int64)
    return ((flags & SAFETY_OPERATOR) != 0) & ((flags & SAFETY_HOLD) == 0)
