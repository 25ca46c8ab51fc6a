"""`resfit-ros train-offline`: train (or warm up) the critic and the residual from episode bags
alone: demonstrations (base actions from the frozen --base, cached next to the demos) + any
recorded online episodes. Checkpoints go to OUT/checkpoints in the learner's layout (the learner
node resumes from them, `resfit-ros eval --residual OUT/checkpoints` evaluates them), TensorBoard
scalars to OUT/tensorboard.

    resfit-ros train-offline --demos outputs/demos/g1_pick_lift --episodes outputs/run/episodes \\
        --base outputs/base/g1_pick_lift_state.safetensors --steps 2000 --out outputs/offline
    resfit-ros train-offline ... --out outputs/offline --steps 4000 --resume   # continue to 4000

One step = one learner iteration: --utd critic updates, the last of which also updates the actor
(once --critic-warmup-updates critic updates were made). --steps is the TOTAL: with --resume the
run continues from the checkpoint's iteration count, and makes exactly the updates an
uninterrupted run would have made. Agent flags default to the learner node's (LearnerConfig); on
--resume the agent's architecture and hyperparameters come from the checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from resfit_ros.jobs.sim_episodes import fail, nonnegative_int, positive_int

VERB = "train-offline"
# flags named as OfflineSettings fields (dashes for underscores); unset ones keep its defaults
SETTINGS_FLAGS = ("utd", "batch_size", "demo_fraction", "nstep", "gamma", "online_capacity", "demo_capacity",
                  "action_scale", "residual_penalty", "exploration_std", "actor_lr", "critic_lr", "hidden_dim",
                  "num_critic_heads", "critic_warmup_updates", "seed", "action_repeat", "device", "residual_bound")


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # agent and replay flags: unset ones keep OfflineSettings' defaults (the learner node's too;
    # `resfit-ros node learner` + `ros2 param describe` lists them); the CLI stays free of torch
    parser.add_argument("--demos", required=True, help="directory of demonstration episode bags")
    parser.add_argument("--episodes", action="append", default=[],
                        help="directory of online episode bags (repeatable; optional)")
    parser.add_argument("--base", required=True, help="frozen base policy artifact (demo base actions)")
    parser.add_argument("--out", required=True, help="output directory: checkpoints/, tensorboard/")
    parser.add_argument("--steps", type=positive_int, default=1000,
                        help="total training iterations (utd critic updates + 1 actor update each; default 1000)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints")
    parser.add_argument("--use-cameras", action="store_true", help="learn from the camera images (else state only)")
    parser.add_argument("--base-features", action="store_true",
                        help="with --use-cameras: read the frozen base's image-encoder features, not the images")
    parser.add_argument("--utd", type=positive_int, default=argparse.SUPPRESS,
                        help="critic updates per iteration (default: the learner's)")
    parser.add_argument("--batch-size", type=positive_int, default=argparse.SUPPRESS,
                        help="transitions per update (default: the learner's)")
    parser.add_argument("--demo-fraction", type=_float, default=argparse.SUPPRESS,
                        help="demo share of a batch (default: the learner's)")
    parser.add_argument("--nstep", type=positive_int, default=argparse.SUPPRESS,
                        help="n of the n-step return (default: the learner's)")
    parser.add_argument("--gamma", type=_float, default=argparse.SUPPRESS, help="discount (default: the learner's)")
    parser.add_argument("--online-capacity", type=positive_int, default=argparse.SUPPRESS,
                        help="online replay slots (default: the learner's)")
    parser.add_argument("--demo-capacity", type=positive_int, default=argparse.SUPPRESS,
                        help="demo replay slots (default: the learner's)")
    parser.add_argument("--action-scale", type=_float, default=argparse.SUPPRESS,
                        help="residual bound, normalised (default: the learner's)")
    parser.add_argument("--residual-gains", nargs="*", default=[], metavar="PREFIX=GAIN",
                        help="per-joint residual reach: the first entry whose prefix starts a joint's name sets its "
                             "gain (0-10, 0 = no residual), 1 elsewhere; e.g. right_hand_=10 right_=0.25")
    parser.add_argument("--residual-bound", type=_float, nargs="+", default=argparse.SUPPRESS, metavar="RAD",
                        help="the residual node's residual_bound (1 or one per joint): the actor never asks for "
                             "more (default: the learner's)")
    parser.add_argument("--residual-penalty", type=_float, default=argparse.SUPPRESS,
                        help="actor loss weight of sum_j (residual_j / bound_j)^2 (default: the learner's)")
    parser.add_argument("--exploration-std", type=_float, default=argparse.SUPPRESS,
                        help="target smoothing std (default: the learner's)")
    parser.add_argument("--actor-lr", type=_float, default=argparse.SUPPRESS,
                        help="actor learning rate (default: the learner's)")
    parser.add_argument("--critic-lr", type=_float, default=argparse.SUPPRESS,
                        help="critic learning rate (default: the learner's)")
    parser.add_argument("--hidden-dim", type=positive_int, default=argparse.SUPPRESS,
                        help="actor/critic hidden width (default: the learner's)")
    parser.add_argument("--num-critic-heads", type=positive_int, default=argparse.SUPPRESS,
                        help="critic ensemble size (default: the learner's)")
    parser.add_argument("--critic-warmup-updates", type=nonnegative_int, default=argparse.SUPPRESS,
                        help="critic-only updates before the first actor update (default: the learner's)")
    parser.add_argument("--checkpoint-every-updates", type=positive_int, default=2000,
                        help="checkpoint this often, in critic updates (default 2000; always at the end)")
    parser.add_argument("--log-every", type=positive_int, default=10,
                        help="TensorBoard scalars every this many iterations (default 10)")
    parser.add_argument("--seed", type=int, default=argparse.SUPPRESS, help="seed (default: the learner's)")
    parser.add_argument("--action-repeat", type=positive_int, default=argparse.SUPPRESS,
                        help="the actor decides every N control steps (default: the learner's)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=argparse.SUPPRESS,
                        help="where the agent trains (default cpu)")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from resfit_ros.learning.checkpoint import LATEST_FILE
    from resfit_ros.learning.offline import OfflineSettings, SetupError, build_setup, train

    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    # --- argument checks: one message, exit 2, nothing written -----------------------------------
    if not Path(args.demos).is_dir():
        return fail(VERB, f"--demos {args.demos}: not a directory")
    missing = [d for d in args.episodes if not Path(d).is_dir()]
    if missing:
        return fail(VERB, f"--episodes {', '.join(missing)}: not a directory")
    if not Path(args.base).is_file():
        return fail(VERB, f"--base {args.base}: no such file")
    if out.exists() and not out.is_dir():
        return fail(VERB, f"--out {out}: exists and is not a directory")
    has_ckpt = (ckpt_dir / LATEST_FILE).is_file()
    if args.resume and not has_ckpt:
        return fail(VERB, f"--resume: no checkpoint in {ckpt_dir}")
    if not args.resume and ckpt_dir.is_dir() and any(ckpt_dir.iterdir()):
        return fail(VERB, f"--out {out}: {ckpt_dir} already holds checkpoints; pass --resume or choose another --out")
    try:
        given = {name: getattr(args, name) for name in SETTINGS_FLAGS if hasattr(args, name)}
        settings = OfflineSettings(use_cameras=args.use_cameras, base_features=args.base_features,
                                   residual_gains=args.residual_gains, **given)
    except ValueError as exc:   # ConfigError
        return fail(VERB, str(exc))

    import torch

    torch.set_num_threads(args.threads)
    try:
        setup = build_setup(args.demos, args.episodes, args.base, settings,
                            resume_from=ckpt_dir if args.resume else None)
    except SetupError as exc:
        return fail(VERB, str(exc))
    buffer = setup.buffer
    print(f"{VERB}: replay {buffer.num_demo_transitions} demo + {buffer.num_online_transitions} online "
          f"transitions; {setup.agent.state_dim}-D state, cameras {setup.cameras or 'none'}"
          + (f"; resumed from {setup.resumed_from} at iteration {setup.iterations}" if setup.resumed_from else ""))
    for path, why in setup.problems.items():
        print(f"{VERB}: skipped {Path(path).name}: {why}", file=sys.stderr)
    for why in setup.refused_checkpoints:
        print(f"{VERB}: refused checkpoint: {why}", file=sys.stderr)
    if setup.iterations >= args.steps:
        print(f"{VERB}: already at iteration {setup.iterations} >= --steps {args.steps}; nothing to do")
        return 0

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    tb = SummaryWriter(str(out / "tensorboard"))
    bar = tqdm(total=args.steps, initial=setup.iterations, desc=VERB, unit="it", disable=args.no_progress,
               dynamic_ncols=True)

    def on_iteration(iteration: int, stats: dict) -> None:
        bar.update(1)
        if iteration % args.log_every == 0 or iteration == args.steps:
            step = setup.agent.critic_updates
            for key, value in stats.items():
                tb.add_scalar(key, value, step)
            bar.set_postfix(critic=f"{stats.get('losses/critic', float('nan')):.4f}",
                            q=f"{stats.get('values/q_mean', float('nan')):.3f}")

    try:
        stats = train(setup, args.steps, settings.utd, ckpt_dir, args.checkpoint_every_updates, on_iteration)
    except KeyboardInterrupt:
        from resfit_ros.learning.offline import save_offline_checkpoint

        bar.close()
        path = save_offline_checkpoint(setup, ckpt_dir)
        print(f"{VERB}: interrupted at iteration {setup.iterations}; checkpoint {path} (continue with --resume)")
        tb.close()
        return 130
    bar.close()
    tb.close()
    print(f"{VERB}: {setup.iterations} iterations, {setup.agent.critic_updates} critic updates, "
          f"{setup.agent.actor_updates} actor updates; critic loss {stats.get('losses/critic', float('nan')):.4f}; "
          f"checkpoints in {ckpt_dir}")
    return 0
