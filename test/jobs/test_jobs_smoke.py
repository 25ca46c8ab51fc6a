"""CLI smoke runs of demos, train-bc and eval with tiny counts, and bad arguments (exit 2)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resfit_ros.bags import scan_episodes
from resfit_ros.jobs import demos as demos_job
from resfit_ros.jobs import evaluate as eval_job
from resfit_ros.jobs import train_bc as train_job
from resfit_ros.jobs.sim_episodes import ArgumentError
from resfit_ros.learning import AgentConfig

REPO = Path(__file__).resolve().parents[2]
SUCCESS_LINE = re.compile(r"^success_rate=(0(\.\d+)?|1(\.0+)?) episodes=(\d+)$")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ, MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"))
    return subprocess.run([sys.executable, "-m", "resfit_ros.cli", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("jobs") / "demos"
    proc = cli("demos", "--task", "g1_pick_lift", "--episodes", "2", "--out", str(out), "--seed", "0",
               "--image-size", "48")
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.fixture(scope="module")
def artifact(demo_dir):
    out = demo_dir.parent / "base.safetensors"
    proc = cli("train-bc", "--demos", str(demo_dir), "--out", str(out), "--steps", "3", "--chunk", "4",
               "--batch-size", "8")
    assert proc.returncode == 0, proc.stderr
    return out


def test_demos_writes_one_bag_per_episode(demo_dir):
    results = scan_episodes(demo_dir)
    assert len(results) == 2
    for path, ep in results:
        assert not isinstance(ep, str), ep
        assert ep.success and ep.metadata["task"] == "g1_pick_lift" and ep.metadata["source"] == "sim_scripted_expert"
        assert ep.images["head"].shape[1:] == (48, 48, 3) and ep.command.shape[1] == 29
        assert ep.num_observations == ep.num_steps + 1


def test_demos_without_task_state_observe_what_the_robot_graph_observes(tmp_path):
    """--no-task-state: joint states only (the robot_sim / train_real synchronizer has no task-state
    topic), so the learner's state from these demos has the live observations' size (58 = 2 x 29)."""
    out = tmp_path / "robot_demos"
    proc = cli("demos", "--task", "g1_pick_lift", "--episodes", "1", "--out", str(out), "--no-images",
               "--no-task-state")
    assert proc.returncode == 0, proc.stderr
    [(_, ep)] = scan_episodes(out)
    assert not isinstance(ep, str), ep
    assert ep.extra_names == [] and ep.extra.shape == (ep.num_observations, 0)
    assert ep.states().shape[1] == 2 * 29 and ep.metadata["task_state"] == "none" and ep.success


def test_train_bc_writes_a_loadable_artifact_and_plot(artifact):
    from resfit_ros.policy import load_base_policy

    base = load_base_policy(artifact)
    assert base.chunk_length == 4 and base.camera_names == ["head"] and base.image_size == 48
    assert artifact.with_name("base_loss.png").is_file()


def test_eval_base_prints_the_success_line(artifact):
    proc = cli("eval", "--task", "g1_pick_lift", "--base", str(artifact), "--episodes", "1", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    *_, outcomes, last = proc.stdout.strip().splitlines()
    m = SUCCESS_LINE.match(last)
    assert m and m.group(4) == "1", last
    # one 0/1 per episode before it (main-job pairs two policies' outcomes seed by seed)
    assert outcomes in ("outcomes=0", "outcomes=1") and float(m.group(1)) == float(outcomes[-1]), (outcomes, last)


def test_eval_scripted_expert(tmp_path):
    proc = cli("eval", "--task", "g1_pick_lift", "--policy", "scripted", "--episodes", "2", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    m = SUCCESS_LINE.match(proc.stdout.strip().splitlines()[-1])
    assert m and m.group(4) == "2", proc.stdout


@pytest.mark.parametrize("verb,args,fragment", [
    ("demos", ["--task", "nope", "--episodes", "2", "--out", "{tmp}/d"], "unknown task 'nope'"),
    ("demos", ["--task", "g1_pick_lift", "--episodes", "0", "--out", "{tmp}/d"], "positive integer"),
    ("demos", ["--task", "g1_pick_lift", "--episodes", "2", "--out", "{tmp}/d", "--image-size", "3"], "--image-size"),
    ("demos", ["--task", "g1_pick_lift", "--episodes", "2", "--out", "{file}"], "not a directory"),
    ("train-bc", ["--demos", "{tmp}/missing", "--out", "{tmp}/b.safetensors"], "is not a directory"),
    ("train-bc", ["--demos", "{tmp}", "--out", "{tmp}/b.pt"], ".safetensors"),
    ("train-bc", ["--demos", "{tmp}", "--out", "{tmp}/b.safetensors"], "no successful demos"),
    ("train-bc", ["--demos", "{tmp}", "--out", "{tmp}/b.safetensors", "--steps", "-1"], "positive integer"),
    ("eval", ["--task", "g1_pick_lift", "--episodes", "1"], "needs --base"),
    ("eval", ["--task", "g1_pick_lift", "--base", "{tmp}/none.safetensors"], "does not exist"),
    ("eval", ["--task", "g1_pick_lift", "--base", "{file}"], "cannot tell the policy kind"),
    ("eval", ["--task", "g1_pick_lift", "--policy", "scripted", "--base", "{file}"], "neither"),
    ("eval", ["--task", "bad", "--policy", "scripted"], "unknown task"),
    ("distill", ["--base", "{tmp}/none.safetensors", "--episodes", "{tmp}", "--out", "{tmp}/d.safetensors"],
     "not a BC artifact"),
    ("distill", ["--base", "{tmp}/b.safetensors", "--out", "{tmp}/b.safetensors", "--episodes", "{tmp}"],
     "not a BC artifact"),
])
def test_bad_arguments_exit_2_with_one_message(tmp_path, capsys, verb, args, fragment):
    afile = tmp_path / "afile.txt"
    afile.write_text("x")
    before = sorted(tmp_path.rglob("*"))
    argv = [verb] + [a.format(tmp=tmp_path, file=afile) for a in args]
    from resfit_ros.cli import main

    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert fragment in err, err
    assert len([line for line in err.strip().splitlines() if "error" in line]) == 1, err
    assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_job_modules_have_the_cli_interface():
    for module in (demos_job, train_job, eval_job):
        assert callable(module.add_arguments) and callable(module.run)


def test_eval_residual_hook_composes_base_and_residual():
    """The residual contract: act(state, base_action, images, features, explore, rng, noise) -> residual,
    composed by the node's control step."""
    import numpy as np

    from resfit_ros.core.observation import ObservationData

    class FakeBase:
        camera_names = ["head"]
        chunk_length = 2

        def select_action(self, obs, execute_steps=None):
            return np.ones(3)

        def encode_images(self, images):
            return np.full((images.shape[0], 4), 0.5, dtype=np.float32)

        def observation_features(self, obs):
            return self.encode_images(obs.image_stack(self.camera_names)[None])[0]

    class FakeResidual:
        feature_dim = 4
        config = AgentConfig()       # the policy interface: its weights' recipe (action_repeat 1)
        seen = {}

        def act(self, state, base_action, images=None, features=None, explore=False, rng=None, noise=None):
            self.seen.update(state=state, images=images, features=features, explore=explore)
            return 0.1 * base_action

    obs = ObservationData(stamp_ns=0, sequence=0, joint_names=["a", "b", "c"], position=np.zeros(3),
                          velocity=np.zeros(3), images={"head": np.zeros((8, 8, 3), np.uint8)},
                          extra=np.zeros(2), extra_names=["x", "y"])
    from resfit_ros.core.command import CommandLimits
    from resfit_ros.core.control_step import ControlStep

    residual = FakeResidual()
    control = ControlStep(CommandLimits(np.full(3, -5.0), np.full(3, 5.0), np.zeros(3), np.full(3, 2.0),
                                        np.full(3, 0.5), 20.0))
    control.start_episode(obs.position)
    command, base_action, res = eval_job.combined_action(FakeBase(), residual, obs, control)
    np.testing.assert_allclose(command, 1.1 * np.ones(3))
    np.testing.assert_allclose(res, 0.1 * np.ones(3))
    assert residual.seen["state"].shape == (8,) and residual.seen["images"].shape == (1, 3, 8, 8)
    assert residual.seen["features"].shape == (4,) and residual.seen["explore"] is False


def test_eval_with_a_bad_residual_checkpoint_is_a_clear_error(artifact, tmp_path, capsys):
    fake = tmp_path / "residual_ckpt"
    fake.mkdir()
    (fake / "meta.json").write_text("not json")
    from resfit_ros.cli import main

    code = main(["eval", "--task", "g1_pick_lift", "--base", str(artifact), "--residual", str(fake),
                 "--episodes", "1", "--no-progress"])
    assert code == 2 and "--residual" in capsys.readouterr().err


def test_eval_with_a_zero_residual_equals_the_base(artifact, tmp_path, capsys):
    """A learner checkpoint whose actor is still zero-initialised must not change a single command."""
    from resfit_ros.cli import main
    from resfit_ros.learning import Normaliser, ResidualAgent

    rng = np.random.default_rng(0)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, 67)), rng.normal(size=(50, 29)), 0.1)
    ResidualAgent(AgentConfig(), 67, 29, [], 84, 0, normaliser).save_checkpoint(tmp_path / "ckpt")
    args = ["eval", "--task", "g1_pick_lift", "--base", str(artifact), "--episodes", "2", "--seed", "3",
            "--no-progress"]
    assert main(args) == 0
    alone = capsys.readouterr().out.strip().splitlines()[-2:]
    assert main(args + ["--residual", str(tmp_path / "ckpt")]) == 0
    combined = capsys.readouterr().out.strip().splitlines()[-2:]
    assert alone[0].startswith("outcomes=") and alone[1].startswith("success_rate=") and combined == alone


def test_eval_without_task_state_hides_the_object_pose_from_base_and_residual():
    """--no-task-state (a camera-trained residual): base and residual get joint states and images only."""
    from resfit_ros.robot import RobotDescription, config_dir

    joints = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml").joint_names
    seen = {}

    class FakeBase:
        camera_names, image_size, joint_names, chunk_length = ["head"], 48, joints, 1

        def select_action(self, obs, execute_steps=None):
            seen["base_extra"] = obs.extra.size
            return obs.position

        def reset(self):
            pass

    class FakeResidual:
        feature_dim = 0
        config = AgentConfig()

        def __init__(self, state_dim):
            self.state_dim = state_dim

        def act(self, state, base_action, images=None, features=None, explore=False, rng=None, noise=None):
            seen.update(state=state.shape, images=images.shape)
            return np.zeros_like(base_action)

    for task_state, state_size, extra in ((False, 58, 0), (True, 67, 9)):
        env, act, on_reset = eval_job.policy_in_sim("g1_pick_lift", FakeBase(), FakeResidual(state_size),
                                                    task_state=task_state)
        on_reset()
        act(env.reset(seed=0))
        env.close()
        assert seen == {"base_extra": extra, "state": (state_size,), "images": (1, 3, 48, 48)}
    # a residual trained on the other observation is refused up front, with the flag that fits it
    with pytest.raises(ArgumentError, match="58-D states.*add --no-task-state"):
        eval_job.policy_in_sim("g1_pick_lift", FakeBase(), FakeResidual(58), task_state=True)
    with pytest.raises(ArgumentError, match="67-D states.*drop --no-task-state"):
        eval_job.policy_in_sim("g1_pick_lift", FakeBase(), FakeResidual(67), task_state=False)


def test_main_job_cameras_runs_the_graph_on_the_camera_without_the_object_pose(tmp_path):
    """--cameras: train_sim's parameters are config/sim.yaml with config/sim_cameras.yaml over it: the
    learner learns from the camera and the synchronizer subscribes to no task-state topic (so no
    observation, recorded episode or learner state carries the object pose); the rest is sim.yaml's."""
    import yaml

    from resfit_ros.config import ConfigError, load_config, overlaid_parameters
    from resfit_ros.core.synchronizer import SynchronizerConfig
    from resfit_ros.jobs import main_job
    from resfit_ros.nodes.learner import LearnerConfig
    from resfit_ros.robot import config_dir

    stock = config_dir() / "sim.yaml"
    path = main_job.recipe_config(tmp_path, cameras=True, task="g1_pick_lift")
    synchronizer = load_config(SynchronizerConfig, path, "synchronizer")
    assert synchronizer.extra_state_topics == [] and synchronizer.use_cameras
    learner = load_config(LearnerConfig, path, "learner")
    assert learner.use_cameras and learner.base_features       # the frozen image base's features (faster)
    assert load_config(SynchronizerConfig, stock, "synchronizer").extra_state_topics == ["sim_robot/task_state"]
    assert not load_config(LearnerConfig, stock, "learner").use_cameras      # sim.yaml itself unchanged
    written, original = yaml.safe_load(path.read_text()), yaml.safe_load(stock.read_text())
    assert written.keys() == original.keys()
    changed = {(section, key) for section in original
               for key in set(original[section]["ros__parameters"]) | set(written[section]["ros__parameters"])
               if original[section]["ros__parameters"].get(key) != written[section]["ros__parameters"].get(key)}
    assert changed == {("/**/synchronizer", "extra_state_topics"), ("/**/learner", "use_cameras"),
                       ("/**/learner", "base_features")}
    typo = tmp_path / "typo.yaml"
    typo.write_text("/**/lerner:\n  ros__parameters:\n    use_cameras: true\n")
    with pytest.raises(ConfigError, match="lerner"):
        overlaid_parameters(stock, typo)


def test_main_job_learns_from_the_camera_unless_told_state():
    """`make run` (main-job without flags) is the camera job a real robot can run: image data, the image
    base's defaults; --state switches observation, data directory and base defaults together; --task
    switches the task's episode limit, evaluation scenes, base and data directory."""
    import argparse

    from resfit_ros.jobs import main_job

    parser = argparse.ArgumentParser()
    main_job.add_arguments(parser)
    lift, handover = main_job.TASKS["g1_pick_lift"], main_job.TASKS["g1_handover"]
    for argv, cameras, data, base, limits in (
            ([], True, "outputs/main_job_data_cameras", lift.base["cameras"], (120, 400)),
            (["--state"], False, "outputs/main_job_data", lift.base["state"], (120, 400)),
            (["--task", "g1_handover"], True, "outputs/g1_handover_data_cameras", handover.base["cameras"], (400, 200)),
            (["--task", "g1_handover", "--max-steps", "300"], True, "outputs/g1_handover_data_cameras",
             handover.base["cameras"], (300, 200))):
        args = parser.parse_args(argv)
        main_job.task_defaults(args)
        assert (args.cameras, str(main_job.data_dir(args.cameras, args.task)), (args.base_demos, args.bc_steps),
                (args.max_steps, args.eval_episodes)) == (cameras, data, base, limits)
    assert parser.parse_args(["--state", "--bc-steps", "7"]).bc_steps == 7
    with pytest.raises(SystemExit):
        parser.parse_args(["--state", "--cameras"])      # one observation per run
    with pytest.raises(SystemExit):
        parser.parse_args(["--task", "g1_pick_place"])   # not a simulated task


def test_main_job_handover_recipe_is_the_lifts_with_the_handover_overlay(tmp_path):
    """--task g1_handover: the graph's parameters are sim.yaml + sim_cameras.yaml + sim_handover.yaml, and
    the in-process recipe of the same task (bench residual-gain) is the same learner and residual node."""
    import yaml

    from resfit_ros.config import load_config
    from resfit_ros.jobs import main_job
    from resfit_ros.jobs.in_process import load_recipe
    from resfit_ros.nodes.learner import LearnerConfig
    from resfit_ros.nodes.recorder import RecorderConfig
    from resfit_ros.nodes.residual_policy import ResidualPolicyConfig

    lift = main_job.recipe_config(tmp_path, cameras=True, task="g1_pick_lift")
    lift_doc = yaml.safe_load(lift.read_text())
    (tmp_path / "h").mkdir()
    path = main_job.recipe_config(tmp_path / "h", cameras=True, task="g1_handover")
    doc = yaml.safe_load(path.read_text())
    changed = {(section, key) for section in lift_doc
               for key in set(lift_doc[section]["ros__parameters"]) | set(doc[section]["ros__parameters"])
               if lift_doc[section]["ros__parameters"].get(key) != doc[section]["ros__parameters"].get(key)}
    assert changed == {("/**/recorder", "task"), ("/**/learner", "residual_gains"),
                       ("/**/learner", "random_warmup_fraction"), ("/**/learner", "gamma")}
    learner = load_config(LearnerConfig, path, "learner")
    assert learner.use_cameras and learner.gamma == 0.995 and learner.random_warmup_fraction == 0.2
    assert load_config(RecorderConfig, path, "recorder").task == "g1_handover"
    recipe = load_recipe(overlays=main_job.recipe_overlays(False, "g1_handover"))
    assert (recipe.learner.gamma, recipe.learner.residual_gains) == (learner.gamma, learner.residual_gains)
    assert recipe.policy == load_config(ResidualPolicyConfig, path, "residual_policy")
    assert load_recipe().learner.gamma == 0.99        # the lift's recipe is sim.yaml's


def test_main_job_gain_is_paired_over_the_same_seeds():
    from resfit_ros.jobs.main_job import paired_gain

    base = [True, True, False, False, False, True, False, False]
    combined = [True, False, True, True, False, True, True, False]     # +3 seeds, -1 seed
    gain, se, won, lost = paired_gain(base, combined)
    d = np.array([0, -1, 1, 1, 0, 0, 1, 0], dtype=float)
    assert (won, lost) == (3, 1)
    assert gain == pytest.approx(0.25) and se == pytest.approx(d.std(ddof=1) / np.sqrt(8))
    # identical outcomes: no gain and no error, however many seeds both solve or fail
    assert paired_gain(base, base)[:2] == (0.0, 0.0)


def test_bags_verb_lists_episodes_and_problems(tmp_path, capsys):
    from resfit_ros.cli import main
    from test.bags.synthetic import write_episode

    write_episode(tmp_path, 1, steps=3)
    _, _, _, w = write_episode(tmp_path, 2, steps=2, finish=False)
    w.close()
    assert main(["bags", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "1 success" in out and "PROBLEM" in out and "incomplete" in out


def test_distill_refuses_what_it_cannot_do(artifact, tmp_path, capsys):
    from resfit_ros.cli import main

    cases = [([], "nothing to distill"),
             (["--episodes", str(tmp_path), "--rollouts", "2"], "--rollouts needs --residual"),
             (["--episodes", str(tmp_path / "missing")], "is not a directory")]
    for extra, fragment in cases:
        assert main(["distill", "--base", str(artifact), "--out", str(tmp_path / "d.safetensors"), *extra]) == 2
        assert fragment in capsys.readouterr().err, extra
    assert main(["distill", "--base", str(artifact), "--out", str(artifact), "--episodes", str(tmp_path)]) == 2
    assert "must not overwrite --base" in capsys.readouterr().err
    assert not (tmp_path / "d.safetensors").exists()


def test_distill_trains_a_base_of_the_same_format_on_demos_and_the_combined_policys_rollouts(
        artifact, demo_dir, tmp_path, capsys):
    """The distilled base: the old one's inputs and chunk length, loadable by the base chunk server's
    loader; the rollouts of base + residual are kept as episode bags (command, base action and
    residual per step), and only the successful episodes teach it."""
    from resfit_ros.cli import main
    from resfit_ros.learning import Normaliser, ResidualAgent
    from resfit_ros.policy import load_base_policy
    from resfit_ros.policy.base import load_artifact

    rng = np.random.default_rng(0)
    normaliser = Normaliser.from_demonstrations(rng.normal(size=(50, 67)), rng.normal(size=(50, 29)), 0.1)
    ResidualAgent(AgentConfig(), 67, 29, [], 84, 0, normaliser).save_checkpoint(tmp_path / "ckpt")
    out = tmp_path / "distilled.safetensors"
    code = main(["distill", "--base", str(artifact), "--residual", str(tmp_path / "ckpt"), "--rollouts", "2",
                 "--task", "g1_pick_lift", "--max-steps", "4", "--episodes", str(demo_dir), "--out", str(out),
                 "--steps", "3", "--no-progress"])
    text = capsys.readouterr().out
    assert code == 0, text
    rolled = [e for _, e in scan_episodes(tmp_path / "distilled_rollouts")]
    assert len(rolled) == 2 and all(not isinstance(e, str) for e in rolled), rolled
    for e in rolled:
        assert e.num_steps == 4 and not e.success           # 4 steps never lift the box
        assert e.base_action.shape == (4, 29) and e.residual.shape == (4, 29)
        assert not np.any(e.residual)                      # the zero-initialised actor's residual
    assert "0 of 2 rollouts of base + residual succeeded" in text
    _, old_cfg, _ = load_artifact(artifact)
    _, new_cfg, info = load_artifact(out)
    assert (new_cfg.chunk_length, new_cfg.camera_names, new_cfg.state_keys, new_cfg.state_dim) == (
        old_cfg.chunk_length, old_cfg.camera_names, old_cfg.state_keys, old_cfg.state_dim)
    assert info["demos"] == 2 and info["distilled_from"] == str(artifact)   # the failed rollouts taught nothing
    assert load_base_policy(out).chunk_length == old_cfg.chunk_length

