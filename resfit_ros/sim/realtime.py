"""The simulated robot in real time, without ROS: physics paced by a wall clock, sensor streams
published some time after their acquisition. The sim_robot node (lockstep:=false) wires these to
timers, topics and a publishing thread.

    pacer = PhysicsPacer(timestep_s=0.002, max_catchup_s=0.1)
    env.advance(pacer.due(now_ns))            # before every command and sample (restart at a reset)
    delay = SensorDelay(latency_s=0.015, jitter_s=0.005, seed=1)
    queue.push(delay.due(acquired_ns), msg)   # a thread publishes queue.pop_due(now_ns)

A real robot's drivers stamp a sample when it is acquired and deliver it later (transfer,
debayering, a driver's own loop): latency + U(0, jitter), never before an earlier sample of the
same stream. Commands are applied when they arrive, as a ros2_control forward controller does;
physics is first brought up to that moment, so a command never acts on the past.
"""
from __future__ import annotations

import heapq
import itertools
from typing import Any

import numpy as np

NS_PER_S = 1_000_000_000


class PhysicsPacer:
    """How many physics steps bring the simulation up to a wall-clock moment.

    Physics time follows the wall clock from `restart(now_ns)` on, in whole steps of `timestep_s`.
    A machine that stalled for longer than `max_catchup_s` does not get the whole backlog at once
    (that would freeze the robot's topics for as long again): physics skips ahead, and the lost
    time is counted in `skipped_s`, as a real robot's missed controller cycles would be.
    """

    def __init__(self, timestep_s: float, max_catchup_s: float = 0.1):
        if not timestep_s > 0:
            raise ValueError(f"timestep_s must be > 0, got {timestep_s}")
        if not max_catchup_s >= timestep_s:
            raise ValueError(f"max_catchup_s must be >= timestep_s ({timestep_s}), got {max_catchup_s}")
        self.timestep_ns = int(round(timestep_s * NS_PER_S))
        self.max_steps = int(max_catchup_s * NS_PER_S // self.timestep_ns)
        self.origin_ns: int | None = None
        self.steps = 0                  # physics steps taken since restart (and skipped ones)
        self.skipped_steps = 0          # over the node's life

    def restart(self, now_ns: int) -> None:
        """Physics time 0 is `now_ns` (start, scene reset)."""
        self.origin_ns = int(now_ns)
        self.steps = 0

    def due(self, now_ns: int) -> int:
        """Physics steps to run now (0 if up to date); each call assumes the caller runs them. The
        first call starts the clock if `restart` was not called (start-up time is no stall)."""
        if self.origin_ns is None:
            self.restart(now_ns)
        behind = (int(now_ns) - self.origin_ns) // self.timestep_ns - self.steps
        if behind <= 0:
            return 0
        run = min(behind, self.max_steps)
        self.skipped_steps += behind - run
        self.steps += behind
        return int(run)

    @property
    def skipped_s(self) -> float:
        return self.skipped_steps * self.timestep_ns / NS_PER_S


class SensorDelay:
    """When a sample acquired at `acquired_ns` is delivered: latency + U(0, jitter) later, and never
    before the sample delivered before it (a driver delivers its stream in order)."""

    def __init__(self, latency_s: float = 0.0, jitter_s: float = 0.0, seed: int | None = 0):
        if not (0 <= latency_s < 10):
            raise ValueError(f"latency_s must be in [0, 10), got {latency_s}")
        if not (0 <= jitter_s < 10):
            raise ValueError(f"jitter_s must be in [0, 10), got {jitter_s}")
        self.latency_ns = int(round(latency_s * NS_PER_S))
        self.jitter_ns = int(round(jitter_s * NS_PER_S))
        self.rng = np.random.default_rng(seed)
        self.last_due_ns: int | None = None

    @property
    def immediate(self) -> bool:
        """No delay at all: the caller may publish at acquisition."""
        return self.latency_ns == 0 and self.jitter_ns == 0

    def due(self, acquired_ns: int) -> int:
        delay = self.latency_ns + (int(self.rng.integers(0, self.jitter_ns + 1)) if self.jitter_ns else 0)
        due = int(acquired_ns) + delay
        if self.last_due_ns is not None:
            due = max(due, self.last_due_ns)
        self.last_due_ns = due
        return due


class DelayQueue:
    """Items to hand over at a due time, earliest first; equal due times keep their push order.
    Not thread-safe: the node guards it with its condition variable."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, Any]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due_ns: int, item: Any) -> None:
        heapq.heappush(self._heap, (int(due_ns), next(self._order), item))

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now_ns: int) -> list[Any]:
        """Every item due at or before `now_ns`, in due order."""
        out = []
        while self._heap and self._heap[0][0] <= now_ns:
            out.append(heapq.heappop(self._heap)[2])
        return out

    def clear(self) -> None:
        self._heap.clear()
