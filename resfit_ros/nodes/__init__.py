"""Thin rclpy adapters over the ROS-free cores. `run_node(name)` is what every executable calls."""
from __future__ import annotations

import importlib
import sys

# executable name -> module in this package whose main(argv) runs the node
NODE_MODULES = {
    "echo_observation": "resfit_ros.nodes.echo_observation",
    "sim_robot": "resfit_ros.nodes.sim_robot",
    "synchronizer": "resfit_ros.nodes.synchronizer",
    "base_chunk_server": "resfit_ros.nodes.base_chunk_server",
    "residual_policy": "resfit_ros.nodes.residual_policy",
    "episode_manager": "resfit_ros.nodes.episode_manager",
    "recorder": "resfit_ros.nodes.recorder",
    "learner": "resfit_ros.nodes.learner",
    "judge": "resfit_ros.nodes.judge",
    "success_detector": "resfit_ros.nodes.success_detector",
}


def run_node(name: str, argv: list[str] | None = None) -> int:
    """Import the node's module and run its main(argv); argv carries --ros-args like `ros2 run`."""
    if name not in NODE_MODULES:
        print(f"unknown node '{name}'; known: {', '.join(sorted(NODE_MODULES))}", file=sys.stderr)
        return 2
    module = importlib.import_module(NODE_MODULES[name])
    return int(module.main(sys.argv[1:] if argv is None else argv) or 0)
