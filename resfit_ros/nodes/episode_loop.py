"""The automatic operator's loop, shared by the judge (simulator's success signal) and the
success detector (a learned one): start an episode, label it when the labeller has a verdict,
reset, repeat until `max_episodes` labelled episodes.

It uses the operator's public services only, so a run labelled this way exercises exactly the calls
a person makes. One service call at a time, asynchronous (nothing blocks a callback); an unanswered
call is given up after `call_timeout_s` and retried (the server may have restarted); a refused one
is retried after a pause; a running episode whose step count does not move for `stall_timeout_s` is
aborted. Episodes labelled by anyone (a person answering the detector's question too) count.
With `start_episodes: false` (a real robot: a person resets the scene and starts each episode) it
only labels.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from std_srvs.srv import Trigger

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus
from resfit_ros.nodes.common import LATCHED, Rejections, status_problem, steady_timer
from resfit_ros.srv import LabelEpisode, StartEpisode


@dataclass
class EpisodeLoopConfig:
    max_episodes: int = 0          # stop (exit 0) after this many labelled episodes; 0 = never
    max_steps: int = 200           # label a failure when the episode reaches this many steps
    explore: bool = True           # start training episodes (exploration on) or evaluation ones
    eval_every: int = 0            # every N-th episode is an evaluation episode (0 = never)
    stall_timeout_s: float = 30.0  # abort a running episode whose step count does not move for this long
    call_timeout_s: float = 5.0    # a service call unanswered this long is given up and retried (server restarted)
    start_episodes: bool = True    # start and reset episodes itself (false: a person does; this node only labels)

    def __post_init__(self):
        require(self.max_episodes >= 0, f"max_episodes must be >= 0, got {self.max_episodes}")
        require(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        require(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        require(self.stall_timeout_s > 0, f"stall_timeout_s must be > 0, got {self.stall_timeout_s}")
        require(self.call_timeout_s > 0, f"call_timeout_s must be > 0, got {self.call_timeout_s}")


# the labeller: called every tick of a running episode with its status; (success, note) labels it
Verdict = Callable[[EpisodeStatus], "tuple[bool, str] | None"]


class EpisodeLoop:
    def __init__(self, node, cfg: EpisodeLoopConfig, who: str, verdict: Verdict,
                 on_episode: Callable[[int], None] | None = None, diagnostics: Callable[[], dict] | None = None):
        """`who` names the labeller in the service notes; `on_episode(id)` is called when a new
        episode starts running (the labeller forgets the last one)."""
        self.node, self.cfg, self.who = node, cfg, who
        self.verdict, self.on_episode = verdict, on_episode
        self.status: EpisodeStatus | None = None
        self.episode = -1                # the running (or last) episode
        self.pending = None              # the one outstanding service future
        self.retry_after = 0.0
        self.labelled = 0                # episodes that ended with a label (by any labeller)
        self.counted: set[int] = set()
        self.finished = False
        self.start_client = node.create_client(StartEpisode, names.START_EPISODE)
        self.label_client = node.create_client(LabelEpisode, names.LABEL_EPISODE)
        self.reset_client = node.create_client(Trigger, names.RESET)
        self.abort_client = node.create_client(Trigger, names.ABORT_EPISODE)
        self.progress = (-1, -1, time.monotonic())   # (episode, steps, wall time it last changed)
        node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        steady_timer(node, 0.02, self.tick)
        self.rejections = Rejections(node)   # rejected/status_invalid (+ the labeller's) on /diagnostics
        self.rejections.start_diagnostics(1.0, extra=lambda: {"labelled": self.labelled, **(diagnostics or dict)()})

    def running(self) -> bool:
        s = self.status
        return s is not None and s.state == EpisodeStatus.RUNNING and s.episode_id == self.episode

    def on_status(self, msg: EpisodeStatus) -> None:
        problem = status_problem(msg)
        if problem is not None:
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        self.status = msg
        if msg.state == EpisodeStatus.RUNNING and msg.episode_id != self.episode:
            self.episode = msg.episode_id
            if self.on_episode is not None:
                self.on_episode(msg.episode_id)
        elif (msg.state != EpisodeStatus.RUNNING and msg.episode_id == self.episode
              and msg.label != EpisodeStatus.LABEL_NONE and self.episode not in self.counted):
            self.counted.add(self.episode)
            self.labelled += 1

    def _call(self, client, request, what: str) -> None:
        if not client.service_is_ready():
            return
        self.pending = client.call_async(request)
        self.pending.what = what
        self.pending.client = client
        self.pending.deadline = time.monotonic() + self.cfg.call_timeout_s

    def _answer(self) -> None:
        if not self.pending.done():
            if time.monotonic() > self.pending.deadline:
                # the server died with our request (a restarted one never answers it): retry
                self.node.get_logger().warning(f"{self.pending.what}: no answer in {self.cfg.call_timeout_s} s; retrying")
                self.pending.client.remove_pending_request(self.pending)
                self.pending = None
            return
        result, what = self.pending.result(), self.pending.what
        self.pending = None
        if not getattr(result, "success", getattr(result, "accepted", False)):
            self.node.get_logger().warning(f"{what} refused: {result.message}", throttle_duration_sec=2.0)
            # do not hammer a node that is not ready; a label put off (recorder catching up) soon
            self.retry_after = time.monotonic() + (0.1 if what == "label" else 1.0)
        else:
            self.node.get_logger().info(f"{what}: {result.message}")

    def tick(self) -> None:
        if self.pending is not None:
            return self._answer()
        s = self.status
        if s is None or time.monotonic() < self.retry_after:
            return
        if s.state == EpisodeStatus.RUNNING:
            if (s.episode_id, s.steps) != self.progress[:2]:
                self.progress = (s.episode_id, s.steps, time.monotonic())
            elif time.monotonic() - self.progress[2] > self.cfg.stall_timeout_s:
                self.node.get_logger().error(
                    f"episode {s.episode_id} made no step for {self.cfg.stall_timeout_s} s: aborting it")
                self.progress = (s.episode_id, s.steps, time.monotonic())
                return self._call(self.abort_client, Trigger.Request(), "abort")
            verdict = self.verdict(s)
            if verdict is not None:
                success, note = verdict
                self._call(self.label_client, LabelEpisode.Request(success=success, note=f"{self.who}: {note}"), "label")
        elif s.state == EpisodeStatus.IDLE and self.cfg.start_episodes:
            if self.cfg.max_episodes and self.labelled >= self.cfg.max_episodes:
                self.node.get_logger().info(f"{self.labelled} episodes labelled; done")
                self.finished = True
            elif s.ready:
                n = self.labelled + 1
                explore = self.cfg.explore and not (self.cfg.eval_every and n % self.cfg.eval_every == 0)
                self._call(self.start_client, StartEpisode.Request(explore=explore, note=self.who), "start")
            else:
                self._call(self.reset_client, Trigger.Request(), "reset")
