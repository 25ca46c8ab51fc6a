"""Benchmark of the simulated G1 (resfit_ros.sim): scripted-expert success and simulation speed.

    python bench/sim.py [--episodes 50] [--speed-steps 400] [--image-size 84]

Success: the expert runs `--episodes` seeded episodes (seeds 0..N-1) per task, without rendering;
an episode succeeds when the task's success flag is raised within max_steps. Speed: control steps
per second of expert + physics on g1_pick_lift, without the camera and with the head camera.
The last four lines are machine-readable:
    expert_success_g1_pick_lift=<x>
    expert_success_g1_handover=<y>
    sim_steps_per_s=<no camera>
    sim_steps_per_s_camera=<with camera>
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resfit_ros.sim import TASKS, make_env, make_expert  # noqa: E402


def expert_success(task: str, episodes: int, control_hz: float) -> tuple[float, float]:
    """(success rate, mean steps to success) over seeds 0..episodes-1."""
    env = make_env(task, render=False, control_hz=control_hz, seed=0)
    expert = make_expert(task, env)
    wins, steps_to_win = 0, []
    for seed in range(episodes):
        obs = env.reset(seed=seed)
        expert.reset()
        for step in range(env.max_steps):
            obs, success = env.step(expert.act(obs))
            if success:
                wins += 1
                steps_to_win.append(step + 1)
                break
    env.close()
    return wins / episodes, (sum(steps_to_win) / len(steps_to_win) if steps_to_win else float("nan"))


def steps_per_second(render: bool, steps: int, image_size: int, control_hz: float) -> float:
    """Expert + physics (+ head camera) control steps per second on g1_pick_lift, resets included."""
    env = make_env("g1_pick_lift", image_size=image_size, render=render, control_hz=control_hz, seed=0)
    expert = make_expert("g1_pick_lift", env)
    obs = env.reset(seed=0)
    expert.reset()
    obs, _ = env.step(expert.act(obs))  # first render creates the GL context: not timed
    start, done, seed = time.perf_counter(), 0, 0
    while done < steps:
        obs, _ = env.step(expert.act(obs))
        done += 1
        if done % env.task.max_steps == 0:
            seed += 1
            obs = env.reset(seed=seed)
            expert.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return done / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=50, help="seeded expert episodes per task (default 50)")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="tasks to run")
    parser.add_argument("--speed-steps", type=int, default=400, help="control steps per speed measurement")
    parser.add_argument("--image-size", type=int, default=84, help="camera image size for the speed run")
    parser.add_argument("--control-hz", type=float, default=20.0, help="control rate (default 20)")
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.speed_steps < 1:
        parser.error("--episodes and --speed-steps must be >= 1")

    results: dict[str, float] = {}
    for task in args.tasks:
        t0 = time.perf_counter()
        rate, mean_steps = expert_success(task, args.episodes, args.control_hz)
        print(f"{task}: expert success {rate:.2f} over {args.episodes} episodes, "
              f"mean steps to success {mean_steps:.0f}, {time.perf_counter() - t0:.1f} s", flush=True)
        results[task] = rate
    no_cam = steps_per_second(False, args.speed_steps, args.image_size, args.control_hz)
    cam = steps_per_second(True, args.speed_steps, args.image_size, args.control_hz)
    print(f"speed at {args.control_hz:g} Hz control: {no_cam:.0f} steps/s without camera, "
          f"{cam:.0f} steps/s with a {args.image_size} px head camera")
    for task in args.tasks:
        print(f"expert_success_{task}={results[task]:.2f}")
    print(f"sim_steps_per_s={no_cam:.0f}")
    print(f"sim_steps_per_s_camera={cam:.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
