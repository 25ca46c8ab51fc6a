"""Learning curve to convergence on g1_pick_lift, in process: the main job's recipe for 72,000 env
steps (one hour of robot time at 20 Hz), success on the main job's evaluation scenes every 12,000.

    python bench/learning_curve.py [--env-steps 72000] [--seed 0] [--out outputs/learning_curve] [--state]

The main job's observation: the head camera + joint states, the residual reading the image base's
frozen features (residual_gain.py --cameras --camera-path features); --state: joint states + object pose.

A table (printed, and in <out>/curve.json) and <out>/curve.png; the wall time is printed with the
machine's load. Any residual_gain.py option can follow (e.g. --set learner.utd=4).
"""
from __future__ import annotations

import argparse
import runpy
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--env-steps", type=int, default=72000)
    p.add_argument("--curve-every", type=int, default=12000)
    p.add_argument("--curve-episodes", type=int, default=100)
    p.add_argument("--out", default="outputs/learning_curve")
    p.add_argument("--state", action="store_true", help="the state observation (main-job --state) instead")
    args, rest = p.parse_known_args(argv)
    if not args.state and "--cameras" not in rest:
        rest = ["--cameras", "--camera-path", "features", *rest]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gain = runpy.run_path(str(Path(__file__).with_name("residual_gain.py")), run_name="resfit_bench")
    return gain["main"](["--env-steps", str(args.env_steps), "--minutes", "1e9", "--curve-every",
                         str(args.curve_every), "--curve-episodes", str(args.curve_episodes),
                         "--json", str(out / "curve.json"), "--png", str(out / "curve.png"),
                         "--save", str(out / "checkpoint"), *rest])


if __name__ == "__main__":
    raise SystemExit(main())
