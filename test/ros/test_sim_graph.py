"""The whole train_sim graph over real DDS: sim, synchronizer, base server, residual policy,
episode manager, recorder, learner and judge as separate processes started by `resfit-ros launch`.

A few short episodes run, are labelled by the judge and recorded to bags; the learner updates and
the residual node receives new weights; every command stays within the robot's limits; the graph
stops by itself (the judge is `required`) and shuts down cleanly.
"""
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import RobotDescription, config_dir
from test.support import build_tiny_base, build_tiny_image_base, stop_process

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """Two state-only scripted demos and a BC base trained for a few steps (seconds)."""
    return build_tiny_base(tmp_path_factory.mktemp("base"))


def _watch(ros_context, robot, namespace: str = ""):
    """Subscriptions to what the graph sends to one robot (in `namespace`): controller commands,
    weights, learner metrics, steps."""
    from std_msgs.msg import Float64MultiArray

    from resfit_ros.msg import LearnerMetrics, PolicyWeights, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM

    node = ros_context.node
    at = lambda name: names.resolve(name, namespace)  # noqa: E731
    seen = {"commands": {g: [] for g in robot.controllers}, "weights": [], "metrics": [], "steps": []}
    for group, controller in robot.controllers.items():
        node.create_subscription(Float64MultiArray, at(names.CONTROLLER_COMMANDS.format(controller=controller)),
                                 lambda m, g=group: seen["commands"][g].append(np.array(m.data)), STREAM)
    node.create_subscription(PolicyWeights, at(names.POLICY_WEIGHTS), seen["weights"].append, LATCHED)
    node.create_subscription(LearnerMetrics, at(names.LEARNER_METRICS), seen["metrics"].append, STREAM)
    node.create_subscription(StepRecord, at(names.STEP_RECORD), seen["steps"].append, STREAM)
    return seen


def _short_warmup_config(tmp_path):
    """The graph's own config with a warm-up that fits three short episodes: 20 random-residual
    steps without an update, then 30 critic-only updates, then training. A scripted operator, when
    one is switched on (operator_share), takes over as soon as an arm strays 0.05 rad from the expert."""
    import yaml

    config = yaml.safe_load((config_dir() / "sim.yaml").read_text())
    config["/**/learner"]["ros__parameters"].update(random_warmup_steps=20, critic_warmup_updates=30)
    config["/**/sim_robot"]["ros__parameters"].update(operator_deviation_rad=0.05)
    config_file = tmp_path / "sim.yaml"
    config_file.write_text(yaml.safe_dump(config))
    return config_file


def _split_args(tmp_path, tiny_base):
    """(output dir, the launch arguments both halves of the robot/learner split take)."""
    demos, base = tiny_base
    out = tmp_path / "run"
    return out, (f"base_artifact:={base}", f"demos_dir:={demos}", f"output_dir:={out}", "use_sim_time:=true",
                 f"config:={_short_warmup_config(tmp_path)}")


def _launch(ros_domain, log, graph, *args):
    return subprocess.Popen([sys.executable, "-m", "resfit_ros.cli", "launch", graph, *args],
                            env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)), stdout=open(log, "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def _spin_until_exit(ros_context, process, timeout_s: float = 240) -> None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        ros_context.executor.spin_once(timeout_sec=0.05)
    drain = time.monotonic() + 1.0         # messages already on the wire when the graph stopped
    while time.monotonic() < drain:
        ros_context.executor.spin_once(timeout_sec=0.05)


def test_train_sim_graph_end_to_end(ros_context, ros_domain, tmp_path, tiny_base):
    """... with the scripted operator watching every training episode: it takes over once the robot
    strays, through the residual policy's intervention topics; the bags and the learner know which
    steps it drove."""
    from resfit_ros.bags import scan_episodes
    from resfit_ros.core.intervention import intervention_steps

    demos, base = tiny_base
    out = tmp_path / "run"
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = _watch(ros_context, robot)
    log = tmp_path / "launch.log"
    graph = _launch(ros_domain, log, "train_sim", f"base_artifact:={base}", f"demos_dir:={demos}",
                    f"output_dir:={out}", "episodes:=3", "max_steps:=25", f"config:={_short_warmup_config(tmp_path)}",
                    "operator_share:=1.0")
    try:
        _spin_until_exit(ros_context, graph)
        text = log.read_text(errors="replace")
        assert graph.poll() == 0, f"graph did not stop by itself with code 0:\n{text[-4000:]}"
    finally:
        stop_process(graph)
    assert_trained_and_recorded(out, seen, robot, text)
    labelled = [e for _, e in scan_episodes(out / "episodes") if not isinstance(e, str) and e.label is not None]
    for e in labelled:
        operator = intervention_steps(e.safety_flags)
        # the policy drives first; once the operator took over it drives to the episode's end
        assert not operator[0] and operator.any(), e.safety_flags.tolist()
        first = int(np.argmax(operator))
        assert operator[first:].all(), operator.tolist()
    assert "driven by the operator" in text and "interventions" in text, text[-3000:]


def test_the_robot_and_learner_graphs_side_by_side_train_as_train_sim(ros_context, ros_domain, tmp_path, tiny_base):
    """The two-machine split on one host: the robot graph (with the simulator and judge) and the
    learner graph as two launches on one ROS domain record, train and broadcast weights as
    train_sim does; the learner side keeps running after the robot side stops and saves on Ctrl-C."""
    out, common = _split_args(tmp_path, tiny_base)
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = _watch(ros_context, robot)
    learner_log, robot_log = tmp_path / "learner.log", tmp_path / "robot.log"
    learner = _launch(ros_domain, learner_log, "learner", *common)
    robot_side = _launch(ros_domain, robot_log, "robot", *common, "use_sim:=true", "episodes:=3", "max_steps:=25")
    try:
        _spin_until_exit(ros_context, robot_side)
        text = robot_log.read_text(errors="replace")
        assert robot_side.poll() == 0, f"the robot graph did not stop by itself with code 0:\n{text[-4000:]}"
        assert learner.poll() is None, learner_log.read_text(errors="replace")[-3000:]
        learner.send_signal(signal.SIGINT)                 # the operator stops the learner machine
        learner.wait(timeout=60)
    finally:
        stop_process(robot_side)
        stop_process(learner)
    assert_trained_and_recorded(out, seen, robot, text + learner_log.read_text(errors="replace"))


def test_a_fleet_of_two_simulated_robots_feeds_one_learner(ros_context, ros_domain, tmp_path, tiny_base):
    """train_sim robots:=2: two namespaced robots (simulator, judge, control path, recorder each),
    one learner. Both robots' episodes land in one store (a folder each) and are trained on; both
    run the same weights; the pace is shared (together they never run ahead of the update schedule)."""
    demos, base = tiny_base
    out = tmp_path / "run"
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = {r: _watch(ros_context, robot, r) for r in ("robot_0", "robot_1")}
    log = tmp_path / "launch.log"
    graph = _launch(ros_domain, log, "train_sim", f"base_artifact:={base}", f"demos_dir:={demos}",
                    f"output_dir:={out}", "episodes:=4", "max_steps:=25", f"config:={_short_warmup_config(tmp_path)}",
                    "robots:=2")   # 4 each: the robots run before the learner is up (it starts last, reading the demos)
    # the operator's console on the fleet, switched to robot_1 while the judges run the episodes
    console = subprocess.Popen([sys.executable, "-m", "resfit_ros.cli", "operator", "--robots", "2"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    try:
        console.stdin.write("1")
        console.stdin.flush()
        _spin_until_exit(ros_context, graph, timeout_s=360)
        text = log.read_text(errors="replace")
        # the first robot to finish its episodes ends the run (its judge is required)
        assert graph.poll() == 0, f"graph did not stop by itself with code 0:\n{text[-4000:]}"
        shown, _ = console.communicate("9q", timeout=60)
    finally:
        stop_process(graph)
        console.kill()
    assert "[robot] robot_1 of 2" in shown and "no robot_9" in shown, shown
    after = shown.split("[robot] robot_1 of 2", 1)[1]
    assert "[status] robot_1 " in after and "[status] robot_0 " not in after, shown
    assert "[robot_0/sim_robot]" in text and "[robot_1/judge]" in text     # the runner names each robot's nodes
    assert_trained_and_recorded(out, seen["robot_0"], robot, text, min_episodes=1, store=out / "episodes" / "robot_0")
    assert_trained_and_recorded(out, seen["robot_1"], robot, text, min_episodes=1, store=out / "episodes" / "robot_1")
    assert not [p for p in (out / "episodes").iterdir() if p.name.startswith("episode_")], "outside the robot folders"
    for r in ("robot_0", "robot_1"):
        assert f"ingested {r}/episode_" in text, text[-3000:]
        assert (out / r / "episode_manager_state.json").is_file()     # each manager keeps its own ids
    # the same weights went to both robots
    versions = [{w.version for w in seen[r]["weights"]} for r in ("robot_0", "robot_1")]
    assert versions[0] & versions[1] and max(versions[0]) >= 2
    # each robot's metrics count its own steps; the pace each may take leaves the fleet within the schedule
    for r, other in (("robot_0", "robot_1"), ("robot_1", "robot_0")):
        mine = max(s.training_steps for s in seen[r]["steps"])
        assert max(m.env_steps for m in seen[r]["metrics"]) <= mine
    assert sum(max(s.training_steps for s in seen[r]["steps"]) for r in seen) >= 2 * 20


def assert_trained_and_recorded(out, seen, robot, text: str, lockstep_aligned: bool = True, min_episodes: int = 3,
                                store=None) -> None:
    from resfit_ros.bags import scan_episodes

    metrics, weights, steps, commands = seen["metrics"], seen["weights"], seen["steps"], seen["commands"]
    # 3 labelled episodes recorded as complete bags, each with its steps
    episodes = [e for _, e in scan_episodes(store or out / "episodes") if not isinstance(e, str)]
    labelled = [e for e in episodes if e.label is not None]
    assert len(labelled) >= min_episodes, text[-3000:]
    for e in labelled:
        assert e.num_steps >= 1 and e.command.shape[1] == robot.dof
        assert np.all(e.step_obs_index >= 0), "every step has its observation in the bag"
    # the learner made updates (none before the robot's 20 random steps, then the 30 critic-only
    # ones at once) and the residual node ran with weights the learner pushed
    assert metrics and max(m.learner_step for m in metrics) >= 30
    allowed = [dict(zip(m.names, m.values)).get(names.PACE_STEPS_ALLOWED) for m in metrics]
    # (a watcher that joins late misses the first ones, at exactly the 20 random warm-up steps; in a
    # fleet a robot's share is its own steps plus what the fleet may still take: negative while the
    # others have taken it)
    assert all(a is not None for a in allowed) and min(allowed) < max(allowed)
    assert store is not None or min(allowed) >= 20
    assert weights and max(w.version for w in weights) >= 2
    assert steps and max(s.weights_version for s in steps) >= 1
    # every command that went to the controllers was within the joint limits and rate limits
    for group, idx in robot.group_indices().items():
        cmds = np.array(commands[group])
        assert len(cmds) > 0, f"no commands for {group}"
        assert np.all(cmds >= robot.lower[idx] - 1e-9) and np.all(cmds <= robot.upper[idx] + 1e-9)
    recs = np.array([s.command for s in steps])
    assert np.all(np.isfinite(recs))
    # lockstep alignment: every step acted on the state its previous command produced (replaying the
    # recorded commands in a fresh simulator reproduces the recorded observations); a step that
    # nobody commanded would leave the policy one observation late for the whole episode
    for e in labelled if lockstep_aligned else ():
        assert_lockstep_aligned(e)
    # clean shutdown: the learner saved a checkpoint on the way out
    assert (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()), text[-3000:]
    assert "Traceback" not in text, text[-4000:]


def assert_lockstep_aligned(ep, steps: int = 60, tol: float = 0.05) -> None:
    """Joint positions and the object's pose, not velocities, over the first `steps` steps: contacts
    amplify the replay's start difference (< 1e-4) to ~0.1 rad/s in a grasping finger's velocity within
    50 steps and past 0.05 in positions after ~100 steps; one step late, the positions are ~0.2 off at once."""
    from resfit_ros.sim import make_env

    env = make_env("g1_pick_lift", render=False, cameras=(), control_hz=20.0, seed=0)
    states = ep.states()
    first = states[ep.step_obs_index[0]]
    # the sim node seeds its scene resets 0, 1, 2, ...; the homing steps after a reset move the
    # robot by < 1e-3, a control period of motion moves it far more
    seed = next((s for s in range(12) if np.abs(env.reset(seed=s).state_vector() - first).max() < 1e-3), None)
    assert seed is not None, "the first observation matches no scene reset of the simulator"
    env.reset(seed=seed)
    for t in range(min(steps, ep.num_steps - 1)):
        obs, _ = env.step(ep.command[t])
        positions = np.r_[np.arange(ep.dof), 2 * ep.dof + np.arange(len(obs.extra))]      # not the velocities
        diff = np.abs(obs.state_vector() - states[ep.step_obs_index[t + 1]])[positions].max()
        assert diff < tol, f"step {t + 1} acted on an observation {diff:.3f} away from the state after step {t}"


@pytest.fixture(scope="module")
def tiny_image_base(tmp_path_factory):
    return build_tiny_image_base(tmp_path_factory.mktemp("image_base"))


def test_train_sim_graph_on_the_camera_through_the_base_encoders_features(ros_context, ros_domain, tmp_path,
                                                                         tiny_image_base):
    """`main-job --cameras`' graph (config/sim_cameras.yaml over sim.yaml): the learner's weights read
    the frozen image base's encoder features and name that base; the residual node computes the
    features of each tick's camera image with its own copy of the base and the actor acts on them
    (a residual on every trained tick, no tick left to the base for want of its inputs)."""
    import yaml

    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.jobs.main_job import recipe_config
    from resfit_ros.learning.from_bags import file_digest
    from resfit_ros.policy import load_base_policy

    demos, base = tiny_image_base
    config = yaml.safe_load(recipe_config(tmp_path, cameras=True, task="g1_pick_lift").read_text())
    config["/**/learner"]["ros__parameters"].update(random_warmup_steps=20, critic_warmup_updates=30)
    config_file = tmp_path / "sim_cameras_short.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "run"
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = _watch(ros_context, robot)
    log = tmp_path / "launch.log"
    graph = _launch(ros_domain, log, "train_sim", f"base_artifact:={base}", f"demos_dir:={demos}",
                    f"output_dir:={out}", "episodes:=3", "max_steps:=25", f"config:={config_file}")
    try:
        _spin_until_exit(ros_context, graph, timeout_s=300)
        text = log.read_text(errors="replace")
        assert graph.poll() == 0, f"graph did not stop by itself with code 0:\n{text[-4000:]}"
    finally:
        stop_process(graph)
    # (lockstep alignment is the state graph's test: its replay matches states with the object pose)
    assert_trained_and_recorded(out, seen, robot, text, lockstep_aligned=False)
    width = load_base_policy(base).feature_dim
    specs = {w.spec for w in seen["weights"]}
    assert len(specs) == 1, specs
    spec = PolicySpec.from_json(specs.pop())
    assert (spec.feature_dim, spec.camera_names, spec.state_dim) == (width, (), 58) and width > 0
    assert spec.base_digest == file_digest(base)
    trained = [s for s in seen["steps"] if s.exploration and s.training_steps > 20 and s.weights_version >= 1]
    assert trained, [(s.training_steps, s.weights_version) for s in seen["steps"]][-10:]
    assert all(np.any(np.asarray(s.residual) != 0.0) for s in trained)
    assert "residual not computed" not in text and "rejected policy weights" not in text, text[-3000:]
    assert f"read as the base encoder's {width} features" in text, text[-3000:]
