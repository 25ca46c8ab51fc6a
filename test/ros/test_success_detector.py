"""The success_detector node over DDS: it starts episodes, scores the observations, labels a
success and a failure (at its step limit) through the operator's services, publishes its
scores, and exits after max_episodes.

The test process stands where the episode manager and the synchronizer are: it answers the
services, publishes the episode status, and replays the observations of real recorded episodes
(a scripted demo and a failed episode) one per step.
"""
from __future__ import annotations

import time

import numpy as np
import pytest

from resfit_ros import names
from test.support import node_argv

pytestmark = pytest.mark.ros

MAX_STEPS = 100          # the demo succeeds after ~75 steps


@pytest.fixture(scope="module")
def detector_and_episodes(tmp_path_factory):
    from resfit_ros.bags import load_episodes
    from resfit_ros.learning.detector import DetectorTrainConfig, save_detector, train_detector
    from test.jobs.test_jobs_smoke import cli
    from test.learning.test_detector import _record_failures

    root = tmp_path_factory.mktemp("success_detector")
    proc = cli("demos", "--task", "g1_pick_lift", "--episodes", "4", "--out", str(root / "demos"), "--seed", "0",
               "--no-images", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    _record_failures(root / "failures", 4)
    episodes = load_episodes(root / "demos", images=False) + load_episodes(root / "failures", images=False)
    detector, _ = train_detector(episodes, DetectorTrainConfig(holdout_fraction=0.0, steps=800))
    path = save_detector(detector, root / "detector.safetensors")
    success = next(e for e in episodes if e.success)
    failure = next(e for e in episodes if not e.success and e.metadata.get("source") == "low_lift")
    return path, success, failure


def test_the_node_labels_from_its_scores_and_stops_after_max_episodes(ros_context, spawn, detector_and_episodes):
    from std_msgs.msg import Float64
    from std_srvs.srv import Trigger

    from resfit_ros.learning.detector import episode_timeline
    from resfit_ros.msg import EpisodeStatus, Observation
    from resfit_ros.nodes.common import LATCHED, STREAM
    from resfit_ros.nodes.convert import observation_to_msg
    from resfit_ros.srv import LabelEpisode, StartEpisode

    path, success, failure = detector_and_episodes
    node = ros_context.node
    status = EpisodeStatus(state=EpisodeStatus.IDLE, episode_id=0, label=EpisodeStatus.LABEL_NONE, ready=True)
    status_pub = node.create_publisher(EpisodeStatus, names.EPISODE_STATUS, LATCHED)
    obs_pub = node.create_publisher(Observation, names.OBSERVATION, STREAM)
    labels: list[tuple[int, bool, int, str]] = []        # (episode, success, steps when labelled, note)
    scores: list[float] = []
    node.create_subscription(Float64, "resfit/success_detector/score", lambda m: scores.append(m.data), STREAM)

    def on_start(request, response):
        status.state, status.episode_id, status.steps = EpisodeStatus.RUNNING, status.episode_id + 1, 0
        status.label, status.ready = EpisodeStatus.LABEL_NONE, False
        status_pub.publish(status)
        response.success, response.message = True, f"episode {status.episode_id} started"
        return response

    def on_label(request, response):
        if status.state != EpisodeStatus.RUNNING:
            response.accepted, response.message = False, "no episode is running"
            return response
        labels.append((status.episode_id, request.success, status.steps, request.note))
        status.state = EpisodeStatus.IDLE
        status.label = EpisodeStatus.LABEL_SUCCESS if request.success else EpisodeStatus.LABEL_FAILURE
        status_pub.publish(status)
        response.accepted, response.message = True, "labelled"
        return response

    def on_reset(request, response):
        status.ready = True
        status_pub.publish(status)
        response.success, response.message = True, "at home"
        return response

    node.create_service(StartEpisode, names.START_EPISODE, on_start)
    node.create_service(LabelEpisode, names.LABEL_EPISODE, on_label)
    node.create_service(Trigger, names.RESET, on_reset)
    status_pub.publish(status)

    proc = spawn(node_argv("success_detector", "-p", f"detector:={path}", "-p", f"max_steps:={MAX_STEPS}",
                           "-p", "max_episodes:=2"), name="success_detector")
    log = lambda: open(proc.log_path).read()   # noqa: E731

    def play(ep, episode_id: int) -> None:
        """One observation per step, as the synchronizer and the residual policy make them, until labelled."""
        assert ros_context.spin_until(lambda: status.episode_id == episode_id
                                      and status.state == EpisodeStatus.RUNNING, 30), log()
        running = lambda: status.episode_id == episode_id and status.state == EpisodeStatus.RUNNING   # noqa: E731
        for row in episode_timeline(ep):
            if not running():
                return
            obs_pub.publish(observation_to_msg(ep.observation(int(row))))
            ros_context.spin_until(lambda: False, 0.03)      # the node scores it
            status.steps += 1
            status_pub.publish(status)
            ros_context.spin_until(lambda: False, 0.02)
        ros_context.spin_until(lambda: not running(), 5)

    play(success, 1)
    assert [lab[:2] for lab in labels] == [(1, True)], (labels, log())
    n_success = len(episode_timeline(success))
    # near the success moment: the score may pass 0.9 a few steps early, within the margin left out of training
    assert n_success - 10 <= labels[0][2] <= n_success + 1, (labels, n_success)
    assert max(scores) > 0.9 and min(scores) < 0.1
    first_scores = len(scores)
    play(failure, 2)
    assert [lab[:2] for lab in labels] == [(1, True), (2, False)], (labels, log())
    assert labels[1][2] >= MAX_STEPS and f"no success within {MAX_STEPS} steps" in labels[1][3]
    assert max(scores[first_scores:]) < 0.5
    deadline = time.monotonic() + 15
    while proc.poll() is None and time.monotonic() < deadline:
        ros_context.spin_until(lambda: False, 0.1)
    assert proc.returncode == 0, log()
    assert "2 episodes labelled; done" in log()
    assert len(scores) >= n_success - 5 and np.all(np.isfinite(scores))


def test_a_bad_detector_file_stops_the_node_with_one_line(spawn, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a detector")
    proc = spawn(node_argv("success_detector", "-p", f"detector:={bad}"), name="bad_detector")
    proc.wait(timeout=60)
    text = open(proc.log_path).read()
    assert proc.returncode == 2, text
    assert "cannot load the success detector" in text and str(bad) in text and "Traceback" not in text, text
