"""The simulated robot node behind the real robot's topics, over DDS."""
import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import RobotDescription, config_dir
from test.support import node_argv

pytestmark = pytest.mark.ros


def test_sim_robot_lockstep_commands_and_reset(ros_context, spawn):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger

    from resfit_ros.nodes.common import STREAM

    cfg = config_dir() / "sim.yaml"
    # a long idle period: the simulator only advances when commanded
    proc = spawn(node_argv("sim_robot", "--params-file", str(cfg), "-p", "idle_period_s:=5.0"), name="sim")
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    node = ros_context.node
    states, images = [], []
    node.create_subscription(JointState, names.JOINT_STATES, states.append, STREAM)
    node.create_subscription(Image, "/camera/head/image_raw", images.append, STREAM)
    pubs = {g: node.create_publisher(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=c), STREAM)
            for g, c in robot.controllers.items()}
    groups = robot.group_indices()
    assert ros_context.spin_until(lambda: all(p.get_subscription_count() > 0 for p in pubs.values()), 30), \
        open(proc.log_path).read()

    def command(q):
        for g, idx in groups.items():
            pubs[g].publish(Float64MultiArray(data=q[idx].tolist()))

    target = robot.home.copy()
    target[8] -= 0.4  # right shoulder pitch forward
    ros_context.spin_until(lambda: len(states) > 0, 10)
    n0 = len(states)
    for _ in range(20):
        k = len(states)
        command(target)
        assert ros_context.spin_until(lambda: len(states) > k, 5), "no step after a full command set"
    # one step per command set: stamps advance by exactly one control period (50 ms)
    stamps = [s.header.stamp.sec * 1e9 + s.header.stamp.nanosec for s in states[n0:]]
    assert np.allclose(np.diff(stamps), 50e6)
    q = np.array(states[-1].position)
    assert list(states[-1].name) == robot.joint_names
    assert abs(q[8] - target[8]) < 0.1, "the arm should have moved towards the target"
    assert images and images[-1].width == 84 and images[-1].encoding == "rgb8"

    # a malformed command (wrong length) is rejected, not applied
    pubs["right_arm"].publish(Float64MultiArray(data=[0.0] * 3))
    ros_context.spin_until(lambda: False, 0.3)
    assert "rejected command for group right_arm" in open(proc.log_path).read()

    reset = node.create_client(Trigger, "/sim_robot/reset_scene")
    r = ros_context.call(reset, Trigger.Request())
    assert r.success and "seed" in r.message
    assert ros_context.spin_until(lambda: np.allclose(states[-1].position, robot.home, atol=0.02), 5)
    # time never runs backwards across a scene reset
    stamps = [s.header.stamp.sec * 1e9 + s.header.stamp.nanosec for s in states]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
