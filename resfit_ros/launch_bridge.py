"""GraphSpec -> launch.LaunchDescription, for `ros2 launch resfit_ros <graph>.launch.py`.

Imported only by the files in launch/ on a machine with a ROS 2 install (launch and launch_ros
are not installable on machines without one; there `resfit-ros launch` runs the same GraphSpec).
"""
from __future__ import annotations

import os
import re

from resfit_ros.graph import GraphSpec, check_args, planned_nodes, resolve_args, substitute

_ARG = re.compile(r"\$\(arg ([A-Za-z_][A-Za-z0-9_]*)\)")


def _substitutions(value: str):
    """'$(arg out)/episodes' -> [LaunchConfiguration('out'), '/episodes'] (plain str if no $(arg))."""
    from launch.substitutions import LaunchConfiguration

    parts, pos = [], 0
    for m in _ARG.finditer(value):
        if m.start() > pos:
            parts.append(value[pos:m.start()])
        parts.append(LaunchConfiguration(m.group(1)))
        pos = m.end()
    if pos < len(value):
        parts.append(value[pos:])
    if len(parts) == 1 and isinstance(parts[0], str):
        return parts[0]
    return parts


def to_launch_description(graph: GraphSpec):
    from ament_index_python.packages import get_package_share_directory
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    share_config = os.path.join(get_package_share_directory("resfit_ros"), "config")
    actions = []
    for arg in graph.args:
        default = share_config if arg.name == "config_dir" and not arg.default else arg.default
        # true/false arguments are checked by ros2 launch itself (the runner checks every kind)
        extra = {"choices": ["true", "false"]} if arg.kind == "bool" else {}
        actions.append(DeclareLaunchArgument(arg.name, default_value=_substitutions(default),
                                             description=arg.description, **extra))

    def nodes(context):
        # the argument values as ros2 launch resolved them, then the same plan as the runner's
        # (enabled nodes, a fleet's copies): both start exactly graph.planned_nodes
        values = {a.name: LaunchConfiguration(a.name).perform(context) for a in graph.args}
        values = resolve_args(graph, values, package_config_dir=share_config)
        check_args(graph, values)
        plan = planned_nodes(graph, values)
        copies = {id(p.spec): sum(q.spec is p.spec for q in plan) for p in plan}
        finished: dict[int, int] = {}

        def on_exit(spec):
            # a fleet's copies of a required node (the judges): the launch ends when the last one
            # finishes, or at once when one fails, as the runner does
            def handler(event, _context):
                finished[id(spec)] = finished.get(id(spec), 0) + 1
                if event.returncode != 0 or finished[id(spec)] >= copies[id(spec)]:
                    return [Shutdown(reason=f"required node {spec.name} exited ({event.returncode})")]
                return None
            return handler

        started = []
        for planned in plan:
            spec, args = planned.spec, planned.args
            parameters = [substitute(spec.params_file, args)] if spec.params_file else []
            if spec.parameters:
                parameters.append({k: substitute(v, args) for k, v in spec.parameters.items()})
            kwargs = dict(
                package="resfit_ros", executable=spec.executable, name=spec.name, output="screen",
                namespace=planned.namespace or "/", parameters=parameters,
                remappings=[(substitute(a, args), substitute(b, args)) for a, b in spec.remappings],
                respawn=spec.respawn, respawn_delay=spec.respawn_delay_s,
            )
            if spec.required:
                kwargs["on_exit"] = on_exit(spec)
            started.append(Node(**kwargs))
        return started

    actions.append(OpaqueFunction(function=nodes))
    return LaunchDescription(actions)
