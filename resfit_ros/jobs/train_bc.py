"""`resfit-ros train-bc`: train the frozen BC base policy from episode bags.

    resfit-ros train-bc --demos data/demos/pick_lift --out data/base/pick_lift.safetensors --steps 2000

Reads every loadable episode under --demos (bad ones are listed and skipped), keeps the
successful ones (the first --num-demos of them, by name, if given), trains the chunk policy
(resfit_ros/policy/train.py) and writes:
  <out>.safetensors   the frozen artifact: weights, normaliser, config (json metadata), no pickle
  <out stem>_loss.png the loss curve
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from resfit_ros.jobs.sim_episodes import ArgumentError, fail, nonnegative_int, positive_int

VERB = "train-bc"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--demos", required=True, help="directory of episode bags (successful ones are used)")
    parser.add_argument("--out", required=True, help="artifact file to write (.safetensors)")
    parser.add_argument("--chunk", type=positive_int, default=20, help="actions per chunk k (default 20)")
    parser.add_argument("--steps", type=positive_int, default=2000, help="gradient steps (default 2000)")
    parser.add_argument("--state-only", action="store_true",
                        help="no cameras: state = joint positions, velocities and extra (task state)")
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument("--num-demos", type=nonnegative_int, default=0,
                        help="use only the first N successful demos (default 0 = all)")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="batch size (default 64)")
    parser.add_argument("--lr", type=float, default=None,
                        help="peak learning rate (default 3e-4 with images, 1e-3 state-only)")
    parser.add_argument("--cameras", default=None, help="comma-separated cameras (default: all in the demos)")
    parser.add_argument("--state-keys", default=None,
                        help="comma-separated state parts from position,velocity,extra "
                             "(default position with cameras, all three with --state-only)")
    parser.add_argument("--state-std-floor", type=float, default=0.1,
                        help="floor of the state normaliser's std (default 0.1)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _config(args):
    from resfit_ros.config import ConfigError
    from resfit_ros.policy.train import BCTrainConfig

    demos = Path(args.demos)
    if not demos.is_dir():
        raise ArgumentError(f"--demos {demos} is not a directory")
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise ArgumentError(f"--out must end in .safetensors, got '{out.name}'")
    if out.is_dir():
        raise ArgumentError(f"--out {out} is a directory")
    if args.lr is not None and not args.lr > 0:
        raise ArgumentError(f"--lr must be > 0, got {args.lr}")
    state_keys = [k.strip() for k in args.state_keys.split(",") if k.strip()] if args.state_keys else None
    cameras = [c.strip() for c in args.cameras.split(",") if c.strip()] if args.cameras else None
    if args.state_only and cameras:
        raise ArgumentError("--cameras and --state-only exclude each other")
    try:
        cfg = BCTrainConfig(
            chunk_length=args.chunk, steps=args.steps, batch_size=args.batch_size,
            lr=args.lr if args.lr is not None else (1e-3 if args.state_only else 3e-4),
            state_only=args.state_only, state_keys=state_keys, camera_names=cameras,
            num_demos=args.num_demos, seed=args.seed, threads=args.threads,
            state_std_floor=args.state_std_floor)
    except ConfigError as exc:
        raise ArgumentError(str(exc)) from None
    return demos, out, cfg


def run(args) -> int:
    try:
        demos, out, cfg = _config(args)
    except ArgumentError as exc:
        return fail(VERB, str(exc))

    from resfit_ros.bags import load_episodes
    from resfit_ros.policy.train import DemoError, train_bc

    problems: list[str] = []
    episodes = load_episodes(demos, success_only=True, images=not cfg.state_only,
                             on_problem=lambda p, why: problems.append(f"  skipped {p.name}: {why}"))
    for line in problems:
        print(line)
    if not episodes:
        return fail(VERB, f"no successful demos in {demos}" + (f" ({len(problems)} unreadable)" if problems else ""))
    if cfg.num_demos and len(episodes) < cfg.num_demos:
        return fail(VERB, f"--num-demos {cfg.num_demos} but {demos} holds only {len(episodes)} successful demos")
    try:
        net, pcfg, info = train_bc(episodes, cfg, progress=not args.no_progress, log=print)
    except DemoError as exc:
        return fail(VERB, str(exc))
    info["demos_dir"] = str(demos)
    write_base(VERB, net, pcfg, info, out, f"BC {info.get('task') or ''} ({info['demos']} demos, k={pcfg.chunk_length})")
    return 0


def write_base(verb: str, net, pcfg, info: dict, out: Path, title: str) -> None:
    """The artifact, its loss plot beside it and the two lines saying what was written."""
    from resfit_ros.policy.base import save_artifact
    from resfit_ros.policy.train import plot_losses

    save_artifact(net, pcfg, out, info)
    png = plot_losses(info["losses"], out.with_name(out.stem + "_loss.png"), title=title)
    print(f"{verb}: wrote {out} and {png} ({info['demos']} episodes, {info['train_config']['steps']} steps in "
          f"{info['train_seconds']:.0f} s, final loss {info['final_loss']:.4g})")
    print(f"{verb}: config " + json.dumps({"chunk_length": pcfg.chunk_length, "cameras": pcfg.camera_names,
                                           "state_keys": pcfg.state_keys, "state_dim": pcfg.state_dim,
                                           "feature_dim": pcfg.feature_dim}))
