"""Residual RL gain on the simulated G1 (`g1_pick_lift` by default), in process (no ROS): base vs base + residual.

The main job's recipe (config/sim.yaml), demos and base, run without the graph's transport
(resfit_ros/jobs/in_process.py: the same set-up, control step and update schedule as the
graph), then evaluated PAIRED with the base on the main job's fixed scenes.

    python bench/residual_gain.py --minutes 20
    python bench/residual_gain.py --env-steps 72000 --curve-every 12000 --png curve.png
    python bench/residual_gain.py --minutes 10 --set learner.utd=1 --set residual_policy.exploration_hold_steps=1
    python bench/residual_gain.py --cameras --camera-path features --env-steps 72000 --minutes 1e9

--cameras: learning from the head camera (84x84) + joint states WITHOUT the object pose: image demos
recorded without task state, an image base (joint positions + camera), and the residual reading
either the images through its own encoder trained by the critic (--camera-path encoder, the
graph's use_cameras) or the image base's frozen encoder features (--camera-path features).

The last lines are `base_success=<x>`, `combined_success=<y>`, `gain=<g>`, `gain_stderr=<se>`,
`env_steps=<n>`, `train_minutes=<m>`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from resfit_ros.jobs.main_job import add_task_arguments, data_dir, observation_flags, recipe_overlays, task_defaults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--minutes", type=float, default=20.0, help="training wall-clock budget (evaluations excluded)")
    p.add_argument("--env-steps", type=int, default=0, help="stop after this many training steps (0: --minutes only)")
    p.add_argument("--seed", type=int, default=0, help="seed of agent, replay, exploration and training scenes")
    p.add_argument("--curve-every", type=int, default=0, help="training steps between curve points (0: none)")
    p.add_argument("--curve-episodes", type=int, default=100, help="scenes per curve point (the first N)")
    add_task_arguments(p)    # --task, --max-steps, --eval-episodes, --base-demos, --bc-steps: the main job's
    p.add_argument("--data", default="", help="demos and base, made when missing (default: the main job's "
                                              "outputs/main_job_data for the lift, outputs/<task>_data otherwise; "
                                              "with --cameras the same names + _cameras)")
    p.add_argument("--demos", type=int, default=30)
    p.add_argument("--cameras", action="store_true",
                   help="the head camera + joint states, no object pose (image demos and an image base)")
    p.add_argument("--camera-path", choices=("encoder", "features"), default=None,
                   help="with --cameras: the residual's own image encoder trained by the critic (default), or "
                        "the frozen image base's encoder features")
    p.add_argument("--config", default="", help="parameter YAML (default config/sim.yaml; the task's overlay, "
                                                "config/sim_handover.yaml for the handover, goes over it)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a learner.* or residual_policy.* parameter of the recipe (repeatable)")
    p.add_argument("--save", default="", help="save the final learner checkpoint here (and one per curve "
                                              "point in <save>/steps<N>)")
    p.add_argument("--json", default="", help="write the results here")
    p.add_argument("--detector", default="", help="a success detector (resfit-ros train-detector) labels the "
                   "training episodes instead of the simulator (evaluation still counts the simulator's success)")
    p.add_argument("--png", default="", help="plot the curve (success against env steps) here")
    return p


def ensure_artifacts(args) -> tuple[Path, Path]:
    """The main job's demos and base (same paths and commands), made when missing."""
    data = Path(args.data) if args.data else data_dir(args.cameras, args.task)
    demos = data / f"demos{args.demos}"
    base = data / f"base_d{args.base_demos}_s{args.bc_steps}.safetensors"
    cli = [sys.executable, "-m", "resfit_ros.cli"]
    demo_flags, bc_flags = observation_flags(args.cameras)
    if not demos.is_dir():
        subprocess.run(cli + ["demos", "--task", args.task, "--episodes", str(args.demos), "--out", str(demos),
                              "--seed", "0", *demo_flags, "--no-progress"], check=True)
    if not base.is_file():
        subprocess.run(cli + ["train-bc", "--demos", str(demos), "--out", str(base), *bc_flags, "--steps",
                              str(args.bc_steps), "--num-demos", str(args.base_demos), "--seed", "0", "--no-progress"],
                       check=True)
    return demos, base


def plot_curve(path: str, curves: list[tuple[str, list]], base_rate: float, title: str) -> None:
    """curves: (label, [(env_steps, success, stderr)]); success of base + residual against env steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves:
        x = [p[0] for p in points]
        ax.errorbar(x, [p[1] for p in points], yerr=[p[2] for p in points], marker="o", capsize=3, label=label)
    ax.axhline(base_rate, color="gray", linestyle="--", label=f"base alone ({base_rate:.2f})")
    ax.set_xlabel("training env steps")
    ax.set_ylabel("success on the fixed evaluation scenes")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.camera_path and not args.cameras:
        parser.error("--camera-path needs --cameras")
    if args.cameras:
        args.camera_path = args.camera_path or "encoder"
    task_defaults(args)
    from resfit_ros.jobs.in_process import InProcessRun, base_outcomes, load_recipe, parse_overrides
    from resfit_ros.jobs.main_job import paired_gain

    t0 = time.perf_counter()
    try:
        # the task's overlay only: the camera observation is this bench's own flags, not sim_cameras.yaml's
        recipe = load_recipe(args.config or None, parse_overrides(args.set), recipe_overlays(False, args.task))
    except ValueError as exc:
        print(f"residual-gain: error: {exc}", file=sys.stderr)
        return 2
    demos, base = ensure_artifacts(args)
    run = InProcessRun(recipe, demos, base, max_steps=args.max_steps, seed=args.seed, task=args.task,
                       detector=args.detector or None, cameras=("head",) if args.cameras else (),
                       camera_path=args.camera_path or "encoder")
    fields = lambda cfg: {k: v for k, v in vars(cfg).items() if not k.startswith("_")}   # noqa: E731
    print("recipe: " + json.dumps({"learner": fields(recipe.learner), "residual_policy": fields(recipe.policy)},
                                  default=str), flush=True)
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at the start", flush=True)
    print(f"observation: {run.agent.state_dim}-D state, cameras {list(run.cameras) or 'none'}"
          + (f", residual reads {args.camera_path}" if args.cameras else ""), flush=True)
    base_out = base_outcomes(run, base, args.eval_episodes, args.max_steps)
    base_rate = float(np.mean(base_out))
    print(f"base: {base_rate:.3f} on {len(base_out)} scenes", flush=True)

    def on_curve(steps: int, outcomes: list[bool]) -> None:
        g, s, won, lost = paired_gain(base_out[:len(outcomes)], outcomes)
        print(f"curve env_steps={steps} paired gain {g:+.3f} +- {s:.3f} ({won} won, {lost} lost of "
              f"{len(outcomes)}; load average {os.getloadavg()[0]:.2f})", flush=True)
        if args.save:
            run.agent.save_checkpoint(Path(args.save) / f"steps{steps}")

    result = run.train(minutes=args.minutes, env_steps=args.env_steps, curve_every=args.curve_every,
                       curve_episodes=args.curve_episodes, progress=lambda s: print(s, flush=True),
                       on_curve=on_curve)
    if args.save:
        print(f"checkpoint: {run.agent.save_checkpoint(args.save)}", flush=True)
    t_eval = time.perf_counter()
    final = run.evaluate(args.eval_episodes)
    gain, se, won, lost = paired_gain(base_out, final)
    curve_rows = []
    for steps, minutes, outcomes in result.curve:
        g, s, _, _ = paired_gain(base_out[:len(outcomes)], outcomes)
        curve_rows.append({"env_steps": steps, "train_minutes": round(minutes, 2), "success": float(np.mean(outcomes)),
                           "gain": g, "gain_stderr": s, "episodes": len(outcomes)})
    curve_rows.append({"env_steps": result.env_steps, "train_minutes": round(result.train_minutes, 2),
                       "success": float(np.mean(final)), "gain": gain, "gain_stderr": se, "episodes": len(final)})
    print(f"evaluation: {len(final)} scenes in {(time.perf_counter() - t_eval) / 60:.1f} min")
    print("curve (env steps, training minutes, success, paired gain on the first N scenes):")
    for r in curve_rows:
        print(f"  {r['env_steps']:7d}  {r['train_minutes']:6.1f}  {r['success']:.3f}  {r['gain']:+.3f} +- "
              f"{r['gain_stderr']:.3f}  ({r['episodes']} scenes)")
    train_success = [s for e, s in result.train_results if e]
    print(f"training: {result.episodes} episodes, {result.env_steps} env steps in {result.train_minutes:.1f} min "
          f"({result.env_steps / max(result.train_minutes * 60, 1e-9):.1f} steps/s), training-episode success "
          f"{np.mean(train_success) if train_success else float('nan'):.2f}; load average now {os.getloadavg()[0]:.2f}")
    print(f"paired over {len(final)} scenes: {won} solved only with the residual, {lost} only by the base")
    labels = {}
    if result.labels:
        given, truth, asked = (np.array(x) for x in zip(*result.labels))
        labels = {"episodes": len(given), "right": float(np.mean(given == truth)),
                  "false_success": int(np.sum(given & ~truth)), "missed_success": int(np.sum(~given & truth)),
                  "asked": int(asked.sum()), "true_successes": int(truth.sum())}
        print(f"detector labels: {labels['right']:.3f} right over {labels['episodes']} training episodes "
              f"({labels['false_success']} false successes, {labels['missed_success']} missed, "
              f"{labels['asked']} asked the operator; {labels['true_successes']} true successes)")
    operator = [(o, n) for w, o, n in result.interventions if w]
    if operator:
        print(f"interventions: {len(operator)} watched episodes, {sum(o > 0 for o, _ in operator)} taken over, "
              f"{sum(o for o, _ in operator)} of {sum(n for _, n in operator)} steps driven by the operator")
    if args.png:
        plot_curve(args.png, [("base + residual", [(r["env_steps"], r["success"],
                                                     2 * r["gain_stderr"]) for r in curve_rows])],
                   base_rate, f"{args.task}, in process" + (f", camera ({args.camera_path})" if args.cameras else ""))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "settings": vars(args), "base_success": base_rate, "combined_success": float(np.mean(final)),
            "gain": gain, "gain_stderr": se, "won": won, "lost": lost, "env_steps": result.env_steps,
            "episodes": result.episodes, "train_minutes": result.train_minutes, "curve": curve_rows,
            "wall_minutes": (time.perf_counter() - t0) / 60, "log": result.log, "detector_labels": labels,
            "interventions": result.interventions,
            "base_outcomes": "".join("1" if x else "0" for x in base_out),
            "combined_outcomes": "".join("1" if x else "0" for x in final)}, indent=1))
    print(f"base_success={base_rate:.3f}")
    print(f"combined_success={np.mean(final):.3f}")
    print(f"gain={gain:+.3f}")
    print(f"gain_stderr={se:.3f}")
    print(f"env_steps={result.env_steps}")
    print(f"train_minutes={result.train_minutes:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
