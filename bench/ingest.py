"""Bag ingest throughput: synthetic online episode bags -> BagIngest -> ReplayBuffer, on ONE core.

Writes `--episodes` synthetic online episodes of `--steps` steps with resfit_ros.bags.EpisodeWriter
(29 joints, 9 task-state values, base action + residual recorded, as the residual node does), once
state-only and once with one 84x84 camera, then times `BagIngest.poll(dir, demo=False)` into a
fresh ReplayBuffer (the whole path: MCAP scan, CDR decode, episode arrays, n-step targets, buffer
copy). CPU time (time.process_time) and wall time are both reported; torch and the reader run on
one thread.

    python bench/ingest.py [--episodes 20] [--steps 100] [--repeat 3] [--profile]
    resfit-ros bench ingest --episodes 20

The last line is `ingest_transitions_per_s=<image case, CPU time>`. Goal: >= 20,000/s.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

DOF, EXTRA, IMAGE = 29, 9, 84


def write_episodes(root: Path, episodes: int, steps: int, cameras: tuple[str, ...], seed: int = 0) -> None:
    from resfit_ros.bags import EpisodeWriter, StepData
    from resfit_ros.core.observation import ObservationData

    rng = np.random.default_rng(seed)
    joints = [f"joint_{i:02d}_joint" for i in range(DOF)]
    extra_names = [f"task_{i}" for i in range(EXTRA)]
    for e in range(episodes):
        w = EpisodeWriter(root, e + 1, metadata={"task": "bench"})
        for t in range(steps + 1):
            stamp = 1_000_000_000 + 50_000_000 * t
            obs = ObservationData(
                stamp_ns=stamp, sequence=t, joint_names=joints, position=rng.normal(size=DOF),
                velocity=rng.normal(size=DOF), extra=rng.normal(size=EXTRA), extra_names=extra_names,
                images={c: rng.integers(0, 256, (IMAGE, IMAGE, 3), dtype=np.uint8) for c in cameras},
                source_stamps_ns=[stamp - 1000])
            w.write_observation(obs)
            if t < steps:
                base = rng.normal(size=DOF)
                res = rng.normal(scale=0.05, size=DOF)
                w.write_step(StepData(step=t, observation_sequence=t, command=base + res, base_action=base,
                                      residual=res, exploration=e % 4 != 3, weights_version=e), stamp)
        w.finish(success=bool(e % 2))


def ingest_once(root: Path, cameras: list[str], capacity: int):
    from resfit_ros.learning.from_bags import BagIngest
    from resfit_ros.learning.replay import ReplayBuffer, ReplayConfig

    buffer = ReplayBuffer(ReplayConfig(online_capacity=capacity), DOF * 2 + EXTRA, DOF, len(cameras), IMAGE)
    ingest = BagIngest(buffer, cameras)
    c0, w0 = time.process_time(), time.perf_counter()
    ingest.poll(root, demo=False)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    if ingest.stats["online"].skipped:
        raise RuntimeError(f"episodes skipped: {ingest.stats['online'].skipped}")
    return buffer.num_online_transitions, cpu, wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench/ingest.py", description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=20, help="episodes per case (default 20)")
    parser.add_argument("--steps", type=int, default=100, help="steps per episode (default 100)")
    parser.add_argument("--repeat", type=int, default=3, help="timed ingests per case; the best counts (default 3)")
    parser.add_argument("--profile", action="store_true", help="cProfile one image ingest (top 20 by cumtime)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.steps < 1 or args.repeat < 1:
        print("bench/ingest.py: error: --episodes, --steps and --repeat must be >= 1", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"ingest bench: {args.episodes} episodes x {args.steps} steps, 1 thread, "
          f"load average {os.getloadavg()[0]:.2f}")
    rate_images = 0.0
    with tempfile.TemporaryDirectory(prefix="resfit_ingest_") as tmp:
        for name, cameras in (("state", ()), ("1cam84", ("head",))):
            root = Path(tmp) / name
            t0 = time.perf_counter()
            write_episodes(root, args.episodes, args.steps, cameras)
            size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
            write_s = time.perf_counter() - t0
            best = None
            for _ in range(args.repeat):
                n, cpu, wall = ingest_once(root, list(cameras), args.episodes * (args.steps + 1) + 1)
                if best is None or cpu < best[1]:
                    best = (n, cpu, wall)
            n, cpu, wall = best
            rate_cpu, rate_wall = n / cpu, n / wall
            print(f"{name:7s} {n} transitions ({size / 2**20:.1f} MiB, written in {write_s:.1f} s): "
                  f"cpu {cpu * 1e3:.0f} ms = {rate_cpu:,.0f}/s, wall {wall * 1e3:.0f} ms = {rate_wall:,.0f}/s")
            if cameras:
                rate_images = rate_cpu
                if args.profile:
                    import cProfile
                    import pstats

                    prof = cProfile.Profile()
                    prof.enable()
                    ingest_once(root, list(cameras), args.episodes * (args.steps + 1) + 1)
                    prof.disable()
                    pstats.Stats(prof).sort_stats("cumulative").print_stats(20)
    print(f"ingest_transitions_per_s={rate_images:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
