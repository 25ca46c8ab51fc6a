"""Synthetic episodes for the bag, policy and job tests (no simulator needed)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from resfit_ros.bags import EpisodeWriter, StepData
from resfit_ros.core.observation import ObservationData

JOINTS = [f"joint_{i:02d}_joint" for i in range(29)]
EXTRA_NAMES = ["object_x", "object_y", "object_z"]


def make_observation(i: int, rng: np.random.Generator, cameras=("head",), size: int = 16,
                     dof: int = 29) -> ObservationData:
    return ObservationData(
        stamp_ns=1_000_000_000 + 50_000_000 * i, sequence=i, joint_names=JOINTS[:dof],
        position=rng.normal(size=dof), velocity=rng.normal(size=dof),
        images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cameras},
        extra=rng.normal(size=len(EXTRA_NAMES)), extra_names=list(EXTRA_NAMES),
        source_stamps_ns=[1_000_000_000 + 50_000_000 * i - 1000])


def write_episode(root: Path, episode_id: int, steps: int = 10, *, seed: int = 0, success: bool | None = True,
                  cameras=("head",), size: int = 16, residual: bool = True, finish: bool = True,
                  metadata: dict | None = None):
    """Write a synthetic episode; returns (path, observations, step datas)."""
    rng = np.random.default_rng(seed)
    observations, step_datas = [], []
    w = EpisodeWriter(root, episode_id, metadata=metadata or {"task": "synthetic"})
    for t in range(steps + 1):
        obs = make_observation(t, rng, cameras, size)
        observations.append(obs)
        w.write_observation(obs)
        if t < steps:
            base = rng.normal(size=29)
            res = rng.normal(scale=0.1, size=29) if residual else np.zeros(0)
            sd = StepData(step=t, observation_sequence=obs.sequence,
                          command=base + (res if residual else 0.0),
                          base_action=base if residual else np.zeros(0), residual=res,
                          exploration=bool(t % 2), weights_version=t // 3, safety_flags=t % 4,
                          latency=0.001 * t)
            step_datas.append(sd)
            w.write_step(sd, obs.stamp_ns)
    if finish:
        path = w.finish(success=success, aborted=success is None)
    else:
        path = w.path
    return path, observations, step_datas, w


def write_linear_demo(root: Path, episode_id: int, steps: int = 30, seed: int = 0, size: int = 84,
                      cameras=("head",)) -> Path:
    """A learnable demo: the command is a fixed linear function of the state (+ the image mean)."""
    rng = np.random.default_rng(seed)
    w = EpisodeWriter(root, episode_id, metadata={"task": "synthetic"})
    q = rng.normal(scale=0.3, size=29)
    for t in range(steps + 1):
        bright = int(rng.integers(0, 256))
        obs = ObservationData(
            stamp_ns=50_000_000 * t, sequence=t, joint_names=list(JOINTS), position=q.copy(),
            velocity=np.zeros(29),
            images={c: np.full((size, size, 3), bright, dtype=np.uint8) for c in cameras},
            extra=np.array([t / steps]), extra_names=["phase"])
        w.write_observation(obs)
        if t < steps:
            cmd = q + 0.1
            w.write_step(StepData(step=t, observation_sequence=t, command=cmd), obs.stamp_ns)
            q = cmd
    return w.finish(success=True)
