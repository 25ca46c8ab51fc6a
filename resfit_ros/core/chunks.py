"""ChunkScheduler: keeps the base policy's action chunks flowing without stalling the control loop.

The base chunk server answers in a few milliseconds, but a service round trip inside the control
tick would still put inference on the control path. So the residual node asks for the NEXT chunk
`prefetch_steps` ticks before the current one runs out, using the observation of that tick, and
keeps executing the current chunk meanwhile. A chunk computed from the observation of tick n has
row 0 for tick n; when it arrives at tick m, rows m-n.. are used and replace what is left of the
old chunk (fresher predictions win). If a chunk arrives too late to have rows left, it is dropped
and a new one asked for. If the queue runs dry (server slow or down), `next_action` returns None
and the node holds: it never invents base actions.

In process (evaluation, the in-process trainer) the same scheduler runs with a `predict` that
answers at once (`next_action_now`): prefetch_steps p then means "execute k - p rows of each chunk,
then a fresh one" (receding horizon; p = 0 executes whole chunks), exactly what the node does
when the server answers within the tick.
"""
from __future__ import annotations

import numpy as np


class ChunkScheduler:
    def __init__(self, chunk_length: int, prefetch_steps: int = 2):
        if chunk_length < 1:
            raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")
        if not 0 <= prefetch_steps < chunk_length:
            raise ValueError(f"prefetch_steps must be in [0, {chunk_length - 1}], got {prefetch_steps}")
        self.chunk_length = chunk_length
        self.prefetch_steps = prefetch_steps
        self.reset()

    def reset(self) -> None:
        """Episode start: forget the queue and any request in flight (its answer will be ignored)."""
        self.tick = 0                          # ticks executed in this episode
        self.queue: np.ndarray | None = None   # (remaining, dof)
        self.request_tick: int | None = None   # tick whose observation the in-flight request used
        self.generation = getattr(self, "generation", 0) + 1
        self.underruns = 0
        self.late_chunks = 0

    @property
    def remaining(self) -> int:
        return 0 if self.queue is None else len(self.queue)

    def wants_request(self) -> bool:
        """True when a request should be sent with this tick's observation."""
        return self.request_tick is None and self.remaining <= self.prefetch_steps

    def request_sent(self) -> int:
        """Record that a request was sent for the current tick; returns the generation to echo back."""
        self.request_tick = self.tick
        return self.generation

    def request_failed(self) -> None:
        self.request_tick = None

    def receive(self, chunk: np.ndarray, generation: int) -> bool:
        """A chunk for the request in flight; False if it belongs to an older episode or came too late."""
        if generation != self.generation or self.request_tick is None:
            return False
        skip = self.tick - self.request_tick
        self.request_tick = None
        chunk = np.asarray(chunk, dtype=np.float64)
        if skip >= len(chunk):
            self.late_chunks += 1
            return False
        self.queue = chunk[skip:]
        return True

    def next_action(self) -> np.ndarray | None:
        """The base action of this tick (and advance), or None when no chunk is available."""
        if self.remaining == 0:
            self.underruns += 1
            return None
        action, self.queue = self.queue[0], self.queue[1:]
        self.tick += 1
        return action

    def next_action_now(self, predict) -> np.ndarray:
        """In process: `predict()` -> (k, dof) for this tick's observation when a chunk is due, then
        this tick's base action."""
        if self.wants_request():
            generation = self.request_sent()
            chunk = np.asarray(predict(), dtype=np.float64)
            if chunk.ndim != 2 or chunk.shape[0] != self.chunk_length:
                raise ValueError(f"expected a ({self.chunk_length}, dof) chunk, got shape {chunk.shape}")
            self.receive(chunk, generation)
        return self.next_action()
