"""The reset as a state machine: wait for the policy to go quiet, reset the scene, home the robot.

    IDLE --begin--> WAIT_QUIET --(no step record for quiet_s)--> SCENE_RESET --(reply)--> WAIT_STATE
                         \\______________(no scene reset service)______________________________/
    WAIT_STATE --(a fresh state of every joint: plan the motion home)--> HOMING --(last point)--> SETTLE
    SETTLE --(the state the last command produced, and settle_s)--> IDLE with a ResetOutcome

Every phase that waits has a deadline; missing it ends the reset with ok=False and the reason.
The episode manager node calls `tick` from a timer at the control rate with what it has heard
(JointStream, the positions, the scene service's reply) and carries out what the tick asks for
(call the scene reset, send a homing command, report the outcome). No rclpy: the late-state and
quiet-policy cases are tested without DDS (test/core/test_reset.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import numpy as np

from resfit_ros.core.command import CommandLimits, HomingError, HomingTrajectory


class ResetPhase(Enum):
    IDLE = "idle"
    WAIT_QUIET = "wait_quiet"      # the policy may still be sending commands of the episode that ended
    SCENE_RESET = "scene_reset"    # the scene reset service was called; its reply is awaited
    WAIT_STATE = "wait_state"      # a fresh state of every joint after the scene reset is awaited
    HOMING = "homing"              # one homing command per tick, each after the state the previous produced
    SETTLE = "settle"              # the last command went out; its state and settle_s are awaited


@dataclass(frozen=True)
class ResetTiming:
    reset_quiet_s: float = 0.2           # the motion starts once the policy sent no step this long
    scene_reset_timeout_s: float = 3.0
    joint_state_timeout_s: float = 1.0   # + 2 s: how long a phase waits for a joint state
    homing_settle_s: float = 0.1
    homing_speed_fraction: float = 0.3
    homing_min_duration_s: float = 2.0

    @property
    def state_wait_s(self) -> float:
        return self.joint_state_timeout_s + 2.0


@dataclass(frozen=True)
class JointStream:
    """What the node has heard of the joint states so far."""
    newest_stamp: int | None   # ns, of the newest accepted joint state (None: none yet)
    received: int              # joint states accepted so far (a driver that stamps 0: order only)

    def newer_than(self, stamp: int, received: int) -> bool:
        """A state arrived after the one that was newest at (stamp, received)."""
        if self.newest_stamp is not None and self.newest_stamp > 0:
            return self.newest_stamp > stamp
        return self.received > received


@dataclass(frozen=True)
class SceneReply:
    success: bool
    message: str
    state_stamp_ns: int = 0    # the reset scene's first state (0: not known)


@dataclass(frozen=True)
class ResetOutcome:
    ok: bool
    message: str
    # "ready" is stamped with this: the policy starts from an observation at least this new
    ready_stamp_ns: int | None = None


@dataclass
class ResetTick:
    """What the node does after one tick."""
    call_scene_reset: bool = False
    clear_positions: bool = False        # the positions heard so far show the scene before its reset
    command: np.ndarray | None = None    # (dof,) homing command to send now
    outcome: ResetOutcome | None = None  # the reset ended (the sequencer is IDLE again)


class ResetSequencer:
    def __init__(self, limits: CommandLimits, timing: ResetTiming, scene_reset: bool):
        self.limits, self.timing, self.scene_reset = limits, timing, scene_reset
        self.phase = ResetPhase.IDLE
        # joint states stamped at or before this show the robot before the reset: the node drops them
        self.min_state_stamp: int | None = None
        self.homing: HomingTrajectory | None = None
        self._clear()

    def _clear(self) -> None:
        self.homing = None
        self.homing_step = 0
        self.planned_from_stamp: int | None = None   # newest state when the motion home was planned
        self.deadline = float("inf")
        self.sent: tuple[int, int] | None = None     # (newest stamp, received) when the last command went out
        self.settle_until = 0.0

    @property
    def active(self) -> bool:
        return self.phase != ResetPhase.IDLE

    def begin(self) -> None:
        self._clear()
        self.phase = ResetPhase.WAIT_QUIET

    def cancel(self) -> None:
        """Stop at once (e-stop, the episode state left RESETTING): no further command."""
        self._clear()
        self.min_state_stamp = None
        self.phase = ResetPhase.IDLE

    def _finish(self, ok: bool, message: str, ready_stamp_ns: int | None = None) -> ResetTick:
        ready = ready_stamp_ns if ready_stamp_ns is not None else self.planned_from_stamp
        self.cancel()
        return ResetTick(outcome=ResetOutcome(ok, message, ready if ok else None))

    def tick(self, now: float, last_step_wall: float, stream: JointStream, positions: np.ndarray | None,
             scene_reply: SceneReply | None = None) -> ResetTick:
        """One control tick. now / last_step_wall: monotonic s (last_step_wall: the newest step
        record of the policy, any episode); positions: (dof,) fresh state of every joint or None;
        scene_reply: the scene reset's answer once it came."""
        t = self.timing
        if self.phase == ResetPhase.WAIT_QUIET:
            if now - last_step_wall < t.reset_quiet_s:
                return ResetTick()
            if not self.scene_reset:
                return self._plan(stream, positions)
            # homing is planned from states stamped after the scene reset only: one from before it
            # may still be in flight
            self.min_state_stamp = stream.newest_stamp
            self.phase, self.deadline = ResetPhase.SCENE_RESET, now + t.scene_reset_timeout_s
            return ResetTick(call_scene_reset=True)
        if self.phase == ResetPhase.SCENE_RESET:
            if scene_reply is None:
                if now > self.deadline:
                    return self._finish(False, f"scene reset service gave no answer in {t.scene_reset_timeout_s} s")
                return ResetTick()
            if not scene_reply.success:
                return self._finish(False, f"scene reset failed: {scene_reply.message}")
            if scene_reply.state_stamp_ns > 0:
                self.min_state_stamp = scene_reply.state_stamp_ns - 1
            self.phase, self.deadline = ResetPhase.WAIT_STATE, now + t.state_wait_s
            return ResetTick(clear_positions=True)
        if self.phase == ResetPhase.WAIT_STATE:
            if positions is not None:
                return self._plan(stream, positions)
            if now > self.deadline:
                return self._finish(False, "no fresh joint state of every joint after the scene reset")
            return ResetTick()
        if self.phase == ResetPhase.HOMING:
            return self._homing_step(now, stream)
        if self.phase == ResetPhase.SETTLE:
            assert self.sent is not None and self.homing is not None
            if now >= self.settle_until and stream.newer_than(*self.sent):
                stamped = stream.newest_stamp is not None and stream.newest_stamp > 0
                return self._finish(True, f"home reached in {self.homing.duration_s:.1f} s (planned from the joint "
                                          f"state stamped {(self.planned_from_stamp or 0) / 1e9:.3f} s)",
                                    ready_stamp_ns=stream.newest_stamp - 1 if stamped else None)
            if now > self.deadline:
                return self._finish(False, "no joint state after the last homing command")
        return ResetTick()

    def _plan(self, stream: JointStream, positions: np.ndarray | None) -> ResetTick:
        self.planned_from_stamp = stream.newest_stamp   # every state the homing commands produce is newer
        if positions is None:
            return self._finish(False, "no fresh joint state for every joint: cannot plan the motion home")
        try:
            self.homing = HomingTrajectory(positions, self.limits, speed_fraction=self.timing.homing_speed_fraction,
                                           min_duration_s=self.timing.homing_min_duration_s)
        except HomingError as exc:
            return self._finish(False, str(exc))
        self.phase, self.homing_step, self.sent = ResetPhase.HOMING, 0, None
        return ResetTick()

    def _homing_step(self, now: float, stream: JointStream) -> ResetTick:
        assert self.homing is not None
        if self.sent is not None and not stream.newer_than(*self.sent):
            # Each command waits for the state the previous one produced: a lockstep simulator steps
            # once per command, and "ready" on the second-to-last state would leave the policy one
            # step late all episode. A streaming robot has a newer state within its period anyway.
            if now > self.deadline:
                return self._finish(False, "no joint state after a homing command")
            return ResetTick()
        self.homing_step += 1
        self.sent = (-1 if stream.newest_stamp is None else stream.newest_stamp, stream.received)
        self.deadline = now + self.timing.state_wait_s
        command = self.homing.command(self.homing_step)
        if self.homing.done(self.homing_step):
            self.phase, self.settle_until = ResetPhase.SETTLE, now + self.timing.homing_settle_s
        return ResetTick(command=command)
