"""ChunkQueue: open-loop execution of action chunks, one action per control step.

The owner must call `reset()` at every episode start: a chunk left over from the previous episode
would otherwise be executed at the start of the next one (the reference ResFiT code forgot this).
"""
from __future__ import annotations

from collections import deque
from typing import Callable

import numpy as np


class ChunkQueue:
    """Holds the remaining actions of the current chunk.

        queue = ChunkQueue(chunk_length=20)
        queue.reset()                                  # at every episode start
        if queue.needs_chunk:
            queue.push(policy.predict_chunk(obs))      # (k, dof)
        action = queue.pop()                           # (dof,)

    `execute_steps` (<= chunk_length) executes only the first n actions of each chunk before asking
    for a new one (receding horizon); the default executes the whole chunk.
    """

    def __init__(self, chunk_length: int, execute_steps: int | None = None) -> None:
        if chunk_length < 1:
            raise ValueError(f"chunk_length must be >= 1, got {chunk_length}")
        execute_steps = chunk_length if execute_steps is None else execute_steps
        if not 1 <= execute_steps <= chunk_length:
            raise ValueError(f"execute_steps must be in [1, {chunk_length}], got {execute_steps}")
        self.chunk_length = chunk_length
        self.execute_steps = execute_steps
        self._queue: deque[np.ndarray] = deque()
        self.chunks_pushed = 0

    def reset(self) -> None:
        """Drop any remaining actions (call at every episode start)."""
        self._queue.clear()

    @property
    def needs_chunk(self) -> bool:
        return not self._queue

    def __len__(self) -> int:
        return len(self._queue)

    def push(self, chunk: np.ndarray) -> None:
        """Queue the first `execute_steps` rows of a (k, dof) chunk; only when the queue is empty."""
        chunk = np.asarray(chunk)
        if chunk.ndim != 2 or chunk.shape[0] < self.execute_steps:
            raise ValueError(f"expected a ({self.chunk_length}, dof) chunk, got shape {chunk.shape}")
        if self._queue:
            raise RuntimeError(f"push while {len(self._queue)} actions of the previous chunk remain")
        self._queue.extend(np.array(row) for row in chunk[: self.execute_steps])
        self.chunks_pushed += 1

    def pop(self) -> np.ndarray:
        """The next action (dof,); raises when a new chunk is needed."""
        if not self._queue:
            raise RuntimeError("chunk queue is empty: push a new chunk first")
        return self._queue.popleft()

    def next_action(self, predict: Callable[[], np.ndarray]) -> np.ndarray:
        """pop(), first calling `predict()` -> (k, dof) when the queue is empty."""
        if not self._queue:
            self.push(predict())
        return self.pop()
