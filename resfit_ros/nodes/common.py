"""What every resfit_ros node shares: start-up, config from parameters, a shutdown-safe spin loop.

Kept deliberately small: a node module builds its core object from a config dataclass, wires
topics/services to it and calls `run(node_factory, argv)`.
"""
from __future__ import annotations

import signal
import sys
import threading
from typing import Any, Callable, TypeVar

import rclpy
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from resfit_ros.config import ConfigError, config_from_dict

T = TypeVar("T")

# Parameters the graphs pass to every node, and those rclpy declares itself; a node's config may
# use them or not.
COMMON_PARAMETERS = {"use_sim_time", "robot_description", "start_type_description_service"}

# Latched topics (episode status, policy weights, e-stop): late joiners get the last message.
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)
# Sensor-like streams: keep only the newest few, never block the publisher.
STREAM = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def node_config(node: Node, cls: type[T]) -> T:
    """Build config dataclass `cls` from the node's parameters (file + overrides), validated.

    Nodes are created with automatically_declare_parameters_from_overrides=True so that a key in
    the YAML that the config does not know is reported instead of silently ignored.
    """
    values: dict[str, Any] = {}
    for name, param in node.get_parameters_by_prefix("").items():
        if (name in COMMON_PARAMETERS or name.startswith("qos_overrides.")) \
                and name not in getattr(cls, "__dataclass_fields__", {}):
            continue
        values[name] = param.value
    return config_from_dict(cls, values, source=f"node '{node.get_name()}' parameters")


def make_node(name: str, **kw) -> Node:
    return Node(name, automatically_declare_parameters_from_overrides=True,
                allow_undeclared_parameters=True, **kw)


def run(build: Callable[[], Any], argv: list[str] | None, threads: int = 2) -> int:
    """Init rclpy with `argv` (--ros-args ...), build the node, spin until Ctrl-C/SIGTERM, clean up.

    `build()` returns the node's adapter object: it has `.node` (an rclpy Node) and may have
    `.finished` (stop spinning when true), `.exit_code` and `close()` (called once at shutdown).

    The spin loop uses spin_once with a timeout rather than rclpy.spin: a process blocked in
    spin() sometimes ignores SIGTERM (see ros2-without-a-ros-install notes); this never hangs.
    """
    rclpy.init(args=["resfit_ros_node"] + list(argv or []), signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    app = node = None
    code = 0
    try:
        app = build()
        node = app.node
        # threads=1: callbacks run in this (main) thread, which OpenGL contexts (the simulated
        # cameras) require; more threads let slow callbacks run beside fast ones.
        executor = SingleThreadedExecutor() if threads == 1 else MultiThreadedExecutor(num_threads=threads)
        executor.add_node(node)
        while rclpy.ok() and not stop.is_set() and not getattr(app, "finished", False):
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
