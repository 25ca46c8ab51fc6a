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
from resfit_ros.graph import GRAPHS, resolve_args, substitute

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
        "launch.actions": {"DeclareLaunchArgument": make("DeclareLaunchArgument"), "Shutdown": make("Shutdown")},
        "launch.conditions": {"IfCondition": make("IfCondition"), "UnlessCondition": make("UnlessCondition")},
        "launch.substitutions": {"LaunchConfiguration": make("LaunchConfiguration")},
        "launch_ros": {},
        "launch_ros.actions": {"Node": make("Node")},
        "ament_index_python": {},
        "ament_index_python.packages": {"get_package_share_directory": lambda pkg: f"/opt/share/{pkg}"},
    }
    for name, attrs in mods.items():
        mod = types.ModuleType(name)
        for k, v in attrs.items():
            setattr(mod, k, v)
        monkeypatch.setitem(sys.modules, name, mod)
    return classes


@pytest.mark.parametrize("graph_name", ["train_real", "train_sim", "eval", "robot_sim", "robot", "learner"])
def test_launch_file_declares_the_graph(monkeypatch, graph_name):
    classes = _fake_launch_modules(monkeypatch)
    ns = runpy.run_path(str(LAUNCH_DIR / f"{graph_name}.launch.py"))
    ld = ns["generate_launch_description"]()
    actions = ld.args[0]
    graph = GRAPHS[graph_name]
    declared = [a for a in actions if isinstance(a, classes["DeclareLaunchArgument"])]
    nodes = [a for a in actions if isinstance(a, classes["Node"])]
    assert [d.args[0] for d in declared] == [a.name for a in graph.args]
    assert all(d.kwargs["description"] for d in declared), "every launch argument needs a description"
    for d, arg in zip(declared, graph.args):
        assert d.kwargs.get("choices") == (["true", "false"] if arg.kind == "bool" else None), arg.name
    assert [n.kwargs["name"] for n in nodes] == [s.name for s in graph.nodes]
    for n, spec in zip(nodes, graph.nodes):
        assert n.kwargs["package"] == "resfit_ros" and n.kwargs["executable"] == spec.executable
        [namespace] = n.kwargs["namespace"]                    # every node in the graph's namespace
        assert isinstance(namespace, classes["LaunchConfiguration"]) and namespace.args == ("namespace",)
        assert n.kwargs["respawn"] == spec.respawn
        assert ("on_exit" in n.kwargs) == spec.required
        assert ("condition" in n.kwargs) == bool(spec.enabled_if)
        if spec.enabled_if:
            condition = n.kwargs["condition"]
            kind = "UnlessCondition" if spec.enabled_if.startswith("!") else "IfCondition"
            assert isinstance(condition, classes[kind]) and condition.args[0].args == (spec.enabled_if.lstrip("!"),)
        overrides = n.kwargs["parameters"][-1]
        assert set(overrides) == set(spec.parameters)
    # config_dir defaults to the installed package's share directory
    cfg = next(d for d in declared if d.args[0] == "config_dir")
    assert cfg.kwargs["default_value"] == "/opt/share/resfit_ros/config"
    # the real robot graph never starts a simulator or a judge
    if graph_name == "train_real":
        assert not {"sim_robot", "judge"} & {s.executable for s in graph.nodes}


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
