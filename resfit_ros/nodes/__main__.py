"""`python -m resfit_ros.nodes <executable> [--ros-args ...]` (what `ros2 run` runs on a ROS install)."""
import sys

from resfit_ros.nodes import run_node

if len(sys.argv) < 2:
    print("usage: python -m resfit_ros.nodes <executable> [--ros-args ...]", file=sys.stderr)
    sys.exit(2)
sys.exit(run_node(sys.argv[1], sys.argv[2:]))
