"""Residual RL on the simulated robot in one process: the graph's recipe without DDS, for experiments.

The same pieces as the train_sim graph, called the same way:
  * recipe      the `learner` and `residual_policy` sections of config/sim.yaml (LearnerConfig,
                ResidualPolicyConfig), with overrides;
  * set-up      learning/offline.build_setup: normaliser, agent and demo replay exactly as the learner;
  * each tick   core/control_step.ControlStep: random warm-up / actor + held noise / compose_command;
  * updates     learning/schedule.UpdateSchedule: what the paced learner does after each training
                step (here in lockstep, so the achieved UTD is exactly the configured one);
  * episodes    every `eval_every`-th one without exploration (the judge's rule), each entering the
                replay when it ends, as a recorded bag would; the base's chunk queue reset at every start;
  * evaluation  the fixed scenes of the main job (seed 1000), paired with the base on the same scenes;
  * cameras     state-only by default (joint states + the simulator's object pose, with a state-only
                base); with `cameras` the env renders them, base and residual observe joint states
                and images only (core/observation.without_task_state), and the residual reads either
                the images through its own encoder trained by the critic (camera_path "encoder",
                the graph's use_cameras) or the frozen image base's encoder features ("features");
                images/features reach the policy as in `resfit-ros eval` (evaluate.residual_inputs)
                and the replay with every episode;
  * operator    optionally (`intervention.share` > 0) the scripted operator of sim/intervener.py
                watches that share of the training episodes and takes over when the robot strays;
                its steps enter the replay as interventions;
  * labels      the simulator's success (the judge's), or with a success detector (learning/detector.py)
                its verdict: the training episode runs until the detector says success or the step limit,
                an unsure detector is answered from the simulator (a person would), and the replay gets
                the detector's label; evaluation always counts the simulator's success.
What it leaves out is the graph's transport: DDS, bags, the pacing slack of `pace_free_steps`.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

TASK = "g1_pick_lift"
EVAL_SEED = 1000          # the main job's evaluation scenes
CAMERA_PATHS = ("encoder", "features")   # the residual's own encoder on the images / the base's features


@dataclass
class Recipe:
    learner: object               # nodes.learner.LearnerConfig
    policy: object                # nodes.residual_policy.ResidualPolicyConfig
    eval_every: int = 5           # every N-th training-run episode runs without exploration (judge)
    intervention: object = None   # sim.intervener.InterventionConfig


def parse_overrides(entries: list[str]) -> dict[str, dict]:
    """["learner.utd=4", "intervention.share=0.5"] -> {section: {key: value}} (YAML values)."""
    import yaml

    out: dict[str, dict] = {}
    for entry in entries:
        key, sep, value = entry.partition("=")
        section, dot, name = key.partition(".")
        if not (sep and dot and name) or section not in ("learner", "residual_policy", "intervention"):
            raise ValueError(f"override '{entry}' must be learner.KEY=VALUE, residual_policy.KEY=VALUE "
                             "or intervention.KEY=VALUE")
        parsed = yaml.safe_load(value)
        if isinstance(parsed, str):          # YAML 1.1 reads 1e-6 as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        out.setdefault(section, {})[name] = parsed
    return out


def load_recipe(config: str | Path | None = None, overrides: dict[str, dict] | None = None,
                overlays: Sequence[str | Path] = ()) -> Recipe:
    """The train_sim graph's learner and residual_policy configs (config/sim.yaml, with `overlays`
    over it as the main job puts them), overridden; the scripted operator's (InterventionConfig)
    from the overrides alone."""
    from resfit_ros.config import (ConfigError, component_values, config_from_dict, overlaid_parameters,
                                   section_parameters)
    from resfit_ros.nodes.learner import LearnerConfig
    from resfit_ros.nodes.residual_policy import ResidualPolicyConfig
    from resfit_ros.robot import config_dir
    from resfit_ros.sim.intervener import InterventionConfig

    path = Path(config) if config else config_dir() / "sim.yaml"
    overrides = {section: dict(values) for section, values in (overrides or {}).items()}
    # one residual bound: overriding it in either section overrides it in both
    for given, other in (("learner", "residual_policy"), ("residual_policy", "learner")):
        if "residual_bound" in overrides.get(given, {}) and "residual_bound" not in overrides.get(other, {}):
            overrides.setdefault(other, {})["residual_bound"] = overrides[given]["residual_bound"]
    doc = overlaid_parameters(path, *overlays)
    where = " + ".join(str(p) for p in (path, *overlays))
    sections = {}
    for section, cls in (("learner", LearnerConfig), ("residual_policy", ResidualPolicyConfig)):
        values = component_values(cls, section_parameters(doc, section, where))
        values.update(overrides.get(section, {}))
        sections[section] = config_from_dict(cls, values, source=f"{where} [{section}] + overrides")
    if sections["learner"].residual_bound != sections["residual_policy"].residual_bound:
        raise ConfigError(f"{path}: the learner's residual_bound {sections['learner'].residual_bound} differs from "
                          f"the residual node's {sections['residual_policy'].residual_bound}: give both the same value")
    intervention = config_from_dict(InterventionConfig, overrides.get("intervention", {}), source="intervention overrides")
    return Recipe(sections["learner"], sections["residual_policy"], intervention=intervention)


class Rollout(NamedTuple):
    """One episode, as the replay takes it: T steps, T+1 observations."""
    success: bool
    states: np.ndarray            # (T+1, S)
    bases: np.ndarray             # (T+1, A) base actions
    commands: np.ndarray          # (T, A)
    intervened: np.ndarray        # (T,) bool: the operator's steps
    images: np.ndarray | None     # (T+1, ncam, 3, H, W) uint8 when the residual reads images
    features: np.ndarray | None   # (T+1, F) float32 when it reads the base encoder's features


@dataclass
class RunResult:
    env_steps: int = 0
    episodes: int = 0
    train_minutes: float = 0.0
    train_results: list = field(default_factory=list)        # (explore, success) per training-run episode
    interventions: list = field(default_factory=list)        # (watched, operator steps, steps) per training-run episode
    labels: list = field(default_factory=list)               # (label given, simulator's success, operator asked) per episode
    curve: list = field(default_factory=list)                # (env_steps, train minutes, outcomes)
    final_outcomes: list = field(default_factory=list)
    log: list = field(default_factory=list)                  # periodic learner statistics


class InProcessRun:
    """Demos + base -> agent; then `train(...)`; `evaluate(...)` at any time."""

    def __init__(self, recipe: Recipe, demos_dir: str | Path, base_artifact: str | Path, max_steps: int = 120,
                 seed: int = 0, task: str = TASK, detector: str | Path | None = None,
                 cameras: tuple[str, ...] = (), camera_path: str = "encoder"):
        """cameras: () state-only (state = positions, velocities, object pose); else the cameras of
        image demos recorded without task state and of an image base (see the module doc)."""
        import torch

        from resfit_ros.core.command import CommandLimits
        from resfit_ros.core.control_step import ControlStep
        from resfit_ros.learning.offline import OfflineSettings, build_setup
        from resfit_ros.learning.schedule import UpdateSchedule
        from resfit_ros.policy.base import load_base_policy
        from resfit_ros.sim import make_env

        if camera_path not in CAMERA_PATHS:
            raise ValueError(f"camera_path must be one of {CAMERA_PATHS}, got {camera_path!r}")
        torch.set_num_threads(recipe.learner.num_threads)
        self.recipe, self.max_steps, self.seed = recipe, max_steps, seed
        self.cameras = tuple(cameras)
        lc, pc = recipe.learner, recipe.policy
        settings = OfflineSettings.from_object(lc)
        settings.seed = seed
        settings.use_cameras = bool(self.cameras)
        settings.base_features = bool(self.cameras) and camera_path == "features"
        self.base = load_base_policy(base_artifact)
        if self.cameras:
            check_camera_base(self.base, self.cameras)
        self.setup = build_setup(demos_dir, [], base_artifact, settings, base_policy=self.base)
        self.agent, self.buffer = self.setup.agent, self.setup.buffer
        if self.cameras and self.setup.cameras != list(self.cameras):
            raise ValueError(f"camera mode with cameras {list(self.cameras)}: the demos have {self.setup.cameras}")
        self.schedule = UpdateSchedule.of(lc)
        self.task = task
        self.env = make_env(task, render=bool(self.cameras), cameras=self.cameras, control_hz=pc.control_rate_hz,
                            seed=seed, max_steps=max_steps, image_size=self.agent.image_size[0])
        dof = len(self.env.joint_names)
        if self.cameras and self.agent.state_dim != 2 * dof:
            raise ValueError(f"camera mode: the demos' states are {self.agent.state_dim}-D, not the {2 * dof} "
                             f"joint positions and velocities: record them with `resfit-ros demos --no-task-state`")
        self.limits = CommandLimits.from_robot(self.env.robot, pc.control_rate_hz, pc.residual_bound)
        self.policy = self.new_policy()
        self.control = ControlStep(self.limits, hold_steps=pc.exploration_hold_steps, seed=seed + 12345)
        self.detector = None
        if detector:
            from resfit_ros.learning.detector import load_detector
            self.detector = load_detector(detector)
        self.intervener = None
        if recipe.intervention is not None and recipe.intervention.share > 0:
            from resfit_ros.sim.intervener import ScriptedIntervener
            self.intervener = ScriptedIntervener(self.env, task, recipe.intervention)
        self.train_steps = 0
        self.last_push = 0
        self.stats: dict = {}

    def new_policy(self):
        """A ResidualPolicy with the agent's current weights, reading what the agent reads."""
        from resfit_ros.learning.policy import ResidualPolicy

        a = self.agent
        return ResidualPolicy(a.config, a.state_dim, a.action_dim, a.camera_names, a.image_size, a.feature_dim,
                              weights=a.get_weights())

    def observed(self, sim_obs):
        """What base and residual observe of the simulator's observation: all of it state-only,
        no object pose with cameras."""
        from resfit_ros.core.observation import without_task_state

        return without_task_state(sim_obs) if self.cameras else sim_obs

    # -- one episode ------------------------------------------------------------------------------
    def episode(self, reset_seed: int, explore: bool, policy=None, control=None,
                on_step: Callable[[], None] | None = None, watched: bool = False, labelled: bool = False) -> Rollout:
        """One episode (Rollout); `watched`: the scripted operator watches it (and may take over);
        `labelled`: the success detector labels it (`self.last_label`: (label, simulator's success,
        asked)). The detector and the operator see the simulator's full state, as a person would."""
        from resfit_ros.jobs.evaluate import residual_inputs
        from resfit_ros.learning.detector import Decision, decide

        judge = self.detector if labelled else None
        scores, asked, truth = [], False, False
        control = control or self.control
        sim_obs = self.env.reset(seed=reset_seed)
        obs = self.observed(sim_obs)
        self.base.reset()
        control.start_episode(obs.position)
        operator = self.intervener if watched else None
        if operator is not None:
            operator.start_episode(watch=True)
        states, bases, commands, intervened, frames, features = [], [], [], [], [], []
        success = False
        for _ in range(self.max_steps):
            state = obs.state_vector()
            base = self.base.select_action(obs)
            images, feature = residual_inputs(self.base, policy, obs)
            target = operator.target() if operator is not None else None
            result = control.step(policy, state, base, obs.position, images=images, features=feature,
                                  explore=explore, train_steps=self.train_steps, operator=target)
            if operator is not None:
                operator.observe(result.command)
            states.append(state)
            bases.append(base)
            commands.append(result.command)
            intervened.append(result.intervention)
            frames.append(images)
            features.append(feature)
            sim_obs, success = self.env.step(result.command)
            obs = self.observed(sim_obs)
            truth = truth or success
            if explore:
                self.train_steps += 1
                if on_step is not None:
                    on_step()
            if judge is None:
                if success:
                    break
                continue
            scores.append(judge.score(sim_obs))
            verdict = decide(scores, len(commands), self.max_steps, judge.rule)
            if verdict is Decision.ASK_OPERATOR:
                asked = True
                if truth:                   # the person sees the lifted box and labels it
                    break
            elif verdict is not Decision.CONTINUE:
                break
        if judge is not None:
            label = verdict is Decision.SUCCESS or (verdict is Decision.ASK_OPERATOR and truth)
            self.last_label = (bool(label), bool(truth), asked)
            success = label
        states.append(obs.state_vector())
        bases.append(bases[-1])          # as episode_arrays: the next base action only matters when bootstrapped
        images, feature = residual_inputs(self.base, policy, obs)
        frames.append(images)
        features.append(feature)
        # the replay keeps what the agent reads: the images for its own encoder, else the features
        return Rollout(success, np.array(states), np.array(bases), np.array(commands),
                       np.array(intervened, dtype=bool), stacked(frames) if self.agent.camera_names else None,
                       stacked(features))

    def learn_to_schedule(self) -> None:
        """The updates the paced learner makes before the robot's next step."""
        from resfit_ros.learning.agent import train_iteration
        from resfit_ros.learning.offline import refit_state_statistics_if_due

        lc, agent = self.recipe.learner, self.agent
        while agent.critic_updates + lc.utd <= self.schedule.budget(self.train_steps):
            if refit_state_statistics_if_due(agent, self.buffer, lc):
                self.policy.load_weights(agent.get_weights())
            self.stats = train_iteration(agent, self.buffer, lc.utd)
            if agent.critic_updates - self.last_push >= lc.publish_every_updates:
                self.policy.load_weights(agent.get_weights())
                self.last_push = agent.critic_updates

    # -- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, episodes: int, with_residual: bool = True) -> list[bool]:
        """Outcomes on the main job's fixed scenes (seed order): deterministic, no exploration."""
        from resfit_ros.core.control_step import ControlStep
        from resfit_ros.jobs.sim_episodes import PURPOSE_EVAL, episode_seed

        policy = self.new_policy() if with_residual else None
        control = ControlStep(self.limits)
        return [bool(self.episode(episode_seed(PURPOSE_EVAL, EVAL_SEED, i), False, policy, control).success)
                for i in range(episodes)]

    # -- training -----------------------------------------------------------------------------------
    def train(self, minutes: float = math.inf, env_steps: int = 0, curve_every: int = 0, curve_episodes: int = 100,
              progress: Callable[[str], None] = print,
              on_curve: Callable[[int, list[bool]], None] | None = None) -> RunResult:
        """Train until the budget; every `curve_every` training steps evaluate on the first
        `curve_episodes` scenes (and call `on_curve(steps, outcomes)`, e.g. to keep a checkpoint)."""
        result = RunResult()
        seeds = np.random.SeedSequence([self.seed, 777])
        watch_rng = np.random.default_rng([self.seed, 778])     # which training episodes the operator watches
        t_train = time.perf_counter()
        excluded = 0.0                                   # evaluation time does not count as training
        next_curve = curve_every
        self.learn_to_schedule()                         # initial_updates on the demos, if any
        while True:
            trained = time.perf_counter() - t_train - excluded
            if trained >= minutes * 60 or (env_steps and self.train_steps >= env_steps):
                break
            explore = not (self.recipe.eval_every > 0 and (result.episodes + 1) % self.recipe.eval_every == 0)
            reset_seed = int(seeds.spawn(1)[0].generate_state(1)[0])
            watched = (self.intervener is not None and explore
                       and watch_rng.random() < self.recipe.intervention.share)
            rollout = self.episode(reset_seed, explore, self.policy, on_step=self.learn_to_schedule,
                                   watched=watched, labelled=self.detector is not None)
            success, operator = rollout.success, rollout.intervened
            if self.detector is not None:
                result.labels.append(self.last_label)
            self.buffer.add_episode(rollout.states, rollout.bases, rollout.commands, success, demo=False,
                                    images=rollout.images, features=rollout.features, intervention=operator)
            result.episodes += 1
            # the training success that counts is the simulator's, whoever labelled the episode
            result.train_results.append((explore, bool(result.labels[-1][1] if self.detector is not None else success)))
            result.interventions.append((watched, int(operator.sum()), len(operator)))
            if result.episodes % 20 == 0:
                # exploring episodes the operator did not watch: the policy's own training success
                recent = [s for (e, s), (w, _, _) in zip(result.train_results[-40:], result.interventions[-40:])
                          if e and not w]
                s = self.stats
                line = (f"ep {result.episodes} env_steps {self.train_steps} train_success(last) "
                        f"{np.mean(recent) if recent else float('nan'):.2f} critic_updates {self.agent.critic_updates} "
                        f"actor_updates {self.agent.actor_updates} q {s.get('values/q_mean', float('nan')):.3f} "
                        f"|res| {s.get('values/residual_abs_mean', float('nan')):.4f} "
                        f"t {trained / 60:.1f} min")
                if result.labels:
                    recent_labels = result.labels[-40:]
                    line += (f" detector: labels right {np.mean([a == b for a, b, _ in recent_labels]):.2f} "
                             f"asked {np.mean([c for _, _, c in recent_labels]):.2f}")
                watched_recent = [(o, n) for w, o, n in result.interventions[-40:] if w]
                if watched_recent:
                    line += (f" watched {len(watched_recent)} taken_over {sum(o > 0 for o, _ in watched_recent)} "
                             f"operator_steps {sum(o for o, _ in watched_recent) / sum(n for _, n in watched_recent):.2f}")
                result.log.append(line)
                progress(line)
            if curve_every and self.train_steps >= next_curve:
                t_eval = time.perf_counter()
                outcomes = self.evaluate(curve_episodes)
                excluded += time.perf_counter() - t_eval
                result.curve.append((self.train_steps, (time.perf_counter() - t_train - excluded) / 60, outcomes))
                progress(f"curve env_steps={self.train_steps} combined={np.mean(outcomes):.3f} "
                         f"(first {curve_episodes} evaluation scenes)")
                if on_curve is not None:
                    on_curve(self.train_steps, outcomes)
                next_curve += curve_every
        result.env_steps = self.train_steps
        result.train_minutes = (time.perf_counter() - t_train - excluded) / 60
        self.policy.load_weights(self.agent.get_weights())
        return result


def check_camera_base(base, cameras: tuple[str, ...]) -> None:
    """ValueError unless `base` observes exactly `cameras` and no object pose (camera mode)."""
    if list(base.camera_names) != list(cameras):
        raise ValueError(f"camera mode with cameras {list(cameras)}: the base observes {list(base.camera_names)} "
                         "(train it on the image demos without --state-only)")
    if "extra" in base.state_keys:
        raise ValueError(f"camera mode: the base reads the object pose (state_keys {base.state_keys}); "
                         "train it with --state-keys position or position,velocity")


def stacked(rows: list) -> np.ndarray | None:
    """The per-observation images or features as one array; None when the residual reads none."""
    return None if rows[0] is None else np.stack(rows)


def base_outcomes(run: InProcessRun, base_artifact: Path, episodes: int, max_steps: int) -> list[bool]:
    """The base alone on the evaluation scenes, cached next to the artifact (the main job's cache file)."""
    cache = Path(base_artifact).with_suffix(f".eval{episodes}_h{max_steps}.json")
    if cache.is_file() and cache.stat().st_mtime > Path(base_artifact).stat().st_mtime:
        outcomes = [c == "1" for c in json.loads(cache.read_text()).get("outcomes", "")]
        if len(outcomes) == episodes:
            return outcomes
    outcomes = run.evaluate(episodes, with_residual=False)
    cache.write_text(json.dumps({"success_rate": float(np.mean(outcomes)),
                                 "outcomes": "".join("1" if s else "0" for s in outcomes)}))
    return outcomes
