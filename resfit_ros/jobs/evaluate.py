"""`resfit-ros eval`: success rate of the base policy (optionally + a residual) or the scripted
expert in simulation. The last line printed is exactly `success_rate=<0..1> episodes=<N>`, the one before it
`outcomes=<0/1 per episode, in seed order>`.

    resfit-ros eval --task g1_pick_lift --base data/base/pick_lift.safetensors --episodes 50 --seed 0
    resfit-ros eval --task g1_pick_lift --policy scripted --episodes 20
    resfit-ros eval --task g1_pick_lift --base img.safetensors --residual CKPT --no-task-state   # camera-trained

Episode i starts from reset seed episode_seed(PURPOSE_EVAL, --seed, i): a fixed evaluation set
per --seed, disjoint from the demos' stream. The base's chunks run open-loop through the
residual node's ChunkScheduler (base.select_action), reset at every episode start. An episode succeeds at the sim's first success
signal; otherwise it ends after the task's step limit.

Residual hook: `combined_action(base, residual, obs, control)` below gathers what the
residual sees (state, base action, images, base features) and makes the step through the same
ControlStep as the live residual node (core/control_step.py: residual, exploration, the node's
safety layer), so a success rate here means the same as one from the graph. The residual is a
learning.ResidualPolicy (what ControlStep calls: `act(state, base_action, images, features,
explore, rng=, noise=) -> residual (dof,)` in joint units, and its `config`). `--residual FILE`
loads one via `resfit_ros.learning.load_residual_policy(path, base)`.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from resfit_ros.core.command import DEFAULT_RESIDUAL_BOUND
from resfit_ros.jobs.sim_episodes import (
    PURPOSE_EVAL, ArgumentError, check_task, episode_seed, fail, positive_int)

if TYPE_CHECKING:
    from resfit_ros.core.control_step import ControlStep   # imports torch: only inside run()

VERB = "eval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="simulated task (g1_pick_lift, g1_handover)")
    parser.add_argument("--policy", choices=("base", "scripted"), default="base",
                        help="base: the --base policy (+ --residual); scripted: the task's expert")
    parser.add_argument("--base", default=None, help="frozen base policy (.safetensors BC artifact or TorchScript .pt)")
    parser.add_argument("--residual", default=None, help="residual policy checkpoint (from the learner)")
    parser.add_argument("--episodes", type=positive_int, default=50, help="evaluation episodes (default 50)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the evaluation set (default 0)")
    parser.add_argument("--execute-steps", type=positive_int, default=None,
                        help="actions executed per chunk before re-planning (default: the whole chunk)")
    parser.add_argument("--control-hz", type=float, default=20.0, help="control rate (default 20)")
    parser.add_argument("--max-steps", type=positive_int, default=None,
                        help="episode step limit (default: the task's, 200 for the lift)")
    parser.add_argument("--residual-bound", type=float, default=DEFAULT_RESIDUAL_BOUND,
                        help=f"|residual| limit per joint, rad, as in the residual node (default {DEFAULT_RESIDUAL_BOUND})")
    parser.add_argument("--no-task-state", action="store_true",
                        help="base and residual observe joint states and images only, without the simulator's "
                             "task state (object pose), as the robot graphs and camera-trained residuals do")
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def load_residual(path: str | Path, base):
    """The residual policy stored at `path`, through the learning core's loader."""
    try:
        from resfit_ros.learning import load_residual_policy  # type: ignore[attr-defined]
    except ImportError:
        raise ArgumentError("--residual needs resfit_ros.learning.load_residual_policy(path, base), "
                            "which this installation does not have yet") from None
    try:
        return load_residual_policy(path, base)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ArgumentError(f"--residual {path}: {exc}") from None


def residual_inputs(base, residual, obs):
    """(images, features) the residual reads at `obs`: the images in the base's camera order and,
    when the residual wants features, the frozen base encoder's features of them; None for what
    it does not get (no residual, or a base without cameras)."""
    if residual is None or not base.camera_names:
        return None, None
    images = obs.image_stack(base.camera_names)
    features = base.observation_features(obs) if getattr(residual, "feature_dim", 0) else None
    return images, features


def combined_action(base, residual, obs, control: ControlStep, explore: bool = False,
                    execute_steps: int | None = None):
    """One control step of base (+ residual): (command, base_action, residual | None).

    The base action comes from the base's open-loop chunk queue (base.select_action). The
    residual sees the full state vector, the base action, the images in the base's camera
    order and the frozen base encoder's features (when it wants features). The command is
    `control`'s (started for this episode): residual, exploration and the node's safety layer; a
    residual that cannot be computed raises rather than measuring the base alone.
    """
    base_action = base.select_action(obs, execute_steps)
    images, features = residual_inputs(base, residual, obs)
    result = control.step(residual, obs.state_vector(), base_action, obs.position, images=images,
                          features=features, explore=explore)
    if result.error is not None:
        raise RuntimeError(f"residual not computed: {result.error}")
    return result.command, base_action, None if residual is None else result.residual


def policy_in_sim(task: str, base, residual, control_hz: float = 20.0, residual_bound: float = DEFAULT_RESIDUAL_BOUND, seed: int = 0,
                  execute_steps: int | None = None, task_state: bool = True):
    """(env, act, on_reset) for run_episode: the task's simulator with the base's cameras and
    `act` = base (+ residual) through the live node's ControlStep, or the scripted expert when
    `base` is None; without `task_state` base and residual observe no object pose (the expert
    always does). ArgumentError when the simulator and the policy do not fit."""
    from resfit_ros.sim import make_env, make_expert

    cameras = tuple(base.camera_names) if base is not None else ()
    env_kwargs = dict(image_size=base.image_size or 84) if cameras else {}
    try:
        env = make_env(task, cameras=cameras, render=bool(cameras), control_hz=control_hz, seed=seed, **env_kwargs)
    except ValueError as exc:
        raise ArgumentError(str(exc)) from None
    if base is not None and list(env.joint_names) != list(base.joint_names):
        env.close()
        raise ArgumentError("the base policy's joint names/order differ from the simulated robot's")
    if residual is not None:
        from resfit_ros.sim.env import EXTRA_NAMES

        observed = 2 * len(env.joint_names) + (len(EXTRA_NAMES) if task_state else 0)
        if residual.state_dim != observed:
            env.close()
            hint = (" (a camera-trained residual: add --no-task-state)" if task_state and
                    residual.state_dim == 2 * len(env.joint_names) else
                    " (trained with the object pose: drop --no-task-state)" if not task_state else "")
            raise ArgumentError(f"the residual reads {residual.state_dim}-D states, this simulator gives "
                                f"{observed}-D{hint}")
    if base is None:
        expert = make_expert(task, env)
        return env, (lambda o: (expert.act(o), None, None)), expert.reset
    # The live residual node's step: residual bound, joint limits and the per-step change limit
    from resfit_ros.core.command import CommandLimits
    from resfit_ros.core.control_step import ControlStep
    from resfit_ros.core.observation import without_task_state

    control = ControlStep(CommandLimits.from_robot(env.robot, control_hz, residual_bound))
    episode_start = [True]

    def act(o):
        if episode_start[0]:      # run_episode resets before on_reset: the first observation is here
            control.start_episode(o.position)
            episode_start[0] = False
        if not task_state:
            o = without_task_state(o)
        return combined_action(base, residual, o, control, execute_steps=execute_steps)

    def on_reset():
        base.reset()  # clears the chunk queue at every episode start
        episode_start[0] = True

    return env, act, on_reset


def run(args) -> int:
    try:
        check_task(args.task)
        if args.policy == "base" and not args.base:
            raise ArgumentError("--policy base needs --base FILE")
        if args.policy == "scripted" and (args.base or args.residual):
            raise ArgumentError("--policy scripted takes neither --base nor --residual")
        if args.base and not Path(args.base).is_file():
            raise ArgumentError(f"--base {args.base} does not exist")
        if args.residual and not Path(args.residual).exists():
            raise ArgumentError(f"--residual {args.residual} does not exist")
        if not 1.0 <= args.control_hz <= 1000.0:
            raise ArgumentError(f"--control-hz must be in [1, 1000], got {args.control_hz}")
        if not 0.0 <= args.residual_bound < float("inf"):
            raise ArgumentError(f"--residual-bound must be a finite number >= 0, got {args.residual_bound}")
        base = residual = None
        if args.policy == "base":
            import torch

            from resfit_ros.policy import PolicyLoadError, load_base_policy

            torch.set_num_threads(args.threads)
            try:
                base = load_base_policy(args.base)
            except PolicyLoadError as exc:
                raise ArgumentError(str(exc)) from None
            if args.execute_steps and base.chunk_length and args.execute_steps > base.chunk_length:
                raise ArgumentError(f"--execute-steps {args.execute_steps} exceeds the chunk length {base.chunk_length}")
            if args.residual:
                residual = load_residual(args.residual, base)
    except ArgumentError as exc:
        return fail(VERB, str(exc))

    from tqdm import tqdm

    from resfit_ros.jobs.sim_episodes import run_episode

    try:
        env, act, on_reset = policy_in_sim(args.task, base, residual, args.control_hz, args.residual_bound,
                                           args.seed, args.execute_steps, task_state=not args.no_task_state)
    except ArgumentError as exc:
        return fail(VERB, str(exc))

    outcomes: list[bool] = []
    bar = tqdm(range(args.episodes), desc=f"eval {args.task} ({args.policy})", unit="ep",
               disable=args.no_progress, dynamic_ncols=True)
    for i in bar:
        trace = run_episode(env, act, episode_seed(PURPOSE_EVAL, args.seed, i), on_reset, max_steps=args.max_steps)
        outcomes.append(bool(trace.success))
        bar.set_postfix(success=f"{sum(outcomes)}/{i + 1}")
    bar.close()
    env.close()
    # per episode, in seed order: two policies on the same seeds compare pairwise (main-job's gain)
    print("outcomes=" + "".join("1" if s else "0" for s in outcomes), flush=True)
    print(f"success_rate={sum(outcomes) / args.episodes:.3f} episodes={args.episodes}", flush=True)
    return 0
