"""Why a policy fails: every evaluation episode of the base and of base + residual, by what happened.

Runs the base alone and the base with a residual checkpoint on the same evaluation scenes (the main
job's: seed 1000) through the residual node's control step (`resfit-ros eval`'s), for --horizon
steps (default the task's own limit), and sorts each episode by the object's path:

  success           the task's success (by the main job's --max-steps, and later, up to --horizon)
  never touched     no finger of either hand touched the object
  touched, not lifted   touched, but its centre never rose 1 cm
  lifted, dropped   it rose >= 1 cm and was back below 1 cm at the end
  lifted, short     still >= 1 cm up at the end, never the task's height (or the wrong hand held it)

The episodes past --max-steps show whether a failure is a slow success (time) or a wrong one; the
success step's median / 90th percentile shows how close to the limit the successes are.

    python bench/failure_modes.py --residual outputs/main_job/checkpoints [--episodes 100]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

BASE = Path("outputs/main_job_data_cameras/base_d2_s60.safetensors")
LIFTED_M = 0.01     # the object's centre this far above its resting height counts as lifted

CATEGORIES = ("success", "success after the limit", "never touched", "touched, not lifted", "lifted, dropped",
              "lifted, short")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resfit-ros bench failure-modes", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="g1_pick_lift")
    p.add_argument("--base", default=str(BASE), help="the frozen base (the main job's camera base by default)")
    p.add_argument("--residual", required=True, help="a learner checkpoint directory")
    p.add_argument("--residual-bound", type=float, default=0.2, help="the residual node's bound, rad")
    p.add_argument("--episodes", type=int, default=100, help="evaluation scenes, the main job's first N")
    p.add_argument("--max-steps", type=int, default=120, help="the main job's episode limit")
    p.add_argument("--horizon", type=int, default=None, help="steps run per episode (default: the task's limit)")
    p.add_argument("--state", action="store_true", help="the policies observe the object pose (main-job --state)")
    return p


def classify(trace, spec, max_steps: int) -> tuple[str, int]:
    """(category, success step or -1) of one recorded episode."""
    from resfit_ros.sim.env import EXTRA_NAMES

    z, left, right = (EXTRA_NAMES.index(n) for n in ("object_z", "left_hand_contact", "right_hand_contact"))
    extra = np.stack([o.extra for o in trace.observations])       # (steps + 1, E), the simulator's task state
    lift = extra[:, z] - spec.rest_height
    touched = bool(np.any(extra[:, left] > 0.5) or np.any(extra[:, right] > 0.5))
    if trace.success:
        return ("success" if trace.steps <= max_steps else "success after the limit"), trace.steps
    if not touched:
        return "never touched", -1
    if lift.max() < LIFTED_M:
        return "touched, not lifted", -1
    return ("lifted, dropped" if lift[-1] < LIFTED_M else "lifted, short"), -1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from resfit_ros.jobs.evaluate import load_residual, policy_in_sim
    from resfit_ros.jobs.sim_episodes import PURPOSE_EVAL, episode_seed, run_episode
    from resfit_ros.policy import load_base_policy
    from resfit_ros.sim.tasks import TASKS

    torch.set_num_threads(1)
    spec = TASKS[args.task]
    horizon = args.horizon or spec.max_steps
    if horizon < args.max_steps:
        sys.exit(f"--horizon {horizon} is shorter than --max-steps {args.max_steps}")
    base = load_base_policy(args.base)
    results = {}
    for name, residual in (("base", None), ("base + residual", load_residual(args.residual, base))):
        env, act, on_reset = policy_in_sim(args.task, base, residual, residual_bound=args.residual_bound,
                                           task_state=args.state)
        rows = []
        for i in range(args.episodes):
            trace = run_episode(env, act, episode_seed(PURPOSE_EVAL, 1000, i), on_reset, record=True,
                                max_steps=horizon)
            rows.append(classify(trace, spec, args.max_steps))
        env.close()
        results[name] = rows

    n = args.episodes
    print(f"{args.task}: {n} evaluation scenes, limit {args.max_steps} steps, run to {horizon}")
    print(f"{'':26s}" + "".join(f"{name:>18s}" for name in results))
    for category in CATEGORIES:
        print(f"{category:26s}" + "".join(f"{sum(c == category for c, _ in rows) / n:18.2f}"
                                          for rows in results.values()))
    for name, rows in results.items():
        steps = np.array([s for c, s in rows if c == "success"])
        if len(steps):
            print(f"{name}: success step median {np.median(steps):.0f}, 90th percentile "
                  f"{np.percentile(steps, 90):.0f}, latest {steps.max()} (limit {args.max_steps})")
    both = list(zip(*(rows for rows in results.values())))
    moved = {}
    for before, after in both:
        if before[0] != after[0]:
            moved[(before[0], after[0])] = moved.get((before[0], after[0]), 0) + 1
    print("scenes that changed category, base -> base + residual:")
    for (before, after), count in sorted(moved.items(), key=lambda kv: -kv[1]):
        print(f"  {count:4d}  {before} -> {after}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
