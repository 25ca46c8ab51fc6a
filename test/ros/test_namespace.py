"""Namespaces: every node of a graph starts in the graph's `namespace:=`, and as every shared name
is node-relative, two robots share one DDS domain without crosstalk.

The unit tests check the graph description (no DDS). The DDS test runs two complete simulated
stacks side by side on ONE domain, in namespaces `a` and `b`: the eval graph's simulator,
synchronizer, base chunk server, residual policy, episode manager and recorder (no judge: the
test starts and labels the episodes; no learner: nothing here needs it), each simulator on its own
scene seed so its task state tells its data apart. Both are reset (a through `resfit-ros operator
--namespace a`); then an episode runs and is labelled in `a` only: `b`'s manager, policy and
recorder see none of it, and each stack's topics carry only its own robot's data.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.graph import GRAPHS, SIM_CLOCK_REMAP, graph_namespace, resolve_args
from resfit_ros.runner import GraphRunner, enabled_nodes, node_command
from test.support import build_tiny_base

WATCHED = ("synchronizer", "base_chunk_server", "residual_policy", "recorder")
SIMULATED = {"train_sim", "eval", "robot", "learner"}   # graphs that can run on a simulator's clock (robot/learner: use_sim:=true)


# --- the graph description (no DDS) ----------------------------------------------------------------
@pytest.mark.parametrize("graph_name", sorted(GRAPHS))
def test_every_node_of_a_graph_starts_in_the_graph_namespace(graph_name):
    graph = GRAPHS[graph_name]
    root = resolve_args(graph, {}, package_config_dir="/cfg")
    assert graph_namespace(graph, root) == ""
    for spec in graph.nodes:       # the default: the root, the commands exactly as without namespaces
        assert not any(a.startswith("__ns:=") for a in node_command(spec, root, namespace=""))
    for given in ("robot_a", "/robot_a", "robot_a/"):
        runner = GraphRunner(graph, {"namespace": given}, check_files=False)   # what `resfit-ros launch` runs
        assert runner.namespace == "/robot_a"
        started = [n.spec.name for n in runner.nodes]
        assert started == [n.name for n in enabled_nodes(graph, runner.args)] and started
        for node in runner.nodes:
            cmd = node.command
            pairs = list(zip(cmd, cmd[1:]))
            assert pairs.count(("-r", "__ns:=/robot_a")) == 1, (node.spec.name, cmd)
    # the launch files pass the same argument to every launch_ros Node (test_launch_files.py)
    assert any(a.name == "namespace" and a.kind == "namespace" for a in graph.args)
    # a simulated graph reads its simulator's time in its namespace (/clock itself at the root)
    for spec in graph.nodes:
        assert (SIM_CLOCK_REMAP in spec.remappings) == (graph_name in SIMULATED), spec.name


def test_a_fleet_starts_the_robot_nodes_once_per_robot_under_the_namespace(tmp_path):
    from resfit_ros.config import ConfigError
    from resfit_ros.nodes.learner import LearnerConfig

    graph = GRAPHS["train_sim"]
    runner = GraphRunner(graph, {"robots": "3", "namespace": "lab", "output_dir": "/data/run"}, check_files=False,
                         pid_dir=tmp_path / "pids")
    by_label = {n.label: n.command for n in runner.nodes}
    per_robot = [n.name for n in enabled_nodes(graph, runner.args) if n.per_robot]
    assert set(per_robot) >= {"sim_robot", "judge", "synchronizer", "base_chunk_server", "residual_policy",
                              "episode_manager", "recorder"}
    assert sorted(by_label) == sorted([f"robot_{i}/{n}" for i in range(3) for n in per_robot] + ["learner"])
    for label, cmd in by_label.items():
        robot = label.split("/")[0] if "/" in label else ""
        assert f"__ns:=/lab/{robot}".rstrip("/") in cmd, (label, cmd)
    state_files = {next(a for a in c if a.startswith("state_file:="))
                   for label, c in by_label.items() if label.endswith("episode_manager")}
    assert state_files == {f"state_file:=/data/run/robot_{i}/episode_manager_state.json" for i in range(3)}
    learner = by_label["learner"]
    assert "robots:=[robot_0, robot_1, robot_2]" in learner and "use_sim_time:=false" in learner
    assert "episodes_dir:=/data/run/episodes" in learner
    # the learner machine of a real fleet: a recorder per robot, one learner serving them all
    learner_side = GraphRunner(GRAPHS["learner"], {"robots": "2"}, check_files=False)
    assert sorted(n.label for n in learner_side.nodes) == ["learner", "robot_0/recorder", "robot_1/recorder"]
    # robots:=1 is exactly the one-robot graph
    one = GraphRunner(graph, {"output_dir": "/data/run"}, check_files=False)
    assert [n.label for n in one.nodes] == [n.name for n in enabled_nodes(graph, one.args)]
    assert not any(a.startswith("robots:=") for n in one.nodes for a in n.command)
    with pytest.raises(ValueError, match="robots"):
        GraphRunner(graph, {"robots": "0"}, check_files=False)
    for bad in (["1robot"], ["robot_0", "robot_0"], ["/robot_0"]):
        with pytest.raises(ConfigError, match="robots"):
            LearnerConfig(robots=bad)


def test_a_namespace_that_ros_refuses_stops_the_launch_before_anything_starts():
    for bad in ("robot-a", "1robot", "a//b", "a b"):
        with pytest.raises(ValueError, match=rf"namespace:='{bad}' is not a ROS namespace"):
            GraphRunner(GRAPHS["echo_pair"], {"namespace": bad}, check_files=False)
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "operator", "--namespace", "robot-a"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not a ROS namespace" in r.stderr, r.stderr


def test_a_bare_parameter_section_is_refused_in_a_namespace():
    """rcl applies a section keyed by the bare node name only at the root: in a namespace the node
    would silently run on its defaults. It says so instead."""
    from resfit_ros.nodes.common import params_file_namespace_problem
    from resfit_ros.robot import config_dir

    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        f.write("recorder:\n  ros__parameters:\n    finish_delay_s: 0.5\n")
        f.flush()
        argv = ["--ros-args", "-r", "__ns:=/a", "--params-file", f.name]
        problem = params_file_namespace_problem(argv, "recorder", "/a")
        assert problem and "'/**/recorder'" in problem and "/a/recorder" in problem
        assert params_file_namespace_problem(argv, "recorder", "/") is None        # at the root it applies
        assert params_file_namespace_problem(argv, "learner", "/a") is None        # not this node's section
    packaged = ["--ros-args", "--params-file", str(config_dir() / "sim.yaml")]
    assert params_file_namespace_problem(packaged, "recorder", "/a") is None     # keyed /**/recorder


# --- two stacks on one domain ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("base"))


def _light_config(tmp_path):
    """config/sim.yaml, state only: no rendering, no camera input (the cheapest complete stack)."""
    import yaml

    from resfit_ros.robot import config_dir

    doc = yaml.safe_load((config_dir() / "sim.yaml").read_text())
    doc["/**/sim_robot"]["ros__parameters"].update(render=False)
    doc["/**/synchronizer"]["ros__parameters"].update(use_cameras=False)
    path = tmp_path / "sim_state_only.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _stack(seed: int):
    """The eval graph without its judge, the simulator on scene seed `seed`."""
    graph = GRAPHS["eval"]
    nodes = tuple(dataclasses.replace(n, parameters={**n.parameters, "seed": str(seed)}) if n.name == "sim_robot" else n
                  for n in graph.nodes if n.name != "judge")
    return dataclasses.replace(graph, nodes=nodes)


class Watch:
    """What the test node hears on one stack's topics (the names resolved in its namespace)."""

    def __init__(self, node, ns: str):
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import JointState

        from resfit_ros.msg import EpisodeStatus, Observation, RecorderProgress, StepRecord
        from resfit_ros.nodes.common import LATCHED

        # every message of a lockstep simulator running flat out, however slowly this test spins
        deep = QoSProfile(depth=5000, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.ns = ns
        self.observations, self.steps, self.statuses, self.task_states, self.recorded = [], [], [], [], []
        at = self.at
        node.create_subscription(Observation, at(names.OBSERVATION), self.observations.append, deep)
        node.create_subscription(StepRecord, at(names.STEP_RECORD), self.steps.append, deep)
        node.create_subscription(EpisodeStatus, at(names.EPISODE_STATUS), self.statuses.append, LATCHED)
        node.create_subscription(JointState, at(names.TASK_STATE), self.task_states.append, deep)
        node.create_subscription(RecorderProgress, at(names.RECORDER_PROGRESS), self.recorded.append, deep)

    def at(self, name: str) -> str:
        return names.resolve(name, self.ns)

    def task_values(self) -> set:
        return {tuple(np.round(m.position, 9)) for m in self.task_states}

    def obs_task_values(self) -> set:
        return {tuple(np.round(m.extra, 9)) for m in self.observations}

    @property
    def status(self):
        return self.statuses[-1] if self.statuses else None

    def states_since(self, index: int) -> set:
        """The distinct statuses from `index` on, without their stamps."""
        return {(s.state, s.episode_id, s.label, s.aborted, s.ready, s.steps, s.episodes_completed, s.message)
                for s in self.statuses[index:]}


def _wait_up(runners, logs, deadline_s=240.0):
    deadline = time.monotonic() + deadline_s
    for ns, runner in runners.items():
        while True:
            text = logs[ns].read_text(errors="replace")
            if all(f"{n} is up" in text for n in WATCHED):
                break
            assert runner.poll(), f"stack {ns} stopped: {runner.exit_reason}\n{text[-3000:]}"
            assert time.monotonic() < deadline, f"stack {ns} did not come up:\n{text[-3000:]}"
            time.sleep(0.3)


@pytest.mark.ros
def test_two_simulated_stacks_share_one_domain_without_crosstalk(ros_context, ros_domain, tmp_path, tiny_base):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import Trigger

    from resfit_ros.bags import scan_episodes
    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.srv import LabelEpisode, StartEpisode

    demos, base = tiny_base
    node = ros_context.node
    config = _light_config(tmp_path)
    watch = {ns: Watch(node, ns) for ns in ("a", "b")}
    diagnostics: set[str] = set()
    node.create_subscription(DiagnosticArray, names.DIAGNOSTICS,
                             lambda m: diagnostics.update(s.name for s in m.status), 50)
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain))
    runners, logs, outs = {}, {}, {}
    try:
        for ns, seed in (("a", 0), ("b", 7)):
            outs[ns], logs[ns] = tmp_path / f"run_{ns}", tmp_path / f"graph_{ns}.log"
            runners[ns] = GraphRunner(_stack(seed), {
                "namespace": ns, "config": str(config), "base_artifact": str(base), "demos_dir": str(demos),
                "output_dir": str(outs[ns])}, env=env, output=open(logs[ns], "w"), max_restarts=0)
            runners[ns].start()
        _wait_up(runners, logs)
        assert ros_context.spin_until(lambda: all(w.status is not None for w in watch.values()), 20)

        # both namespaced sets on the one domain (as `ros2 topic list` shows them), none at the root
        wanted_topics = {watch[ns].at(name) for ns in ("a", "b") for name in (
            names.OBSERVATION, names.STEP_RECORD, names.EPISODE_STATUS, names.JOINT_STATES, names.TASK_STATE,
            names.SIM_CLOCK, names.ALIVE_TOPIC.format(node="synchronizer"),
            names.CONTROLLER_COMMANDS.format(controller="waist_controller"))}
        wanted_services = {watch[ns].at(name) for ns in ("a", "b") for name in (
            names.START_EPISODE, names.LABEL_EPISODE, names.RESET, names.GET_ACTION_CHUNK, names.RESET_SCENE)}

        def graph_names():
            return ({name for name, _ in node.get_topic_names_and_types()},
                    {name for name, _ in node.get_service_names_and_types()})

        ros_context.spin_until(lambda: wanted_topics <= graph_names()[0] and wanted_services <= graph_names()[1], 20)
        topics, services = graph_names()
        assert wanted_topics <= topics, sorted(wanted_topics - topics)
        assert wanted_services <= services, sorted(wanted_services - services)
        at_root = {names.resolve(n) for n in (names.OBSERVATION, names.STEP_RECORD, names.EPISODE_STATUS,
                                              names.JOINT_STATES, names.TASK_STATE, names.CLOCK)}
        assert not at_root & topics, sorted(at_root & topics)
        assert not {names.resolve(names.START_EPISODE), names.resolve(names.RESET)} & services
        assert not node.get_publishers_info_by_topic(names.CLOCK), "a simulator's time leaked onto the global /clock"

        # reset a through the operator console, b through its service: both ready, each on its own
        console = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "operator", "--namespace", "a",
                                  "--timeout", "30"], input="r", capture_output=True, text=True, timeout=120, env=env)
        assert console.returncode == 0 and "[reset] OK: reset started" in console.stdout, console.stdout + console.stderr
        assert "(namespace /a)" in console.stdout
        assert ros_context.spin_until(lambda: watch["a"].status is not None and watch["a"].status.ready, 60), \
            logs["a"].read_text()[-3000:]
        assert not watch["b"].status.ready, "the reset of a reached b"
        r = ros_context.call(node.create_client(Trigger, watch["b"].at(names.RESET)), Trigger.Request(), timeout=30)
        assert r.success, r.message
        assert ros_context.spin_until(lambda: watch["b"].status.ready, 60), logs["b"].read_text()[-3000:]
        ros_context.spin_until(lambda: False, 1.0)      # the last observations of the homing
        b_observations, b_statuses = len(watch["b"].observations), len(watch["b"].statuses)
        b_state = watch["b"].states_since(b_statuses - 1)

        # an episode in a only
        start = node.create_client(StartEpisode, watch["a"].at(names.START_EPISODE))
        r = ros_context.call(start, StartEpisode.Request(explore=False, note="namespace test"), timeout=30)
        assert r.success, r.message
        episode = r.episode_id
        assert ros_context.spin_until(lambda: len(watch["a"].steps) >= 15, 90), logs["a"].read_text()[-3000:]
        # label once a's recorder has the steps (the manager would abort an episode it cannot keep)
        assert ros_context.spin_until(lambda: any(p.episode_id == episode and p.steps_recorded >= 15
                                                  for p in watch["a"].recorded), 30), logs["a"].read_text()[-3000:]
        # ... and once the manager has counted them: its count at the label is the episode's length
        # (on a loaded machine its step queue runs a few records behind the topic)
        assert ros_context.spin_until(lambda: watch["a"].status.episode_id == episode
                                      and watch["a"].status.steps >= 15, 30), logs["a"].read_text()[-3000:]
        label = node.create_client(LabelEpisode, watch["a"].at(names.LABEL_EPISODE))
        deadline = time.monotonic() + 30
        while True:     # "not labelled yet" while the recorder catches up, as a person presses again
            r = ros_context.call(label, LabelEpisode.Request(success=True, note="namespace test"), timeout=30)
            if r.accepted or time.monotonic() > deadline:
                break
            ros_context.spin_until(lambda: False, 0.5)
        assert r.accepted, r.message
        assert ros_context.spin_until(lambda: watch["a"].status.episodes_completed == 1, 20)
        found = {}
        deadline = time.monotonic() + 20
        while not found and time.monotonic() < deadline:
            found = {e.episode_id: e for _, e in scan_episodes(outs["a"] / "eval_episodes") if not isinstance(e, str)}
            ros_context.spin_until(lambda: False, 0.3)
    finally:
        for runner in runners.values():
            runner.shutdown()
    for ns in runners:
        text = logs[ns].read_text(errors="replace")
        assert "Traceback" not in text, f"stack {ns}:\n{text[-4000:]}"

    a, b = watch["a"], watch["b"]
    # a's episode: its steps on a's topic only, labelled, recorded by a's recorder
    assert a.steps and {s.episode_id for s in a.steps} == {episode}
    assert found.get(episode) is not None and found[episode].label == "success" and found[episode].num_steps >= 15
    # b untouched: no step, its status as before, no new observation (its simulator never stepped), no bag
    assert not b.steps, f"{len(b.steps)} step records on b's topic"
    assert not b.recorded, "b's recorder recorded a step"
    assert b.states_since(b_statuses - 1) == b_state, b.states_since(b_statuses - 1)
    assert len(b.observations) == b_observations, "b's simulator stepped while only a ran an episode"
    assert b.status.state == EpisodeStatus.IDLE and b.status.ready
    assert b.status.episode_id == 0 and b.status.episodes_completed == 0
    assert not (outs["b"] / "eval_episodes").is_dir() or not any((outs["b"] / "eval_episodes").iterdir())
    # each stack's observations carry its own simulator's task state, never the other's
    assert a.observations and b.observations
    assert a.task_values() and b.task_values() and not a.task_values() & b.task_values(), "the seeds must tell apart"
    assert a.obs_task_values() <= a.task_values(), "a's observations carry data that is not a's"
    assert b.obs_task_values() <= b.task_values(), "b's observations carry data that is not b's"
    # /diagnostics is global: each node's status names its namespace
    assert {"resfit_ros: /a/synchronizer", "resfit_ros: /b/synchronizer", "resfit_ros: /a/episode_manager",
            "resfit_ros: /b/episode_manager"} <= diagnostics, sorted(diagnostics)
    assert not {"resfit_ros: synchronizer", "resfit_ros: episode_manager"} & diagnostics
