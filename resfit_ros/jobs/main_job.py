"""`resfit-ros main-job` (README command 1): residual RL on the simulated humanoid, end to end.

1. demonstrations: scripted expert, episode bags (made once, reused);
2. the frozen BC base: trained on them (made once, reused);
3. the base's success rate on a fixed evaluation set (in-process, same safety layer as the node);
4. training: the real `train_sim` node graph over DDS (sim robot, synchronizer, base chunk server,
   residual policy, episode manager, recorder, learner, judge) for --minutes; every --eval-every-th
   episode runs without exploration; success per window of episodes is printed as bags arrive;
5. the combined policy (base + the learner's final residual) on the same evaluation set, and with
   --snapshot-every the learner's checkpoint of every such interval too: the gain against wall time;
6. a learning-curve PNG and a summary with the episode counts and standard errors.
Observations are what a real robot has: the head camera (84x84) + joint states, nothing carries
the object pose. Image demos recorded without task state, an image base (joint positions + camera),
the graph on config/sim.yaml with config/sim_cameras.yaml over it (no task-state topic in the
synchronizer; the learner reads the frozen image base's encoder features); data in
outputs/main_job_data_cameras. With --state: joint states + the simulator's object pose, state
demos and a state-only base (outputs/main_job_data), config/sim.yaml alone. The task is g1_pick_lift
unless --task says g1_handover (TASKS: its episode limit, evaluation scenes, base and recipe overlay).
The graph's parameters are written into the run directory as recipe.yaml.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resfit_ros.jobs.sim_episodes import positive_int

@dataclass(frozen=True)
class Task:
    """What the main job needs to know of a simulated task beside its name."""
    max_steps: int                          # episode step limit, training and evaluation
    eval_episodes: int                      # fixed evaluation scenes (paired standard error ~0.02-0.035)
    # (demos, BC steps) of the frozen base per observation: deliberately weak, so the residual has
    # failures to fix (their success on the evaluation scenes: docs/experiments.md)
    base: dict[str, tuple[int, int]]
    recipe_overlay: str | None = None       # config/<file> put over config/sim.yaml for this task


TASKS = {
    "g1_pick_lift": Task(max_steps=120, eval_episodes=400, base={"state": (5, 2000), "cameras": (2, 60)}),
    # a handover succeeds after ~250 control steps: longer episodes, fewer of them per env step
    "g1_handover": Task(max_steps=400, eval_episodes=200, base={"state": (10, 2000), "cameras": (3, 750)},
                        recipe_overlay="sim_handover.yaml"),
}


def add_task_arguments(parser: argparse.ArgumentParser) -> None:
    """--task, --max-steps, --eval-episodes, --base-demos, --bc-steps (None: the task's default, task_defaults)."""
    parser.add_argument("--task", choices=sorted(TASKS), default="g1_pick_lift",
                        help="simulated task (default g1_pick_lift; g1_handover: the bimanual handover, with "
                             "config/sim_handover.yaml over the recipe)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="episode step limit for training and evaluation (default: the task's, "
                             + ", ".join(f"{name} {t.max_steps}" for name, t in TASKS.items()) + "; 20 per second)")
    parser.add_argument("--eval-episodes", type=positive_int, default=None,
                        help="fixed evaluation scenes for base and combined policy (default: the task's, "
                             + ", ".join(f"{name} {t.eval_episodes}" for name, t in TASKS.items()) + ")")
    parser.add_argument("--base-demos", type=positive_int, default=None,
                        help="of which the BC base is trained on the first N (a weak base; default: the task's, "
                             + ", ".join(f"{name} {t.base['cameras'][0]} from the camera, {t.base['state'][0]} from "
                                         f"the state" for name, t in TASKS.items()) + ")")
    parser.add_argument("--bc-steps", type=positive_int, default=None,
                        help="BC training steps (default: the task's, "
                             + ", ".join(f"{name} {t.base['cameras'][1]} from the camera, {t.base['state'][1]} from "
                                         f"the state" for name, t in TASKS.items()) + ")")


def task_defaults(args: argparse.Namespace) -> Task:
    """Fill the task arguments left unset with the task's defaults for the observation (--cameras or not)."""
    task = TASKS[args.task]
    default_demos, default_steps = task.base["cameras" if args.cameras else "state"]
    args.base_demos, args.bc_steps = args.base_demos or default_demos, args.bc_steps or default_steps
    args.max_steps, args.eval_episodes = args.max_steps or task.max_steps, args.eval_episodes or task.eval_episodes
    return task


def observation_flags(cameras: bool) -> tuple[list[str], list[str]]:
    """(`resfit-ros demos` flags, `resfit-ros train-bc` flags) of the main job's data: state-only,
    joint states + object pose and a state-only base; with the camera, images + joint states only."""
    if cameras:
        return ["--no-task-state"], ["--state-keys", "position"]
    return ["--no-images"], ["--state-only"]


def data_dir(cameras: bool, task: str = "g1_pick_lift") -> Path:
    """Where the main job keeps its demos and bases (one directory per task and observation)."""
    name = "main_job_data" if task == "g1_pick_lift" else f"{task}_data"
    return Path("outputs") / (name + ("_cameras" if cameras else ""))


def recipe_overlays(cameras: bool, task: str) -> list[Path]:
    """The files put over config/sim.yaml: the camera observation's, then the task's."""
    from resfit_ros.robot import config_dir

    names = (["sim_cameras.yaml"] if cameras else []) + ([TASKS[task].recipe_overlay] if TASKS[task].recipe_overlay else [])
    return [config_dir() / name for name in names]


def recipe_config(out: Path, cameras: bool, task: str) -> Path:
    """config/sim.yaml with the overlays of the observation and the task over it, written into the run
    directory as recipe.yaml (the graph's config:=)."""
    import yaml

    from resfit_ros.config import overlaid_parameters
    from resfit_ros.robot import config_dir

    overlays = recipe_overlays(cameras, task)
    path = out / "recipe.yaml"
    doc = overlaid_parameters(config_dir() / "sim.yaml", *overlays)
    path.write_text("# written by resfit-ros main-job: config/sim.yaml" + "".join(f" + config/{o.name}" for o in overlays)
                    + "\n" + yaml.safe_dump(doc, sort_keys=False))
    return path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=30.0,
                        help="training wall time (default 30; README, The main job: the runs behind it)")
    parser.add_argument("--out", default="outputs/main_job", help="run directory (default outputs/main_job)")
    parser.add_argument("--demos", type=positive_int, default=30,
                        help="scripted demonstrations in the replay buffer (default 30)")
    add_task_arguments(parser)
    seen = parser.add_mutually_exclusive_group()
    seen.add_argument("--cameras", dest="cameras", action="store_true", default=True,
                      help="(the default) learn from the head camera + joint states, without the object pose, as "
                           "on a real robot: image demos, an image base, config/sim_cameras.yaml over config/sim.yaml")
    seen.add_argument("--state", dest="cameras", action="store_false",
                      help="learn from the joint states + the simulator's object pose instead (state demos, a "
                           "state base, config/sim.yaml)")
    parser.add_argument("--eval-every", type=int, default=5, help="every N-th training-run episode is an evaluation one")
    parser.add_argument("--window", type=positive_int, default=10, help="episodes per printed success window")
    parser.add_argument("--operator-share", type=float, default=0.0,
                        help="share of the training episodes a scripted operator (the task's expert) watches and "
                             "takes over when the robot strays: interventions (default 0: none)")
    parser.add_argument("--fresh", action="store_true", help="start the training run from scratch (keep demos/base)")
    parser.add_argument("--namespace", default="", help="ROS namespace of the training graph's nodes (its "
                        "namespace:=, e.g. robot_a: several runs side by side on one DDS domain; default: the root)")
    parser.add_argument("--robots", type=positive_int, default=1,
                        help="simulated robots feeding the one learner (train_sim robots:=N; default 1)")
    parser.add_argument("--snapshot-every", type=float, default=5.0,
                        help="also keep the learner's checkpoint every this many minutes and evaluate each one "
                             "on the same seeds: the gain against training time (default 5; 0: final only)")


def _cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "resfit_ros.cli", *args]
    print("$ resfit-ros " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def _eval(task: str, base: Path, episodes: int, max_steps: int, residual: Path | None = None,
          task_state: bool = True, residual_bound: float = 0.0) -> list[bool]:
    """Success of each of the fixed evaluation episodes (seed 1000), in seed order."""
    cmd = [sys.executable, "-m", "resfit_ros.cli", "eval", "--task", task, "--base", str(base),
           "--episodes", str(episodes), "--seed", "1000", "--max-steps", str(max_steps), "--no-progress"]
    if not task_state:
        cmd.append("--no-task-state")
    if residual is not None:
        cmd += ["--residual", str(residual), "--residual-bound", str(residual_bound)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("outcomes=")][-1]
    return [c == "1" for c in line.split("=", 1)[1].strip()]


def _residual_bound(config: Path) -> float:
    """The residual node's bound in the graph's config (the evaluation applies the same one)."""
    from resfit_ros.config import read_parameters

    return float(min(read_parameters(config, "residual_policy")["residual_bound"]))


def _stderr(p: float, n: int) -> float:
    return math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))


def paired_gain(base: list[bool], combined: list[bool]) -> tuple[float, float, int, int]:
    """(gain, its standard error, episodes only the combined policy solved, episodes only the base
    solved). Both ran on the SAME seeds, so the gain is the mean of per-episode differences and its
    error comes from those differences (a paired comparison): seeds that both solve or both fail
    cancel instead of adding the variance of two independent rates."""
    d = np.asarray(combined, dtype=float) - np.asarray(base, dtype=float)
    n = len(d)
    se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
    return float(d.mean()), se, int(np.sum(d > 0)), int(np.sum(d < 0))


def _episodes(root: Path, seen: dict | None = None) -> list[tuple[str, bool, bool, int]]:
    """(name, success, explore, steps) of the completed training-run episodes, in order.

    `seen` caches what earlier calls read: a finished episode bag never changes, and re-reading
    every bag of a long run every 2 s would take CPU from the learner."""
    from resfit_ros.bags.errors import BagError
    from resfit_ros.bags.reader import episode_name, is_episode_dir, read_episode, store_folders

    seen = {} if seen is None else seen
    out = []
    folders = store_folders(root)
    paths = [p for folder in folders for p in folder.iterdir() if is_episode_dir(p)]
    # one robot: by episode id; a fleet's robots: by when each episode finished (its bag's rename)
    paths.sort(key=(lambda p: (p.stat().st_mtime_ns, p.name)) if len(folders) > 1 else (lambda p: p.name))
    for path in paths:
        name = episode_name(path, root)
        if name not in seen:
            try:
                ep = read_episode(path, images=False)
                seen[name] = None if ep.label is None else (
                    name, ep.success, bool(ep.exploration.any()) if ep.exploration.size else False, ep.num_steps)
            except BagError:
                seen[name] = None     # unreadable: not an episode of the run (scan_episodes says why)
        if seen[name] is not None:
            out.append(seen[name])
    return out


def run(args: argparse.Namespace) -> int:
    task_defaults(args)
    # argument checks first: one message, exit 2, nothing computed or written (nan fails too)
    problem = ("" if args.minutes > 0 else f"--minutes must be > 0, got {args.minutes}") or (
        "" if args.eval_every >= 0 else f"--eval-every must be >= 0, got {args.eval_every}") or (
        "" if 0 <= args.operator_share <= 1 else f"--operator-share must be in [0, 1], got {args.operator_share}") or (
        "" if args.snapshot_every >= 0 else f"--snapshot-every must be >= 0, got {args.snapshot_every}") or (
        f"--base-demos {args.base_demos} exceeds --demos {args.demos}" if args.base_demos > args.demos else "") or (
        f"--out {args.out} exists and is not a directory" if Path(args.out).exists() and not Path(args.out).is_dir()
        else "")
    if problem:
        print(f"resfit-ros main-job: error: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    data = data_dir(args.cameras, args.task)
    demo_flags, bc_flags = observation_flags(args.cameras)
    demos = data / f"demos{args.demos}"
    base = data / f"base_d{args.base_demos}_s{args.bc_steps}.safetensors"
    t0 = time.monotonic()
    if demos.is_dir():
        from resfit_ros.bags import scan_episodes

        found = scan_episodes(demos, images=False)
        good = [e for _, e in found if not isinstance(e, str) and e.success]
        if len(good) < args.demos:
            problems = sorted({e for _, e in found if isinstance(e, str)})[:3]
            stale = demos.with_name(f"{demos.name}.stale-{int(time.time())}")
            print(f"{demos}: {len(good)} usable demonstrations (need {args.demos})"
                  + (f"; problems: {problems}" if problems else "") + f"; moved to {stale}", flush=True)
            demos.rename(stale)
    if not demos.is_dir():
        _cli("demos", "--task", args.task, "--episodes", str(args.demos), "--out", str(demos), "--seed", "0",
             *demo_flags, "--no-progress")
    from resfit_ros.bags.reader import is_episode_dir

    # only the episode bags count: the learner's base-action cache (.base_actions) lives there too
    newest_demo = max((p.stat().st_mtime for p in demos.iterdir() if is_episode_dir(p)), default=0.0)
    if base.is_file() and base.stat().st_mtime < newest_demo:
        print(f"{base} is older than the demonstrations: training it again", flush=True)
        base.unlink()
    if not base.is_file():
        _cli("train-bc", "--demos", str(demos), "--out", str(base), *bc_flags, "--steps", str(args.bc_steps),
             "--num-demos", str(args.base_demos), "--seed", "0", "--no-progress")
    base_cache = base.with_suffix(f".eval{args.eval_episodes}_h{args.max_steps}.json")
    cached = json.loads(base_cache.read_text()) if base_cache.is_file() and \
        base_cache.stat().st_mtime > base.stat().st_mtime else {}
    base_outcomes = [c == "1" for c in cached.get("outcomes", "")]
    if len(base_outcomes) != args.eval_episodes:
        print(f"evaluating the base on {args.eval_episodes} fixed episodes ...", flush=True)
        base_outcomes = _eval(args.task, base, args.eval_episodes, args.max_steps, task_state=not args.cameras)
        base_cache.write_text(json.dumps({"success_rate": float(np.mean(base_outcomes)),
                                          "outcomes": "".join("1" if s else "0" for s in base_outcomes)}))
    base_rate = float(np.mean(base_outcomes))
    print(f"base success {base_rate:.2f} +- {_stderr(base_rate, args.eval_episodes):.2f} "
          f"({args.eval_episodes} episodes)", flush=True)

    if args.fresh and out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    from resfit_ros.graph import GRAPHS
    from resfit_ros.runner import GraphRunner

    env = dict(os.environ)
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    graph_args = {
        "base_artifact": str(base), "demos_dir": str(demos), "output_dir": str(out),
        "eval_every": str(args.eval_every), "task": args.task, "max_steps": str(args.max_steps),
        "namespace": args.namespace, "operator_share": str(args.operator_share), "robots": str(args.robots)}
    config = recipe_config(out, args.cameras, args.task)
    graph_args["config"] = str(config)
    log = open(out / "graph.log", "a")
    runner = GraphRunner(GRAPHS["train_sim"], graph_args, env=env, output=log)
    print(f"training through the train_sim node graph for {args.minutes:g} min (node output: {out / 'graph.log'})",
          flush=True)
    import signal

    def on_term(_signum, _frame):
        raise KeyboardInterrupt            # `kill <main job>` stops its graph too (finally below)

    signal.signal(signal.SIGTERM, on_term)
    runner.start()
    started = time.monotonic()
    deadline = started + args.minutes * 60
    shown = 0
    seen: dict = {}                                      # episode bags read so far
    snapshots: list[tuple[float, int, int, Path]] = []   # (minutes, env steps, episodes, checkpoint copy)
    next_snapshot = args.snapshot_every if args.snapshot_every > 0 else math.inf
    try:
        while time.monotonic() < deadline and runner.poll():
            time.sleep(2.0)
            eps = _episodes(out / "episodes", seen)
            if next_snapshot < args.minutes and (time.monotonic() - started) / 60 >= next_snapshot:
                copy = _snapshot(out / "checkpoints", out / "snapshots" / f"{next_snapshot:g}min")
                if copy is not None:
                    snapshots.append((next_snapshot, int(sum(n for *_, n in eps)), len(eps), copy))
                next_snapshot += args.snapshot_every
            while len(eps) >= shown + args.window:
                chunk = eps[shown:shown + args.window]
                train = [s for _, s, e, _ in chunk if e]
                evals = [s for _, s, e, _ in chunk if not e]
                print(f"episodes {shown + 1:4d}-{shown + args.window:4d}: training success "
                      f"{np.mean(train) if train else float('nan'):.2f} ({len(train)})"
                      + (f", evaluation success {np.mean(evals):.2f} ({len(evals)})" if evals else ""),
                      f"[{(time.monotonic() - t0) / 60:.1f} min]", flush=True)
                shown += args.window
    except KeyboardInterrupt:
        print("interrupted: stopping the graph", flush=True)
    finally:
        trained_min = (time.monotonic() - started) / 60    # less than --minutes when interrupted
        runner.shutdown()
        log.close()
    eps = _episodes(out / "episodes", seen)
    ckpt = out / "checkpoints"
    if not ckpt.is_dir():
        from resfit_ros.config import read_parameters

        learner = read_parameters(config, "learner")
        warmup = int(learner.get("random_warmup_steps", 0))
        steps = int(sum(n_ for *_, n_ in eps))
        why = (f": its {steps} env steps in {trained_min:.1f} min ended inside the random warm-up "
               f"(random_warmup_steps {warmup}, no update before it is over); train longer (--minutes)"
               if steps <= warmup else "")
        print(f"error: the learner wrote no checkpoint{why}; see {out / 'graph.log'}", file=sys.stderr)
        return 1
    n = args.eval_episodes
    print(f"evaluating base + residual on the same {n} episodes ({len(snapshots) + 1} checkpoints) ...", flush=True)
    # the graph is down: one evaluation process per core (single-thread rollouts), this thread
    # running the final checkpoint's while the pool runs the snapshots'
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 1) - 1)) as pool:
        task_state, bound = not args.cameras, _residual_bound(config)
        runs = [pool.submit(_eval, args.task, base, n, args.max_steps, copy, task_state, bound) for *_, copy in snapshots]
        combined_outcomes = _eval(args.task, base, n, args.max_steps, residual=ckpt, task_state=task_state,
                                  residual_bound=bound)
        snapshot_outcomes = [r.result() for r in runs]
    combined = float(np.mean(combined_outcomes))
    gain, se, won, lost = paired_gain(base_outcomes, combined_outcomes)
    # the gain of every snapshot and of the final checkpoint, as one table
    over_time = [_gain_row(minutes, steps, episodes, base_outcomes, outcomes)
                 for (minutes, steps, episodes, _), outcomes in zip(snapshots, snapshot_outcomes)]
    over_time.append(_gain_row(round(trained_min, 1), int(sum(n_ for *_, n_ in eps)), len(eps), base_outcomes,
                               combined_outcomes))
    if len(over_time) > 1:
        print("gain against training time (same seeds):")
        for row in over_time:
            print(f"  after {row['minutes']:5g} min ({row['env_steps']:6d} env steps, {row['episodes']:4d} episodes): "
                  f"combined {row['combined_success']:.2f}, gain {row['gain']:+.2f} +- {row['gain_stderr_paired']:.2f}"
                  f" ({'clear' if row['gain'] > 2 * row['gain_stderr_paired'] else 'not clear'})")
    _plot(eps, base_rate, combined, args.window, out / "learning_curve.png", over_time, args.task)
    print(f"training-run episodes: {len(eps)} ({sum(e for _, _, e, _ in eps)} with exploration)")
    print(f"base success      {base_rate:.2f} +- {_stderr(base_rate, n):.2f}  ({n} episodes)")
    print(f"combined success  {combined:.2f} +- {_stderr(combined, n):.2f}  ({n} episodes, same seeds)")
    print(f"gain              {gain:+.2f} +- {se:.2f}  paired over the same {n} seeds: {won} solved only with the "
          f"residual, {lost} only by the base ({'clear' if gain > 2 * se else 'NOT clear'}: 2 standard errors = {2 * se:.2f})")
    print(f"learning curve    {out / 'learning_curve.png'}")
    (out / "result.json").write_text(json.dumps({
        "task": args.task, "minutes": round(trained_min, 1), "robots": args.robots, "cameras": args.cameras, "episodes": len(eps), "exploration_episodes": int(sum(e for _, _, e, _ in eps)),
        "env_steps": int(sum(n for *_, n in eps)),
        "base_success": base_rate, "combined_success": combined, "gain": gain, "gain_stderr_paired": se,
        "solved_only_with_residual": won, "solved_only_by_base": lost, "eval_episodes": n,
        "base_outcomes": "".join("1" if x else "0" for x in base_outcomes),
        "combined_outcomes": "".join("1" if x else "0" for x in combined_outcomes),
        "over_time": over_time}, indent=1))
    print(f"base_success={base_rate:.3f} combined_success={combined:.3f} episodes={n}")
    return 0


def _gain_row(minutes: float, env_steps: int, episodes: int, base: list[bool], combined: list[bool]) -> dict:
    gain, se, won, lost = paired_gain(base, combined)
    return {"minutes": minutes, "env_steps": env_steps, "episodes": episodes,
            "combined_success": float(np.mean(combined)), "gain": gain, "gain_stderr_paired": se,
            "solved_only_with_residual": won, "solved_only_by_base": lost}


def _snapshot(checkpoints: Path, dest: Path) -> Path | None:
    """A copy of the learner's newest complete checkpoint (None before its first one): the learner
    prunes old ones, so the copy is what lets the job evaluate this moment of training later."""
    import shutil

    from resfit_ros.learning.checkpoint import CheckpointError, resolve_checkpoint

    try:
        src = resolve_checkpoint(checkpoints)
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(src, dest)
    except (OSError, CheckpointError) as exc:   # pruned while copying, or none yet: try at the next interval
        print(f"no snapshot at this interval: {exc}", flush=True)
        return None
    return dest


def _plot(eps, base_rate: float, combined: float, window: int, path: Path, over_time: list[dict] | None = None,
          task: str = "g1_pick_lift") -> None:
    """Success per training-run episode (moving means); with snapshots, a second panel: the
    combined policy on the fixed evaluation set against training minutes (paired standard errors)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 2 if over_time and len(over_time) > 1 else 1
    fig, axes = plt.subplots(1, panels, figsize=(7 * panels, 4), squeeze=False)
    ax = axes[0][0]
    train = [(i, s) for i, (_, s, e, _) in enumerate(eps) if e]
    evals = [(i, s) for i, (_, s, e, _) in enumerate(eps) if not e]
    for pts, label in ((train, "training episodes (with exploration)"), (evals, "evaluation episodes")):
        if len(pts) >= window:
            x = np.array([p[0] for p in pts])
            y = np.convolve([p[1] for p in pts], np.ones(window) / window, mode="valid")
            ax.plot(x[window - 1:], y, label=f"{label}, moving mean of {window}")
    ax.axhline(base_rate, color="gray", linestyle="--", label=f"base alone ({base_rate:.2f})")
    ax.axhline(combined, color="green", linestyle=":", label=f"base + residual, final ({combined:.2f})")
    ax.set_xlabel("episode of the training run")
    ax.set_ylabel("success rate")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"{task}: residual RL through the ROS 2 graph")
    ax.legend(loc="upper right", fontsize=7, framealpha=0.6)
    if panels == 2:
        ax = axes[0][1]
        minutes = [r["minutes"] for r in over_time]
        ax.errorbar(minutes, [r["combined_success"] for r in over_time],
                    yerr=[2 * r["gain_stderr_paired"] for r in over_time], marker="o", capsize=3,
                    color="green", label="base + residual (bars: 2 paired standard errors of the gain)")
        ax.axhline(base_rate, color="gray", linestyle="--", label=f"base alone ({base_rate:.2f})")
        ax.set_xlabel("training minutes")
        ax.set_ylabel("success on the fixed evaluation set")
        ax.set_ylim(-0.02, 1.02)
        ax.set_title("the learner's checkpoint against training time")
        ax.legend(loc="upper left", fontsize=7, framealpha=0.6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
