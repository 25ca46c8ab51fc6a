"""The ROS-free observation record every component agrees on.

The synchronizer builds one per control step; the recorder writes it to the episode bag as
resfit_ros/Observation; the replay, the BC policy and the residual actor read it back.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np


@dataclass
class ObservationData:
    stamp_ns: int                       # control-step time (joint-state stamp), nanoseconds
    sequence: int                       # synchronizer counter; gaps = dropped sets
    joint_names: list[str]              # robot description order
    position: np.ndarray                # (dof,) float64, rad
    velocity: np.ndarray                # (dof,) float64, rad/s
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8 RGB
    extra: np.ndarray = field(default_factory=lambda: np.zeros(0))  # (E,) float64 task state
    extra_names: list[str] = field(default_factory=list)
    source_stamps_ns: list[int] = field(default_factory=list)  # stamps of the inputs used

    @property
    def camera_names(self) -> list[str]:
        return list(self.images)

    def state_vector(self) -> np.ndarray:
        """(2*dof + E,) float32: [position, velocity, extra], the low-dimensional policy input."""
        return np.concatenate([self.position, self.velocity, self.extra]).astype(np.float32)

    def image_stack(self, camera_names: list[str] | None = None) -> np.ndarray:
        """(n_cameras, 3, H, W) uint8 in `camera_names` order (all cameras by default)."""
        names = self.camera_names if camera_names is None else camera_names
        if not names:
            return np.zeros((0, 3, 0, 0), dtype=np.uint8)
        missing = [n for n in names if n not in self.images]
        if missing:
            raise KeyError(f"observation has no image for camera(s) {missing}; has {self.camera_names}")
        return np.stack([np.ascontiguousarray(self.images[n].transpose(2, 0, 1)) for n in names])


def without_task_state(obs: ObservationData) -> ObservationData:
    """`obs` as a robot observes it: joint states and images, without the simulator's privileged
    task state (`extra`: object pose, contacts)."""
    return dataclasses.replace(obs, extra=np.zeros(0), extra_names=[])
