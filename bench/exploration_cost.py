"""What exploration noise alone costs the main job's base policy (and what a fixed 'squeeze' gains).

The residual learner explores with Gaussian noise on the residual, in normalised action units
(per joint: noise * half of the demos' widened range, rad). This bench runs the frozen base of the
main job (outputs/main_job_data, built by `resfit-ros main-job` if missing) on the same evaluation
scenes, through the same command layer as the residual node (residual bound, joint limits, rate
limit), with noise on one joint group at a time:

  none          the base alone
  all / arms / hands / waist   per-step Gaussian noise of std --std (normalised) on those joints
  squeeze       no noise; the right fingers pushed toward the expert's closed hand by up to
                --squeeze rad once the base starts closing them (a hand-written residual: what a
                learned one could gain by holding harder)
  expert        no noise; the residual is the scripted expert's correction at the base's own
                states (expert command - base action), clipped to the residual bounds of the
                recipe in config/sim.yaml (x --expert-scale), on all joints / the right arm / the
                right hand: what a residual within those bounds could reach, and where

--cameras: the main job's image base (outputs/main_job_data_cameras; the base sees the head camera and
the joint states, the expert the simulator's state) and the recipe with config/sim_cameras.yaml over it.
One line per case: `case=<name> std=<s> success=<rate> episodes=<n> outcomes=<0/1 per scene>`.

    resfit-ros bench exploration-cost [--episodes 50] [--std 0.03 0.01 0.003] [--cameras]
"""
from __future__ import annotations

import argparse
from types import SimpleNamespace
from pathlib import Path

import numpy as np

GROUPS = {"all": lambda n: True, "arms": lambda n: "_hand_" not in n and "waist" not in n,
          "hands": lambda n: "_hand_" in n, "waist": lambda n: "waist" in n}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--episodes", type=int, default=50, help="evaluation scenes per case (default 50)")
    p.add_argument("--std", type=float, nargs="*", default=[0.03, 0.01, 0.003],
                   help="noise std values to try, normalised units (default 0.03 0.01 0.003)")
    p.add_argument("--groups", nargs="*", default=["all", "arms", "hands"], choices=sorted(GROUPS))
    p.add_argument("--squeeze", type=float, nargs="*", default=[0.06, 0.2],
                   help="squeeze bounds to try, rad (default 0.06 0.2)")
    p.add_argument("--expert-scale", type=float, nargs="*", default=[1.0],
                   help="multiples of the recipe's residual bounds for the expert cases (default 1)")
    p.add_argument("--expert-groups", nargs="*", default=["all", "right-arm", "right-hand"],
                   choices=["all", "right-arm", "right-hand"], help="joints the expert cases correct")
    p.add_argument("--max-steps", type=int, default=120, help="episode step limit (the main job's evaluation: 120)")
    p.add_argument("--cameras", action="store_true", help="the main job's image base (default: its state base)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from resfit_ros.core.command import CommandLimits
    from resfit_ros.core.control_step import ControlStep
    from resfit_ros.jobs.sim_episodes import PURPOSE_EVAL, episode_seed, run_episode
    from resfit_ros.learning import Normaliser
    from resfit_ros.learning.from_bags import demo_base_actions, episode_arrays, file_digest
    from resfit_ros.policy import load_base_policy
    from resfit_ros.core.observation import without_task_state
    from resfit_ros.jobs.in_process import load_recipe
    from resfit_ros.jobs.main_job import data_dir, recipe_overlays
    from resfit_ros.learning.normaliser import residual_bounds
    from resfit_ros.learning.offline import OfflineSettings, demo_normaliser
    from resfit_ros.sim import make_env, make_expert
    from resfit_ros.sim.experts import CLOSED_HAND

    torch.set_num_threads(1)
    data = data_dir(args.cameras)
    bases = sorted(data.glob("base_d*_s*.safetensors"))
    demos_dir = data / "demos30"
    if not bases or not demos_dir.is_dir():
        print(f"no base/demos in {data}: run `resfit-ros main-job{'' if args.cameras else ' --state'}` once first",
              flush=True)
        return 2
    base_path = bases[0]
    base = load_base_policy(base_path)
    cameras = tuple(base.camera_names) if args.cameras else ()
    env = make_env("g1_pick_lift", cameras=cameras, render=bool(cameras), control_hz=20.0, seed=0,
                   max_steps=args.max_steps, **(dict(image_size=base.image_size or 84) if cameras else {}))
    names = list(env.joint_names)

    # the learner's normaliser: demo commands and the base's actions on the demos
    from resfit_ros.bags import load_episodes

    digest = file_digest(base_path)
    arrays = [episode_arrays(ep, demo_base_actions(ep, base, digest, demos_dir / ".base_actions"))
              for ep in load_episodes(demos_dir, success_only=True, images=bool(cameras))]
    normaliser = Normaliser.from_demonstrations(np.concatenate([a.states for a in arrays]),
                                                np.concatenate([a.actions for a in arrays] + [a.base_actions for a in arrays]),
                                                0.1)
    half = normaliser.action_half_range
    # the recipe's per-joint residual bounds, joint units (its gains, its action_scale)
    settings = OfflineSettings.from_object(load_recipe(overlays=recipe_overlays(args.cameras, "g1_pick_lift")).learner)
    recipe_normaliser = demo_normaliser(np.concatenate([a.states for a in arrays]),
                                        np.concatenate([a.actions for a in arrays]),
                                        np.concatenate([a.base_actions for a in arrays]), settings, names)
    recipe_bounds = residual_bounds(settings.action_scale, recipe_normaliser) * recipe_normaliser.action_half_range
    expert = make_expert("g1_pick_lift", env)
    limits = CommandLimits.from_robot(env.robot, 20.0, 0.2)
    fingers = {names.index(f"right_hand_{j}_joint"): v for j, v in CLOSED_HAND.items() if v != 0.0}
    index_0 = names.index("right_hand_index_0_joint")
    seeds = [episode_seed(PURPOSE_EVAL, 0, i) for i in range(args.episodes)]

    class Scripted:
        """A hand-written residual (joint units) in the policy interface ControlStep calls."""

        config = SimpleNamespace(action_repeat=1)   # ControlStep reads it: a decision every step

        def __init__(self, residual_of):
            self.residual_of = residual_of

        def act(self, state, base_action, images=None, features=None, explore=False, rng=None, noise=None):
            return self.residual_of(base_action, rng)

    def run_case(residual_of) -> list[int]:
        # seed 0 per case: every case draws its noise from the same stream (ControlStep's rng)
        control, policy = ControlStep(limits, seed=0), Scripted(residual_of)
        episode_start = [True]

        def act(obs):
            if episode_start[0]:      # run_episode resets before on_reset: the first observation is here
                control.start_episode(obs.position)
                episode_start[0] = False
            b = base.select_action(without_task_state(obs) if cameras else obs, None)
            result = control.step(policy, obs.state_vector(), b, obs.position)
            if result.error is not None:
                raise RuntimeError(f"residual not computed: {result.error}")
            return result.command, b, result.residual

        def on_reset():
            base.reset()
            expert.reset()
            episode_start[0] = True

        return [int(run_episode(env, act, s, on_reset).success) for s in seeds]

    def report(case: str, value: float, outcomes: list[int]) -> None:
        print(f"case={case} std={value:g} success={np.mean(outcomes):.2f} episodes={len(outcomes)} "
              f"outcomes={''.join(map(str, outcomes))}", flush=True)

    report("none", 0.0, run_case(lambda b, rng: np.zeros_like(b)))
    for group in args.groups:
        mask = np.array([GROUPS[group](n) for n in names], dtype=np.float64)
        for std in args.std:
            report(group, std, run_case(lambda b, rng, m=mask, s=std: rng.normal(0.0, s, len(b)) * m * half))
    for bound in args.squeeze:
        def squeeze(b, rng, bound=bound):
            r = np.zeros_like(b)
            if b[index_0] > 0.3:      # the base has started closing the hand
                for i, closed in fingers.items():
                    r[i] = np.clip(closed - b[i], -bound, bound)
            return r
        report("squeeze", bound, run_case(squeeze))
    expert_groups = {"all": np.ones(len(names)),
                     "right-arm": np.array([float("right_" in n and "_hand_" not in n) for n in names]),
                     "right-hand": np.array([float("right_hand_" in n) for n in names])}
    for scale in args.expert_scale:
        for group in args.expert_groups:
            mask = expert_groups[group]
            def toward_expert(b, rng, mask=mask, scale=scale):
                bound = scale * recipe_bounds
                return np.clip(expert.act(None) - b, -bound, bound) * mask
            report(f"expert-{group}", scale, run_case(toward_expert))
    env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
