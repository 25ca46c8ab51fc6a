"""`resfit-ros node <executable> [--ros-args ...]` (handled directly in cli.main for raw argv)."""
from resfit_ros.nodes import NODE_MODULES


def add_arguments(parser):
    parser.add_argument("executable", choices=sorted(NODE_MODULES), help="node executable")
    parser.add_argument("ros_args", nargs="*", help="--ros-args ... as for ros2 run")


def run(args):
    from resfit_ros.nodes import run_node

    return run_node(args.executable, list(args.ros_args))
