"""Shared pieces of the simulation jobs (demos, eval): argument checks, seeds, the episode loop.

Kept free of heavy imports (torch, mujoco) at module level: the CLI imports job modules to build
its parser.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

# Seed streams: demos and evaluation never share initial states for the same --seed.
PURPOSE_DEMOS = 1
PURPOSE_EVAL = 2


class ArgumentError(ValueError):
    """A bad command-line value; the job prints it and exits with code 2 before writing anything."""


def fail(verb: str, message: str) -> int:
    print(f"resfit-ros {verb}: error: {message}", file=sys.stderr)
    return 2


def positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def nonnegative_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def check_task(task: str) -> None:
    from resfit_ros.sim import TASKS

    if task not in TASKS:
        raise ArgumentError(f"unknown task '{task}'; known: {', '.join(sorted(TASKS))}")


def episode_seed(purpose: int, seed: int, index: int) -> int:
    """Reset seed of episode `index` of a job run with --seed `seed` (independent streams)."""
    return int(np.random.SeedSequence([int(seed), int(index), int(purpose)]).generate_state(1)[0])


@dataclass
class EpisodeTrace:
    """What happened in one simulated episode (observations before each step + the final one)."""

    success: bool
    steps: int
    observations: list = field(default_factory=list)   # ObservationData, steps + 1 of them
    commands: list = field(default_factory=list)       # (dof,) per step
    base_actions: list = field(default_factory=list)   # (dof,) per step, when a base policy acted
    residuals: list = field(default_factory=list)      # (dof,) per step, when a residual acted


def run_episode(env, act: Callable[[object], tuple[np.ndarray, np.ndarray | None, np.ndarray | None]],
                reset_seed: int, on_reset: Callable[[], None], record: bool = False,
                max_steps: int | None = None) -> EpisodeTrace:
    """Reset env (and the policy via `on_reset`, which must clear any chunk queue), then step
    `act(obs) -> (command, base_action | None, residual | None)` until success or max_steps."""
    obs = env.reset(seed=reset_seed)
    on_reset()
    trace = EpisodeTrace(success=False, steps=0)
    limit = env.max_steps if max_steps is None else max_steps
    for _ in range(limit):
        command, base, residual = act(obs)
        if record:
            trace.observations.append(obs)
            trace.commands.append(np.asarray(command, dtype=np.float64))
            if base is not None:
                trace.base_actions.append(np.asarray(base, dtype=np.float64))
            if residual is not None:
                trace.residuals.append(np.asarray(residual, dtype=np.float64))
        obs, success = env.step(command)
        trace.steps += 1
        if success:
            trace.success = True
            break
    if record:
        trace.observations.append(obs)
    return trace


def write_trace(out, episode_id: int, trace: EpisodeTrace, metadata: dict, joint_names, observations=None):
    """One simulated episode as an episode bag in `out` (labelled with its outcome): each step's
    observation and executed command (with the base action and residual when a policy acted);
    `observations` replaces the trace's (e.g. without the task state). Returns the bag's path."""
    from resfit_ros.bags import EpisodeWriter, StepData

    observations = trace.observations if observations is None else observations
    with EpisodeWriter(out, episode_id, metadata=metadata, joint_names=joint_names) as writer:
        for t, (obs, cmd) in enumerate(zip(observations, trace.commands)):
            extra = {}
            if t < len(trace.base_actions):
                extra["base_action"] = trace.base_actions[t]
            if t < len(trace.residuals):
                extra["residual"] = trace.residuals[t]
            writer.write_observation(obs)
            writer.write_step(StepData(step=t, observation_sequence=obs.sequence, command=cmd, **extra), obs.stamp_ns)
        writer.write_observation(observations[-1])  # the state after the last command
        return writer.finish(success=trace.success)

