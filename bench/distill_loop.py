"""Distillation loop on g1_pick_lift: base0 -> residual1 -> distilled base1 -> residual2 on base1.

    python bench/distill_loop.py [--out outputs/distill_loop] [--seed 0] [--rollouts 300] [--env-steps 30000]
        [--residual1 CKPT --residual1-json FILE]      # reuse a residual_gain.py run on the main job's base

  base0      the main job's 5-demo BC base (outputs/main_job_data)
  residual1  residual_gain.py on base0 (the main job's recipe, in process, --env-steps)
  base1      `resfit-ros distill`: base0's settings, trained on the same 5 demos plus the successful
             ones of --rollouts simulated rollouts of base0 + residual1 (no exploration)
  residual2  residual_gain.py on base1 (same recipe, same demos in its replay)
  control    base1's recipe with a zero residual: the rollouts are base0's own (is it the residual's
             behaviour that base1 learns, or only more of base0's own successes?)
Every policy is evaluated on the main job's 400 evaluation scenes (seed 1000, 120 steps); the table
gives each success rate and the paired differences that the loop's claims rest on. Each step's
result is kept in --out and not redone when it exists.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from resfit_ros.jobs.main_job import paired_gain

DATA = Path("outputs/main_job_data")


def cli(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "resfit_ros.cli", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"resfit-ros {args[0]} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc.stdout


def outcomes_of(eval_output: str) -> str:
    return next(line for line in eval_output.splitlines() if line.startswith("outcomes=")).split("=", 1)[1]


def paired(a: str, b: str) -> tuple[float, float]:
    """b's paired gain over a on the same scenes (outcome strings of '0'/'1')."""
    gain, se, _, _ = paired_gain([c == "1" for c in a], [c == "1" for c in b])
    return gain, se


def residual_run(out: Path, name: str, data: Path, args) -> dict:
    path = out / f"{name}.json"
    if not path.is_file():
        gain = Path(__file__).with_name("residual_gain.py")
        subprocess.run([sys.executable, str(gain), "--env-steps", str(args.env_steps), "--minutes", "1e9",
                        "--seed", str(args.seed), "--curve-every", "10000", "--curve-episodes", "100",
                        "--data", str(data), "--save", str(out / f"{name}.ckpt"), "--json", str(path)], check=True)
    return json.loads(path.read_text())


def distilled(out: Path, name: str, residual: Path, demos5: Path, args) -> str:
    """base file `name` distilled from base0 + `residual`; its outcomes on the evaluation scenes."""
    base = out / f"{name}.safetensors"
    cache = out / f"{name}.outcomes"
    if not base.is_file():
        print(cli("distill", "--base", str(DATA / "base_d5_s2000.safetensors"), "--residual", str(residual),
                  "--rollouts", str(args.rollouts), "--task", "g1_pick_lift", "--max-steps", "120",
                  "--episodes", str(demos5), "--out", str(base), "--seed", str(args.seed), "--no-progress"))
    if not cache.is_file():
        cache.write_text(outcomes_of(cli("eval", "--task", "g1_pick_lift", "--base", str(base), "--episodes", "400",
                                         "--seed", "1000", "--max-steps", "120", "--no-progress")))
    return cache.read_text().strip()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="outputs/distill_loop")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rollouts", type=int, default=300)
    p.add_argument("--env-steps", type=int, default=30000)
    p.add_argument("--residual1", default="", help="a residual_gain.py checkpoint on base0 (skips that run)")
    p.add_argument("--residual1-json", default="", help="its residual_gain.py --json result")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not (DATA / "base_d5_s2000.safetensors").is_file():
        print("error: run `resfit-ros main-job` once (its demos and base are base0)", file=sys.stderr)
        return 2
    demos5 = out / "demos5"                       # the 5 demos base0 was trained on
    if not demos5.is_dir():
        demos5.mkdir()
        for ep in sorted(p for p in (DATA / "demos30").iterdir() if p.name.startswith("episode_"))[:5]:
            (demos5 / ep.name).symlink_to(ep.resolve())
    if args.residual1:
        r1, r1_ckpt = json.loads(Path(args.residual1_json).read_text()), Path(args.residual1)
    else:
        r1, r1_ckpt = residual_run(out, "residual1", DATA, args), out / "residual1.ckpt"
    base1 = distilled(out, "base1", r1_ckpt, demos5, args)
    zero = out / "zero_residual.ckpt"
    if not zero.exists():
        from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent

        rng = np.random.default_rng(0)
        normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, 67)), rng.normal(size=(50, 29)), 0.1)
        ResidualAgent(AgentConfig(), 67, 29, [], 84, 0, normaliser).save_checkpoint(zero)
    control = distilled(out, "base1_control", zero, demos5, args)
    data1 = out / "data1"                          # residual_gain.py's layout, base1 as its base
    if not data1.is_dir():
        data1.mkdir()
        (data1 / "demos30").symlink_to((DATA / "demos30").resolve())
        shutil.copy(out / "base1.safetensors", data1 / "base_d5_s2000.safetensors")
    r2 = residual_run(out, "residual2", data1, args)

    rows = [("base0", r1["base_outcomes"]), ("base0 + residual1", r1["combined_outcomes"]),
            ("base1 (distilled from base0 + residual1)", base1),
            ("control: distilled from base0 alone", control), ("base1 + residual2", r2["combined_outcomes"])]
    print("policy                                       success (400 scenes)")
    for name, o in rows:
        print(f"{name:44s} {np.mean([int(x) for x in o]):.3f}")
    for label, a, b in (("base1 - (base0 + residual1)", r1["combined_outcomes"], base1),
                        ("base1 - control", control, base1),
                        ("(base1 + residual2) - (base0 + residual1)", r1["combined_outcomes"], r2["combined_outcomes"]),
                        ("(base1 + residual2) - base1", base1, r2["combined_outcomes"])):
        d, se = paired(a, b)
        print(f"paired {label:42s} {d:+.3f} +- {se:.3f}")
    (out / "table.json").write_text(json.dumps({name: o for name, o in rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
