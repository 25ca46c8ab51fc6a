"""`resfit-ros distill`: a new BC base from the demos and the combined policy's successful episodes.

    resfit-ros distill --base data/base/lift.safetensors --episodes data/demos/lift outputs/run/episodes \
        --out data/base/lift_distilled.safetensors
    resfit-ros distill --base B --residual outputs/run/checkpoints --rollouts 200 --task g1_pick_lift \
        --episodes data/demos/lift --out data/base/lift_distilled.safetensors

The combined policy (base + residual) is more precise than its base; trained on what it executed
in its successful episodes (each step's command), a BC base learns that behaviour and leaves the
next residual more room (ResFiT's first open question). The episodes: every successful one under
each --episodes directory (demos, recorded episode bags of a training run: exploration steps
included unless --no-exploration) plus, with --residual and --rollouts N, N fresh simulated
rollouts of base + residual without exploration, kept as episode bags in <out stem>_rollouts/.
The new base has the old one's inputs, chunk length and training settings (its artifact's
train_config; --steps and --seed override), in the same artifact format: the base chunk server
serves it unchanged.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from resfit_ros.core.command import DEFAULT_RESIDUAL_BOUND
from resfit_ros.jobs.sim_episodes import (
    PURPOSE_EVAL, ArgumentError, check_task, episode_seed, fail, nonnegative_int, positive_int)

VERB = "distill"
DISTILL_SEED_OFFSET = 7_000_000   # rollouts on scenes apart from `eval --seed` 0..N's evaluation sets


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--base", required=True, help="the frozen BC base the residual was trained on (.safetensors)")
    parser.add_argument("--episodes", nargs="*", default=[], help="directories of episode bags (demos, a training "
                        "run's episodes); their successful episodes are used")
    parser.add_argument("--out", required=True, help="the distilled base to write (.safetensors)")
    parser.add_argument("--residual", default=None, help="residual checkpoint: fresh rollouts of base + residual")
    parser.add_argument("--rollouts", type=nonnegative_int, default=0,
                        help="simulated rollouts of base + residual (needs --residual and --task; default 0)")
    parser.add_argument("--task", default=None, help="simulated task of the rollouts (g1_pick_lift, g1_handover)")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="rollout step limit (default: the task's)")
    parser.add_argument("--residual-bound", type=float, default=DEFAULT_RESIDUAL_BOUND,
                        help=f"|residual| limit per joint in the rollouts, rad (default {DEFAULT_RESIDUAL_BOUND}, the residual node's)")
    parser.add_argument("--no-exploration", action="store_true",
                        help="leave out recorded episodes that ran with exploration noise")
    parser.add_argument("--steps", type=positive_int, default=None, help="gradient steps (default: the base's own)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the rollouts' scenes and of the training")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _check(args) -> tuple[Path, Path, list[Path]]:
    base, out = Path(args.base), Path(args.out)
    if not base.is_file() or base.suffix != ".safetensors":
        raise ArgumentError(f"--base {base}: not a BC artifact (.safetensors) that exists")
    if out.suffix != ".safetensors" or out.is_dir():
        raise ArgumentError(f"--out must be a .safetensors file, got '{out}'")
    if out.resolve() == base.resolve():
        raise ArgumentError("--out must not overwrite --base (the residual was trained on it)")
    dirs = [Path(d) for d in args.episodes]
    for d in dirs:
        if not d.is_dir():
            raise ArgumentError(f"--episodes {d} is not a directory")
    if args.rollouts and not (args.residual and args.task):
        raise ArgumentError("--rollouts needs --residual CKPT and --task")
    if args.residual and not Path(args.residual).exists():
        raise ArgumentError(f"--residual {args.residual} does not exist")
    if args.task:
        check_task(args.task)
    if not dirs and not args.rollouts:
        raise ArgumentError("nothing to distill: give --episodes DIR... and/or --residual CKPT --rollouts N")
    return base, out, dirs


def rollouts(args, base_policy, residual, out_dir: Path) -> tuple[int, int]:
    """Simulated episodes of base + residual (no exploration) as episode bags in `out_dir`:
    (successes, episodes)."""
    from tqdm import tqdm

    import resfit_ros
    from resfit_ros.jobs.evaluate import policy_in_sim
    from resfit_ros.jobs.sim_episodes import run_episode, write_trace

    env, act, on_reset = policy_in_sim(args.task, base_policy, residual, residual_bound=args.residual_bound,
                                       seed=args.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    first = 1 + max((int(p.name.split("_")[1]) for p in out_dir.iterdir() if p.name.startswith("episode_")), default=0)
    successes = 0
    for i in tqdm(range(args.rollouts), desc="distill rollouts", unit="ep", disable=args.no_progress):
        reset_seed = episode_seed(PURPOSE_EVAL, DISTILL_SEED_OFFSET + args.seed, i)
        trace = run_episode(env, act, reset_seed, on_reset, record=True, max_steps=args.max_steps)
        successes += trace.success
        meta = {"task": args.task, "source": "distill_rollout", "reset_seed": reset_seed, "base": str(args.base),
                "residual": str(args.residual), "robot": env.robot.name, "resfit_ros_version": resfit_ros.__version__}
        write_trace(out_dir, first + i, trace, meta, env.joint_names)
    env.close()
    return successes, args.rollouts


def run(args) -> int:
    try:
        base_path, out, dirs = _check(args)
    except ArgumentError as exc:
        return fail(VERB, str(exc))
    import torch

    from resfit_ros.bags import load_episodes
    from resfit_ros.config import ConfigError
    from resfit_ros.policy import PolicyLoadError, load_base_policy
    from resfit_ros.jobs.train_bc import write_base
    from resfit_ros.policy.base import load_artifact
    from resfit_ros.policy.train import BCTrainConfig, DemoError, train_bc

    torch.set_num_threads(1)
    try:
        _, base_cfg, base_info = load_artifact(base_path)
    except Exception as exc:   # a corrupt or foreign file: say which, nothing written
        return fail(VERB, f"--base {base_path}: cannot read the artifact ({exc})")
    known = set(BCTrainConfig.__dataclass_fields__)
    try:
        train = dict(base_info.get("train_config") or {})
        train = {k: v for k, v in train.items() if k in known}
        train.update(num_demos=0, seed=args.seed, state_keys=list(base_cfg.state_keys),
                     camera_names=list(base_cfg.camera_names), state_only=not base_cfg.camera_names,
                     chunk_length=base_cfg.chunk_length)
        if args.steps:
            train["steps"] = args.steps
        cfg = BCTrainConfig(**train)
    except (ConfigError, TypeError) as exc:
        return fail(VERB, f"--base {base_path}: its training settings do not fit ({exc})")

    sources = list(dirs)
    if args.rollouts:
        try:
            base_policy = load_base_policy(base_path)
            from resfit_ros.jobs.evaluate import load_residual

            residual = load_residual(args.residual, base_policy)
            roll_dir = out.with_name(out.stem + "_rollouts")
            won, n = rollouts(args, base_policy, residual, roll_dir)
        except (ArgumentError, PolicyLoadError) as exc:
            return fail(VERB, str(exc))
        print(f"distill: {won} of {n} rollouts of base + residual succeeded -> {roll_dir}", flush=True)
        sources.append(roll_dir)

    episodes, problems = [], []
    for d in sources:
        found = load_episodes(d, success_only=True, images=bool(base_cfg.camera_names),
                              on_problem=lambda p, why: problems.append(f"  skipped {p.name}: {why}"))
        kept = [e for e in found if not (args.no_exploration and e.exploration.size and e.exploration.any())]
        print(f"distill: {len(kept)} successful episodes from {d}"
              + (f" ({len(found) - len(kept)} with exploration left out)" if len(kept) < len(found) else ""),
              flush=True)
        episodes += kept
    for line in problems:
        print(line)
    try:
        net, pcfg, info = train_bc(episodes, cfg, progress=not args.no_progress, log=print)
    except DemoError as exc:
        return fail(VERB, str(exc))
    if list(pcfg.joint_names) != list(base_cfg.joint_names) or pcfg.state_dim != base_cfg.state_dim:
        return fail(VERB, "the episodes' joints or state differ from the base's: the distilled base would not "
                          "replace it")
    info.update(distilled_from=str(base_path), residual=str(args.residual or ""),
                episode_dirs=[str(d) for d in sources])
    write_base(VERB, net, pcfg, info, out, f"distilled BC ({info['demos']} episodes, k={pcfg.chunk_length})")
    return 0
