"""When the residual policy node may act: the episode it belongs to, the first observation after a
reset, and the learner's pace. No rclpy: the "one step late" cases are unit-tested
(test/core/test_policy_gate.py); nodes/residual_policy.py feeds these from its topics.
"""
from __future__ import annotations

from dataclasses import dataclass


class EpisodeGate:
    """The episode the node is stepping, and which observations may start it.

    The episode manager stamps its "ready" status with the newest joint state of the finished
    reset (nodes/episode_manager.py): an episode's first step acts only on an observation newer
    than that, never on one of the robot before it was reset (in simulation time barely moves
    during a reset, so the observation's age alone cannot tell)."""

    def __init__(self) -> None:
        self.episode_id = 0
        self.step = 0                          # steps acted on in this episode
        self.ready_stamp_ns: int | None = None
        self.status_running = False            # the newest status says RUNNING for our episode
        self.estopped = False

    def on_status(self, running: bool, episode_id: int, ready: bool, stamp_ns: int) -> bool:
        """A new episode status; True when it starts a new episode (step count back to 0)."""
        started = running and episode_id != self.episode_id
        if started:
            self.episode_id, self.step = episode_id, 0
        if not running and ready:
            self.ready_stamp_ns = stamp_ns
        self.status_running = running and episode_id == self.episode_id
        return started

    @property
    def running(self) -> bool:
        return self.status_running and not self.estopped

    def after_reset(self, stamp_ns: int | None) -> bool:
        """Is an observation stamped so from after the last reset?"""
        return stamp_ns is not None and (self.ready_stamp_ns is None or stamp_ns > self.ready_stamp_ns)

    def may_act_on(self, stamp_ns: int) -> bool:
        """May this episode act on an observation stamped so (its first step: only after the reset)?"""
        return self.running and (self.step > 0 or self.after_reset(stamp_ns))


@dataclass
class LearnerPacer:
    """The simulator waits for the learner's update schedule (achieved UTD = configured).

    The learner publishes how many training steps its updates allow (`pace/steps_allowed`,
    learning/schedule.py) with its count of our steps (env_steps); a training step waits while our
    count is more than `free_steps` beyond what it allows, and only while the learner's own count
    shows it owes updates (beyond what it allows). A learner whose count does not (restarted,
    started after our steps, or their records lost on a link) waits for our steps: waiting for it
    would wait for ever. Our next step records tell it our count; in-flight records let us run a
    few steps beyond the pace at most."""
    enabled: bool = True
    free_steps: int = 20
    timeout_s: float = 60.0          # a learner silent this long (or never seen) is not waited for
    steps_allowed: int | None = None  # None: the learner's metrics did not say
    env_steps: int = 0               # the learner's count of our training steps
    seen_at: float = 0.0             # monotonic s of its last metrics (or of our start)

    def on_metrics(self, env_steps: int, steps_allowed: float | None, now: float) -> None:
        self.steps_allowed = None if steps_allowed is None else int(steps_allowed)
        self.env_steps = env_steps
        self.seen_at = now

    def behind(self, train_steps: int, training: bool, now: float) -> bool:
        """Must the training step `train_steps` wait for the learner?"""
        if not self.enabled or not training or self.steps_allowed is None:
            return False
        if now - self.seen_at > self.timeout_s:
            return False   # no learner (or it died): do not wait for it
        if self.env_steps <= self.steps_allowed:
            return False   # it owes no update: it waits for our steps
        return train_steps - self.free_steps > self.steps_allowed


def paced_share(allowed_total: int, steps_total: int, steps_robot: int) -> int:
    """The training steps one robot of a fleet may have taken: its own plus what the fleet may still
    take, so that the robots together never run ahead of the learner's update schedule."""
    return steps_robot + (allowed_total - steps_total)
