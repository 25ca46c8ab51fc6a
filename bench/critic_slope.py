"""What a learner's critic says about the scripted expert's correction, and how far its actor follows.

The expert that made the demos, run beside the base on the base's own states, is a residual that
works: its correction clipped to the recipe's bounds lifts the main job's base from ~0.25 to ~0.68
(bench exploration-cost, case expert). This bench loads a learner checkpoint (critic + actor),
runs base + residual on the main job's evaluation scenes through the residual node's command layer,
and at every step compares, per joint group (right arm, right hand, the rest; normalised units),
the expert's bounded correction e = clip(expert - base, +-bound) with

  cos(dQ/da, e)   does the critic's slope (mean over heads, at the actor's action) point toward it
  cos(r, e)       does the actor's residual r point toward it
  |r| / |e|       how far the actor goes, against how far the expert goes
  dQ/da . e       the critic's first-order value of the correction; penalty . e, the same of the
                  actor loss's residual penalty (AgentConfig.residual_penalty): the actor settles
                  where the two balance
  Q               the critic's value (mean over heads; every return lies in [0, 1])

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
    from resfit_ros.sim import make_env, make_expert

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
    expert = make_expert("g1_pick_lift", env)
    names = list(env.joint_names)
    groups = {"right arm": np.array(["right_" in n and "_hand_" not in n for n in names]),
              "right hand": np.array(["right_hand_" in n for n in names])}
    groups["the rest"] = ~(groups["right arm"] | groups["right hand"])
    index_0 = names.index("right_hand_index_0_joint")
    bounds = agent._residual_scale.numpy()                                   # (A,) normalised
    penalty = agent.config.residual_penalty
    control = ControlStep(CommandLimits.from_robot(env.robot, 20.0, args.residual_bound))
    rows: list[dict] = []
    episode_start = [True]

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))

    def act(obs):
        if episode_start[0]:          # run_episode resets before on_reset: the first observation is here
            control.start_episode(obs.position)
            expert.reset()
            episode_start[0] = False
        base_action = base.select_action(obs)
        state = agent._normalise_state(torch.as_tensor(obs.state_vector(), dtype=torch.float32)[None])   # (1, S)
        base_n = agent._normalise_action(torch.as_tensor(base_action, dtype=torch.float32)[None]).clamp(-1, 1)
        with torch.no_grad():
            r = agent.actor(torch.cat([state, base_n], dim=1))                  # (1, A) normalised
        action = (base_n + r).clamp(-1, 1).requires_grad_(True)
        q = agent.critic(agent._critic_input(torch.zeros(1, 0), state, base_n, action)).mean()   # mean over heads
        (slope,) = torch.autograd.grad(q, action)                               # (1, A)
        expert_n = agent._normalise_action(torch.as_tensor(expert.act(obs), dtype=torch.float32)[None])
        e = np.clip((expert_n - base_n)[0].numpy(), -bounds, bounds)            # (A,) the bounded correction
        g, r_ = slope[0].numpy(), r[0].numpy()
        pen = 2 * penalty * np.divide(r_, bounds ** 2, out=np.zeros_like(r_), where=bounds > 0)
        row = {"grasping": bool(base_action[index_0] > 0.3), "q": float(q.detach())}
        for label, m in groups.items():
            row[label] = (cos(g[m], e[m]), cos(r_[m], e[m]), float(np.linalg.norm(r_[m])),
                          float(np.linalg.norm(e[m])), float(g[m] @ e[m]), float(-pen[m] @ e[m]))
        rows.append(row)
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
    print(f"checkpoint {args.checkpoint}: {args.episodes} scenes, success {np.mean(successes):.2f}; "
          f"residual_penalty {penalty:g}")
    for grasping, label in ((False, "before grasping"), (True, "grasping")):
        phase = [row for row in rows if row["grasping"] == grasping]
        if not phase:
            continue
        print(f"{label} ({len(phase)} steps), Q {np.mean([row['q'] for row in phase]):+.3f}:")
        for group in groups:
            v = np.array([row[group] for row in phase])                         # (T, 6)
            print(f"  {group:10s} cos(dQ/da, e) {v[:, 0].mean():+.2f} (positive at {np.mean(v[:, 0] > 0):.0%}), "
                  f"cos(r, e) {v[:, 1].mean():+.2f}, |r| / |e| {v[:, 2].mean() / max(v[:, 3].mean(), 1e-12):.2f}, "
                  f"dQ/da.e {v[:, 4].mean():+.5f}, penalty.e {v[:, 5].mean():+.5f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
