"""The operator's services on a real episode_manager process over DDS."""
import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import RobotDescription, config_dir
from test.support import node_argv

pytestmark = pytest.mark.ros


@pytest.fixture
def manager(ros_context, spawn):
    robot = str(config_dir() / "robots" / "g1_sim.yaml")
    proc = spawn(node_argv("episode_manager", "-p", f"robot_description:={robot}",
                           "-p", "homing_min_duration_s:=0.3"), name="episode_manager")
    return proc


def test_label_start_step_label_reset_estop(ros_context, manager):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    from resfit_ros.msg import EpisodeStatus, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import LabelEpisode, StartEpisode

    node = ros_context.node
    label = node.create_client(LabelEpisode, names.LABEL_EPISODE)
    start = node.create_client(StartEpisode, names.START_EPISODE)
    reset = node.create_client(Trigger, names.RESET)
    estop = node.create_client(SetBool, names.SET_ESTOP)
    statuses = []
    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)

    # label with no episode running: refused, nothing changes
    r = ros_context.call(label, LabelEpisode.Request(success=True, note="too early"), timeout=20)
    assert not r.accepted and "no episode is running" in r.message

    r = ros_context.call(start, StartEpisode.Request(explore=True))
    assert r.success and r.episode_id == 1
    r = ros_context.call(start, StartEpisode.Request(explore=True))
    assert not r.success and "running" in r.message

    steps = node.create_publisher(StepRecord, names.STEP_RECORD, STREAM)
    assert ros_context.spin_until(lambda: steps.get_subscription_count() > 0, 10)
    for i in range(3):
        steps.publish(StepRecord(episode_id=1, step=i))
    assert ros_context.spin_until(lambda: statuses and statuses[-1].steps == 3, 10)

    r = ros_context.call(label, LabelEpisode.Request(success=True, note="lifted"))
    assert r.accepted and r.episode_id == 1
    assert ros_context.spin_until(lambda: statuses[-1].state == EpisodeStatus.IDLE and statuses[-1].successes == 1)
    assert statuses[-1].label == EpisodeStatus.LABEL_SUCCESS and statuses[-1].episodes_completed == 1

    # reset without joint states: refused with a reason, the manager is not stuck
    r = ros_context.call(reset, Trigger.Request())
    assert r.success  # the motion starts asynchronously
    assert ros_context.spin_until(lambda: "joint state" in statuses[-1].message, 10), statuses[-1]
    assert statuses[-1].state == EpisodeStatus.IDLE and not statuses[-1].ready

    # with joint states away from home, reset drives the arms home smoothly, then reports ready
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    q = robot.home.copy()
    q[8] += 0.3  # right shoulder pitch off by 0.3 rad
    js_pub = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
    commands = []
    node.create_subscription(Float64MultiArray, "/right_arm_controller/commands",
                             lambda m: commands.append(np.array(m.data)), STREAM)
    node.create_timer(0.02, lambda: js_pub.publish(JointState(name=robot.joint_names, position=q.tolist())))
    ros_context.spin_until(lambda: False, 0.5)
    r = ros_context.call(reset, Trigger.Request())
    assert r.success, r.message
    assert ros_context.spin_until(lambda: statuses[-1].ready, 15), statuses[-1]
    home_right = robot.home[[i for i, j in enumerate(robot.joints) if j.group == "right_arm"]]
    # the last command and the status travel on different topics: wait for the command too
    assert ros_context.spin_until(lambda: commands and np.allclose(commands[-1], home_right), 5), commands[-1:]
    traj = np.array(commands)
    assert len(traj) >= 5
    max_step = robot.max_velocity[8] / 20.0
    assert np.max(np.abs(np.diff(traj[:, 0]))) <= max_step + 1e-9

    # e-stop: latched, refuses starts until cleared
    r = ros_context.call(estop, SetBool.Request(data=True))
    assert r.success
    r = ros_context.call(start, StartEpisode.Request(explore=True))
    assert not r.success and "e-stop" in r.message.lower()
    r = ros_context.call(estop, SetBool.Request(data=False))
    assert r.success
    r = ros_context.call(start, StartEpisode.Request(explore=False))
    assert r.success and r.episode_id == 2


def test_operator_console_drives_the_services(manager, ros_domain, tmp_path):
    """`resfit-ros operator` keys -> service calls on the real episode manager process."""
    import os
    import subprocess
    import sys

    keys = "s" + " " + " " + "a" + "e" + " " + "e" + "x" + "q"
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "operator"], input=keys, text=True,
                       capture_output=True, timeout=60, env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    out = r.stdout
    assert r.returncode == 0, r.stderr
    lines = [line for line in out.splitlines() if line.startswith("[") and not line.startswith("[status]")]
    assert lines[0].startswith("[label] REFUSED") and "no episode is running" in lines[0]
    assert lines[1].startswith("[start] OK")
    assert lines[2].startswith("[start] REFUSED")
    assert lines[3].startswith("[abort] OK")
    assert lines[4].startswith("[estop] OK") and "E-STOP" in lines[4]
    assert lines[5].startswith("[start] REFUSED") and "e-stop" in lines[5].lower()
    assert lines[6].startswith("[estop] OK") and "cleared" in lines[6]
    assert "unknown key 'x'" in out
