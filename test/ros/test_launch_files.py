"""launch/*.launch.py build launch_ros Node actions from the same GraphSpec the runner uses.

launch and launch_ros cannot be installed on these machines, so this test stands in minimal
recording classes for them (the only mock in the suite, for exactly what cannot run here); on a
ROS install `ros2 launch resfit_ros train_sim.launch.py --show-args` exercises the real ones.
"""
import dataclasses
import runpy
import sys
import types
from pathlib import Path

import pytest

from resfit_ros import names
from resfit_ros.graph import GRAPHS, planned_nodes, resolve_args, substitute

LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"


class _Recorder:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _fake_launch_modules(monkeypatch):
    classes = {}

    def make(name):
        cls = type(name, (_Recorder,), {})
        classes[name] = cls
        return cls

    mods = {
        "launch": {"LaunchDescription": make("LaunchDescription")},
        "launch.actions": {"DeclareLaunchArgument": make("DeclareLaunchArgument"), "Shutdown": make("Shutdown"),
                           "OpaqueFunction": make("OpaqueFunction")},
        "launch.substitutions": {"LaunchConfiguration": type("LaunchConfiguration", (_Recorder,), {
            "perform": lambda self, context: context[self.args[0]]})},
        "launch_ros": {},
        "launch_ros.actions": {"Node": make("Node")},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda pkg: str(LAUNCH_DIR.parent)},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
    return classes


def _launch(monkeypatch, graph_name: str, **given: str):
    """The launch file's actions and the Node actions it starts for launch arguments `given`
    (the rest at their declared defaults, as ros2 launch resolves them)."""
    classes = _fake_launch_modules(monkeypatch)
    ns = runpy.run_path(str(LAUNCH_DIR / f"{graph_name}.launch.py"))
    actions = ns["generate_launch_description"]().args[0]
    declared = [a for a in actions if isinstance(a, classes["DeclareLaunchArgument"])]
    defaults = {d.args[0]: "".join(p if isinstance(p, str) else f"$(arg {p.args[0]})" for p in d.kwargs["default_value"])
                if isinstance(d.kwargs["default_value"], list) else d.kwargs["default_value"] for d in declared}
    # the files a launch checks must exist: the package's own config, any file as the base
    context = {**defaults, "base_artifact": str(LAUNCH_DIR / "train_sim.launch.py"), **given}
    for _ in range(3):                       # defaults that refer to other arguments
        context = {k: substitute(v, context) for k, v in context.items()}
    [opaque] = [a for a in actions if isinstance(a, classes["OpaqueFunction"])]
    return classes, declared, opaque.kwargs["function"](context), context


@pytest.mark.parametrize("graph_name", ["train_real", "train_sim", "eval", "robot_sim", "robot", "learner"])
def test_launch_file_declares_the_graph(monkeypatch, graph_name):
    graph = GRAPHS[graph_name]
    classes, declared, nodes, context = _launch(monkeypatch, graph_name)
    assert [d.args[0] for d in declared] == [a.name for a in graph.args]
    assert all(d.kwargs["description"] for d in declared), "every launch argument needs a description"
    for d, arg in zip(declared, graph.args):
        assert d.kwargs.get("choices") == (["true", "false"] if arg.kind == "bool" else None), arg.name
    # the nodes ros2 launch starts are exactly the runner's plan for the same values
    plan = planned_nodes(graph, resolve_args(graph, context, package_config_dir=str(LAUNCH_DIR.parent / "config")))
    assert [n.kwargs["name"] for n in nodes] == [p.spec.name for p in plan] and nodes
    for n, p in zip(nodes, plan):
        spec = p.spec
        assert n.kwargs["package"] == "resfit_ros" and n.kwargs["executable"] == spec.executable
        assert n.kwargs["namespace"] == "/"                   # the root by default
        assert n.kwargs["respawn"] == spec.respawn
        assert ("on_exit" in n.kwargs) == spec.required
        overrides = n.kwargs["parameters"][-1]
        assert set(overrides) == set(spec.parameters)
        assert all("$(arg" not in v for v in overrides.values()), overrides
    # config_dir defaults to the installed package's share directory
    cfg = next(d for d in declared if d.args[0] == "config_dir")
    assert cfg.kwargs["default_value"] == str(LAUNCH_DIR.parent / "config")
    # the real robot graph never starts a simulator or a judge
    if graph_name == "train_real":
        assert not {"sim_robot", "judge"} & {s.executable for s in graph.nodes}


def test_launch_conditions_and_namespace_follow_the_arguments(monkeypatch):
    _, _, nodes, _ = _launch(monkeypatch, "train_sim")
    assert "judge" in [n.kwargs["name"] for n in nodes] and "success_detector" not in [n.kwargs["name"] for n in nodes]
    _, _, nodes, _ = _launch(monkeypatch, "train_sim", use_detector="true", detector="none", namespace="lab")
    assert "success_detector" in [n.kwargs["name"] for n in nodes] and "judge" not in [n.kwargs["name"] for n in nodes]
    assert {n.kwargs["namespace"] for n in nodes} == {"/lab"}
    _, _, nodes, _ = _launch(monkeypatch, "eval", use_sim="false")
    assert not {"sim_robot", "judge"} & {n.kwargs["name"] for n in nodes}


def test_a_fleet_launches_the_robot_nodes_once_per_robot(monkeypatch):
    _, _, nodes, _ = _launch(monkeypatch, "train_sim", robots="3", output_dir="/data/run")
    where = [(n.kwargs["namespace"], n.kwargs["name"]) for n in nodes]
    assert where.count(("/", "learner")) == 1 and len([w for w in where if w[1] == "learner"]) == 1
    for i in range(3):
        for name in ("sim_robot", "judge", "synchronizer", "base_chunk_server", "residual_policy", "episode_manager",
                     "recorder"):
            assert where.count((f"/robot_{i}", name)) == 1, (i, name)
    learner = next(n for n in nodes if n.kwargs["name"] == "learner").kwargs["parameters"][-1]
    assert learner["robots"] == "[robot_0, robot_1, robot_2]" and learner["use_sim_time"] == "false"
    recorders = [n.kwargs["parameters"][-1]["output_dir"] for n in nodes if n.kwargs["name"] == "recorder"]
    assert recorders == [f"/data/run/episodes/robot_{i}" for i in range(3)]   # one store, a folder per robot
    assert learner["episodes_dir"] == "/data/run/episodes"
    # the launch ends when the last robot's judge is done, at once when one fails (as the runner)
    judges = [n.kwargs["on_exit"] for n in nodes if n.kwargs["name"] == "judge"]
    done = types.SimpleNamespace(returncode=0)
    assert judges[0](done, None) is None and judges[1](done, None) is None
    assert judges[2](done, None) is not None
    _, _, nodes, _ = _launch(monkeypatch, "train_sim", robots="2")
    failed = next(n.kwargs["on_exit"] for n in nodes if n.kwargs["name"] == "sim_robot")
    assert failed(types.SimpleNamespace(returncode=1), None) is not None


@pytest.mark.parametrize("config", ["sim.yaml", "real.yaml", "robot_sim.yaml"])
def test_every_parameter_file_section_matches_a_node_config(config):
    """Each section of the graphs' parameter files is accepted by the node's config dataclass."""
    import importlib

    from resfit_ros.config import component_values, config_from_dict, read_parameters
    from resfit_ros.robot import config_dir

    path = config_dir() / config
    classes = {"sim_robot": "SimRobotConfig", "synchronizer": "SynchronizerConfig",
               "base_chunk_server": "BaseChunkServerConfig", "residual_policy": "ResidualPolicyConfig",
               "episode_manager": "EpisodeManagerConfig", "recorder": "RecorderConfig",
               "learner": "LearnerConfig", "judge": "JudgeConfig"}
    import yaml

    sections = yaml.safe_load(path.read_text())
    assert sections, path
    # keyed "/**/<node>" (the node in any namespace): a bare name would not reach a namespaced node
    assert all(key.startswith("/**/") and key[4:] in classes for key in sections), sorted(sections)
    for node, cls_name in classes.items():
        if f"/**/{node}" not in sections:
            continue
        module = importlib.import_module(f"resfit_ros.nodes.{node}")
        values = read_parameters(path, node)
        if node == "base_chunk_server":
            values["base_artifact"] = "given/by/the/launch/argument.safetensors"
        cls = getattr(module, cls_name)
        config_from_dict(cls, component_values(cls, values), source=f"{config} [{node}]")


def test_robot_sim_runs_train_real_unchanged_beside_the_stand_in():
    """robot_sim = train_real's node commands (same names, executables, parameter file and
    overrides, respawn) + the stand-in robot in real time; the one addition is the manager's scene
    reset, and `reset_scene_service:=''` removes it (the default '' of EpisodeManagerConfig)."""
    from resfit_ros.config import read_parameters
    from resfit_ros.runner import node_command

    real, sim = GRAPHS["train_real"], GRAPHS["robot_sim"]
    paths = {"base_artifact": "/b.safetensors", "output_dir": "/o", "demos_dir": "/d"}
    real_args = resolve_args(real, paths, package_config_dir="/cfg")
    for scene_reset in (names.RESET_SCENE, ""):
        sim_args = resolve_args(sim, dict(paths, reset_scene_service=scene_reset), package_config_dir="/cfg")
        commands = {n.name: node_command(n, sim_args) for n in sim.nodes}
        assert set(commands) == {n.name for n in real.nodes} | {"sim_robot"}
        for spec in real.nodes:
            mine = next(n for n in sim.nodes if n.name == spec.name)
            assert (mine.executable, mine.params_file, mine.respawn, mine.required) == \
                (spec.executable, spec.params_file, spec.respawn, spec.required)
            expected = node_command(spec, real_args)
            if spec.name == "episode_manager":
                expected += ["-p", f"reset_scene_service:={scene_reset or chr(39) * 2}"]
            assert commands[spec.name] == expected, spec.name
    stand_in = next(n for n in sim.nodes if n.name == "sim_robot")
    assert stand_in.required and "sim_config" in stand_in.params_file
    sim_params = read_parameters(Path(__file__).resolve().parents[2] / "config" / "robot_sim.yaml", "sim_robot")
    assert sim_params["lockstep"] is False and sim_params["publish_clock"] is False
    assert sim_args["use_sim_time"] == "false" and not {"judge"} & set(commands)


def test_the_one_machine_graphs_are_the_union_of_the_robot_and_learner_graphs():
    """Two machines run exactly the nodes and parameters of one: the robot graph (with use_sim
    the simulator and judge too) and the learner graph make train_sim; without use_sim, train_real."""
    robot, learner = GRAPHS["robot"], GRAPHS["learner"]

    def described(nodes):
        return [(n.name, n.executable, n.params_file, tuple(sorted(n.parameters.items())), n.respawn, n.required)
                for n in nodes]

    sim_nodes = [n for n in robot.nodes if n.enabled_if == "use_sim"]
    robot_side = [n for n in robot.nodes if n.enabled_if != "use_sim"]
    assert {n.name for n in sim_nodes} == {"sim_robot", "judge"}
    assert {n.name for n in robot_side} == {"synchronizer", "base_chunk_server", "residual_policy", "episode_manager",
                                            "success_detector"}
    assert {n.name for n in learner.nodes} == {"recorder", "learner"}
    assert described(robot_side[:-1] + list(learner.nodes) + robot_side[-1:]) == described(GRAPHS["train_real"].nodes)
    # train_sim: the simulator with its judge, or (use_detector:=true) the success detector driving the episodes
    union = sim_nodes + robot_side[:-1] + list(learner.nodes)
    train_sim = [n for n in GRAPHS["train_sim"].nodes if n.name != "success_detector"]
    assert described(union) == described(train_sim)
    assert [(n.name, n.enabled_if) for n in GRAPHS["train_sim"].nodes if n.name in ("judge", "success_detector")] == \
        [("judge", "!use_detector"), ("success_detector", "use_detector")]
    # the split graphs read the simulator's time from the namespace as train_sim does
    assert all(n.remappings == GRAPHS["train_sim"].nodes[0].remappings for n in robot.nodes + learner.nodes)
    # every argument a node of the split graphs refers to is declared by its graph
    for graph in (robot, learner):
        values = resolve_args(graph, {})
        for node in graph.nodes:
            for value in node.parameters.values():
                substitute(value, values)
    assert resolve_args(learner, {"device": "cuda"})["device"] == "cuda"


def test_the_control_rate_is_one_launch_argument_for_every_node_that_uses_it():
    """control_rate_hz: one launch argument of each graph, handed to the simulator, synchronizer,
    residual policy and episode manager, and in no parameter file."""
    import yaml

    from resfit_ros.graph import RATE_NODES
    from resfit_ros.robot import config_dir

    assert set(RATE_NODES) == {"sim_robot", "synchronizer", "residual_policy", "episode_manager"}
    for graph in GRAPHS.values():
        for node in graph.nodes:
            if node.executable in RATE_NODES:
                assert node.parameters.get("control_rate_hz") == "$(arg control_rate_hz)", (graph.name, node.name)
                assert resolve_args(graph, {"control_rate_hz": "25.0"})["control_rate_hz"] == "25.0"
            else:
                assert "control_rate_hz" not in node.parameters, (graph.name, node.name)
    for path in sorted(config_dir().glob("*.yaml")):
        doc = yaml.safe_load(path.read_text()) or {}
        assert not [s for s, block in doc.items() if "control_rate_hz" in (block or {}).get("ros__parameters", {})], path
