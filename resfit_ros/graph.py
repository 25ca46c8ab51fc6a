"""The node graphs, described once as data.

Both consumers read this module:
  - launch/*.launch.py turn a GraphSpec into launch_ros `Node` actions (resfit_ros/launch_bridge.py)
    on a machine with a ROS 2 install (`ros2 launch resfit_ros train_real.launch.py`);
  - `resfit-ros launch <graph> [key:=value ...]` (resfit_ros/runner.py) starts the same processes
    without the ros2 CLI, on machines where launch_ros is not installable.

Values may refer to launch arguments as "$(arg NAME)"; both consumers substitute them the same way.
Every graph has the launch argument `namespace` ('' = the root): all its nodes start in that ROS
namespace, and as every shared name is node-relative (resfit_ros/names.py), two robots or two
stacks share one DDS domain without crosstalk. A graph with the launch argument `robots` is a
fleet for robots:=N > 1: its per-robot nodes start N times, in `robot_0` ... `robot_<N-1>` under
the namespace, and the nodes that serve all robots (the learner) get their names (planned_nodes).
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from resfit_ros import names
from resfit_ros.nodes import NODE_MODULES

# Every node executable of the package: the names of nodes.NODE_MODULES (CMakeLists.txt reads the
# same table and installs one launcher per name).
NODE_EXECUTABLES = tuple(NODE_MODULES)

_ARG = re.compile(r"\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)")
# A ROS namespace: tokens of letters, digits and underscores, none starting with a digit
_NAMESPACE = re.compile(r"/?([A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*)?/?")


@dataclass(frozen=True)
class LaunchArg:
    name: str
    default: str
    description: str
    kind: str = "text"                 # text | bool | count (integer >= 0) | file (must exist) | checkpoint | namespace


def arg_problem(arg: LaunchArg, value: str, files: bool = True) -> str | None:
    """Why `value` is not a valid value of launch argument `arg`, or None (`files=False`: paths are
    not checked). The runner checks before any node starts: a typo stops the launch with one line
    instead of a node crash-looping on its config."""
    import os

    if arg.kind == "bool" and value not in ("true", "false"):   # as ros2 launch's choices
        return f"launch argument {arg.name}:={value!r} must be true or false"
    if arg.kind == "count" and not (value.isdigit() and value.isascii()):
        return f"launch argument {arg.name}:={value!r} must be a whole number >= 0"
    if arg.kind == "namespace" and not _NAMESPACE.fullmatch(value):
        return (f"launch argument {arg.name}:={value!r} is not a ROS namespace (names of letters, digits "
                "and underscores separated by '/', none starting with a digit; '' = the root)")
    if not files:
        return None
    if arg.kind == "file" and not os.path.isfile(value):
        return f"launch argument {arg.name}:={value!r}: no such file"
    if arg.kind == "checkpoint" and value not in ("", "none") and not os.path.exists(value):
        return f"launch argument {arg.name}:={value!r}: no such checkpoint (or 'none')"
    return None


@dataclass(frozen=True)
class NodeSpec:
    name: str                          # ROS node name
    executable: str                    # one of NODE_EXECUTABLES
    params_file: str = ""              # ROS parameter YAML (may use $(arg ...)); "" = none
    parameters: dict[str, str] = field(default_factory=dict)   # overrides, values may use $(arg ...)
    remappings: tuple[tuple[str, str], ...] = ()
    respawn: bool = False              # restart when it dies (robot runs last hours)
    respawn_delay_s: float = 1.0
    required: bool = False             # when it exits, the whole graph shuts down
    enabled_if: str = ""               # launch argument that must be "true" for the node to start ("!arg": "false")
    per_robot: bool = False            # a fleet starts one per robot (values may use $(arg robot_dir))
    serves_robots: bool = False        # a fleet hands it the robots' namespaces (parameter `robots`)


@dataclass(frozen=True)
class GraphSpec:
    name: str
    description: str
    args: tuple[LaunchArg, ...]
    nodes: tuple[NodeSpec, ...]
    namespace: str = "$(arg namespace)"   # the ROS namespace every node starts in (may use $(arg ...); '' = root)

    def arg_defaults(self) -> dict[str, str]:
        return {a.name: a.default for a in self.args}


def absolute_namespace(value: str) -> str:
    """'' for the root, else the namespace with one leading '/' and none trailing ('robot_a/' ->
    '/robot_a'): what `-r __ns:=` takes."""
    value = value.strip().strip("/")
    return f"/{value}" if value else ""


def graph_namespace(graph: GraphSpec, args: dict[str, str]) -> str:
    """The absolute namespace of every node of `graph` for launch argument values `args` ('' = root)."""
    return absolute_namespace(substitute(graph.namespace, args))


def substitute(value: str, args: dict[str, str]) -> str:
    """Replace every $(arg NAME) in `value`; an unknown NAME is an error naming it."""
    def repl(m: re.Match) -> str:
        if m.group(1) not in args:
            raise KeyError(f"launch argument '{m.group(1)}' is not declared (known: {', '.join(sorted(args))})")
        return args[m.group(1)]
    return _ARG.sub(repl, value)


def resolve_args(graph: GraphSpec, overrides: dict[str, str], package_config_dir: str = "") -> dict[str, str]:
    """Launch argument values: defaults overridden by `key:=value` pairs; unknown keys are errors.

    An empty `config_dir` means the package's own config directory, `package_config_dir`.
    """
    known = graph.arg_defaults()
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise KeyError(f"graph '{graph.name}' has no launch argument(s) {', '.join(unknown)}; "
                       f"known: {', '.join(sorted(known))}")
    values = dict(known)
    values.update(overrides)
    if "config_dir" in values and not values["config_dir"]:
        values["config_dir"] = package_config_dir
    # defaults may refer to other arguments (for example a path under output_dir)
    for _ in range(3):
        values = {k: substitute(v, values) for k, v in values.items()}
    values[ROBOT_DIR] = ""               # one robot; planned_nodes sets it per robot of a fleet
    return values


def check_args(graph: GraphSpec, values: dict[str, str], files: bool = True) -> None:
    """ValueError naming the first launch argument whose value is invalid (see arg_problem)."""
    for arg in graph.args:
        problem = arg_problem(arg, values[arg.name], files)
        if problem:
            raise ValueError(problem)
    if "robots" in values and int(values["robots"]) < 1:
        raise ValueError(f"launch argument robots:={values['robots']!r} must be at least 1")


# --- what starts: enabled nodes, a fleet's copies --------------------------------------------------

ROBOT_DIR = "robot_dir"   # not a launch argument: '' for one robot, '/robot_<i>' for robot i of a fleet


def fleet_robots(values: dict[str, str]) -> list[str]:
    """The robots' namespaces (relative to the graph's) for robots:=N: [''] for one robot (the
    graph's own namespace, exactly the one-robot graph), robot_0 ... robot_<N-1> otherwise."""
    n = int(values.get("robots", "1") or "1")
    return [""] if n <= 1 else [f"robot_{i}" for i in range(n)]


def enabled_nodes(graph: GraphSpec, values: dict[str, str]) -> list[NodeSpec]:
    """The graph's nodes whose enabled_if holds for these launch argument values."""
    def enabled(condition: str) -> bool:
        negated = condition.startswith("!")
        return values.get(condition.lstrip("!"), "").lower() == ("false" if negated else "true")

    return [n for n in graph.nodes if not n.enabled_if or enabled(n.enabled_if)]


@dataclass(frozen=True)
class PlannedNode:
    spec: NodeSpec
    namespace: str                     # absolute ('' = the root)
    args: dict[str, str]               # the launch argument values its $(arg ...) take


def planned_nodes(graph: GraphSpec, values: dict[str, str]) -> list[PlannedNode]:
    """Every process the graph starts for these launch argument values: the enabled nodes, a
    fleet's per-robot nodes once per robot. The runner and the launch files both start exactly these."""
    root = graph_namespace(graph, values)
    robots = fleet_robots(values)
    planned = []
    for spec in enabled_nodes(graph, values):
        if spec.per_robot:
            for robot in robots:
                planned.append(PlannedNode(spec, absolute_namespace(f"{root}/{robot}"),
                                           {**values, ROBOT_DIR: f"/{robot}" if robot else ""}))
            continue
        if spec.serves_robots and robots != [""]:
            # its one clock cannot be every robot's simulated time: it stamps with its own
            spec = dataclasses.replace(spec, parameters={**spec.parameters, "robots": f"[{', '.join(robots)}]",
                                                         "use_sim_time": "false"})
        planned.append(PlannedNode(spec, root, {**values, ROBOT_DIR: ""}))
    return planned


# --- the graphs -------------------------------------------------------------------------------

NAMESPACE_ARG = LaunchArg("namespace", "", "ROS namespace of every node of the graph, e.g. robot_a "
                          "('' = the root): robots or stacks side by side on one DDS domain", "namespace")

_COMMON_ARGS = (
    LaunchArg("config", "$(arg config_dir)/sim.yaml", "ROS parameter YAML for every node of the graph", "file"),
    LaunchArg("config_dir", "", "directory of the config files ('' = the package's own config/)"),
    LaunchArg("robot", "$(arg config_dir)/robots/g1_sim.yaml", "robot description YAML (joints, limits, controllers, cameras)",
              "file"),
    NAMESPACE_ARG,
    LaunchArg("base_artifact", "outputs/base/g1_pick_lift_state.safetensors", "frozen BC base policy artifact (or TorchScript .pt)",
              "file"),
    LaunchArg("output_dir", "outputs/run", "where episode bags, checkpoints and metrics go"),
    LaunchArg("demos_dir", "outputs/demos/g1_pick_lift", "demonstration episode bags for the replay buffer"),
    LaunchArg("control_rate_hz", "20.0", "the robot's control rate: the simulator's step, the synchronizer's "
              "observation rate, the residual policy's and the homing's per-step change limits"),
    LaunchArg("use_sim_time", "false", "use /clock (simulated time) instead of the wall clock", "bool"),
)


# the nodes that pace or limit by the control rate: given once, as a launch argument (a `/**` section
# of the config file cannot carry it: rcl would then apply every node's own section after the
# launch arguments)
RATE_NODES = ("sim_robot", "synchronizer", "residual_policy", "episode_manager")


def _node(name: str, executable: str | None = None, **kw) -> NodeSpec:
    params = {"robot_description": "$(arg robot)", "use_sim_time": "$(arg use_sim_time)"}
    if name in RATE_NODES:
        params["control_rate_hz"] = "$(arg control_rate_hz)"
    params.update(kw.pop("parameters", {}))
    return NodeSpec(name=name, executable=executable or name, params_file="$(arg config)", parameters=params, **kw)


# The simulator's time is its own: every node of a simulated graph reads it from the graph's
# namespace (at the root this is /clock itself), so side by side simulators never mix their times.
SIM_CLOCK_REMAP = (names.CLOCK, names.SIM_CLOCK)


def _on_simulated_time(nodes: tuple[NodeSpec, ...]) -> tuple[NodeSpec, ...]:
    return tuple(dataclasses.replace(n, remappings=n.remappings + (SIM_CLOCK_REMAP,)) for n in nodes)


def _robot_side() -> tuple[NodeSpec, ...]:
    """The control path: what runs on the robot's computer."""
    return (
        _node("synchronizer", respawn=True, per_robot=True),
        _node("base_chunk_server", parameters={"base_artifact": "$(arg base_artifact)"}, respawn=True, per_robot=True),
        # the base file here too: a residual trained on the base's image features computes them with it
        _node("residual_policy", parameters={"explore": "true", "base_artifact": "$(arg base_artifact)"},
              respawn=True, per_robot=True),
        # persisted status: a respawned manager continues the episode ids and aborts the episode it ran
        _node("episode_manager", parameters={"state_file": "$(arg output_dir)$(arg robot_dir)/episode_manager_state.json"},
              respawn=True, per_robot=True),
    )


def _learner_side() -> tuple[NodeSpec, ...]:
    """Recording and learning: what runs on the machine that holds the data (a GPU workstation)."""
    return (
        # one episode store: a fleet's recorders each write their own robot folder of it
        _node("recorder", parameters={"output_dir": "$(arg output_dir)/episodes$(arg robot_dir)"}, respawn=True,
              per_robot=True),
        _node("learner", parameters={"output_dir": "$(arg output_dir)", "demos_dir": "$(arg demos_dir)",
                                     "episodes_dir": "$(arg output_dir)/episodes",
                                     "base_artifact": "$(arg base_artifact)", "device": "$(arg device)"},
              respawn=True, serves_robots=True),
    )


def _simulated_robot(enabled_if: str = "", detector: bool = False) -> tuple[NodeSpec, ...]:
    """The lockstep simulator and the judge that labels its episodes (train_sim's robot); with
    `detector`, the judge gives way to the success detector when use_detector:=true."""
    loop = {"max_episodes": "$(arg episodes)", "max_steps": "$(arg max_steps)", "eval_every": "$(arg eval_every)"}
    if detector:
        return (
            _node("sim_robot", parameters={"task": "$(arg task)", "operator_share": "$(arg operator_share)"},
                  required=True, per_robot=True),
            _node("judge", parameters=loop, required=True, enabled_if="!use_detector", per_robot=True),
            _node("success_detector", parameters={**loop, "detector": "$(arg detector)"}, required=True,
                  enabled_if="use_detector", per_robot=True),
        )
    return (
        _node("sim_robot", parameters={"task": "$(arg task)", "operator_share": "$(arg operator_share)"},
              required=True, enabled_if=enabled_if, per_robot=True),
        _node("judge", parameters=loop, required=True, enabled_if=enabled_if, per_robot=True),
    )


# a learned success detector labels the episodes (resfit-ros train-detector)
_DETECTOR_ARGS = (
    LaunchArg("use_detector", "false", "a success detector labels the episodes (the operator labels only those "
              "it is unsure of)", "bool"),
    LaunchArg("detector", "none", "the success detector file (resfit-ros train-detector) when use_detector:=true",
              "checkpoint"),
)


def _labelling_detector() -> NodeSpec:
    """On the robot the detector only labels: a person resets the scene and starts each episode."""
    return _node("success_detector", parameters={"detector": "$(arg detector)", "start_episodes": "false"},
                 required=True, enabled_if="use_detector", per_robot=True)


GRAPHS: dict[str, GraphSpec] = {}


def _register(graph: GraphSpec) -> GraphSpec:
    assert "namespace" in graph.arg_defaults(), f"graph {graph.name} must declare the namespace argument"
    GRAPHS[graph.name] = graph
    return graph


DEVICE_ARG = LaunchArg("device", "cpu", "where the learner trains: cpu or cuda (refused with a clear "
                       "message when CUDA is not available)")
_REAL_CONFIG = LaunchArg("config", "$(arg config_dir)/real.yaml", "ROS parameter YAML for every node of the graph",
                         "file")
_SIM_ARGS = (
    LaunchArg("task", "g1_pick_lift", "simulated task (g1_pick_lift or g1_handover)"),
    LaunchArg("episodes", "0", "stop after this many training episodes (0 = run until Ctrl-C)", "count"),
    LaunchArg("max_steps", "200", "the judge labels an episode a failure after this many steps", "count"),
    LaunchArg("eval_every", "0", "every N-th episode is an evaluation episode without exploration (0 = none)", "count"),
    LaunchArg("operator_share", "0.0", "share of the training episodes a scripted operator (the task's expert) "
              "watches and takes over when the robot strays (interventions; 0 = none)"),
)

_register(GraphSpec(
    name="train_real",
    description="Residual RL on the real robot: no simulator, the operator labels and resets. "
                "One computer: the union of the robot and learner graphs.",
    args=_COMMON_ARGS[1:] + (_REAL_CONFIG, DEVICE_ARG) + _DETECTOR_ARGS,
    nodes=_robot_side() + _learner_side() + (_labelling_detector(),),
))

# Two machines (the robot's computer and a learner workstation on one DDS domain): the same nodes
# as train_real / train_sim, split where the data leaves the robot (step records, observations).
_register(GraphSpec(
    name="robot",
    description="The robot's computer: synchronizer, base chunk server, residual policy, episode manager "
                "(with use_sim:=true also the simulated robot and its judge); the learner graph runs elsewhere.",
    args=_COMMON_ARGS[1:] + (
        _REAL_CONFIG,
        LaunchArg("use_sim", "false", "start the lockstep simulated robot and the judge instead of a real robot "
                  "(then also config:=<config_dir>/sim.yaml use_sim_time:=true, on both machines)", "bool"),
    ) + _SIM_ARGS + _DETECTOR_ARGS,
    nodes=_on_simulated_time(_simulated_robot(enabled_if="use_sim") + _robot_side() + (_labelling_detector(),)),
))

_register(GraphSpec(
    name="learner",
    description="The learner's machine: recorder (episode bags) and learner (replay, updates, weights "
                "broadcast); the robot graph runs on the robot's computer.",
    args=_COMMON_ARGS[1:] + (_REAL_CONFIG, DEVICE_ARG, LaunchArg(
        "robots", "1", "robots feeding this learner: N > 1 records robot_0 ... robot_<N-1> (each robot's computer "
        "runs the robot graph with namespace:=robot_<i>) into one episode store and trains one policy for all",
        "count")),
    nodes=_on_simulated_time(_learner_side()),
))



def _against_the_stand_in(real: GraphSpec) -> GraphSpec:
    """train_real's nodes and parameters, unchanged, beside the simulated robot in real time.

    The one addition: the episode manager's reset first puts the task's object back through the
    stand-in's ~/reset_scene, as the person beside a real robot rearranges the scene by hand
    before the reset (`reset_scene_service:=''` leaves train_real's parameters exactly)."""
    nodes = tuple(dataclasses.replace(n, parameters={**n.parameters,
                                                     "reset_scene_service": "$(arg reset_scene_service)"})
                  if n.name == "episode_manager" else n for n in real.nodes)
    stand_in = NodeSpec(name="sim_robot", executable="sim_robot", params_file="$(arg sim_config)",
                        parameters={"task": "$(arg task)", "robot_description": "$(arg robot)",
                                    "use_sim_time": "$(arg use_sim_time)", "control_rate_hz": "$(arg control_rate_hz)"},
                        required=True)
    return GraphSpec(
        name="robot_sim",
        description="train_real's nodes and parameters against the simulated robot in real time "
                    "(node clock, its own sensor rates and latency); no judge: the operator labels and resets.",
        args=real.args + (
            LaunchArg("sim_config", "$(arg config_dir)/robot_sim.yaml",
                      "parameters of the stand-in robot (real time: rates, latency, jitter)", "file"),
            LaunchArg("task", "g1_pick_lift", "simulated task (g1_pick_lift or g1_handover)"),
            LaunchArg("reset_scene_service", names.RESET_SCENE,
                      "the reset puts the object back through this service first (the operator's hands; '' = "
                      "train_real's parameters exactly: the robot only homes)"),
        ),
        nodes=(stand_in,) + nodes,
    )


_register(_against_the_stand_in(GRAPHS["train_real"]))

_register(GraphSpec(
    name="train_sim",
    description="Residual RL on the simulated 29-DoF humanoid; a judge node labels episodes. "
                "robots:=N: a fleet of N simulated robots (robot_0 ... in the namespace) feeding one learner.",
    args=_COMMON_ARGS[:-1] + (
        LaunchArg("use_sim_time", "true", "use the simulator's /clock (the simulated robot runs in lockstep)", "bool"),
        DEVICE_ARG,
        LaunchArg("robots", "1", "simulated robots: N > 1 starts the robot's nodes (simulator, judge, synchronizer, "
                  "base, residual policy, episode manager, recorder) once per robot in robot_0 ... robot_<N-1>, "
                  "recorded into one episode store (a folder per robot) and trained by one learner that sends "
                  "every robot the same weights; episodes:= counts per robot", "count"),
    ) + _SIM_ARGS + _DETECTOR_ARGS,
    nodes=_on_simulated_time(_simulated_robot(detector=True) + _robot_side() + _learner_side()),
))

_register(GraphSpec(
    name="eval",
    description="Evaluation: base + residual without exploration and without learner.",
    args=_COMMON_ARGS[:-1] + (
        LaunchArg("use_sim_time", "true", "use the simulator's /clock (false on the real robot)", "bool"),
        LaunchArg("use_sim", "true", "start the simulated robot and the judge (false on the real robot)", "bool"),
        LaunchArg("task", "g1_pick_lift", "simulated task when use_sim is true"),
        LaunchArg("episodes", "0", "stop after this many episodes (0 = run until Ctrl-C)", "count"),
        LaunchArg("residual_checkpoint", "none", "residual checkpoint to evaluate (none = base policy only)", "checkpoint"),
    ),
    nodes=_on_simulated_time((
        _node("sim_robot", parameters={"task": "$(arg task)"}, enabled_if="use_sim", required=True),
        _node("judge", parameters={"max_episodes": "$(arg episodes)"}, enabled_if="use_sim", required=True),
        _node("synchronizer"),
        _node("base_chunk_server", parameters={"base_artifact": "$(arg base_artifact)"}),
        _node("residual_policy", parameters={"explore": "false", "base_artifact": "$(arg base_artifact)",
                                             "residual_checkpoint": "$(arg residual_checkpoint)"}),
        _node("episode_manager"),
        _node("recorder", parameters={"output_dir": "$(arg output_dir)/eval_episodes"}),
    )),
))

# A two-node graph for testing the runner and the launch bridge: one echo node relays
# observations to another over DDS. It needs no model and starts in about a second.
_register(GraphSpec(
    name="echo_pair",
    description="Test graph: two echo nodes relaying resfit_ros/Observation messages.",
    args=(LaunchArg("prefix", "echo_test", "topic prefix (relative: in the namespace)"), NAMESPACE_ARG),
    nodes=(
        NodeSpec(name="echo_a", executable="echo_observation", respawn=True, respawn_delay_s=0.2,
                 remappings=(("~/in", "$(arg prefix)/in"), ("~/out", "$(arg prefix)/mid"))),
        NodeSpec(name="echo_b", executable="echo_observation",
                 remappings=(("~/in", "$(arg prefix)/mid"), ("~/out", "$(arg prefix)/out"))),
    ),
))
