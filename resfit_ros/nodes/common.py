"""What every resfit_ros node shares: start-up, config from parameters, a shutdown-safe spin loop.

Kept deliberately small: a node module builds its core object from a config dataclass, wires
topics/services to it and calls `run(node_factory, argv)`.
"""
from __future__ import annotations

import gc
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, TypeVar

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.duration import Duration
from rclpy.qos import DurabilityPolicy, HistoryPolicy, LivelinessPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from resfit_ros.config import ConfigError, component_values, config_from_dict

T = TypeVar("T")

# Latched topics (episode status, policy weights, e-stop): late joiners get the last message.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
# Sensor-like streams: keep only the newest few, never block the publisher.
STREAM = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Raw sensor inputs (joint states, cameras, task state): a burst of other traffic on the topic (a
# flood of malformed messages from a faulty publisher) must not push the robot's own samples out
# of the queue before the node reads them; rejecting one costs microseconds, losing one a tick.
SENSORS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Where only the newest sample matters (the episode manager plans the homing from it): a node that
# falls behind under a flood skips stale samples instead of working through a deep queue of them
# while the step records it counts wait.
NEWEST_SENSORS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# What the recorder must get whole (observations, step records): the writer keeps enough history
# to resend what a slow or briefly interrupted link (robot and learner on two machines) did not
# acknowledge; a 10-deep one overwrote steps before they crossed and left episodes unlabellable.
RECORDED = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
# Presence: every node offers one publisher on names.ALIVE_TOPIC (its own node name) with AUTOMATIC
# liveliness, asserted by the DDS participant itself; it publishes nothing. When the process dies
# (kill -9 included) DDS declares the writer not alive within PRESENCE_LEASE_S and subscribers'
# liveliness callbacks hear it: the episode manager aborts an episode whose nodes stopped.
PRESENCE_LEASE_S = 1.0
PRESENCE = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      liveliness=LivelinessPolicy.AUTOMATIC,
                      liveliness_lease_duration=Duration(nanoseconds=int(PRESENCE_LEASE_S * 1e9)))


# The --ros-args of this process, kept by run(): node_config checks that the parameter files
# given there reach the node in its namespace.
_ros_argv: list[str] = []


def node_config(node: Node, cls: type[T]) -> T:
    """Build config dataclass `cls` from the node's parameters (file + overrides), validated, then
    declare every field as a read-only parameter with its description.

    Nodes are created with automatically_declare_parameters_from_overrides=True so that a key in
    the YAML that the config does not know is reported instead of silently ignored. The config is
    read once: `ros2 param set` is refused with the reason rather than accepted and ignored.
    """
    problem = params_file_namespace_problem(_ros_argv, node.get_name(), node.get_namespace())
    if problem is not None:
        raise ConfigError(problem)
    values = {name: param.value for name, param in node.get_parameters_by_prefix("").items()}
    cfg = config_from_dict(cls, component_values(cls, values), source=f"node '{node.get_name()}' parameters")
    declare_config(node, cfg)
    return cfg


_ARRAY_TYPES = {float: "DOUBLE_ARRAY", int: "INTEGER_ARRAY", str: "STRING_ARRAY", bool: "BOOL_ARRAY"}


def declare_config(node: Node, cfg) -> None:
    """Every field of `cfg` as a read-only parameter (`ros2 param list/describe/get` show them)."""
    import dataclasses
    import typing

    from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
    from rclpy.parameter import Parameter

    from resfit_ros.config import field_descriptions

    descriptions = field_descriptions(type(cfg))
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        if not f.init:
            continue
        descriptor = ParameterDescriptor(description=descriptions[f.name], read_only=True)
        if node.has_parameter(f.name):                        # given in the YAML or on the command line
            descriptor.type = node.get_parameter(f.name).type_.value
            node.set_descriptor(f.name, descriptor)
            continue
        value = getattr(cfg, f.name)
        if isinstance(value, tuple):
            value = list(value)
        if value is None or isinstance(value, dict):
            continue                                          # no ROS parameter type holds these
        if isinstance(value, list) and not value:             # an empty list: its type from the hint
            item = (typing.get_args(hints[f.name]) or (str,))[0]
            value = getattr(Parameter.Type, _ARRAY_TYPES.get(item, "STRING_ARRAY"))
        node.declare_parameter(f.name, value, descriptor)

    def refuse(params):
        names = ", ".join(p.name for p in params)
        return SetParametersResult(successful=False, reason=(
            f"{node.get_name()} reads its parameters once at start-up ({names} not changed): "
            "restart the node with the new value (--ros-args -p NAME:=VALUE or the parameter YAML)"))

    node.add_on_set_parameters_callback(refuse)


def make_node(name: str, **kw) -> Node:
    return Node(name, automatically_declare_parameters_from_overrides=True,
                allow_undeclared_parameters=True, **kw)


def run(build: Callable[[], Any], argv: list[str] | None, threads: int = 2, events: bool = False) -> int:
    """Init rclpy with `argv` (--ros-args ...), build the node, spin until Ctrl-C/SIGTERM, clean up.

    `events=True`: rclpy's EventsExecutor (C++ event queue; every callback in this main thread,
    which the simulated cameras' OpenGL context needs). It dispatches a message in a fraction of
    the time the Python executors need to rebuild their wait set: on the control path that wait set
    was most of the tail latency, and in a training run it was CPU taken from the learner. It
    supports subscriptions (raw too), timers, services, clients and their futures; not guard
    conditions, not message-info callbacks. The episode manager keeps the MultiThreadedExecutor: it
    relies on DDS liveliness events of the nodes it watches.

    `build()` returns the node's adapter object: it has `.node` (an rclpy Node) and may have
    `.finished` (stop spinning when true), `.exit_code` and `close()` (called once at shutdown).

    The spin loop uses spin_once with a timeout rather than rclpy.spin: a process blocked in
    spin() sometimes ignores SIGTERM (see ros2-without-a-ros-install notes); this never hangs.
    """
    problem = ros_args_problem(list(argv or []))
    _ros_argv[:] = list(argv or [])
    if problem is None:
        try:
            rclpy.init(args=["resfit_ros_node"] + list(argv or []), signal_handler_options=SignalHandlerOptions.NO)
        except Exception as exc:  # rcl refuses the arguments (RCLError): a start-up error, not a crash
            problem = f"cannot start: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    if problem is not None:
        print(f"[FATAL] {problem}", file=sys.stderr, flush=True)
        return 2
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    app = node = None
    code = 0
    try:
        app = build()
        node = app.node
        apply_cpu_priority(node)
        # Everything built so far (rclpy, torch modules, models) lives until shutdown: move it out
        # of the garbage collector's reach, so a collection during a control tick scans only what
        # the callbacks allocate, not every object of torch and the models.
        gc.collect()
        gc.freeze()
        presence = None
        # threads=1: callbacks run in this (main) thread; more threads let slow callbacks run
        # beside fast ones.
        if events:
            from rclpy.experimental import EventsExecutor

            executor = EventsExecutor()
        else:
            executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set() and not getattr(app, "finished", False):
            if presence is None and node.get_clock().now().nanoseconds > 0:
                # up = fully built (models loaded, services created) AND its clock runs (with
                # use_sim_time, once /clock arrived): before that it would drop every stamped input
                presence = announce_presence(node)
            executor.spin_once(timeout_sec=0.1)
        code = int(getattr(app, "exit_code", 0))
    except ConfigError as exc:
        print(f"[FATAL] configuration error: {exc}", file=sys.stderr, flush=True)
        code = 2
    finally:
        if app is not None:
            close = getattr(app, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # shutting down anyway; say what went wrong
                    print(f"[ERROR] while closing: {exc}", file=sys.stderr, flush=True)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


def apply_cpu_priority(node: Node) -> None:
    """Optional parameters of every node: how the kernel schedules ALL of its threads.

      realtime_priority  0 (default): normal scheduling; 1-99: SCHED_FIFO at that priority: the
                         node runs as soon as it is ready, before every normally scheduled process
      nice               -20 (first) to 19: the weight among normally scheduled processes

    Why: on a robot computer the control path (synchronizer, residual policy) shares a few cores
    with the learner's updates, the recorder's writes and the drivers; the command must not wait
    behind them. Measured (bench load, two training processes busy on both cores): without
    SCHED_FIFO the control path's p99 was 47 ms with nice 0 and 49 ms with nice -10; with it,
    10.9 ms. The control nodes are event-driven and use ~10 % of a core, and the kernel keeps 5 %
    of every second for normal processes (sched_rt_runtime_us), so a real-time node cannot lock
    the machine. Stay below the hardware loop's own priority (ros2_control's default: 50).
    Raising a priority needs CAP_SYS_NICE or the limits.conf items `rtprio` / `nice` (for example
    `@robot - rtprio 45`); without it the node says so and runs on as it was. Linux schedules
    each thread on its own, so every thread the node has (DDS, torch) is set; threads started
    later inherit it from the thread that starts them.
    """
    name = node.get_name()
    nice = node.get_parameter("nice").value if node.has_parameter("nice") else None
    rt = node.get_parameter("realtime_priority").value if node.has_parameter("realtime_priority") else 0
    if nice is not None and (isinstance(nice, bool) or not isinstance(nice, int) or not -20 <= nice <= 19):
        raise ConfigError(f"node '{name}' parameters: nice must be a whole number in [-20, 19], got {nice!r}")
    if isinstance(rt, bool) or not isinstance(rt, int) or not 0 <= rt <= 99:
        raise ConfigError(f"node '{name}' parameters: realtime_priority must be a whole number in [0, 99] "
                          f"(0: normal scheduling), got {rt!r}")
    settings = []                                      # (parameter, value, set it for one thread)
    if nice is not None:
        settings.append(("nice", nice, lambda tid: os.setpriority(os.PRIO_PROCESS, tid, nice)))
    if rt > 0:
        settings.append(("realtime_priority", rt,
                         lambda tid: os.sched_setscheduler(tid, os.SCHED_FIFO, os.sched_param(rt))))
    tids = [int(t) for t in os.listdir("/proc/self/task")] if os.path.isdir("/proc/self/task") else [0]
    for what, value, set_for in settings:
        try:
            for tid in tids:
                try:
                    set_for(tid)
                except ProcessLookupError:
                    pass                               # that thread has ended
        except PermissionError:
            node.get_logger().warning(
                f"cannot set {what} {value}: that needs CAP_SYS_NICE or the limits.conf item "
                f"'{'nice' if what == 'nice' else 'rtprio'}'; running on without it")
            continue
        node.get_logger().info(f"running with {what} {value} ({len(tids)} threads)")


def announce_presence(node: Node):
    """The node's presence publisher (see PRESENCE); `run` creates it once the node is built."""
    from std_msgs.msg import Empty

    from resfit_ros import names

    return node.create_publisher(Empty, names.ALIVE_TOPIC.format(node=node.get_name()), PRESENCE)


def ros_args_problem(argv: list[str]) -> str | None:
    """One line saying what is wrong with the --ros-args of `argv` (parameter files that do not
    exist or are not parameter YAML, -p/-r without key:=value), or None. Checked before rcl sees
    them: rcl would raise a long RCLError (and log a second line) instead."""
    import yaml

    from resfit_ros.config import read_parameters

    inside = False
    args = iter(argv)
    for tok in args:
        if tok == "--ros-args":
            inside = True
            continue
        if tok == "--":
            inside = False
            continue
        if not inside or tok not in ("--params-file", "-p", "--param", "-r", "--remap"):
            continue
        value = next(args, None)
        if value is None:
            return f"bad --ros-args: {tok} needs an argument"
        if tok == "--params-file":
            try:
                read_parameters(value)
            except ConfigError as exc:
                return f"bad --ros-args: --params-file {exc}"
            continue
        key, sep, rhs = value.partition(":=")
        if not sep or not key or rhs == "":
            return f"bad --ros-args: {tok} {value!r}: expected key:=value"
        if tok in ("-p", "--param"):
            try:
                yaml.safe_load(rhs)
            except yaml.YAMLError:
                return f"bad --ros-args: -p {value!r}: the value is not valid YAML"
    return None


def _params_files(argv: list[str]) -> list[str]:
    inside, files = False, []
    args = iter(argv)
    for tok in args:
        if tok in ("--ros-args", "--"):
            inside = tok == "--ros-args"
        elif inside and tok == "--params-file":
            files.append(next(args, ""))
    return files


def params_file_namespace_problem(argv: list[str], name: str, namespace: str) -> str | None:
    """Why a parameter file of `argv` misses node `name` in `namespace`, or None: rcl applies a
    section keyed by the bare node name at the root only, so in a namespace it is silently
    ignored and the node would run on its defaults."""
    import yaml

    if namespace in ("", "/"):
        return None
    fqn = f"{namespace.rstrip('/')}/{name}"
    for path in _params_files(argv):
        try:
            with open(path) as f:
                doc = yaml.safe_load(f) or {}
        except (OSError, yaml.YAMLError):
            continue                                   # ros_args_problem reports unreadable files
        if isinstance(doc, dict) and name in doc and not {f"/**/{name}", fqn, fqn.lstrip("/")} & set(doc):
            return (f"parameter file {path}: section '{name}' applies to the node at the root only, not to "
                    f"{fqn}: key it '/**/{name}' (this node in any namespace) or '{fqn}'")
    return None


def diagnostic_name(node: Node) -> str:
    """The name of a node's DiagnosticStatus on the global /diagnostics: "resfit_ros: <node>" at
    the root, "resfit_ros: /robot_a/<node>" in a namespace (the robots side by side tell apart)."""
    namespace = node.get_namespace()
    return f"resfit_ros: {node.get_name() if namespace == '/' else node.get_fully_qualified_name()}"


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int, stamp_cls=None):
    from builtin_interfaces.msg import Time

    t = (stamp_cls or Time)()
    t.sec, t.nanosec = divmod(int(ns), 1_000_000_000)
    return t


def steady_timer(node: Node, period_s: float, callback, callback_group=None):
    """A timer on the monotonic wall clock. Node timers follow ROS time, which with use_sim_time
    stands still until the simulator publishes /clock; supervision, diagnostics and the simulator's
    own stepping must never wait for that."""
    steady = rclpy.clock.Clock(clock_type=rclpy.clock.ClockType.STEADY_TIME)
    return node.create_timer(period_s, callback, callback_group=callback_group, clock=steady)


class Throttle:
    """`due(key)`: True at most once per `period_s` for each key. rclpy's own throttle_duration_sec
    costs ~0.4 ms per call even when it suppresses the line (it inspects the caller's frame): under
    a flood of bad messages that, not the rejection, ate the control loop's CPU."""

    def __init__(self, period_s: float):
        self.period_s = period_s
        self._last: dict[str, float] = {}

    def due(self, key: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) < self.period_s:
            return False
        self._last[key] = now
        return True


class Rejections:
    """Counts rejected inputs by reason, logs a throttled line, and reports them on /diagnostics.

    `reject(reason, text)` counts `rejected/<reason>` and warns (at most once per `throttle_s`).
    Nodes that publish their own DiagnosticStatus merge `values()` into it; the others call
    `start_diagnostics(period_s, extra=...)` to publish a status named by diagnostic_name
    (the same naming as the synchronizer's and the residual policy's).
    """

    def __init__(self, node: Node, throttle_s: float = 2.0):
        self.node = node
        self.throttle = Throttle(throttle_s)
        self.counts: dict[str, int] = {}
        self._pub = None
        self._extra: Callable[[], dict] | None = None

    def count(self, reason: str) -> None:
        """Count without logging (the caller logs its own line)."""
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def reject(self, reason: str, text: str) -> None:
        self.count(reason)
        if self.throttle.due(reason):
            self.node.get_logger().warning(f"rejected ({reason}): {text}")

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def values(self) -> dict[str, int]:
        return {f"rejected/{k}": v for k, v in self.counts.items()}

    def start_diagnostics(self, period_s: float = 1.0, extra: Callable[[], dict] | None = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        from resfit_ros import names

        self._extra = extra
        self._pub = self.node.create_publisher(DiagnosticArray, names.DIAGNOSTICS, 10)
        steady_timer(self.node, period_s, self.publish)

    def publish(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

        values = dict(self._extra() if self._extra is not None else {})
        values.update(self.values())
        values["rejected_total"] = self.total
        status = DiagnosticStatus(name=diagnostic_name(self.node), hardware_id="resfit_ros",
                                  level=DiagnosticStatus.OK, message=f"{self.total} inputs rejected")
        status.values = [KeyValue(key=str(k), value=str(v)) for k, v in sorted(values.items())]
        diag = DiagnosticArray(status=[status])
        diag.header.stamp = self.node.get_clock().now().to_msg()
        self._pub.publish(diag)


def status_problem(msg) -> str | None:
    """Why an EpisodeStatus message is malformed (unknown state or label), or None."""
    if msg.state not in (0, 1, 2, 3):   # IDLE, RUNNING, RESETTING, ESTOPPED
        return f"unknown episode state {msg.state}"
    if msg.label not in (-1, 0, 1):     # LABEL_NONE, LABEL_FAILURE, LABEL_SUCCESS
        return f"unknown label {msg.label}"
    return None
