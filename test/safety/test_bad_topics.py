"""Malformed messages on every subscribed topic, over real DDS into real node processes.

Each test starts the nodes that consume a group of topics, keeps good traffic flowing, sends the
whole bad-input catalogue for those topics through `resfit_ros_testing.bad_inputs.inject_bad_inputs`
(the function `resfit-ros bench faults` uses) and checks, per entry, that the consumer counted it
under its reason on /diagnostics; then that the nodes are alive and still work, and that no
command outside the limits -- or any command at all caused by a bad input -- reached the robot.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros_testing.bad_inputs import catalogue, inject_bad_inputs
from test.safety import helpers
from test.support import node_argv

pytestmark = pytest.mark.ros

TASK_TOPIC = "/sim_robot/task_state"


def _spin(ros_context):
    return lambda seconds: ros_context.spin_until(lambda: False, seconds)


def _log(proc) -> str:
    return open(proc.log_path).read()


def _alive(*procs):
    for p in procs:
        assert p.poll() is None, f"node died (exit {p.returncode}):\n{_log(p)[-3000:]}"


def _entries(rob, targets, names_only=None):
    chosen = [e for e in catalogue(rob, TASK_TOPIC) if e.target in targets]
    return chosen if names_only is None else [e for e in chosen if e.name in names_only]


def _assert_all_rejected(report, entries):
    detail = "\n".join(f"{r.name}: {r.status} {r.detail}" for r in report.results if r.status != "rejected")
    assert not report.missed, detail
    assert sorted(report.rejected) == sorted(e.name for e in entries), detail


def _throttled(lines: list[str], period_s: float) -> bool:
    """True if no rejection reason has two log lines closer than period_s (the nodes' throttle;
    ROS log lines carry their wall time: "[WARN] [<seconds>] [<node>]: rejected (<reason>): ...")."""
    last: dict[str, float] = {}
    for line in lines:
        stamp = float(line.split("] [", 1)[1].split("]", 1)[0])
        reason = line.split("rejected (", 1)[1].split(")", 1)[0]
        if reason in last and stamp - last[reason] < period_s * 0.95:
            return False
        last[reason] = stamp
    return True


def test_synchronizer_and_episode_manager_reject_bad_joint_states_images_and_task_state(ros_context, spawn):
    from sensor_msgs.msg import Image, JointState

    from resfit_ros.msg import Observation
    from resfit_ros.nodes.common import STREAM

    rob = helpers.robot()
    sync = spawn(node_argv("synchronizer", "-p", f"robot_description:={helpers.robot_path()}",
                           "-p", f"extra_state_topics:=[{TASK_TOPIC}]", "-p", "diagnostics_period_s:=0.2",
                           "-p", "max_age_s:=0.5", "-p", "future_tolerance_s:=0.05"), name="synchronizer")
    manager = spawn(node_argv("episode_manager", "-p", f"robot_description:={helpers.robot_path()}"),
                    name="episode_manager")
    node = ros_context.node
    commands = helpers.CommandWatch(node, rob)
    observations = []
    node.create_subscription(Observation, names.OBSERVATION, observations.append, STREAM)
    pub_js = node.create_publisher(JointState, names.JOINT_STATES, STREAM)
    pub_img = node.create_publisher(Image, rob.cameras["head"], STREAM)
    pub_task = node.create_publisher(JointState, TASK_TOPIC, STREAM)
    task_names = ["object_x", "object_y", "object_z"]

    def good_traffic():
        stamp = node.get_clock().now().to_msg()
        q = np.asarray(rob.home) + 0.01 * np.sin(time.monotonic())
        js = JointState(name=list(rob.joint_names), position=q.tolist(), velocity=[0.0] * rob.dof)
        img = Image(height=32, width=32, encoding="rgb8", step=96)
        img.data = bytes(32 * 32 * 3)
        task = JointState(name=task_names, position=[0.4, 0.0, 0.8])
        for m in (js, img, task):
            m.header.stamp = stamp
        pub_img.publish(img)
        pub_task.publish(task)
        pub_js.publish(js)

    node.create_timer(0.05, good_traffic)
    assert ros_context.spin_until(lambda: len(observations) >= 3, 40), _log(sync)
    # the manager must hear the joint states too before the bad ones go out (discovery is slower under load)
    assert ros_context.spin_until(lambda: pub_js.get_subscription_count() >= 2, 40), _log(manager)

    entries = _entries(rob, {names.JOINT_STATES, rob.cameras["head"], TASK_TOPIC})
    report = inject_bad_inputs(node, _spin(ros_context), rob, sim=False, entries=entries, extra_topic=TASK_TOPIC,
                               warmup_s=1.5)
    _assert_all_rejected(report, entries)
    assert len(entries) == 21

    # still synchronising, and every observation it ever published is well formed
    n = len(observations)
    assert ros_context.spin_until(lambda: len(observations) >= n + 3, 10)
    for obs in observations:
        assert list(obs.joint_names) == rob.joint_names and len(obs.position) == rob.dof
        assert all(np.all(np.isfinite(v)) for v in (obs.position, obs.velocity, obs.extra))
        assert list(obs.extra_names) == task_names
        assert [(i.width, i.height, i.encoding) for i in obs.images] == [(84, 84, "rgb8")]
    stamps = [o.header.stamp.sec * 10**9 + o.header.stamp.nanosec for o in observations]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), "observations must be strictly increasing in time"
    _alive(sync, manager)
    assert commands.count == 0  # neither node commands the robot on its own
    # each node says so in its log (throttled: at least one clear line, not one per message)
    for proc in (sync, manager):
        def rejected_lines():
            return [line for line in _log(proc).splitlines() if "rejected (" in line]
        ros_context.spin_until(lambda: rejected_lines(), 10)   # the node's log reaches its file a little later
        if proc is manager and not rejected_lines():
            # its joint-state queue keeps the newest 10 (it only needs the newest): a loaded manager can
            # find a burst overwritten by the good stream before it reads it; the same inputs once more
            inject_bad_inputs(node, _spin(ros_context), rob, sim=False, entries=entries, extra_topic=TASK_TOPIC,
                              warmup_s=0.5)
            ros_context.spin_until(lambda: rejected_lines(), 10)
        lines = rejected_lines()
        assert lines, f"{proc.log_path.name}: no rejection logged\n{_log(proc)[-2000:]}"
        assert _throttled(lines, period_s=2.0), f"{proc.log_path.name}: a reason logged twice within 2 s: {lines}"


def test_residual_policy_and_base_server_reject_bad_observations_weights_and_status(ros_context, spawn, tmp_path):
    from sensor_msgs.msg import Image

    from resfit_ros.msg import EpisodeStatus, Observation, PolicyWeights
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import GetActionChunk

    rob = helpers.robot()
    base = helpers.tiny_base(tmp_path / "base.safetensors", rob)
    residual = spawn(node_argv("residual_policy", "-p", f"robot_description:={helpers.robot_path()}",
                               "-p", "diagnostics_period_s:=0.2", "-p", "explore:=false",
                               "-p", "watchdog_timeout_s:=5.0"), name="residual_policy")
    server = spawn(node_argv("base_chunk_server", "-p", f"base_artifact:={base}"), name="base_chunk_server")
    node = ros_context.node
    commands = helpers.CommandWatch(node, rob)
    diag = helpers.DiagWatch(node)
    pub_status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    pub_weights = node.create_publisher(PolicyWeights, names.POLICY_WEIGHTS, LATCHED)
    pub_obs = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    status = EpisodeStatus(state=EpisodeStatus.RUNNING, episode_id=1, label=EpisodeStatus.LABEL_NONE, explore=False)
    status.header.stamp = node.get_clock().now().to_msg()
    pub_status.publish(status)
    pub_weights.publish(helpers.weights_msg(1))
    assert ros_context.spin_until(lambda: diag.get("residual_policy", "weights_version") == 1, 60), _log(residual)
    chunk = node.create_client(GetActionChunk, names.GET_ACTION_CHUNK)
    assert chunk.wait_for_service(timeout_sec=60), _log(server)
    seq = [0]

    def good_obs(size=84):
        seq[0] += 1
        msg = Observation(sequence=seq[0], joint_names=list(rob.joint_names), position=list(map(float, rob.home)),
                          velocity=[0.0] * rob.dof, camera_names=["head"])
        img = Image(height=size, width=size, encoding="rgb8", step=size * 3)
        img.data = bytes(size * size * 3)
        msg.images = [img]
        msg.header.stamp = node.get_clock().now().to_msg()
        return msg

    last = {}

    def tick() -> None:
        n = commands.count
        last[names.OBSERVATION] = good_obs()
        pub_obs.publish(last[names.OBSERVATION])
        assert ros_context.spin_until(lambda: commands.count >= n + len(rob.controllers), 30), _log(residual)

    for _ in range(3):
        tick()
    n0 = commands.count

    targets = {names.OBSERVATION, names.POLICY_WEIGHTS, names.EPISODE_STATUS, names.LEARNER_METRICS,
               names.GET_ACTION_CHUNK}
    entries = _entries(rob, targets)
    report = inject_bad_inputs(node, _spin(ros_context), rob, sim=False, entries=entries, warmup_s=1.5,
                               templates=last)
    _assert_all_rejected(report, entries)
    assert len(entries) == 27

    ros_context.spin_until(lambda: False, 0.5)
    assert commands.count == n0, "a bad input caused a command"
    assert diag.get("residual_policy", "weights_version") == 1, "a bad weights message replaced the good ones"
    assert diag.get("residual_policy", "weights_rejected") >= 6
    # a camera the base policy needs: missing, or of another size -> refused with a message, server alive
    for size in (None, 40):
        obs = good_obs(size or 84)
        if size is None:
            obs.camera_names, obs.images = [], []
        r = ros_context.call(chunk, GetActionChunk.Request(observation=obs))
        assert not r.success and r.message, r
    # still acting on good observations, within the limits
    tick()
    assert not commands.problems(), commands.problems()[:3]
    _alive(residual, server)
    assert ros_context.spin_until(lambda: diag.get("base_chunk_server", "rejected/inference_failed") >= 2, 5)


def test_sim_robot_recorder_and_judge_reject_bad_commands_and_status(ros_context, spawn, tmp_path):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.robot import config_dir
    from resfit_ros.srv import ResetScene

    rob = helpers.robot()
    episodes = tmp_path / "episodes"
    sim = spawn(node_argv("sim_robot", "--params-file", str(config_dir() / "sim.yaml"), "-p", "render:=false",
                          "-p", "idle_period_s:=5.0", "-p", "publish_clock:=false"), name="sim_robot")
    recorder = spawn(node_argv("recorder", "-p", f"output_dir:={episodes}", "-p", "record_raw_inputs:=false",
                               "-p", f"robot_description:={helpers.robot_path()}"), name="recorder")
    judge = spawn(node_argv("judge", "-p", "max_steps:=100000"), name="judge")
    node = ros_context.node
    diag = helpers.DiagWatch(node)
    states = []
    node.create_subscription(JointState, names.JOINT_STATES, states.append, STREAM)
    pub_status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)

    def status(state, label=EpisodeStatus.LABEL_NONE):
        msg = EpisodeStatus(state=state, episode_id=1, label=label, explore=True, steps=3)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub_status.publish(msg)

    assert ros_context.spin_until(lambda: {"sim_robot", "recorder", "judge"} <= set(diag.values), 60), \
        _log(sim)[-2000:]
    status(EpisodeStatus.RUNNING)
    assert ros_context.spin_until(lambda: any(episodes.glob("*.incomplete")), 10), _log(recorder)

    entries = [e for e in catalogue(rob) if e.target.endswith("/commands") or e.target == names.EPISODE_STATUS
               or e.name == "reset_scene_while_running"]
    report = inject_bad_inputs(node, _spin(ros_context), rob, sim=True, entries=entries, warmup_s=1.0)
    _assert_all_rejected(report, entries)
    assert len(entries) == 6

    # the bad commands were not applied: with the waist (the group they went to) never commanded,
    # commands for every other group do not make the lockstep simulator step
    pubs = {g: node.create_publisher(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=c), STREAM)
            for g, c in rob.controllers.items()}
    groups = rob.group_indices()
    assert ros_context.spin_until(lambda: all(p.get_subscription_count() for p in pubs.values()), 10)

    def newest() -> int:   # the simulator may re-publish its state unchanged (same stamp): only a step moves it
        return max((s.header.stamp.sec * 10**9 + s.header.stamp.nanosec for s in states), default=0)

    t = newest()
    waist = next(iter(rob.controllers))
    for g, p in pubs.items():
        if g != waist:
            p.publish(Float64MultiArray(data=np.asarray(rob.home)[groups[g]].tolist()))
    ros_context.spin_until(lambda: False, 0.5)
    assert newest() == t, "the simulator stepped without a valid waist command"
    pubs[waist].publish(Float64MultiArray(data=np.asarray(rob.home)[groups[waist]].tolist()))
    assert ros_context.spin_until(lambda: newest() > t, 5)
    assert all(np.all(np.isfinite(s.position)) for s in states)

    # the malformed statuses did not end the episode's bag: the real end does
    assert not [p for p in episodes.iterdir() if not p.name.endswith(".incomplete")]
    status(EpisodeStatus.IDLE, EpisodeStatus.LABEL_SUCCESS)
    assert ros_context.spin_until(lambda: [p for p in episodes.iterdir() if not p.name.endswith(".incomplete")], 10), \
        _log(recorder)
    # between episodes the scene reset is accepted again
    r = ros_context.call(node.create_client(ResetScene, "/sim_robot/reset_scene"), ResetScene.Request())
    assert r.success, r.message
    _alive(sim, recorder, judge)
