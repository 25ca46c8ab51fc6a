"""Residual RL gain on the simulated G1 `g1_pick_lift`, in process (no ROS): base vs base + residual.

Builds (or reuses from --work) scripted demos and a deliberately weak BC base policy, then runs the
same loop as the live ROS graph, sequentially in one process:

  per control step   base action from the base's open-loop chunk (queue reset every episode);
                     residual = actor(state, base) + N(0, exploration_std) (normalised units) in
                     training episodes (uniform noise during the env-step warm-up);
                     command = base + residual, residual bounded to +-residual_bound rad, then
                     clipped to the joint limits and the per-step rate limit (max_velocity / 20 Hz);
                     then `utd` critic updates (+1 actor update past the critic warm-up).
  per episode end    the finished episode enters the replay (reward 1 on a success's last step;
                     failure/timeout terminal with reward 0).
  every 100 updates  the learner's actor weights are pushed to the acting ResidualPolicy.

Evaluation: the deterministic combined policy (no noise), on the fixed seeds
episode_seed(PURPOSE_EVAL, --seed, i), through the same command pipeline; the base is evaluated on
the same seeds and pipeline. The learning curve uses the first --curve-episodes of those seeds.

    python bench/residual_gain.py --minutes 20 --eval-episodes 100
    python bench/residual_gain.py --env-steps 6000 --work /tmp/rg_work --seed 0

Default recipe (measured once, --minutes 14, seed 0, shared 2-core CPU, ~25 env steps/s): base 5 demos
/ 2000 BC steps / chunk 20 -> 0.35 on 100 eval episodes; combined after 21k env steps -> 0.51
(+0.16, standard error 0.07). action_scale 0.05, exploration 0.03, actor lr 3e-6, 4 critic heads,
hidden 256, batch 256, UTD 2, 2000 critic-only updates, 30 demos in the replay (50 %), 120-step episodes.

The last four lines are `base_success=<x>`, `combined_success=<y>`, `env_steps=<n>`,
`wall_minutes=<m>`.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

TASK = "g1_pick_lift"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("budget and evaluation")
    g.add_argument("--minutes", type=float, default=20.0, help="wall-clock budget of the training loop")
    g.add_argument("--env-steps", type=int, default=0, help="stop after this many env steps (0 = --minutes only)")
    g.add_argument("--seed", type=int, default=0, help="seed of agent, exploration, eval set and training resets")
    g.add_argument("--eval-episodes", type=int, default=100, help="episodes of the base and final evaluation")
    g.add_argument("--curve-every", type=int, default=3000, help="env steps between curve points (0 = none)")
    g.add_argument("--curve-episodes", type=int, default=50, help="episodes per curve point (first N eval seeds)")
    g.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on the shared 2-core box)")
    g.add_argument("--work", default="/tmp/residual_gain_work", help="demos + base are built here or reused")
    g.add_argument("--json", default="", help="also write the results here")
    g.add_argument("--save", default="", help="also save the final learner checkpoint here "
                                              "(for `resfit-ros eval --residual`, `bench critic-slope`)")

    g = p.add_argument_group("demos and base policy")
    g.add_argument("--demo-episodes", type=int, default=30, help="scripted demos recorded (demo seed 0)")
    g.add_argument("--base-demos", type=int, default=5, help="demos the BC base is trained on (first N)")
    g.add_argument("--buffer-demos", type=int, default=30, help="demos put in the replay (first N)")
    g.add_argument("--bc-steps", type=int, default=2000, help="BC gradient steps")
    g.add_argument("--chunk", type=int, default=20, help="BC chunk length k (executed open loop)")
    g.add_argument("--bc-seed", type=int, default=0, help="BC training seed")
    g.add_argument("--max-steps", type=int, default=120,
                   help="episode limit in control steps (the expert needs 74; task default 200)")

    g = p.add_argument_group("residual agent")
    g.add_argument("--action-scale", type=float, default=0.05)
    g.add_argument("--exploration-std", type=float, default=0.03)
    g.add_argument("--actor-lr", type=float, default=3e-6)
    g.add_argument("--critic-lr", type=float, default=1e-4)
    g.add_argument("--hidden", type=int, default=256, help="critic and actor hidden width (2 layers)")
    g.add_argument("--heads", type=int, default=4, help="critic heads")
    g.add_argument("--batch", type=int, default=256)
    g.add_argument("--utd", type=int, default=2, help="critic updates per env step")
    g.add_argument("--critic-warmup", type=int, default=2000, help="critic-only updates before the actor learns")
    g.add_argument("--warmup-env-steps", type=int, default=1000,
                   help="env steps acting with a uniform random residual before the actor acts")
    g.add_argument("--warmup-noise", type=float, default=0.03, help="uniform residual noise of that warm-up")
    g.add_argument("--nstep", type=int, default=3)
    g.add_argument("--gamma", type=float, default=0.99)
    g.add_argument("--demo-fraction", type=float, default=0.5)
    g.add_argument("--push-every", type=int, default=100, help="critic updates between weight pushes")
    g.add_argument("--residual-bound", type=float, default=0.2, help="safety bound on |residual| per joint, rad")
    g.add_argument("--residual-penalty", type=float, default=0.0, help="actor loss weight of |residual / action_scale|^2")
    g.add_argument("--hold-steps", type=int, default=1, help="each exploration draw is held this many steps")
    g.add_argument("--hand-gain", type=float, default=1.0,
                   help="residual gain of the hand joints: their residual bound is action_scale * this")
    g.add_argument("--other-gain", type=float, default=1.0,
                   help="residual gain of every other joint (0: no residual there)")
    return p


# ----------------------------------------------------------------------------------- artifacts
def _bags_readable(demos: Path) -> bool:
    from resfit_ros.bags import read_episode
    from resfit_ros.bags.reader import is_episode_dir

    try:
        for path in sorted(p for p in demos.iterdir() if p.is_dir() and is_episode_dir(p))[:1]:
            read_episode(path, images=False)
        return True
    except Exception as exc:  # BagError (stale message definitions), OSError
        print(f"demos in {demos} unreadable ({type(exc).__name__}); recording them again", flush=True)
        return False


def ensure_artifacts(args, work: Path) -> tuple[Path, Path]:
    """Demos and base under `work`, built with the CLI verbs when missing."""
    from resfit_ros.cli import main as cli

    work.mkdir(parents=True, exist_ok=True)
    demos = work / f"demos{args.demo_episodes}"
    if demos.is_dir() and not _bags_readable(demos):
        # bags recorded before a message-definition change cannot be read: record them again
        import shutil
        shutil.rmtree(demos)
    if not demos.is_dir() or len([d for d in demos.iterdir() if d.is_dir()]) < args.demo_episodes:
        rc = cli(["demos", "--task", TASK, "--episodes", str(args.demo_episodes), "--out", str(demos),
                  "--no-images", "--seed", "0", "--no-progress"])
        if rc != 0:
            raise SystemExit(f"demo recording failed ({rc})")
    base = work / f"base_d{args.base_demos}_s{args.bc_steps}_k{args.chunk}_seed{args.bc_seed}.safetensors"
    if not base.is_file():
        rc = cli(["train-bc", "--demos", str(demos), "--out", str(base), "--state-only",
                  "--steps", str(args.bc_steps), "--num-demos", str(args.base_demos), "--chunk", str(args.chunk),
                  "--seed", str(args.bc_seed), "--no-progress"])
        if rc != 0:
            raise SystemExit(f"BC training failed ({rc})")
    return demos, base


def demo_episodes(demos: Path, base, count: int, work: Path, base_path: Path):
    from resfit_ros.bags import read_episode
    from resfit_ros.bags.reader import is_episode_dir
    from resfit_ros.learning.from_bags import demo_base_actions, episode_arrays, file_digest

    digest = file_digest(base_path)
    out = []
    for path in sorted(p for p in demos.iterdir() if p.is_dir() and is_episode_dir(p)):
        ep = read_episode(path, images=False)
        if not ep.success:
            continue
        arrays = episode_arrays(ep, demo_base_actions(ep, base, digest, work / ".base_actions"))
        out.append(arrays)
        if len(out) == count:
            break
    return out


# ------------------------------------------------------------------------------------- control
class Pipeline:
    """The command layer: residual bound, joint limits, per-step rate limit."""

    def __init__(self, env, control_hz: float, residual_bound: float):
        self.lower, self.upper = env.ctrl_low.copy(), env.ctrl_high.copy()
        self.max_step = env.robot.max_velocity / control_hz
        self.bound = residual_bound
        self.prev = None

    def reset(self, obs) -> None:
        self.prev = np.clip(np.asarray(obs.position, dtype=np.float64), self.lower, self.upper)

    def __call__(self, base_action: np.ndarray, residual: np.ndarray | None) -> np.ndarray:
        cmd = base_action if residual is None else base_action + np.clip(residual, -self.bound, self.bound)
        cmd = np.clip(cmd, self.lower, self.upper)
        cmd = np.clip(cmd, self.prev - self.max_step, self.prev + self.max_step)
        self.prev = cmd
        return cmd


def run_episode(env, base, pipe, reset_seed, residual_fn, record: bool):
    """residual_fn(state, base_action) -> residual (joint units) or None (base only)."""
    obs = env.reset(seed=reset_seed)
    base.reset()
    pipe.reset(obs)
    states, bases, cmds = [], [], []
    success = False
    for _ in range(env.max_steps):
        state = obs.state_vector()
        b = base.select_action(obs)
        cmd = pipe(b, residual_fn(state, b))
        if record:
            states.append(state)
            bases.append(b)
            cmds.append(cmd)
        obs, success = env.step(cmd)
        if success:
            break
    if record:
        states.append(obs.state_vector())
        bases.append(base.select_action(obs))   # the next base action (used only if bootstrapped)
    return success, len(cmds) if record else None, (np.array(states), np.array(bases), np.array(cmds))


def evaluate(env, base, pipe, seeds, policy=None) -> float:
    fn = (lambda s, b: None) if policy is None else (lambda s, b: policy.act(s, b))
    wins = sum(run_episode(env, base, pipe, s, fn, record=False)[0] for s in seeds)
    return wins / len(seeds)


# ---------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from resfit_ros.jobs.sim_episodes import PURPOSE_EVAL, episode_seed
    from resfit_ros.learning import (AgentConfig, Normaliser, ReplayBuffer, ReplayConfig, ResidualAgent,
                                     ResidualPolicy, train_iteration)
    from resfit_ros.policy.base import load_base_policy
    from resfit_ros.sim import make_env

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    work = Path(args.work)
    demos_dir, base_path = ensure_artifacts(args, work)
    base = load_base_policy(base_path)
    env = make_env(TASK, render=False, cameras=(), control_hz=20.0, seed=args.seed, max_steps=args.max_steps)
    pipe = Pipeline(env, 20.0, args.residual_bound)
    eval_seeds = [episode_seed(PURPOSE_EVAL, args.seed, i) for i in range(args.eval_episodes)]
    curve_seeds = eval_seeds[: min(args.curve_episodes, len(eval_seeds))]

    demos = demo_episodes(demos_dir, base, args.buffer_demos, work, base_path)
    S, A = demos[0].states.shape[1], demos[0].actions.shape[1]
    norm = Normaliser.from_demonstrations(np.concatenate([d.states for d in demos]),
                                          np.concatenate([d.actions for d in demos] + [d.base_actions for d in demos]),
                                          args.action_scale,
                                          residual_gain=[args.hand_gain if "_hand_" in n else args.other_gain
                                                         for n in env.joint_names])
    cfg = AgentConfig(action_scale=args.action_scale, exploration_std=args.exploration_std,
                      residual_penalty=args.residual_penalty,
                      actor_hidden_dims=(args.hidden, args.hidden), critic_hidden_dims=(args.hidden, args.hidden),
                      num_critic_heads=args.heads, num_target_heads=min(2, args.heads), critic_lr=args.critic_lr,
                      actor_lr=args.actor_lr, critic_warmup_updates=args.critic_warmup, batch_size=args.batch)
    rcfg = ReplayConfig(online_capacity=200_000, demo_capacity=max(1000, sum(len(d.states) for d in demos) + 10),
                        demo_fraction=args.demo_fraction, nstep=args.nstep, gamma=args.gamma)
    buffer = ReplayBuffer(rcfg, S, A, seed=args.seed)
    for d in demos:
        buffer.add_episode(d.states, d.base_actions, d.actions, d.success, demo=True)
    agent = ResidualAgent(cfg, S, A, [], 84, 0, norm, seed=args.seed)
    policy = ResidualPolicy(cfg, S, A, [], 84, 0, weights=agent.get_weights())
    rng = np.random.default_rng(args.seed + 12345)
    from resfit_ros.learning.exploration import HeldNoise
    held = HeldNoise(args.hold_steps)

    print(f"setup: base={base_path.name} base_demos={args.base_demos} buffer_demos={len(demos)} "
          f"({buffer.num_demo_transitions} transitions) max_steps={args.max_steps}", flush=True)
    print("settings: " + json.dumps({k: v for k, v in vars(args).items()}), flush=True)

    t0 = time.perf_counter()
    base_success = evaluate(env, base, pipe, eval_seeds)
    print(f"base: success {base_success:.3f} on {len(eval_seeds)} episodes ({time.perf_counter() - t0:.0f} s)", flush=True)

    curve = [(0, 0.0, evaluate(env, base, pipe, curve_seeds, policy))] if args.curve_every > 0 else []
    if curve:
        print(f"curve env_steps=0 combined={curve[-1][2]:.3f}", flush=True)
    budget_s = args.minutes * 60.0
    t_train = time.perf_counter()
    eval_time = 0.0
    env_steps = episodes = 0
    last_push = 0
    train_results: list[bool] = []
    next_curve = args.curve_every
    stats: dict = {}
    train_seed_stream = np.random.SeedSequence([args.seed, 777])
    while True:
        elapsed = time.perf_counter() - t_train
        if elapsed >= budget_s or (args.env_steps and env_steps >= args.env_steps):
            break
        warm = env_steps < args.warmup_env_steps

        held.reset()

        def residual_fn(state, b):
            nonlocal env_steps, stats, last_push
            if warm:
                res = policy.random_residual(
                    b, rng, args.warmup_noise, noise=held.next(lambda: rng.uniform(-args.warmup_noise, args.warmup_noise, A)))
            else:
                res = policy.act(state, b, explore=True, rng=rng,
                                 noise=held.next(lambda: rng.normal(0.0, args.exploration_std, A)))
            # the learner trains while the robot acts: utd critic updates per env step
            stats = train_iteration(agent, buffer, args.utd, update_actor=True)
            if agent.critic_updates - last_push >= args.push_every:
                policy.load_weights(agent.get_weights())
                last_push = agent.critic_updates
            env_steps += 1
            return res

        reset_seed = int(train_seed_stream.spawn(1)[0].generate_state(1)[0])
        success, T, (st, ba, cm) = run_episode(env, base, pipe, reset_seed, residual_fn, record=True)
        buffer.add_episode(st, ba, cm, success, demo=False)
        episodes += 1
        train_results.append(bool(success))
        if episodes % 10 == 0:
            recent = np.mean(train_results[-20:])
            print(f"ep {episodes} env_steps {env_steps} train_success(last20) {recent:.2f} "
                  f"critic_updates {agent.critic_updates} actor_updates {agent.actor_updates} "
                  f"q {stats.get('values/q_mean', float('nan')):.3f} "
                  f"critic_loss {stats.get('losses/critic', float('nan')):.4f} "
                  f"|res| {stats.get('values/residual_abs_mean', float('nan')):.4f} "
                  f"t {(time.perf_counter() - t_train) / 60:.1f} min", flush=True)
        if args.curve_every > 0 and env_steps >= next_curve:
            t_eval = time.perf_counter()
            policy.load_weights(agent.get_weights())   # evaluate the learner's current actor
            c = evaluate(env, base, pipe, curve_seeds, policy)
            eval_time += time.perf_counter() - t_eval
            t_train += time.perf_counter() - t_eval     # evaluation time does not count against the budget
            curve.append((env_steps, (time.perf_counter() - t_start) / 60, c))
            print(f"curve env_steps={env_steps} combined={c:.3f} (first {len(curve_seeds)} eval seeds)", flush=True)
            next_curve += args.curve_every

    train_minutes = (time.perf_counter() - t_train) / 60
    policy.load_weights(agent.get_weights())
    if args.save:
        print(f"checkpoint: {agent.save_checkpoint(args.save)}", flush=True)
    t0 = time.perf_counter()
    combined_success = evaluate(env, base, pipe, eval_seeds, policy)
    print(f"final evaluation: {len(eval_seeds)} episodes in {time.perf_counter() - t0:.0f} s", flush=True)
    wall = (time.perf_counter() - t_start) / 60
    n = len(eval_seeds)
    se = math.sqrt(base_success * (1 - base_success) / n + combined_success * (1 - combined_success) / n)
    rate = env_steps / max(train_minutes * 60, 1e-9)
    print("curve (env_steps, combined success on first %d eval seeds):" % len(curve_seeds))
    for steps, _, c in curve:
        print(f"  {steps:7d}  {c:.3f}")
    print(f"training: {episodes} episodes, {env_steps} env steps in {train_minutes:.1f} min "
          f"({rate:.1f} env steps/s in process; at 10 env steps/s this is {env_steps / 600:.1f} min), "
          f"train success overall {np.mean(train_results) if train_results else float('nan'):.2f}")
    print(f"gain={combined_success - base_success:+.3f} (standard error of the difference {se:.3f})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "base_success": base_success,
                                               "combined_success": combined_success, "env_steps": env_steps,
                                               "episodes": episodes, "curve": curve, "wall_minutes": wall,
                                               "train_minutes": train_minutes, "train_results": train_results}))
    print(f"base_success={base_success:.3f}")
    print(f"combined_success={combined_success:.3f}")
    print(f"env_steps={env_steps}")
    print(f"wall_minutes={wall:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
