"""Commands to ros2_control controllers: one Float64MultiArray per joint group on
`/<controller>/commands` (forward_command_controller), or one JointTrajectory per group on
`/<controller>/joint_trajectory` (joint_trajectory_controller), in each group's joint order.

Non-finite commands are never sent (forward_command_controller would pass them to the hardware).
"""
from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from resfit_ros import names
from resfit_ros.nodes.common import STREAM
from resfit_ros.robot import RobotDescription

INTERFACES = ("forward", "trajectory")


class ControllerOutput:
    def __init__(self, node, robot: RobotDescription, interface: str = "forward", control_rate_hz: float = 20.0):
        if interface not in INTERFACES:
            raise ValueError(f"command_interface must be one of {INTERFACES}, got '{interface}'")
        self.interface = interface
        self.groups = robot.group_indices()
        self.joint_names = robot.joint_names
        self.dt = 1.0 / control_rate_hz
        msg_type, pattern = ((Float64MultiArray, names.CONTROLLER_COMMANDS) if interface == "forward"
                             else (JointTrajectory, names.JOINT_TRAJECTORY))
        self.pubs = {g: node.create_publisher(msg_type, pattern.format(controller=c), STREAM)
                     for g, c in robot.controllers.items()}

    def send(self, command: np.ndarray) -> bool:
        """Publish the (dof,) command to every group; False (nothing sent) if it is not finite."""
        command = np.asarray(command, dtype=np.float64)
        if command.shape != (len(self.joint_names),) or not np.all(np.isfinite(command)):
            return False
        for group, idx in self.groups.items():
            values = command[idx].tolist()
            if self.interface == "forward":
                self.pubs[group].publish(Float64MultiArray(data=values))
            else:
                sec, frac = divmod(self.dt, 1.0)
                point = JointTrajectoryPoint(positions=values,
                                             time_from_start=Duration(sec=int(sec), nanosec=int(frac * 1e9)))
                self.pubs[group].publish(JointTrajectory(joint_names=[self.joint_names[i] for i in idx],
                                                         points=[point]))
        return True
