"""ros2 launch resfit_ros robot_sim.launch.py [arg:=value ...]

train_real's nodes and parameters against the simulated robot in real time, for rehearsing the
real-robot path (operator console, labels, resets) without a robot. The graph is described once in
resfit_ros/graph.py (GRAPHS["robot_sim"]); `resfit-ros launch robot_sim` runs the same processes without a
ROS install. `ros2 launch resfit_ros robot_sim.launch.py --show-args` lists every argument.
"""
from resfit_ros.graph import GRAPHS
from resfit_ros.launch_bridge import to_launch_description


def generate_launch_description():
    return to_launch_description(GRAPHS["robot_sim"])
