"""What a learner's critic says about closing the fingers, and how far its actor follows.

The main job's base fails mostly on grasps that slip, and a hand-written residual that closes the
right fingers harder fixes many of them (bench exploration-cost). This bench loads a learner
checkpoint (critic + actor), runs base + residual on the main job's evaluation scenes through the
residual node's command layer, and at every step measures, along the direction that closes each
right-hand finger (toward the expert's closed hand), in normalised action units:

  dQ/da       the critic's slope (mean over heads) at the actor's own action
  penalty     the slope of the actor loss's residual penalty there (AgentConfig.residual_penalty):
              the actor settles where the two are equal
  r / bound   the actor's residual as a fraction of that joint's bound
  Q           the critic's value there (mean over heads; every return lies in [0, 1])

separately for the steps before the base starts closing the hand and the steps after (grasping).

    resfit-ros bench critic-slope CHECKPOINT [--episodes 10]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

DATA = Path("outputs/main_job_data")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="resfit-ros bench critic-slope", description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="a learner checkpoint directory (e.g. outputs/main_job/checkpoints)")
    p.add_argument("--base", default=str(DATA / "base_d5_s2000.safetensors"), help="the frozen base")
    p.add_argument("--episodes", type=int, default=10, help="evaluation scenes (default 10)")
    p.add_argument("--max-steps", type=int, default=120, help="episode step limit (the main job's: 120)")
    p.add_argument("--residual-bound", type=float, default=0.2, help="the residual node's bound, rad")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.episodes < 1 or args.max_steps < 1:
        parser.error("--episodes and --max-steps must be >= 1")
    if not Path(args.base).is_file():
        parser.error(f"--base {args.base}: no such file (run `resfit-ros main-job` once, or pass --base)")
    import torch

    from resfit_ros.core.command import CommandLimits
    from resfit_ros.core.control_step import ControlStep
    from resfit_ros.jobs.sim_episodes import PURPOSE_EVAL, episode_seed, run_episode
    from resfit_ros.learning import load_residual_policy
    from resfit_ros.learning.agent import ResidualAgent
    from resfit_ros.policy import load_base_policy
    from resfit_ros.sim import make_env
    from resfit_ros.sim.experts import CLOSED_HAND

    torch.set_num_threads(1)
    from resfit_ros.learning.checkpoint import CheckpointError

    base = load_base_policy(args.base)
    try:
        agent = ResidualAgent.from_checkpoint(args.checkpoint)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if agent.camera_names:
        print("error: this bench reads state-only checkpoints (the main job's)", flush=True)
        return 2
    residual = load_residual_policy(args.checkpoint, base)
    env = make_env("g1_pick_lift", cameras=(), render=False, control_hz=20.0, seed=1000)
    names = list(env.joint_names)
    fingers = [names.index(f"right_hand_{j}_joint") for j, v in CLOSED_HAND.items() if v != 0.0]
    closed = np.array([CLOSED_HAND[names[i][len("right_hand_"):-len("_joint")]] for i in fingers])
    index_0 = names.index("right_hand_index_0_joint")
    bounds = agent._residual_scale.numpy()[fingers]                          # (F,) normalised
    penalty = agent.config.residual_penalty
    control = ControlStep(CommandLimits.from_robot(env.robot, 20.0, args.residual_bound))
    rows: list[tuple[bool, float, float, float, float]] = []
    episode_start = [True]

    def act(obs):
        if episode_start[0]:          # run_episode resets before on_reset: the first observation is here
            control.start_episode(obs.position)
            episode_start[0] = False
        base_action = base.select_action(obs)
        state = agent._normalise_state(torch.as_tensor(obs.state_vector(), dtype=torch.float32)[None])   # (1, S)
        base_n = agent._normalise_action(torch.as_tensor(base_action, dtype=torch.float32)[None]).clamp(-1, 1)
        with torch.no_grad():
            r = agent.actor(torch.cat([state, base_n], dim=1))                  # (1, A) normalised
        action = (base_n + r).clamp(-1, 1).requires_grad_(True)
        q = agent.critic(agent._critic_input(torch.zeros(1, 0), state, base_n, action)).mean()   # mean over heads
        (slope,) = torch.autograd.grad(q, action)                               # (1, A)
        close = np.sign(closed - base_action[fingers])                          # (F,) +1/-1: closes the finger
        r_f = r[0].numpy()[fingers]
        rows.append((bool(base_action[index_0] > 0.3),                          # the base is closing the hand
                     float(np.mean(slope[0].numpy()[fingers] * close)),
                     float(np.mean(2 * penalty * r_f / bounds ** 2 * close)),
                     float(np.mean(r_f / bounds * close)), float(q.detach())))
        result = control.step(residual, obs.state_vector(), base_action, obs.position)
        if result.error is not None:
            raise RuntimeError(f"residual not computed: {result.error}")
        return result.command, base_action, result.residual

    def on_reset():
        base.reset()
        episode_start[0] = True

    successes = [run_episode(env, act, episode_seed(PURPOSE_EVAL, 1000, i), on_reset,
                             max_steps=args.max_steps).success for i in range(args.episodes)]
    env.close()
    rows_a = np.array(rows)
    print(f"checkpoint {args.checkpoint}: {args.episodes} scenes, success {np.mean(successes):.2f}; "
          f"residual_penalty {penalty:g}; finger bounds {bounds.min():.3g}-{bounds.max():.3g} (normalised)")
    for flag, label in ((0.0, "before grasping"), (1.0, "grasping")):
        m = rows_a[:, 0] == flag
        if not m.any():
            continue
        s = rows_a[m]
        print(f"{label:16s} {int(m.sum()):5d} steps: dQ/da toward closing {s[:, 1].mean():+.5f} "
              f"(positive at {np.mean(s[:, 1] > 0):.0%} of steps), penalty slope {s[:, 2].mean():+.5f}, "
              f"r / bound toward closing {s[:, 3].mean():+.3f}, Q {s[:, 4].mean():+.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
