"""The in-process trainer runs the graph's recipe: the learner's set-up, the control step and the
update schedule (real MuJoCo, real episode bags for the demos, a real BC base)."""
from __future__ import annotations

import numpy as np
import pytest

from test.jobs.test_jobs_smoke import cli
from test.support import build_tiny_image_base


@pytest.fixture(scope="module")
def state_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("in_process")
    demos, base = root / "demos", root / "base.safetensors"
    proc = cli("demos", "--task", "g1_pick_lift", "--episodes", "2", "--out", str(demos), "--seed", "0", "--no-images")
    assert proc.returncode == 0, proc.stderr
    proc = cli("train-bc", "--demos", str(demos), "--out", str(base), "--state-only", "--steps", "20", "--chunk", "10",
               "--batch-size", "16")
    assert proc.returncode == 0, proc.stderr
    return demos, base


def small_recipe(**learner):
    from resfit_ros.jobs.in_process import load_recipe

    values = dict(hidden_dim=16, num_critic_heads=2, batch_size=16, random_warmup_steps=45,
                  critic_warmup_updates=30, utd=2, publish_every_updates=10)
    values.update(learner)
    return load_recipe(overrides={"learner": values, "residual_policy": {"exploration_hold_steps": 3}})


def test_no_update_before_the_random_steps_are_in_the_replay_then_the_warmup_then_utd(state_data):
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = state_data
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0)
    seen = []
    original = run.learn_to_schedule

    def recording():
        before = run.agent.critic_updates
        original()
        if run.agent.critic_updates > before:
            seen.append((run.train_steps, before, run.agent.critic_updates, run.buffer.num_online_transitions))

    run.learn_to_schedule = recording
    result = run.train(env_steps=70)
    first = seen[0]
    assert first[0] == 45 and first[1] == 0 and first[2] == 30       # at step 45: the 30 critic-only updates
    assert first[3] == 40                                           # on the two finished 20-step episodes
    assert all(updates == run.schedule.budget(steps) for steps, _, updates, _ in seen)
    assert run.agent.actor_updates == (run.agent.critic_updates - 30) // 2
    assert result.env_steps >= 70 and len(result.train_results) == result.episodes


def test_the_random_warmup_spans_the_whole_bound_and_the_actor_phase_explores_less(state_data):
    from resfit_ros.jobs.in_process import InProcessRun
    from resfit_ros.learning.normaliser import residual_bounds

    demos, base = state_data
    run = InProcessRun(small_recipe(random_warmup_steps=40, exploration_std=0.001), demos, base, max_steps=20)
    normaliser = run.agent.normaliser
    bound = residual_bounds(run.agent.config.action_scale, normaliser) * normaliser.action_half_range   # joint units
    residuals = {True: [], False: []}
    control = run.control
    step = control.step

    def recording(policy, state, base_action, position, **kw):
        out = step(policy, state, base_action, position, **kw)
        residuals[kw["train_steps"] < 40].append(np.abs(out.residual))
        return out

    control.step = recording
    run.train(env_steps=80)
    hands = np.array(["_hand_" in n for n in run.env.joint_names])
    warm = np.max(np.array(residuals[True]), axis=0)
    assert np.all(warm[hands] > 0.6 * bound[hands])    # held uniform draws over the whole bound reach near it
    later = np.max(np.array(residuals[False]), axis=0)
    assert np.all(later[hands] < 0.2 * bound[hands])   # the actor starts at 0 and explores at 0.001 x gain


def test_with_action_repeat_the_trainer_holds_each_decision_and_updates_per_decision(state_data):
    """action_repeat 5: the executed residual changes only at steps 0, 5, 10, ... of an episode,
    the online store holds one transition per decision, and utd updates follow each decision."""
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = state_data
    run = InProcessRun(small_recipe(action_repeat=5, random_warmup_steps=40, critic_warmup_updates=21, utd=3),
                       demos, base, max_steps=20, seed=0)
    residuals = []
    step = run.control.step

    def recording(policy, state, base_action, position, **kw):
        out = step(policy, state, base_action, position, **kw)
        residuals.append(out.residual.copy())
        return out

    run.control.step = recording
    result = run.train(env_steps=80)
    assert result.episodes == 4 and result.env_steps == 80           # 20-step episodes, none solved this soon
    for episode in np.array(residuals).reshape(4, 20, -1):
        changes = [t for t in range(1, 20) if not np.array_equal(episode[t], episode[t - 1])]
        assert set(changes) <= {5, 10, 15} and changes, changes
    assert run.buffer.num_online_transitions == 4 * 4                 # 4 decisions per episode
    assert run.agent.critic_updates == run.schedule.budget(80) == 21 + 3 * (40 // 5)


def test_state_statistics_are_refit_on_demos_and_warmup_states_before_the_first_update(state_data):
    """The first update comes after the random warm-up; right before it the state normaliser is
    refit on every stored state (demos + the warm-up's episodes), once, and the policy gets it."""
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = state_data
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0)
    demo_only = run.agent.normaliser
    assert not run.agent.state_statistics_refit
    run.train(env_steps=40)                          # two 20-step episodes: the warm-up (45) is not over
    assert run.agent.critic_updates == 0 and run.agent.normaliser is demo_only
    fitted_on = []
    original = run.agent.refit_state_statistics
    run.agent.refit_state_statistics = lambda states, floor: (fitted_on.append(states), original(states, floor))
    run.train(env_steps=70)
    assert run.agent.state_statistics_refit and run.agent.critic_updates > 0
    refit = run.agent.normaliser
    (states,) = fitted_on
    assert len(states) == run.buffer.num_demo_transitions + 40      # demos + the two warm-up episodes
    np.testing.assert_allclose(refit.state_mean, states.mean(axis=0), rtol=1e-4, atol=1e-5)
    assert not np.allclose(refit.state_std, demo_only.state_std)
    np.testing.assert_array_equal(refit.action_low, demo_only.action_low)
    np.testing.assert_array_equal(run.policy.normaliser.state_std, refit.state_std)   # the robot's copy too
    updates = run.agent.critic_updates
    run.train(env_steps=90)                          # once only
    assert run.agent.normaliser is refit and run.agent.critic_updates > updates


def test_without_refit_the_demo_statistics_stay(state_data):
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = state_data
    run = InProcessRun(small_recipe(refit_state_statistics=False), demos, base, max_steps=20, seed=0)
    demo_only = run.agent.normaliser
    run.train(env_steps=70)
    assert run.agent.critic_updates > 0 and run.agent.normaliser is demo_only


def test_the_scripted_operator_takes_over_watched_episodes_and_its_steps_reach_the_replay(state_data):
    """intervention.share 1: every exploring episode is watched; once the robot's arm command strays
    from the expert's by more than deviation_rad the expert drives to the episode's end, those steps
    are marked, and they are the intervention store's transitions. Unwatched (evaluation) episodes
    never are."""
    from resfit_ros.jobs.in_process import InProcessRun, load_recipe

    demos, base = state_data
    recipe = load_recipe(overrides={
        "learner": dict(hidden_dim=16, num_critic_heads=2, batch_size=16, random_warmup_steps=45,
                        critic_warmup_updates=30, utd=2, publish_every_updates=10, intervention_bc_weight=1.0),
        "intervention": {"share": 1.0, "deviation_rad": 0.05}})
    run = InProcessRun(recipe, demos, base, max_steps=30, seed=0)
    marks = []
    step = run.control.step

    def recording(policy, state, base_action, position, **kw):
        out = step(policy, state, base_action, position, **kw)
        marks.append((kw.get("operator") is not None, out.intervention, run.intervener.expert_command))
        return out

    run.control.step = recording
    result = run.train(env_steps=150)
    watched = [w for w, _, _ in result.interventions]
    assert all(watched[i] == result.train_results[i][0] for i in range(result.episodes))   # explore episodes only
    operator_steps = sum(n for _, n, _ in result.interventions)
    assert operator_steps > 0 and run.buffer.num_intervention_transitions == operator_steps
    for watched_episode, (_, n, length) in zip(watched, result.interventions):
        assert n < length or not watched_episode            # the policy drives first, the operator after
    # a step is an intervention exactly when an operator target was given, and then stays one
    assert all(given == marked for given, marked, _ in marks)
    assert run.agent.actor_updates > 0 and "losses/intervention_bc" in run.stats

    # an evaluation never has the operator (and runs its own ControlStep: no step recorded here)
    assert len(run.evaluate(2)) == 2
    assert len(marks) == sum(length for _, _, length in result.interventions)


def test_a_success_detector_labels_the_training_episodes_and_the_simulator_still_judges_evaluation(state_data, tmp_path):
    """--detector: each training episode runs until the detector's rule gives a verdict and enters the
    replay with the detector's label, the simulator's success is kept beside it; evaluation counts
    the simulator's success. Here a detector that is sure of success at once (a network whose output
    bias is large): every training episode ends after `consecutive` steps, labelled success, though
    the box never moved."""
    import torch

    from resfit_ros.jobs.in_process import InProcessRun
    from resfit_ros.learning.detector import (DecisionRule, DetectorConfig, DetectorNet, SuccessDetector,
                                              save_detector)
    from resfit_ros.sim import make_env

    demos, base = state_data
    env = make_env("g1_pick_lift", render=False, cameras=(), control_hz=20.0, seed=0)
    obs = env.reset(seed=0)
    config = DetectorConfig(list(obs.joint_names), list(obs.extra_names), velocity=True, hidden_dims=[4])
    net = DetectorNet(config.state_dim, config.hidden_dims)
    with torch.no_grad():
        net.mlp[-1].bias.fill_(20.0)
        net.mlp[-1].weight.zero_()
    path = save_detector(SuccessDetector(net, config, DecisionRule(consecutive=3)), tmp_path / "sure.safetensors")
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0, detector=path)
    result = run.train(env_steps=30)
    # 3 steps each; every 5th episode without exploration (its steps are not training steps)
    assert result.episodes == 12 and result.env_steps == 30
    assert result.labels == [(True, False, False)] * 12                     # labelled success, not one true
    assert run.buffer.num_online_transitions == 36
    assert [s for _, s in result.train_results] == [False] * 12            # training success: the simulator's
    outcomes = run.evaluate(1)
    assert outcomes == [False]                                             # the simulator judges evaluation


# --- camera mode: the head camera + joint states, never the object pose ------------------------------

@pytest.fixture(scope="module")
def camera_data(tmp_path_factory):
    """Image demos recorded as a robot observes (no task state) and an image base on joint positions."""
    return build_tiny_image_base(tmp_path_factory.mktemp("in_process_cameras"))


def record_ticks(run):
    """Wrap the run's ControlStep.step and its policy's act: what each tick and each decision received."""
    ticks, decisions = [], []
    step, act = run.control.step, run.policy.act

    def recording_step(policy, state, base_action, position, **kw):
        ticks.append((np.array(state), kw.get("images"), kw.get("features")))
        return step(policy, state, base_action, position, **kw)

    def recording_act(state, base_action, images=None, features=None, **kw):
        decisions.append((np.array(state), images, features))
        return act(state, base_action, images=images, features=features, **kw)

    run.control.step, run.policy.act = recording_step, recording_act
    return ticks, decisions


def moved_object_observations(run):
    """(before, after) the simulator's observations of one scene with the object moved 10 cm."""
    before = run.env.reset(seed=5)
    pose = run.env.object_pose()
    run.env.set_object_pose(pose[:3] + np.array([0.0, 0.1, 0.0]), pose[3:])
    return before, run.env.observe()


def test_camera_mode_learns_from_joint_states_and_images_and_the_object_pose_reaches_no_learner(camera_data):
    """Encoder path: a 58-D state (29 positions + 29 velocities) that moving the object leaves
    unchanged, while the camera sees it; every tick hands the image to the step and to the actor,
    the replay's online transitions hold those images, and the agent trains end to end."""
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = camera_data
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0, cameras=("head",))
    assert run.agent.state_dim == 58 and run.agent.camera_names == ["head"] and run.agent.feature_dim == 0
    assert run.buffer.n_cameras == 1 and run.policy.camera_names == ["head"]

    before, after = moved_object_observations(run)
    assert not np.allclose(before.extra[:3], after.extra[:3])             # the simulator moved it ...
    np.testing.assert_array_equal(run.observed(before).state_vector(), run.observed(after).state_vector())
    assert run.observed(after).extra.size == 0 and run.observed(after).state_vector().shape == (58,)
    assert not np.array_equal(before.images["head"], after.images["head"])  # ... the camera sees it

    seen_by_base = []
    select = run.base.select_action
    run.base.select_action = lambda obs, *a: (seen_by_base.append(obs.extra.size), select(obs, *a))[1]
    ticks, decisions = record_ticks(run)
    run.train(env_steps=70)
    assert seen_by_base and set(seen_by_base) == {0}
    assert all(state.shape == (58,) and images.shape == (1, 3, 84, 84) and images.dtype == np.uint8
               and features is None for state, images, features in ticks)
    assert decisions and all(images is not None and images.shape == (1, 3, 84, 84) for _, images, _ in decisions)
    assert run.agent.critic_updates > 0 and run.agent.actor_updates > 0
    assert np.isfinite(run.stats["losses/critic"]) and np.isfinite(run.stats["losses/actor"])

    batch = run.buffer.sample(64)                     # half demos, half online
    online = ~batch.demo.numpy()
    assert online.any() and tuple(batch.obs["images"].shape) == (64, 1, 3, 84, 84)
    ticked = {images.tobytes() for _, images, _ in ticks}
    assert all(image.tobytes() in ticked for image in batch.obs["images"].numpy()[online])
    assert len(run.evaluate(1)) == 1


def test_camera_mode_with_the_base_encoders_features(camera_data):
    """Features path: the residual reads the frozen image base's encoder features of the camera image
    (no image in the agent or its replay), the same features the base computes for that image."""
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = camera_data
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0, cameras=("head",), camera_path="features")
    width = run.base.feature_dim
    assert width > 0 and run.agent.feature_dim == width and run.agent.camera_names == []
    assert run.agent.state_dim == 58 and run.buffer.feature_dim == width and run.buffer.n_cameras == 0
    ticks, decisions = record_ticks(run)
    run.train(env_steps=70)
    state, images, features = ticks[7]
    np.testing.assert_allclose(features, run.base.encode_images(images[None])[0], rtol=1e-5, atol=1e-6)
    assert decisions and all(f is not None and f.shape == (width,) for _, _, f in decisions)
    assert run.agent.critic_updates > 0 and run.agent.actor_updates > 0 and np.isfinite(run.stats["losses/critic"])
    batch = run.buffer.sample(64)
    assert "images" not in batch.obs and tuple(batch.obs["features"].shape) == (64, width)
    online = ~batch.demo.numpy()
    ticked = {np.asarray(f, np.float32).tobytes() for _, _, f in ticks}
    assert online.any() and all(f.tobytes() in ticked for f in batch.obs["features"].numpy()[online])
    demo_features = batch.obs["features"].numpy()[~online]      # the demos': the base's encoder on their images
    assert np.all(np.abs(demo_features) <= 1.0) and demo_features.std() > 0


def test_train_offline_on_the_base_encoders_features(camera_data, tmp_path):
    """`train-offline --use-cameras --base-features`: the graph learner's features path, offline; the
    agent it saves reads the base's features (no image encoder of its own)."""
    from resfit_ros.learning.agent import ResidualAgent
    from resfit_ros.policy import load_base_policy

    demos, base = camera_data
    out = tmp_path / "offline"
    proc = cli("train-offline", "--demos", str(demos), "--base", str(base), "--out", str(out), "--steps", "3",
               "--use-cameras", "--base-features", "--batch-size", "16", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    agent = ResidualAgent.from_checkpoint(out / "checkpoints")
    assert agent.feature_dim == load_base_policy(base).feature_dim > 0 and agent.camera_names == []
    proc = cli("train-offline", "--demos", str(demos), "--base", str(base), "--out", str(tmp_path / "no"),
               "--steps", "3", "--base-features")
    assert proc.returncode == 2 and "needs use_cameras" in proc.stderr, proc.stderr
    assert not (tmp_path / "no").exists()


def test_camera_mode_refuses_what_would_leak_the_object_pose_or_cannot_run(camera_data, state_data):
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = camera_data
    state_demos, state_base = state_data
    with pytest.raises(ValueError, match="camera_path"):
        InProcessRun(small_recipe(), demos, base, max_steps=20, cameras=("head",), camera_path="pixels")
    with pytest.raises(ValueError, match="the base observes"):        # a state-only base reads the object pose
        InProcessRun(small_recipe(), demos, state_base, max_steps=20, cameras=("head",))
    from resfit_ros.learning.offline import SetupError
    with pytest.raises(SetupError, match="no camera images"):
        InProcessRun(small_recipe(), state_demos, base, max_steps=20, cameras=("head",))


def test_state_only_mode_still_observes_the_object_pose_and_renders_nothing(state_data):
    """The default (the main job's recipe): state = positions, velocities and the object pose, no
    camera rendered, no image or feature anywhere."""
    from resfit_ros.jobs.in_process import InProcessRun

    demos, base = state_data
    run = InProcessRun(small_recipe(), demos, base, max_steps=20, seed=0)
    assert run.agent.state_dim == 67 and run.agent.camera_names == [] and run.agent.feature_dim == 0
    before, after = moved_object_observations(run)
    assert before.images == {} and not np.allclose(run.observed(before).state_vector(),
                                                   run.observed(after).state_vector())
    ticks, _ = record_ticks(run)
    run.train(env_steps=50)
    assert all(state.shape == (67,) and images is None and features is None for state, images, features in ticks)
    assert set(run.buffer.sample(16).obs) == {"state"}


def test_the_recipe_has_one_residual_bound(tmp_path):
    from resfit_ros.config import ConfigError
    from resfit_ros.jobs.in_process import load_recipe
    from resfit_ros.robot import config_dir

    recipe = load_recipe(overrides={"residual_policy": {"residual_bound": [0.15]}})
    assert recipe.learner.residual_bound == recipe.policy.residual_bound == [0.15]   # one override, both
    recipe = load_recipe(overrides={"learner": {"residual_bound": [0.1]}})
    assert recipe.policy.residual_bound == [0.1]
    text = (config_dir() / "sim.yaml").read_text()
    at = text.index("/**/learner:")
    text = text[:at] + text[at:].replace("residual_bound: [0.2]", "residual_bound: [0.3]", 1)
    mismatched = tmp_path / "sim.yaml"
    mismatched.write_text(text)
    with pytest.raises(ConfigError, match=r"learner's residual_bound \[0.3\] differs from the residual node's \[0.2\]"):
        load_recipe(mismatched)
