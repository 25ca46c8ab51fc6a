"""ros2 launch resfit_ros robot.launch.py [arg:=value ...]

The graph itself is described once in resfit_ros/graph.py (GRAPHS["robot"]); the same processes run
without a ROS install through `resfit-ros launch robot`. `ros2 launch resfit_ros robot.launch.py --show-args`
lists every argument with its description.
"""
from resfit_ros.graph import GRAPHS
from resfit_ros.launch_bridge import to_launch_description


def generate_launch_description():
    return to_launch_description(GRAPHS["robot"])
