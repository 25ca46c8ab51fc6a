"""The paper's ablations on g1_pick_lift, in process: the full recipe against the recipe without one part.

On the main job's observation (the head camera + joint states, the residual reading the image base's
frozen features: residual_gain.py --cameras --camera-path features); --state: joint states + object pose.
Variants (each a set of overrides of the main job's recipe):
  full            the recipe as it is (config/sim.yaml, with config/sim_cameras.yaml over it)
  no_layernorm    no LayerNorm in the critic (ResFiT: Q collapses without it on high-DoF tasks)
  layernorm       LayerNorm in the critic (the reference's; the recipe has none since it measured better)
  no_demos        no demonstrations in the replay batches (demo_fraction 0; the normaliser still comes from them)
  nstep1          1-step TD targets instead of n-step
  utd1            1 critic update per env step instead of the recipe's UTD
Every run: the same env-step budget, the success of base + residual on the first --curve-episodes of
the main job's evaluation scenes every --curve-every steps (paired with the base on the same scenes).
Runs go --jobs at a time (one per core); every run is reported, with the env steps and minutes.
A run whose <out>/<variant>_seed<seed>.json exists is not run again (an interrupted bench resumes; a
residual_gain.py result of the same recipe, observation, seed and budget can stand in for it). The plot's
last point of each run is its final evaluation on the same first --curve-episodes scenes.

    python bench/ablations.py --env-steps 30000 --seeds 0 1 --out outputs/ablations [--state]
    python bench/ablations.py --seeds 0 1 2 3 --variants full nstep1 --report-only --png seeds.png
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

from resfit_ros.jobs.main_job import paired_gain

VARIANTS = {
    "full": [],
    "no_layernorm": ["learner.critic_layer_norm=false"],
    "layernorm": ["learner.critic_layer_norm=true"],
    "no_demos": ["learner.demo_fraction=0.0"],
    "nstep1": ["learner.nstep=1"],
    "utd1": ["learner.utd=1"],
}
LINESTYLES = ["-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]     # one per seed, in --seeds order


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-steps", type=int, default=30000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--variants", nargs="+", default=["full", "layernorm", "no_demos", "nstep1", "utd1"],
                   choices=list(VARIANTS))
    p.add_argument("--curve-every", type=int, default=10000)
    p.add_argument("--curve-episodes", type=int, default=100)
    p.add_argument("--eval-episodes", type=int, default=400, help="final evaluation scenes (the main job's 400)")
    p.add_argument("--state", action="store_true", help="the state observation (main-job --state) instead")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", default="outputs/ablations")
    p.add_argument("--png", default="", help="the plot's file (default <out>/ablations.png)")
    p.add_argument("--report-only", action="store_true",
                   help="start no run: the table and the plot of the results already in --out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bench = Path(__file__).with_name("residual_gain.py")
    runs = [(v, s) for s in args.seeds for v in args.variants]
    pending = [] if args.report_only else [(v, s) for v, s in runs if not (out / f"{v}_seed{s}.json").is_file()]
    for v, s in [] if args.report_only else sorted(set(runs) - set(pending)):
        print(f"{v} seed {s}: result exists, not run again")
    active, t0 = [], time.monotonic()
    while pending or active:
        while pending and len(active) < args.jobs:
            variant, seed = pending.pop(0)
            name = f"{variant}_seed{seed}"
            cmd = [sys.executable, str(bench), "--env-steps", str(args.env_steps), "--minutes", "1e9",
                   "--seed", str(seed), "--curve-every", str(args.curve_every), "--curve-episodes",
                   str(args.curve_episodes), "--eval-episodes", str(args.eval_episodes),
                   "--json", str(out / f"{name}.json")]
            if not args.state:
                cmd += ["--cameras", "--camera-path", "features"]
            for entry in VARIANTS[variant]:
                cmd += ["--set", entry]
            log = open(out / f"{name}.log", "w")
            print(f"[{(time.monotonic() - t0) / 60:5.1f} min] start {name}", flush=True)
            active.append((name, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
        time.sleep(5)
        for item in list(active):
            name, proc, log = item
            if proc.poll() is not None:
                log.close()
                active.remove(item)
                print(f"[{(time.monotonic() - t0) / 60:5.1f} min] {name} exited {proc.returncode}", flush=True)
    table = []
    for variant, seed in runs:
        path = out / f"{variant}_seed{seed}.json"
        if not path.is_file():
            print(f"{variant} seed {seed}: no result (see {path.with_suffix('.log')})")
            continue
        r = json.loads(path.read_text())
        table.append((variant, seed, r))
    full = {seed: r for variant, seed, r in table if variant == "full"}
    print("variant        seed  env steps  train min  final success  paired gain (final scenes)  against full (same seed)")
    for variant, seed, r in table:
        versus = ""
        if variant != "full" and seed in full:
            ours, theirs = r["combined_outcomes"], full[seed]["combined_outcomes"]
            n = min(len(ours), len(theirs))  # the scenes both were evaluated on
            d, se, _, _ = paired_gain([c == "1" for c in theirs[:n]], [c == "1" for c in ours[:n]])
            versus = f"{d:+.3f} +- {se:.3f}"
        print(f"{variant:14s} {seed:4d}  {r['env_steps']:9d}  {r['train_minutes']:9.1f}  {r['combined_success']:13.3f}  "
              f"{r['gain']:+.3f} +- {r['gain_stderr']:.3f}{'':13s}{versus}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    colours = dict(zip(VARIANTS, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    n = args.curve_episodes
    for variant, seed, r in table:
        points = [(0, np.mean([int(ch) for ch in r["base_outcomes"][:n]]))]
        points += [(c["env_steps"], c["success"]) for c in r["curve"] if c["episodes"] == n and c["env_steps"] < r["env_steps"]]
        points.append((r["env_steps"], np.mean([int(ch) for ch in r["combined_outcomes"][:n]])))
        ax.plot(*zip(*points), marker="o", color=colours[variant],
                linestyle=LINESTYLES[args.seeds.index(seed) % len(LINESTYLES)], label=f"{variant} seed {seed}")
    ax.set_xlabel("training env steps")
    ax.set_ylabel(f"success on the first {args.curve_episodes} evaluation scenes")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("g1_pick_lift: ResFiT ablations (in process)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    png = Path(args.png) if args.png else out / "ablations.png"
    fig.savefig(png, dpi=120)
    print(f"plot: {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
