"""Robot and learner on two machines: the robot graph (simulator, judge, control path) on the host's
network and the learner graph (recorder, learner) in a network namespace behind a veth link,
DDS between them over UDP alone, discovery through ROS_STATIC_PEERS (test/netns.py). Skipped,
with the reason, where network namespaces cannot be made (they need root)."""
import os
import signal
import subprocess
import sys

import pytest

from resfit_ros.robot import RobotDescription, config_dir
from test.netns import Unavailable, VethLink
from test.ros.test_sim_graph import _spin_until_exit, _split_args, _watch, assert_trained_and_recorded
from test.support import build_tiny_base, stop_process

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    return build_tiny_base(tmp_path_factory.mktemp("base"))


@pytest.fixture
def link(monkeypatch):
    try:
        veth = VethLink.create()
    except (Unavailable, OSError) as exc:
        pytest.skip(f"no second machine: {exc}")
    for key, value in veth.robot_env().items():      # this test's own node watches from the robot's side
        monkeypatch.setenv(key, value)
    yield veth
    veth.close()


def _launch_split(link, ros_domain, tmp_path, tiny_base, *robot_args):
    """The learner graph on the learner's machine, the robot graph (simulated) on this one:
    (output dir, learner process, robot process, learner log, robot log)."""
    out, common = _split_args(tmp_path, tiny_base)
    learner_log, robot_log = tmp_path / "learner.log", tmp_path / "robot.log"
    learner = _launch(link, "learner", ros_domain, learner_log, "learner", *common)
    robot_side = _launch(link, "robot", ros_domain, robot_log, "robot", *common, "use_sim:=true", *robot_args)
    return out, learner, robot_side, learner_log, robot_log


def _launch(link, side: str, ros_domain, log, graph, *args):
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain), PYTHONUNBUFFERED="1")
    env.update(link.learner_env() if side == "learner" else link.robot_env())
    prefix = link.prefix() if side == "learner" else []
    return subprocess.Popen(prefix + [sys.executable, "-m", "resfit_ros.cli", "launch", graph, *args], env=env,
                            stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def test_robot_and_learner_on_two_machines_train_across_the_link(link, ros_context, ros_domain, tmp_path, tiny_base):
    """Episodes run on the robot's side, are recorded and trained on the learner's side, and the
    weights come back across the link: what train_sim does on one machine."""
    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = _watch(ros_context, robot)
    out, learner, robot_side, learner_log, robot_log = _launch_split(link, ros_domain, tmp_path, tiny_base,
                                                                     "episodes:=3", "max_steps:=25")
    try:
        _spin_until_exit(ros_context, robot_side, timeout_s=300)
        text = robot_log.read_text(errors="replace")
        assert robot_side.poll() == 0, f"the robot graph did not stop by itself with code 0:\n{text[-4000:]}"
        assert learner.poll() is None, learner_log.read_text(errors="replace")[-3000:]
        learner.send_signal(signal.SIGINT)
        learner.wait(timeout=60)
    finally:
        stop_process(robot_side)
        stop_process(learner)
    learner_text = learner_log.read_text(errors="replace")
    assert_trained_and_recorded(out, seen, robot, text + learner_text)
    # the learner really was on the other machine: its processes saw only the link's network
    assert f"ip netns exec {link.netns}" not in text


def test_the_link_down_for_five_seconds_mid_episode_loses_no_labelled_episode(link, ros_context, ros_domain,
                                                                              tmp_path, tiny_base):
    """The network between the machines goes down for 5 s while an episode runs. The robot side
    aborts that episode (its steps could not be recorded), commands stay within the limits, and
    after the link returns training goes on: new weights arrive, every labelled episode has its
    complete bag on the learner's side and the aborted one is never trained on."""
    import time

    from resfit_ros import names
    from resfit_ros.bags import scan_episodes
    from resfit_ros.msg import EpisodeStatus
    from resfit_ros.nodes.common import LATCHED

    robot = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")
    seen = _watch(ros_context, robot)
    statuses = []
    ros_context.node.create_subscription(EpisodeStatus, names.EPISODE_STATUS, statuses.append, LATCHED)
    out, learner, robot_side, learner_log, robot_log = _launch_split(link, ros_domain, tmp_path, tiny_base,
                                                                     "episodes:=4", "max_steps:=120")
    try:
        # early in an episode, so that it is still running when the link goes down: the simulator runs
        # faster than real time here, and a 40-step episode could end before the cut (CI saw that)
        def running_after_weights():
            s = statuses[-1] if statuses else None
            return (seen["weights"] and max(w.version for w in seen["weights"]) >= 1 and s is not None
                    and s.state == EpisodeStatus.RUNNING and 3 <= s.steps <= 40)
        assert ros_context.spin_until(running_after_weights, 240), (
            f"weights {[w.version for w in seen['weights']]}, learner metrics (env steps, updates) "
            f"{[(m.env_steps, m.learner_step) for m in seen['metrics'][-3:]]}, newest step record "
            f"{seen['steps'][-1].training_steps if seen['steps'] else None}\n"
            + robot_log.read_text(errors="replace")[-2000:] + learner_log.read_text(errors="replace")[-2000:])
        interrupted = int(statuses[-1].episode_id)
        version_before = max(w.version for w in seen["weights"])
        link.down()
        ros_context.spin_until(lambda: False, 5.0)
        link.up()
        t_up = time.monotonic()
        _spin_until_exit(ros_context, robot_side, timeout_s=300)
        text = robot_log.read_text(errors="replace")
        assert robot_side.poll() == 0, f"the robot graph did not stop by itself with code 0:\n{text[-4000:]}"
        learner.send_signal(signal.SIGINT)
        learner.wait(timeout=60)
    finally:
        link.up()
        stop_process(robot_side)
        stop_process(learner)
    text += learner_log.read_text(errors="replace")
    assert time.monotonic() > t_up
    labelled = {int(s.episode_id): int(s.label) for s in statuses
                if s.label != EpisodeStatus.LABEL_NONE and not s.aborted and s.episode_id}
    aborted = {int(s.episode_id) for s in statuses if s.aborted}
    assert interrupted in aborted and interrupted not in labelled, \
        f"episode {interrupted} (running when the link went down): labelled {labelled}, aborted {aborted}"
    assert len(labelled) >= 4, text[-3000:]
    bags = {e.episode_id: e for _, e in scan_episodes(out / "episodes") if not isinstance(e, str)}
    for eid, label in labelled.items():    # no labelled episode lost
        assert eid in bags and bags[eid].label == ("success" if label == 1 else "failure") and not bags[eid].aborted, \
            f"labelled episode {eid}: bag {bags.get(eid)}"
    assert interrupted not in bags or bags[interrupted].label is None or bags[interrupted].aborted
    assert max(w.version for w in seen["weights"]) > version_before, "no new weights after the link came back"
    # every labelled episode replays step for step: the aborted episode's step records that arrive
    # after the link returns (behind the next episode's latched status) stay out of the next bag
    assert_trained_and_recorded(out, seen, robot, text)
