"""`resfit-ros demos`: record scripted-expert demonstrations in simulation as episode bags.

    resfit-ros demos --task g1_pick_lift --episodes 20 --out data/demos/pick_lift --seed 0

Runs the task's scripted expert; each episode ends at the sim's success signal or the task's step
limit and is labelled success/failure. By default only successes are kept and the job continues
until --episodes successes (or --max-attempts episodes) were run. One bag per kept episode
(see resfit_ros/bags/README.md); episode ids count from 1 (continuing after existing ones with
--append). Reset seeds come from --seed and the attempt number, a stream separate from `eval`'s.
With --no-task-state the observations carry joint states and images only, what the robot graphs
observe: the learner's state is the demos' state, so demos and the live observations must agree.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resfit_ros.jobs.sim_episodes import (
    PURPOSE_DEMOS, ArgumentError, check_task, episode_seed, fail, positive_int)

VERB = "demos"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="simulated task (g1_pick_lift, g1_handover)")
    parser.add_argument("--episodes", type=positive_int, required=True,
                        help="number of episodes to keep (successes, unless --keep-failures)")
    parser.add_argument("--out", required=True, help="directory for the episode bags")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reset stream (default 0)")
    parser.add_argument("--image-size", type=int, default=84, help="camera image side, pixels (default 84)")
    parser.add_argument("--cameras", default="head", help="comma-separated cameras (default head)")
    parser.add_argument("--no-images", action="store_true",
                        help="record no camera images (state-only demos; about 5x faster)")
    parser.add_argument("--no-task-state", action="store_true",
                        help="leave the simulator's task state (object pose, contacts) out of the observations, "
                             "as a robot observes: demos for the robot_sim / train_real graphs, whose "
                             "synchronizer has no task-state topic")
    parser.add_argument("--keep-failures", action="store_true",
                        help="keep failed episodes too (labelled failure); then exactly --episodes are run")
    parser.add_argument("--max-attempts", type=positive_int, default=None,
                        help="give up after this many episodes (default 3 x episodes + 10)")
    parser.add_argument("--control-hz", type=float, default=20.0, help="control rate (default 20)")
    parser.add_argument("--append", action="store_true",
                        help="add to a directory that already holds episodes (ids continue)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _validate(args) -> tuple[Path, list[str], int, int]:
    check_task(args.task)
    if not 16 <= args.image_size <= 512:
        raise ArgumentError(f"--image-size must be in [16, 512], got {args.image_size}")
    if not 1.0 <= args.control_hz <= 1000.0:
        raise ArgumentError(f"--control-hz must be in [1, 1000], got {args.control_hz}")
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()]
    if not cameras and not args.no_images:
        raise ArgumentError("--cameras is empty (use --no-images for state-only demos)")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ArgumentError(f"--out {out} exists and is not a directory")
    existing = sorted(p for p in out.iterdir() if p.name.startswith("episode_")) if out.is_dir() else []
    if existing and not args.append:
        raise ArgumentError(f"--out {out} already holds {len(existing)} episodes; use --append or another directory")
    first_id = 1
    for p in existing:
        try:
            first_id = max(first_id, int(p.name.split("_")[1]) + 1)
        except (IndexError, ValueError):
            pass
    max_attempts = args.max_attempts or (args.episodes if args.keep_failures else 3 * args.episodes + 10)
    if args.max_attempts and args.max_attempts < args.episodes:
        raise ArgumentError(f"--max-attempts {args.max_attempts} is below --episodes {args.episodes}")
    return out, cameras, first_id, max_attempts


def _observed(obs, no_task_state: bool):
    """The observation as recorded: without the simulator's task state when asked."""
    from resfit_ros.core.observation import without_task_state

    return without_task_state(obs) if no_task_state else obs


def run(args) -> int:
    try:
        out, cameras, first_id, max_attempts = _validate(args)
    except ArgumentError as exc:
        return fail(VERB, str(exc))

    from tqdm import tqdm

    import resfit_ros
    from resfit_ros.jobs.sim_episodes import run_episode, write_trace
    from resfit_ros.sim import make_env, make_expert

    render = not args.no_images
    try:
        env = make_env(args.task, image_size=args.image_size, cameras=tuple(cameras) if render else (),
                       render=render, control_hz=args.control_hz, seed=args.seed)
    except ValueError as exc:  # e.g. an unknown camera
        return fail(VERB, str(exc))
    expert = make_expert(args.task, env)
    out.mkdir(parents=True, exist_ok=True)

    kept = successes = attempts = 0
    next_id = first_id
    bar = tqdm(total=args.episodes, desc=f"demos {args.task}", unit="ep", disable=args.no_progress,
               dynamic_ncols=True)
    while kept < args.episodes and attempts < max_attempts:
        reset_seed = episode_seed(PURPOSE_DEMOS, args.seed, attempts)
        trace = run_episode(env, lambda o: (expert.act(o), None, None), reset_seed, expert.reset, record=True)
        attempts += 1
        successes += trace.success
        if trace.success or args.keep_failures:
            meta = {"task": args.task, "source": "sim_scripted_expert", "reset_seed": reset_seed,
                    "job_seed": args.seed, "attempt": attempts - 1, "control_hz": args.control_hz,
                    "image_size": args.image_size if render else 0,
                    "cameras": ",".join(cameras) if render else "", "robot": env.robot.name,
                    "resfit_ros_version": resfit_ros.__version__}
            if args.no_task_state:
                meta["task_state"] = "none"
            write_trace(out, next_id, trace, meta, env.joint_names,
                        observations=[_observed(o, args.no_task_state) for o in trace.observations])
            kept += 1
            next_id += 1
        bar.set_postfix(attempts=attempts, expert_success=f"{successes / attempts:.2f}", refresh=False)
        bar.update(kept - bar.n)
    bar.close()
    env.close()
    rate = successes / max(attempts, 1)
    print(f"demos: kept {kept} episodes in {out} ({successes} successes in {attempts} attempts, "
          f"expert success rate {rate:.2f})")
    if kept < args.episodes:
        print(f"resfit-ros {VERB}: error: only {kept} of {args.episodes} episodes after {attempts} attempts "
              "(raise --max-attempts)", flush=True)
        return 1
    return 0
