"""GraphSpec -> launch.LaunchDescription, for `ros2 launch resfit_ros <graph>.launch.py`.

Imported only by the files in launch/ on a machine with a ROS 2 install (launch and launch_ros
are not installable on machines without one; there `resfit-ros launch` runs the same GraphSpec).
"""
from __future__ import annotations

import os
import re

from resfit_ros.graph import GraphSpec

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
    from launch.actions import DeclareLaunchArgument, Shutdown
    from launch.conditions import IfCondition, UnlessCondition
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
    for spec in graph.nodes:
        parameters = []
        if spec.params_file:
            parameters.append(_substitutions(spec.params_file))
        if spec.parameters:
            parameters.append({k: _substitutions(v) for k, v in spec.parameters.items()})
        kwargs = dict(
            package="resfit_ros", executable=spec.executable, name=spec.name, output="screen",
            namespace=_substitutions(graph.namespace),    # '' = the root, as for the runner
            parameters=parameters,
            remappings=[(_substitutions(a), _substitutions(b)) for a, b in spec.remappings],
            respawn=spec.respawn, respawn_delay=spec.respawn_delay_s,
        )
        if spec.enabled_if.startswith("!"):
            kwargs["condition"] = UnlessCondition(LaunchConfiguration(spec.enabled_if[1:]))
        elif spec.enabled_if:
            kwargs["condition"] = IfCondition(LaunchConfiguration(spec.enabled_if))
        if spec.required:
            kwargs["on_exit"] = Shutdown(reason=f"required node {spec.name} exited")
        actions.append(Node(**kwargs))
    return LaunchDescription(actions)
