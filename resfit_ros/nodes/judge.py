"""judge: the simulated operator. Starts episodes, labels them from the simulator's success signal
(or as failures at the step limit), resets the scene, and stops after `max_episodes`.

It only uses the operator's public services, so a simulated run exercises exactly the calls a
person makes on the real robot. All service calls are asynchronous: nothing blocks a callback.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from std_msgs.msg import Bool
from std_srvs.srv import Trigger

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import EpisodeStatus
from resfit_ros.nodes.common import (LATCHED, STREAM, Rejections, make_node, node_config, run, status_problem,
                                     steady_timer)
from resfit_ros.srv import LabelEpisode, StartEpisode


@dataclass
class JudgeConfig:
    max_episodes: int = 0          # stop (exit 0) after this many labelled episodes; 0 = never
    max_steps: int = 200           # label a failure when the episode reaches this many steps
    explore: bool = True           # start training episodes (exploration on) or evaluation ones
    eval_every: int = 0            # every N-th episode is an evaluation episode (0 = never)
    success_topic: str = names.SIM_SUCCESS     # std_msgs/Bool from the simulator
    stall_timeout_s: float = 30.0  # abort a running episode whose step count does not move for this long
    call_timeout_s: float = 5.0    # a service call unanswered this long is given up and retried (server restarted)

    def __post_init__(self):
        require(self.max_episodes >= 0, f"max_episodes must be >= 0, got {self.max_episodes}")
        require(self.max_steps > 0, f"max_steps must be > 0, got {self.max_steps}")
        require(self.eval_every >= 0, f"eval_every must be >= 0, got {self.eval_every}")
        require(self.call_timeout_s > 0, f"call_timeout_s must be > 0, got {self.call_timeout_s}")


class Judge:
    def __init__(self):
        self.node = make_node("judge")
        self.cfg = node_config(self.node, JudgeConfig)
        self.status: EpisodeStatus | None = None
        self.success_seen = False
        self.pending = None          # the one outstanding service future
        self.retry_after = 0.0
        self.labelled = 0
        self.finished = False
        self.exit_code = 0
        self.start_client = self.node.create_client(StartEpisode, names.START_EPISODE)
        self.label_client = self.node.create_client(LabelEpisode, names.LABEL_EPISODE)
        self.reset_client = self.node.create_client(Trigger, names.RESET)
        self.abort_client = self.node.create_client(Trigger, names.ABORT_EPISODE)
        self.progress = (-1, -1, time.monotonic())   # (episode, steps, wall time it last changed)
        self.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, self.on_status, LATCHED)
        self.node.create_subscription(Bool, self.cfg.success_topic, self.on_success, STREAM)
        steady_timer(self.node, 0.02, self.tick)
        self.rejections = Rejections(self.node)   # rejected/status_invalid on /diagnostics
        self.rejections.start_diagnostics(1.0, extra=lambda: {"labelled": self.labelled})

    def on_status(self, msg: EpisodeStatus) -> None:
        problem = status_problem(msg)
        if problem is not None:
            return self.rejections.reject("status_invalid", f"episode status: {problem}")
        self.status = msg

    def on_success(self, msg: Bool) -> None:
        if self.status is not None and self.status.state == EpisodeStatus.RUNNING and msg.data:
            self.success_seen = True

    def _call(self, client, request, what: str) -> None:
        if not client.service_is_ready():
            return
        self.pending = client.call_async(request)
        self.pending.what = what
        self.pending.client = client
        self.pending.deadline = time.monotonic() + self.cfg.call_timeout_s

    def tick(self) -> None:
        if self.pending is not None:
            if not self.pending.done():
                if time.monotonic() > self.pending.deadline:
                    # the server died with our request (a restarted one never answers it): retry
                    self.node.get_logger().warning(f"{self.pending.what}: no answer in {self.cfg.call_timeout_s} s; retrying")
                    self.pending.client.remove_pending_request(self.pending)
                    self.pending = None
                return
            result, what = self.pending.result(), self.pending.what
            self.pending = None
            ok = getattr(result, "success", getattr(result, "accepted", False))
            if not ok:
                self.node.get_logger().warning(f"{what} refused: {result.message}", throttle_duration_sec=2.0)
                # do not hammer a node that is not ready; a label put off (recorder catching up) soon
                self.retry_after = time.monotonic() + (0.1 if what == "label" else 1.0)
            else:
                self.node.get_logger().info(f"{what}: {result.message}")
                if what == "label":
                    self.labelled += 1
            return
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
                self._call(self.abort_client, Trigger.Request(), "abort")
                return
            if self.success_seen or s.steps >= self.cfg.max_steps:
                self._call(self.label_client, LabelEpisode.Request(
                    success=self.success_seen, note="judge: simulator success signal"
                    if self.success_seen else f"judge: no success within {self.cfg.max_steps} steps"), "label")
        elif s.state == EpisodeStatus.IDLE:
            if self.cfg.max_episodes and self.labelled >= self.cfg.max_episodes:
                self.node.get_logger().info(f"{self.labelled} episodes judged; done")
                self.finished = True
                return
            if s.ready:
                n = self.labelled + 1
                explore = self.cfg.explore and not (self.cfg.eval_every and n % self.cfg.eval_every == 0)
                self.success_seen = False
                self._call(self.start_client, StartEpisode.Request(explore=explore, note="judge"), "start")
            else:
                self._call(self.reset_client, Trigger.Request(), "reset")


def main(argv=None) -> int:
    return run(Judge, argv, events=True)
