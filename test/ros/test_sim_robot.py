"""The simulated robot node behind the real robot's topics, over DDS."""
import os

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import RobotDescription, config_dir
from test.support import node_argv

pytestmark = pytest.mark.ros


def test_sim_robot_lockstep_commands_and_reset(ros_context, spawn):
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

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

    from resfit_ros.srv import ResetScene
    reset = node.create_client(ResetScene, "/sim_robot/reset_scene")
    r = ros_context.call(reset, ResetScene.Request())
    assert r.success and "seed" in r.message
    reset_stamp = r.state_stamp.sec * 10**9 + r.state_stamp.nanosec
    assert reset_stamp > 0
    assert ros_context.spin_until(
        lambda: any(s.header.stamp.sec * 10**9 + s.header.stamp.nanosec >= reset_stamp for s in states), 5)
    assert ros_context.spin_until(lambda: np.allclose(states[-1].position, robot.home, atol=0.02), 5)
    # time never runs backwards across a scene reset
    stamps = [s.header.stamp.sec * 1e9 + s.header.stamp.nanosec for s in states]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))



def test_sim_robot_lockstep_republishes_a_lost_sample_during_an_episode(ros_context, spawn):
    """Lockstep waits for the commands of every step. If the state of a step never reached the
    policy (a subscriber queue overrun by a flood of bad messages, a restarted node), no command
    comes: the simulator publishes the same state again after idle_period_s, while an episode runs
    too, and never steps on its own."""
    from sensor_msgs.msg import JointState

    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED, STREAM

    cfg = config_dir() / "sim.yaml"
    spawn(node_argv("sim_robot", "--params-file", str(cfg), "-p", "idle_period_s:=0.3", "-p", "render:=false"),
          name="sim")
    node = ros_context.node
    states = []
    node.create_subscription(JointState, names.JOINT_STATES, states.append, STREAM)
    status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    status.publish(EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, label=EpisodeStatus.LABEL_NONE))
    assert ros_context.spin_until(lambda: len(states) > 0, 30)
    ros_context.spin_until(lambda: False, 1.0)      # the status has arrived; no command is sent
    n = len(states)
    ros_context.spin_until(lambda: False, 1.5)
    again = states[n:]
    assert len(again) >= 3, f"{len(again)} states re-published in 1.5 s of a running episode without commands"
    stamps = {s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in states}
    assert len(stamps) == 1, "the simulator stepped without a command"

def test_sim_robot_real_time_streams_stamps_and_held_command(ros_context, spawn):
    """Real time (config/robot_sim.yaml): joint states and frames on their own timers at their rates,
    stamped with the node clock at acquisition and published after the configured latency; the
    synchronizer (config/real.yaml, the robot's parameters) accepts them and emits observations; a
    command acts from its arrival, not before, and is held without further commands; a scene reset
    says the stamp of its state."""
    import yaml
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import Float64MultiArray

    from resfit_ros.msg import Observation
    from resfit_ros.nodes.common import STREAM, stamp_to_ns

    sim_cfg = yaml.safe_load((config_dir() / "robot_sim.yaml").read_text())["/**/sim_robot"]["ros__parameters"]
    proc = spawn(node_argv("sim_robot", "--params-file", str(config_dir() / "robot_sim.yaml")), name="sim")
    spawn(node_argv("synchronizer", "--params-file", str(config_dir() / "real.yaml")), name="sync")
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    node = ros_context.node
    clock = node.get_clock()
    states, frames, observations = [], [], []   # (receive ns, stamp ns[, msg])
    node.create_subscription(JointState, names.JOINT_STATES, lambda m: states.append(
        (clock.now().nanoseconds, stamp_to_ns(m.header.stamp), np.array(m.position))), STREAM)
    node.create_subscription(Image, "/camera/head/image_raw", lambda m: frames.append(
        (clock.now().nanoseconds, stamp_to_ns(m.header.stamp))), STREAM)
    node.create_subscription(Observation, names.OBSERVATION, lambda m: observations.append(
        (clock.now().nanoseconds, stamp_to_ns(m.header.stamp))), STREAM)
    assert ros_context.spin_until(lambda: len(observations) > 5, 60), open(proc.log_path).read()[-3000:]

    # 3 s of streams
    window_start = clock.now().nanoseconds
    ros_context.spin_until(lambda: False, 3.0)
    window = [s for s in states if s[1] >= window_start], [f for f in frames if f[1] >= window_start]
    for stream, rate, latency in ((window[0], sim_cfg["joint_state_rate_hz"], sim_cfg["joint_latency_s"]),
                                  (window[1], sim_cfg["camera_rate_hz"], sim_cfg["camera_latency_s"])):
        stamps = np.array([s[1] for s in stream])
        lag_s = np.array([s[0] - s[1] for s in stream]) / 1e9
        achieved = (len(stamps) - 1) / ((stamps[-1] - stamps[0]) / 1e9)
        # its own timer at its own rate (not the control rate's 20 Hz); a loaded 2-core CI machine
        # skips ticks of a 200 Hz Python timer (140 Hz measured there), so the floor is half the rate
        assert 0.5 * rate <= achieved <= 1.05 * rate, (
            f"{achieved:.1f} Hz, configured {rate} Hz (load {os.getloadavg()[0]:.1f})")
        assert np.all(np.diff(stamps) > 0)
        # node clock at acquisition: published at least the latency later, and fresh
        assert lag_s.min() >= latency - 0.0005, f"published {lag_s.min() * 1e3:.2f} ms after its stamp"
        assert np.percentile(lag_s, 90) < 0.1, f"p90 delivery {np.percentile(lag_s, 90) * 1e3:.1f} ms"
    obs = [o for o in observations if o[1] >= window_start]
    assert len(obs) >= 0.75 * 20 * 3, f"{len(obs)} observations in 3 s at 20 Hz"
    # an observation carries its joint state's stamp (this subscriber may miss a few of the 200 Hz
    # states on a loaded machine: KEEP_LAST 10), and the synchronizer emitted it while it was fresh
    joint_stamps = {s[1] for s in states}
    matched = sum(o[1] in joint_stamps for o in obs)
    assert matched >= 0.9 * len(obs), f"{matched} of {len(obs)} observations carry a joint state's stamp"
    assert max(o[0] - o[1] for o in obs) < 0.2e9, "an observation older than the synchronizer's max_age_s"

    # one command for the right arm, then silence
    groups = robot.group_indices()
    right = groups["right_arm"]
    pub = node.create_publisher(Float64MultiArray, names.CONTROLLER_COMMANDS.format(
        controller=robot.controllers["right_arm"]), STREAM)
    assert ros_context.spin_until(lambda: pub.get_subscription_count() > 0, 10)
    before = states[-1][2][8]
    target = states[-1][2][right].copy()
    target[0] -= 0.4                                   # right shoulder pitch (joint 8)
    sent_ns = clock.now().nanoseconds
    pub.publish(Float64MultiArray(data=target.tolist()))
    ros_context.spin_until(lambda: False, 2.0)
    earlier = [s[2][8] for s in states if s[1] < sent_ns]
    assert abs(earlier[-1] - before) < 2e-3, "the command acted before it was sent"
    moved = [s[1] for s in states if s[1] >= sent_ns and abs(s[2][8] - before) > 5e-3]
    assert moved and (moved[0] - sent_ns) / 1e9 < 0.1, "the command did not act on arrival"
    held_at = states[-1][2][8]
    assert abs(held_at - target[0]) < 0.1, f"joint 8 at {held_at:.3f}, target {target[0]:.3f}"
    ros_context.spin_until(lambda: False, 1.0)
    assert abs(states[-1][2][8] - held_at) < 0.02, "the last command is held"

    from resfit_ros.srv import ResetScene
    reset = node.create_client(ResetScene, "/sim_robot/reset_scene")
    r = ros_context.call(reset, ResetScene.Request())
    assert r.success, r.message
    reset_stamp = r.state_stamp.sec * 10**9 + r.state_stamp.nanosec
    assert abs(reset_stamp - clock.now().nanoseconds) < 1e9, "the reset state is stamped on the node clock"
    assert ros_context.spin_until(lambda: states[-1][1] > reset_stamp + 50_000_000, 5)
    after = [s for s in states if s[1] >= reset_stamp]
    assert abs(after[0][2][8] - robot.home[8]) < 0.02 and abs(after[-1][2][8] - robot.home[8]) < 0.05
    assert "Traceback" not in open(proc.log_path).read()
