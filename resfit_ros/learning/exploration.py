"""Exploration noise held over several control steps.

Why: the robot's joints are position-controlled. Noise redrawn every step (ResFiT's Gaussian) is
averaged away by the controllers, so it never tries what this project's base most needs: a
SUSTAINED offset (close the fingers a little harder for the whole grasp, lift the arm a little
higher). Measured on the main job's base (40 evaluation scenes, 120 steps): the right hand touches
the box in all 40; 19 fail with the box lifted < 2 cm (it slips), 11 with it lifted 2-10 cm (short
of the 10 cm success height). Holding each draw for `hold_steps` steps (a second at 20 Hz) explores
exactly such offsets; the critic still sees the executed action of every step.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


class HeldNoise:
    """`next(draw)` returns draw()'s value and repeats it for `hold_steps` calls in all; `reset()`
    (at every episode start) makes the next call draw again. hold_steps=1: fresh noise every step."""

    def __init__(self, hold_steps: int = 1):
        if hold_steps < 1:
            raise ValueError(f"hold_steps must be >= 1, got {hold_steps}")
        self.hold_steps = int(hold_steps)
        self._value: np.ndarray | None = None
        self._left = 0

    def reset(self) -> None:
        self._left = 0

    def next(self, draw: Callable[[], np.ndarray]) -> np.ndarray:
        if self._left == 0:
            self._value = np.asarray(draw(), dtype=np.float64)
            self._left = self.hold_steps
        self._left -= 1
        return self._value
