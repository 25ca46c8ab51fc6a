"""kill -9 of the recorder between an episode's label and the close of its bag (the
`finish_delay_s` window): the restarted recorder finishes the labelled episode from what the
killed one flushed at the label. Before this, the episode stayed `.incomplete`: labelled by the
operator, lost for training."""
import os
import signal
import time

import numpy as np
import pytest

from resfit_ros import names
from test.bags.synthetic import make_observation
from test.safety import helpers
from test.support import node_argv

pytestmark = pytest.mark.ros


def _recorder_rig(ros_context, spawn, tmp_path, finish_delay_s: float):
    """A recorder process writing to tmp_path/episodes and this test's publishers of what it
    records: (episodes dir, its command line, recorder, diagnostics watch, status, observation and
    step publishers)."""
    from resfit_ros.msg import EpisodeStatus, Observation, StepRecord
    from resfit_ros.nodes.common import LATCHED, STREAM

    episodes = tmp_path / "episodes"
    argv = node_argv("recorder", "-p", f"output_dir:={episodes}", "-p", "record_raw_inputs:=false",
                     "-p", f"robot_description:={helpers.robot_path()}", "-p", f"finish_delay_s:={finish_delay_s}")
    recorder = spawn(argv, name="recorder")
    node = ros_context.node
    diag = helpers.DiagWatch(node)
    pub_status = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    pub_obs = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    pub_step = node.create_publisher(StepRecord, names.STEP_RECORD, STREAM)
    assert ros_context.spin_until(lambda: "recorder" in diag.values, 60), recorder.log_path.read_text()
    return episodes, argv, recorder, diag, pub_status, pub_obs, pub_step


def test_a_labelled_episode_survives_a_recorder_killed_before_closing_it(ros_context, spawn, tmp_path):
    from resfit_ros.bags import INCOMPLETE_SUFFIX, read_episode
    from resfit_ros.bags.mcap_scan import McapError, read_mcap
    from resfit_ros.bags.types import bag_topic
    from resfit_ros.msg import EpisodeStatus, StepRecord
    from resfit_ros.nodes.common import ns_to_stamp
    from resfit_ros.nodes.convert import observation_to_msg

    episodes, argv, recorder, diag, pub_status, pub_obs, pub_step = _recorder_rig(ros_context, spawn, tmp_path, 8.0)
    node = ros_context.node

    def status(state, label=EpisodeStatus.LABEL_NONE, steps=0):
        msg = EpisodeStatus(state=state, episode_id=1, label=label, explore=True, steps=steps)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub_status.publish(msg)

    status(EpisodeStatus.RUNNING)
    assert ros_context.spin_until(lambda: any(episodes.glob("*" + INCOMPLETE_SUFFIX)), 10)
    rng = np.random.default_rng(0)
    commands = []
    for i in range(6):
        obs = make_observation(i, rng, cameras=(), dof=29)
        pub_obs.publish(observation_to_msg(obs))
        if i < 5:
            commands.append(rng.normal(size=29))
            rec = StepRecord(episode_id=1, step=i, observation_sequence=i, joint_names=obs.joint_names,
                             command=commands[-1].tolist(), exploration=True)
            rec.header.stamp = ns_to_stamp(obs.stamp_ns)
            pub_step.publish(rec)
        ros_context.spin_until(lambda: False, 0.05)
    ros_context.spin_until(lambda: False, 0.5)
    status(EpisodeStatus.IDLE, EpisodeStatus.LABEL_SUCCESS, steps=5)
    [bag] = episodes.glob("*" + INCOMPLETE_SUFFIX)

    def label_on_disk() -> bool:
        try:
            [mcap] = bag.glob("*.mcap")
            got = read_mcap(mcap, {bag_topic(names.EPISODE_STATUS)}, allow_truncated=True).messages
        except (ValueError, McapError):
            return False
        return len(got.get(bag_topic(names.EPISODE_STATUS), [])) >= 2

    assert ros_context.spin_until(label_on_disk, 5), "the recorder did not flush the label to disk"
    os.killpg(recorder.pid, signal.SIGKILL)          # within the 8 s before it would close the bag
    recorder.wait(timeout=10)
    assert bag.is_dir() and not [p for p in episodes.iterdir() if not p.name.endswith(INCOMPLETE_SUFFIX)]

    again = spawn(argv, name="recorder_again")
    final = bag.with_name(bag.name.removesuffix(INCOMPLETE_SUFFIX))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not final.is_dir():
        time.sleep(0.1)
    assert final.is_dir(), again.log_path.read_text()
    ep = read_episode(final, images=False)
    assert ep.success and ep.num_steps == 5 and ep.metadata["recovered"] == "true"
    np.testing.assert_allclose(ep.command, np.stack(commands))
    assert not bag.exists()
    # the recorder logs right after the rename: give its output a moment to reach the log file
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "recovered labelled episode" not in again.log_path.read_text():
        time.sleep(0.1)
    assert "recovered labelled episode" in again.log_path.read_text()


def test_a_late_step_record_of_an_earlier_episode_stays_out_of_the_next_bag(ros_context, spawn, tmp_path):
    """After a link outage the learner machine receives the backlog of the aborted episode's step
    records after the next episode's latched status opened its bag: they are refused (counted), the
    new bag holds its own steps only, each with the observation it acted on."""
    from resfit_ros.bags import read_episode
    from resfit_ros.msg import EpisodeStatus, StepRecord
    from resfit_ros.nodes.common import ns_to_stamp
    from resfit_ros.nodes.convert import observation_to_msg

    episodes, _, recorder, diag, pub_status, pub_obs, pub_step = _recorder_rig(ros_context, spawn, tmp_path, 0.2)
    node = ros_context.node
    rng = np.random.default_rng(0)

    def status(episode, state, label=EpisodeStatus.LABEL_NONE):
        msg = EpisodeStatus(state=state, episode_id=episode, label=label, explore=True)
        msg.header.stamp = node.get_clock().now().to_msg()
        pub_status.publish(msg)
        ros_context.spin_until(lambda: False, 0.3)

    def step(episode, i, seq):
        obs = make_observation(seq, rng, cameras=(), dof=29)
        pub_obs.publish(observation_to_msg(obs))
        rec = StepRecord(episode_id=episode, step=i, observation_sequence=seq, joint_names=obs.joint_names,
                         command=rng.normal(size=29).tolist(), exploration=True)
        rec.header.stamp = ns_to_stamp(obs.stamp_ns)
        pub_step.publish(rec)
        ros_context.spin_until(lambda: False, 0.05)

    status(1, EpisodeStatus.RUNNING)                    # episode 1 runs; its last steps are held back ...
    for i in range(3):
        step(1, i, i)
    status(1, EpisodeStatus.IDLE, label=EpisodeStatus.LABEL_NONE)
    status(2, EpisodeStatus.RUNNING)                    # ... and arrive once episode 2 is recording
    for i in range(3, 6):
        step(1, i, i)
    for i in range(4):
        step(2, i, 10 + i)
    step(2, 4, 14)
    ros_context.spin_until(lambda: False, 0.5)
    status(2, EpisodeStatus.IDLE, label=EpisodeStatus.LABEL_SUCCESS)
    assert ros_context.spin_until(lambda: diag.get("recorder", "rejected/step_other_episode") >= 3, 10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not [p for p in episodes.glob("episode_000002_*") if p.is_dir()
                                                 and not p.name.endswith(".incomplete")]:
        time.sleep(0.1)
    [bag] = [p for p in episodes.glob("episode_000002_*") if not p.name.endswith(".incomplete")]
    ep = read_episode(bag, images=False)
    assert ep.num_steps == 5 and ep.step.tolist() == [0, 1, 2, 3, 4]
    assert ep.obs_sequence[ep.step_obs_index].tolist() == [10, 11, 12, 13, 14]
