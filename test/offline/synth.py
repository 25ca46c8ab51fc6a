"""Synthetic online episodes shaped like the simulator's (29 joints + 9 task values = 67-D state),
with recorded base actions and residuals, so BagIngest needs no base policy for them."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from resfit_ros import names
from resfit_ros.bags import EpisodeWriter, StepData
from resfit_ros.bags.types import bag_topic
from resfit_ros.core.observation import ObservationData

DOF, EXTRA = 29, 9
JOINTS = [f"joint_{i:02d}_joint" for i in range(DOF)]
EXTRA_NAMES = [f"task_{i}" for i in range(EXTRA)]


def write_online(root: Path, episode_id: int, steps: int, *, seed: int, success: bool = True,
                 cameras=(), size: int = 16, explore: bool = True, aborted: bool = False, safety_flags=None):
    """Write one episode; returns (path, observations, base actions (T, A), commands (T, A)).
    safety_flags: (T,) the step records' flags (default 0)."""
    rng = np.random.default_rng(seed)
    w = EpisodeWriter(root, episode_id, metadata={"task": "synthetic_online"})
    observations, bases, commands = [], [], []
    for t in range(steps + 1):
        stamp = 1_000_000_000 + 50_000_000 * t
        obs = ObservationData(stamp_ns=stamp, sequence=t, joint_names=list(JOINTS),
                              position=rng.normal(size=DOF), velocity=rng.normal(size=DOF),
                              extra=rng.normal(size=EXTRA), extra_names=list(EXTRA_NAMES),
                              images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for c in cameras},
                              source_stamps_ns=[stamp - 1000])
        observations.append(obs)
        w.write_observation(obs)
        if t < steps:
            base = rng.normal(scale=0.5, size=DOF)
            res = rng.normal(scale=0.02, size=DOF)
            bases.append(base)
            commands.append(base + res)
            w.write_step(StepData(step=t, observation_sequence=t, command=base + res, base_action=base,
                                  residual=res, exploration=explore, weights_version=episode_id,
                                  safety_flags=int(safety_flags[t]) if safety_flags is not None else 0), stamp)
    path = w.finish(aborted=True) if aborted else w.finish(success=success)
    return path, observations, np.array(bases), np.array(commands)


def add_bad_episodes(root: Path, good: Path) -> dict[str, tuple[Path, str]]:
    """Next to `good`: a truncated mcap, a missing metadata.yaml, an unknown message type, an empty
    episode. Returns kind -> (path, expected fragment of the reason)."""
    bad = {}
    trunc = root / "episode_000091_truncated"
    shutil.copytree(good, trunc)
    mcap = trunc / f"{good.name}.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    bad["truncated"] = (trunc, "truncated")
    nometa = root / "episode_000092_nometa"
    shutil.copytree(good, nometa)
    (nometa / "metadata.yaml").unlink()
    bad["nometa"] = (nometa, "missing metadata.yaml")
    unknown = root / "episode_000093_unknown"
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(unknown, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(bag_topic(names.OBSERVATION), "other_msgs/msg/Observation", msgdef="uint8 x",
                                rihs01="RIHS01_" + "0" * 64)
        w.write(conn, 1, b"\x00\x01\x00\x00\x07")
    bad["unknown"] = (unknown, "unknown message type")
    w = EpisodeWriter(root, 94)
    bad["empty"] = (w.finish(success=True), "empty episode")
    return bad
