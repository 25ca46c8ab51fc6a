"""The operator's services on a real episode_manager process over DDS."""
import time

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


def test_every_service_in_every_wrong_state_is_refused_and_changes_nothing(ros_context, spawn):
    """IDLE-not-ready, RESETTING (a 2 s homing motion), RUNNING (no steps yet), ESTOPPED, IDLE-not-ready:
    every call not valid there answers success=false with a reason, publishes no status and leaves
    the state as it was; duplicate / out-of-order / foreign step records are not counted as steps.
    Each refusal is counted on /diagnostics (rejected/service_<name>, rejected/step_<reason>)."""
    from sensor_msgs.msg import JointState
    from std_srvs.srv import SetBool, Trigger

    from resfit_ros.msg import EpisodeStatus, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import LabelEpisode, StartEpisode
    from test.safety.helpers import CommandWatch, DiagWatch

    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    spawn(node_argv("episode_manager", "-p", f"robot_description:={config_dir() / 'robots' / 'g1_sim.yaml'}",
                    "-p", "homing_min_duration_s:=2.0", "-p", "require_reset:=true"), name="episode_manager")
    node = ros_context.node
    calls = {"start_episode": node.create_client(StartEpisode, names.START_EPISODE),
             "label_episode": node.create_client(LabelEpisode, names.LABEL_EPISODE),
             "abort_episode": node.create_client(Trigger, names.ABORT_EPISODE),
             "reset": node.create_client(Trigger, names.RESET),
             "set_estop": node.create_client(SetBool, names.SET_ESTOP)}
    requests = {"start_episode": lambda: StartEpisode.Request(explore=True, note="wrong state"),
                "label_episode": lambda: LabelEpisode.Request(success=True, note="wrong state"),
                "abort_episode": Trigger.Request, "reset": Trigger.Request}
    statuses = []
    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)
    diag = DiagWatch(node)
    commands = CommandWatch(node, robot)
    q = robot.home.copy()
    q[8] += 0.3
    js = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
    node.create_timer(0.02, lambda: js.publish(JointState(name=robot.joint_names, position=q.tolist())))
    refused = {k: 0 for k in calls}

    def call(name, request=None):
        r = ros_context.call(calls[name], request if request is not None else requests[name](), timeout=20)
        return getattr(r, "success", getattr(r, "accepted", None)), r.message

    def fields(s):
        return (s.state, s.episode_id, s.label, s.aborted, s.steps, s.ready, s.episodes_completed, s.message)

    def refuse_all(wrong: list[str], state: int, estop_data: bool | None = None):
        assert ros_context.spin_until(lambda: statuses and statuses[-1].state == state, 10), statuses[-1:]
        ros_context.spin_until(lambda: False, 0.2)
        n, before = len(statuses), fields(statuses[-1])
        for name in wrong:
            ok, message = call(name)
            assert ok is False and message, (name, state, message)
            refused[name] += 1
        if estop_data is not None:
            ok, message = call("set_estop", SetBool.Request(data=estop_data))
            assert ok is False and "e-stop" in message, message
            refused["set_estop"] += 1
        ros_context.spin_until(lambda: False, 0.3)
        assert len(statuses) == n, f"a refused call published a status: {statuses[n:]}"
        assert fields(statuses[-1]) == before

    # IDLE, never reset (require_reset): nothing to label, abort, clear, and no start
    refuse_all(["label_episode", "abort_episode", "start_episode"], EpisodeStatus.IDLE, estop_data=False)
    assert "reset first" in call("start_episode")[1]
    refused["start_episode"] += 1

    # RESETTING: a 2 s homing motion is running
    assert call("reset")[0]
    refuse_all(["start_episode", "label_episode", "abort_episode", "reset"], EpisodeStatus.RESETTING,
               estop_data=False)
    assert ros_context.spin_until(lambda: commands.count > 0, 5), "homing sends commands"
    # each homing command waits for a newer joint state, and this test's states come only while it
    # spins (a loaded CI machine took 13 s for a 5 s motion)
    assert ros_context.spin_until(lambda: statuses[-1].ready, 60), statuses[-1]

    # RUNNING, no step yet: no second start, no reset, no label (no step could carry the reward)
    ok, _ = call("start_episode")
    assert ok
    refuse_all(["start_episode", "reset", "label_episode"], EpisodeStatus.RUNNING, estop_data=False)
    steps = node.create_publisher(StepRecord, names.STEP_RECORD, STREAM)
    assert ros_context.spin_until(lambda: steps.get_subscription_count() > 0, 10)

    def record(episode, step, stamp_ns):
        msg = StepRecord(episode_id=episode, step=step)
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
        steps.publish(msg)
        ros_context.spin_until(lambda: False, 0.05)

    record(1, 0, 5 * 10**9)
    record(1, 0, 5 * 10**9)        # the same record again
    record(1, 1, 4 * 10**9)        # older than the counted one
    record(7, 1, 6 * 10**9)        # another episode
    record(1, 1, 6 * 10**9)
    assert ros_context.spin_until(lambda: statuses[-1].steps == 2, 5), statuses[-1]
    ros_context.spin_until(lambda: False, 0.3)
    assert statuses[-1].steps == 2, "a duplicate, out-of-order or foreign step record was counted"

    # ESTOPPED (engaged while running: the episode is aborted)
    assert call("set_estop", SetBool.Request(data=True))[0]
    refuse_all(["start_episode", "label_episode", "abort_episode", "reset"], EpisodeStatus.ESTOPPED,
               estop_data=True)
    assert statuses[-1].aborted and statuses[-1].episode_id == 1

    # cleared: IDLE but not ready, so no start until a reset completed
    assert call("set_estop", SetBool.Request(data=False))[0]
    refuse_all(["start_episode", "label_episode", "abort_episode"], EpisodeStatus.IDLE, estop_data=False)
    assert not commands.problems(), commands.problems()[:3]
    expected = {f"rejected/service_{k}": v for k, v in refused.items()}
    expected.update({"rejected/step_duplicate": 1, "rejected/step_out_of_order": 1, "rejected/step_wrong_episode": 1})
    assert ros_context.spin_until(lambda: all(diag.get("episode_manager", k) == v for k, v in expected.items()), 5), \
        (expected, diag.values.get("episode_manager"))


def test_ready_only_after_the_state_the_last_homing_command_produced_with_slow_state_delivery(ros_context, manager):
    """A lockstep robot that steps once per complete command set and delivers the resulting state
    late (300 ms: longer than a homing tick and the settle time). The reset must pace its homing
    commands on the states and report ready stamped just below the state its LAST command
    produced: otherwise the first policy command lands after one more homing step and the whole
    episode acts one step late (seen once in the sim graph test on a loaded machine)."""
    import threading
    import time

    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger

    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED, STREAM

    node = ros_context.node
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    q = robot.home.copy()
    q[8] += 0.3
    js_pub = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
    statuses = []
    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)
    clock = {"stamp_ns": time.time_ns(), "fresh": set(), "steps": [], "lock": threading.Lock(), "lockstep": False}
    period_ns = 50_000_000

    def publish_state(stamp_ns: int, position: np.ndarray) -> None:
        js = JointState(name=robot.joint_names, position=position.tolist())
        js.header.stamp.sec, js.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        js_pub.publish(js)

    def on_command(group: str, idx, msg) -> None:
        with clock["lock"]:
            q[idx] = msg.data
            clock["fresh"].add(group)
            if len(clock["fresh"]) < len(robot.controllers):
                return
            clock["fresh"].clear()
            clock["stamp_ns"] += period_ns                     # one step per complete command set
            stamp, position = clock["stamp_ns"], q.copy()
            clock["steps"].append((time.monotonic(), stamp))
        threading.Timer(0.3, publish_state, args=(stamp, position)).start()   # delivered late

    for group, idx in robot.group_indices().items():
        node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=robot.controllers[group]),
                                 lambda m, g=group, i=idx: on_command(g, i, m), STREAM)
    def at_rest() -> None:
        # until the reset is asked for, the robot streams its state (the reset plans from a fresh
        # one); from then on it is lockstep: a new state only for each complete command set
        with clock["lock"]:
            if clock["lockstep"]:
                return
            clock["stamp_ns"] += period_ns
            stamp = clock["stamp_ns"]
        publish_state(stamp, q.copy())

    node.create_timer(0.05, at_rest)
    reset = node.create_client(Trigger, names.RESET)
    assert ros_context.spin_until(lambda: js_pub.get_subscription_count() > 0, 20)
    ros_context.spin_until(lambda: False, 1.0)              # the manager hears the streaming state
    with clock["lock"]:
        clock["lockstep"] = True
    r = ros_context.call(reset, Trigger.Request())
    assert r.success, r.message
    assert ros_context.spin_until(lambda: statuses and statuses[-1].ready, 20), statuses[-1:]
    ready = statuses[-1]
    t_ready = time.monotonic()
    ros_context.spin_until(lambda: False, 0.5)              # any homing command still to come would land now
    steps = list(clock["steps"])
    assert len(steps) >= 6, steps                          # a 0.3 s homing at 20 Hz
    assert all(t < t_ready for t, _ in steps), "a homing command arrived after ready: the episode would start late"
    ready_ns = ready.header.stamp.sec * 1_000_000_000 + ready.header.stamp.nanosec
    assert ready_ns == steps[-1][1] - 1, (ready_ns, steps[-1][1])   # just below the LAST command's state


def test_a_label_right_after_the_start_waits_for_the_recorder_instead_of_aborting(ros_context, spawn):
    """The recorder's first progress may come after a quick label: 'not labelled yet', then the
    label goes through once the recorder has the steps; silence counts from the episode start."""
    from resfit_ros.msg import EpisodeStatus, RecorderProgress, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import LabelEpisode, StartEpisode

    robot = str(config_dir() / "robots" / "g1_sim.yaml")
    spawn(node_argv("episode_manager", "-p", f"robot_description:={robot}", "-p", "recorder_lag_steps:=0",
                    "-p", "recorder_silence_s:=2.0"), name="episode_manager")
    node = ros_context.node
    label = node.create_client(LabelEpisode, names.LABEL_EPISODE)
    start = node.create_client(StartEpisode, names.START_EPISODE)
    statuses = []
    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)
    steps = node.create_publisher(StepRecord, names.STEP_RECORD, STREAM)
    progress = node.create_publisher(RecorderProgress, names.RECORDER_PROGRESS, STREAM)
    assert ros_context.spin_until(lambda: steps.get_subscription_count() > 0
                                  and progress.get_subscription_count() > 0, 20)
    r = ros_context.call(start, StartEpisode.Request(explore=True), timeout=20)
    assert r.success and r.episode_id == 1
    for i in range(3):
        steps.publish(StepRecord(episode_id=1, step=i))
    assert ros_context.spin_until(lambda: statuses and statuses[-1].steps == 3, 10)
    r = ros_context.call(label, LabelEpisode.Request(success=True, note="quick"))
    assert not r.accepted and "not labelled yet" in r.message, r.message
    assert statuses[-1].state == EpisodeStatus.RUNNING and not statuses[-1].aborted
    progress.publish(RecorderProgress(episode_id=1, steps_recorded=3))
    ros_context.spin_until(lambda: False, 0.5)
    r = ros_context.call(label, LabelEpisode.Request(success=True, note="quick"))
    assert r.accepted, r.message
    assert ros_context.spin_until(lambda: statuses[-1].successes == 1 and not statuses[-1].aborted, 10)


def test_homing_plans_from_the_newest_state_not_a_late_or_future_stamped_one(ros_context, manager):
    """Beside the robot's own states, each tick, a state stamped 40 ms older (delivered late) and
    one stamped an hour ahead, both showing the arm somewhere else (a flood of replayed or forged
    states). The reset's first homing command starts from the robot's newest state: taking the
    last one to arrive moved the arm by more than a step's limit (seen in the flood fault)."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import Trigger

    from resfit_ros.nodes.common import STREAM

    node = ros_context.node
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    q_true, q_other = robot.home.copy(), robot.home.copy()
    q_true[8] += 0.3
    q_other[8] -= 0.6
    js_pub = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
    commands = []
    controller = robot.controllers["right_arm"]
    idx = robot.group_indices()["right_arm"]
    node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=controller),
                             lambda m: commands.append(np.array(m.data)), STREAM)
    stamp = {"ns": time.time_ns()}

    def publish(stamp_ns: int, position: np.ndarray) -> None:
        js = JointState(name=robot.joint_names, position=position.tolist(), velocity=[0.0] * robot.dof)
        js.header.stamp.sec, js.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
        js_pub.publish(js)

    def tick() -> None:
        stamp["ns"] += 50_000_000
        publish(stamp["ns"], q_true)
        publish(stamp["ns"] - 40_000_000, q_other)              # late
        publish(stamp["ns"] + 3600 * 1_000_000_000, q_other)    # from a wrong clock

    node.create_timer(0.05, tick)
    assert ros_context.spin_until(lambda: js_pub.get_subscription_count() > 0, 20)
    ros_context.spin_until(lambda: False, 1.0)
    r = ros_context.call(node.create_client(Trigger, names.RESET), Trigger.Request())
    assert r.success, r.message
    assert ros_context.spin_until(lambda: len(commands) > 0, 10)
    first = commands[0]
    max_step = robot.max_velocity[idx] / 20.0
    assert np.all(np.abs(first - q_true[idx]) <= max_step + 1e-6), (first, q_true[idx])
