"""The operator's flow on the robot_sim graph, as a person runs it: train_real's nodes with
config/real.yaml against the stand-in robot in real time, no judge.

The graph runs through the project's runner with the learner left out (the flow does not need it,
and its warm-up would take both cores for minutes); every other node is exactly robot_sim's.
Once through `resfit-ros operator` in a real pseudo-terminal (single keys, as typed), once through
plain service calls. Each refused call answers with one line naming the reason; the episode bags
carry the ids, labels and step counts the console and the services announced.
"""
from __future__ import annotations

import dataclasses
import os
import re
import time

import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.core.intervention import intervention_steps
from resfit_ros.graph import GRAPHS
from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR
from resfit_ros.robot import RobotDescription, config_dir
from test.support import build_tiny_robot_base

pytestmark = pytest.mark.ros

WATCHED = ("synchronizer", "base_chunk_server", "residual_policy", "recorder")


@pytest.fixture(scope="module")
def robot_base(tmp_path_factory):
    return build_tiny_robot_base(tmp_path_factory.mktemp("robot_base"))


@pytest.fixture
def robot_graph(ros_domain, tmp_path, robot_base):
    """robot_sim's nodes but the learner, started by GraphRunner; yields (output_dir, log path)."""
    from resfit_ros.runner import GraphRunner

    demos, base = robot_base
    graph = GRAPHS["robot_sim"]
    graph = dataclasses.replace(graph, nodes=tuple(n for n in graph.nodes if n.name != "learner"))
    out = tmp_path / "run"
    log_path = tmp_path / "graph.log"
    log = open(log_path, "w")
    runner = GraphRunner(graph, {"base_artifact": str(base), "demos_dir": str(demos), "output_dir": str(out)},
                         env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)), output=log, max_restarts=0)
    runner.start()
    try:
        # the episode manager says when each node an episode needs is up (DDS liveliness)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            text = log_path.read_text(errors="replace")
            if all(f"{n} is up" in text for n in WATCHED) and "[sim_robot]" in text:
                break
            assert runner.poll(), f"the graph stopped: {runner.exit_reason}\n{text[-3000:]}"
            time.sleep(0.2)
        else:
            raise AssertionError(f"the graph did not come up:\n{log_path.read_text(errors='replace')[-3000:]}")
        yield out, log_path
    finally:
        runner.shutdown()
        log.close()


def finished_episodes(out, count: int, timeout: float = 10.0):
    """The episode bags under out/episodes once `count` of them are closed (finish_delay_s after
    their label), by episode id."""
    from resfit_ros.bags import scan_episodes

    deadline = time.monotonic() + timeout
    while True:
        found = {e.episode_id: e for _, e in scan_episodes(out / "episodes") if not isinstance(e, str)}
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def test_operator_console_in_a_terminal(robot_graph, ros_domain):
    """Keys typed into `resfit-ros operator` on a terminal: refused keys first (nothing to label,
    not reset), then reset, start, success; reset, start, failure; reset, start, abort; e-stop
    while idle and every call it blocks; clear; quit. The bags say what the console said."""
    from test.ros.console import Console

    out, log_path = robot_graph
    console = Console(dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    try:
        console.expect(r"^keys: \[space\] start", 20)
        console.expect(r"^\[status\] IDLE \(not reset\) episode 0", 20)

        def key(k: str, answer: str, timeout: float = 15.0) -> str:
            """Press k; its answer is one line (besides status lines) and matches `answer`."""
            since = len(console.lines)
            console.press(k)
            line = console.expect(answer, timeout)
            console.settle(0.3)
            assert console.answers(since) == [line], f"key {k!r}: {console.answers(since)}"
            return line

        def reset_and_wait() -> None:
            key("r", r"^\[reset\] OK: reset started")
            console.expect(r"^\[status\] IDLE \(ready\) .*reset done: home reached", 20)

        key(" ", r"^\[start\] REFUSED: the robot has not been reset since the last episode: reset first$")
        key("s", r"^\[label\] REFUSED: no episode is running \(idle\)$")
        key("a", r"^\[abort\] REFUSED: no episode is running \(idle\)$")
        key("x", r"^unknown key 'x'; keys:")

        announced = {}                        # episode id -> (label, steps) as the console said
        for label_key, label in (("s", "success"), ("f", "failure"), ("a", None)):
            reset_and_wait()
            started = key(" ", r"^\[start\] OK: episode \d+ started \(training\)$")
            eid = int(re.search(r"episode (\d+)", started).group(1))
            console.settle(1.5)               # the robot moves for a while
            if label_key == "s":              # the wrong-state calls of a running episode
                key(" ", rf"^\[start\] REFUSED: an episode is running: label or abort it first \(episode {eid}\)$")
                key("r", rf"^\[reset\] REFUSED: an episode is running: label or abort it first \(episode {eid}\)$")
                # take over with no teleoperation device sending targets: the robot holds, then hand back
                key("i", r"^\[intervention\] you drive: the robot follows resfit/intervention/target$")
                console.settle(1.0)
                key("i", r"^\[intervention\] handed back to the policy$")
                console.settle(0.5)
            if label is None:
                key("a", rf"^\[abort\] OK: episode {eid} aborted: aborted by the operator$")
                announced[eid] = (None, None)
                key("a", rf"^\[abort\] REFUSED: no episode is running \(idle; last episode {eid} was aborted\)$")
                continue
            line = key(label_key, r"^\[label\] ")
            while "not labelled yet" in line:   # the recorder is catching up: a person presses again
                line = key(label_key, r"^\[label\] ")
            m = re.fullmatch(rf"\[label\] OK: episode {eid} labelled {label} after (\d+) steps", line)
            assert m, line
            announced[eid] = (label, int(m.group(1)))
            key(label_key, rf"^\[label\] REFUSED: no episode is running \(idle; last episode {eid} was labelled "
                           rf"{label}\)$")

        key("e", r"^\[estop\] OK: E-STOP engaged \(idle\)$")
        assert any(line.startswith("[status] ESTOPPED") for line in console.lines)
        key(" ", r"^\[start\] REFUSED: the e-stop is engaged: clear it first$")
        key("r", r"^\[reset\] REFUSED: the e-stop is engaged: clear it first$")
        key("s", r"^\[label\] REFUSED: no episode is running \(e-stopped; ")
        key("e", r"^\[estop\] OK: e-stop cleared$")
        key(" ", r"^\[start\] REFUSED: the robot has not been reset since the last episode: reset first$")
        console.press("q")
        assert console.close() == 0, "\n".join(console.lines[-20:])
    finally:
        if console.proc.poll() is None:
            console.close()
    shown = "\n".join(console.lines)
    assert "Traceback" not in shown, shown

    episodes = finished_episodes(out, len(announced))
    assert sorted(episodes) == sorted(announced), (sorted(episodes), announced)
    for eid, (label, steps) in announced.items():
        e = episodes[eid]
        assert e.label == label and e.aborted == (label is None), (eid, e.label, e.aborted)
        if steps is not None:
            assert e.num_steps == steps, f"episode {eid}: console said {steps} steps, the bag has {e.num_steps}"
            assert np.all(e.step_obs_index >= 0), "every step has the observation it acted on"
            assert e.images["head"].shape[1:] == (84, 84, 3), "the bag carries the camera frames"
        if label == "success":                # the take-over: held steps marked, then the policy again
            flags = e.safety_flags.astype(np.int64)
            held = (flags & SAFETY_OPERATOR != 0) & (flags & SAFETY_HOLD != 0)
            assert held.any() and not held[-1], flags.tolist()
            assert not intervention_steps(e.safety_flags).any()   # no target was sent: nothing to learn from
    assert "Traceback" not in log_path.read_text(errors="replace")


def test_operator_services_on_the_robot_graph(robot_graph, ros_context):
    """The same flow through plain service calls, with an e-stop DURING an episode: the episode is
    aborted, the policy stops commanding and the robot holds its last command; every wrong-state
    call is refused with its reason and changes nothing; the labelled episode's bag has the steps
    the label answer counted."""
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray
    from std_srvs.srv import SetBool, Trigger

    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.srv import LabelEpisode, StartEpisode

    out, log_path = robot_graph
    node = ros_context.node
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    clients = {"start": node.create_client(StartEpisode, names.START_EPISODE),
               "label": node.create_client(LabelEpisode, names.LABEL_EPISODE),
               "abort": node.create_client(Trigger, names.ABORT_EPISODE),
               "reset": node.create_client(Trigger, names.RESET),
               "estop": node.create_client(SetBool, names.SET_ESTOP)}
    statuses, commands, joints = [], [], []
    node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)
    node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(
        controller=robot.controllers["right_arm"]), lambda m: commands.append(time.monotonic()), STREAM)
    node.create_subscription(JointState, names.JOINT_STATES, lambda m: joints.append(np.array(m.position)), STREAM)

    def call(name, request=None):
        request = request if request is not None else {"start": StartEpisode.Request(explore=True, note="test"),
                                                       "label": LabelEpisode.Request(success=True, note="test"),
                                                       "abort": Trigger.Request(), "reset": Trigger.Request()}[name]
        r = ros_context.call(clients[name], request, timeout=20)
        return bool(getattr(r, "success", getattr(r, "accepted", False))), r.message

    def fields(s):   # everything but the step count, which a running episode advances
        return (s.state, s.episode_id, s.label, s.aborted, s.ready, s.episodes_completed, s.successes, s.message)

    def refused(name, reason, request=None):
        before = fields(statuses[-1])
        ok, message = call(name, request)
        assert not ok and reason in message and "\n" not in message, (name, message)
        ros_context.spin_until(lambda: False, 0.2)
        assert fields(statuses[-1]) == before, f"refused {name} changed the status: {statuses[-1]}"

    def reset_and_wait():
        assert call("reset") == (True, "reset started; status turns ready when the robot is home")
        assert ros_context.spin_until(lambda: statuses and statuses[-1].ready, 20), statuses[-1].message

    assert ros_context.spin_until(lambda: statuses, 10)
    refused("start", "reset first")
    refused("label", "no episode is running")
    refused("estop", "the e-stop is not engaged", SetBool.Request(data=False))
    reset_and_wait()
    ok, message = call("start")
    assert ok and message == "episode 1 started (training)"
    assert ros_context.spin_until(lambda: statuses[-1].steps >= 10, 10), "the policy does not step"
    refused("reset", "an episode is running")

    ok, message = call("estop", SetBool.Request(data=True))
    assert ok and message == "E-STOP: episode 1 aborted", message
    assert ros_context.spin_until(lambda: statuses[-1].state == EpisodeStatus.ESTOPPED, 5)
    ros_context.spin_until(lambda: False, 0.5)        # commands already on the wire
    n_commands, n_joints = len(commands), len(joints)
    ros_context.spin_until(lambda: False, 1.5)
    assert len(commands) == n_commands, "the policy kept commanding under the e-stop"
    held = np.array(joints[n_joints:])
    right = robot.group_indices()["right_arm"]
    assert len(held) > 100 and np.ptp(held[:, right], axis=0).max() < 0.01, "the robot holds its last command"
    refused("start", "the e-stop is engaged")
    refused("reset", "the e-stop is engaged")
    refused("label", "no episode is running")
    refused("estop", "the e-stop is already engaged", SetBool.Request(data=True))
    assert call("estop", SetBool.Request(data=False)) == (True, "e-stop cleared")
    refused("start", "reset first")

    reset_and_wait()
    ok, message = call("start")
    assert ok and message == "episode 2 started (training)"
    assert ros_context.spin_until(lambda: statuses[-1].steps >= 10, 10)
    ok, message = call("label", LabelEpisode.Request(success=False, note="dropped it"))
    while not ok and "not labelled yet" in message:
        ros_context.spin_until(lambda: False, 0.2)
        ok, message = call("label", LabelEpisode.Request(success=False, note="dropped it"))
    m = re.fullmatch(r"episode 2 labelled failure after (\d+) steps", message)
    assert ok and m, message
    refused("label", "last episode 2 was labelled failure")
    refused("abort", "no episode is running")

    episodes = finished_episodes(out, 2)
    assert sorted(episodes) == [1, 2]
    assert episodes[1].aborted and episodes[1].label is None
    assert episodes[2].label == "failure" and episodes[2].num_steps == int(m.group(1))
    assert "Traceback" not in log_path.read_text(errors="replace")
