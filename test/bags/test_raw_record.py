"""Bags recorded with plain `ros2 bag record` from the raw topics load into the project's episodes.

The end-to-end test runs the train_sim graph for real over DDS and, at the same time, an
independent raw recorder (test/bags/raw_recorder.py: rclpy raw subscriptions -> rosbags, receive
time as log time, like `ros2 bag record`) of the simulator's camera, joint-state, task-state and
/clock topics, the controllers' command topics and /resfit/episode_status. The raw bag, replayed
through the synchronizer's code (core.synchronizer.SynchronizerCore, the node's own logic) with
config/sim.yaml, gives exactly the transitions of the project's recording of the same run.
The other tests use synthetic raw bags (test/bags/raw_support.py) and need no ROS.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from resfit_ros.bags import BagError, read_episode, scan_episodes
from resfit_ros.bags.raw_record import import_raw_bag, is_raw_bag, read_raw_bag
from resfit_ros.learning.replay import nstep_targets
from test.bags.raw_support import (CAMERA, CLOCK, COMMAND_TOPICS, EPISODE_STATUS, JOINT_STATES, ROBOT, STEP_RECORD, TASK,
                                   copy_bag, write_lockstep_bag)
from test.support import build_tiny_base, stop_process

REPO = Path(__file__).resolve().parents[2]


# --- synthetic raw bags (no ROS) -------------------------------------------------------------------
def _check_against_truth(rec, truth):
    assert sorted(e.episode_id for e in rec.episodes) == sorted(
        i for i, e in truth.episodes.items() if e["label"] is not None)
    for ep in rec.episodes:
        tr = truth.episodes[ep.episode_id]
        assert ep.label == tr["label"]
        assert ep.num_steps == len(tr["stamps"])
        np.testing.assert_array_equal(ep.step_stamp_ns, tr["stamps"])      # acted on the right observations
        np.testing.assert_array_equal(ep.command, np.array(tr["commands"]))  # the commands sent, exactly
        states = ep.states()
        for i, stamp in zip(ep.step_obs_index, ep.step_stamp_ns):
            np.testing.assert_array_equal(states[i], truth.states[int(stamp)])
        # the next observation of the last step is the one its command produced
        assert ep.obs_stamp_ns[ep.next_obs_index[-1]] == tr["stamps"][-1] + 50_000_000
        assert bool(ep.exploration.all()) == tr["explore"]


def test_synthetic_lockstep_bag_gives_every_labelled_episode(tmp_path):
    truth = write_lockstep_bag(tmp_path / "raw")
    rec = read_raw_bag(tmp_path / "raw")
    assert rec.clock == "clock"            # receive times on another clock than the stamps, /clock recorded
    _check_against_truth(rec, truth)
    # the homing commands after each label are not steps, the unlabelled last episode is a problem
    assert rec.counts["command_sets"] == 6 + 3 + 4 + 3 + 3 and rec.counts["repeated_commands"] == 0
    assert rec.problems == [(3, "no label: the episode was never labelled success/failure or aborted "
                                "(the bag ends while it runs)")]
    # the first step acts on the newest observation from before the episode started
    assert rec.episodes[0].obs_stamp_ns[0] == truth.episodes[1]["stamps"][0]
    # images are kept for the episodes' observations only (bounded memory on long recordings)
    for ep in rec.episodes:
        assert ep.images["head"].shape == (ep.num_observations, 84, 84, 3)
    kept = sum(bool(o.images) for o in rec.observations)
    assert sum(e.num_observations for e in rec.episodes) <= kept < len(rec.observations)
    assert not rec.observations[0].images   # idle, long before any episode
    assert read_raw_bag(tmp_path / "raw", images=False).episodes[0].images == {}


@pytest.mark.parametrize("steps", ["lockstep", "time"])
def test_status_received_out_of_order_with_the_commands(tmp_path, steps):
    """The RUNNING status can reach the recorder after the policy's first command, the end of a
    reset before its last homing command, a camera image after the command that acted on it:
    no step is lost or added, whichever rule matches the commands."""
    truth = write_lockstep_bag(tmp_path / "raw", races=True)
    rec = read_raw_bag(tmp_path / "raw", steps=steps)
    assert rec.steps_rule == steps
    _check_against_truth(rec, truth)
    assert rec.episodes[0].num_steps == 6 and rec.episodes[1].num_steps == 4


def test_lockstep_survives_a_command_received_after_its_effect(tmp_path):
    """The recorder can receive a command after the first input of the observation it produced
    (seen on DDS here): by receive time alone that command looks like it acted on the newer
    observation. The lockstep rule (one step per command, aligned over the whole episode) places
    it right; the time rule must not hand out a shifted episode silently: it reports it."""
    truth = write_lockstep_bag(tmp_path / "raw", late_command=True)
    rec = read_raw_bag(tmp_path / "raw")                     # config/sim.yaml: sim_robot lockstep
    assert rec.steps_rule == "lockstep"
    _check_against_truth(rec, truth)
    timed = read_raw_bag(tmp_path / "raw", steps="time")
    assert {eid for eid, _ in timed.problems} >= {1, 2}
    assert all("the episode manager counted" in why for eid, why in timed.problems if eid in (1, 2))


def test_lockstep_refuses_a_robot_that_steps_without_commands(tmp_path):
    """If the robot produced observations nobody commanded, one step per command does not hold:
    the lockstep rule reports the episode instead of misplacing commands; the time rule (a robot
    streaming observations, `--steps time`) matches them."""
    truth = write_lockstep_bag(tmp_path / "raw", unlocked=True)
    rec = read_raw_bag(tmp_path / "raw")
    assert [eid for eid, _ in rec.problems][:2] == [1, 2]
    assert all("lockstep" in why for _, why in rec.problems[:2]), rec.problems
    _check_against_truth(read_raw_bag(tmp_path / "raw", steps="time"), truth)


@pytest.mark.parametrize("variant", ["stamps", "log"])
def test_every_clock_mode_gives_the_same_episodes(tmp_path, variant):
    """Without /clock the synchronizer's `now` is the newest stamp; with receive times on the
    stamps' clock (`ros2 bag record --use-sim-time`) it is the log time."""
    truth = write_lockstep_bag(tmp_path / "raw", with_clock=False, log_equals_stamp=variant == "log")
    rec = read_raw_bag(tmp_path / "raw")
    assert rec.clock == variant
    _check_against_truth(rec, truth)


def test_step_records_in_the_bag_are_used(tmp_path):
    truth = write_lockstep_bag(tmp_path / "raw", with_steps=True)
    rec = read_raw_bag(tmp_path / "raw")
    _check_against_truth(rec, truth)
    ep = rec.episodes[0]
    np.testing.assert_array_equal(ep.base_action, ep.command - 0.001)     # recorded, not recomputed
    assert set(ep.weights_version.tolist()) == {7}


@pytest.mark.parametrize("missing, message", [
    ({EPISODE_STATUS}, "no /resfit/episode_status: label the episodes first"),
    ({JOINT_STATES}, "no joint states on /joint_states"),
    ({CAMERA}, "no camera images on /camera/head/image_raw"),
    ({TASK}, "no task state on /sim_robot/task_state"),
    (set(COMMAND_TOPICS.values()), "no controller commands"),
    ({COMMAND_TOPICS["waist"]}, "controller commands missing on /waist_controller/commands"),
])
def test_missing_topics_are_named(tmp_path, missing, message):
    write_lockstep_bag(tmp_path / "raw", skip=frozenset(missing))
    with pytest.raises(BagError) as err:
        read_raw_bag(tmp_path / "raw")
    assert message in str(err.value) and str(tmp_path / "raw") in str(err.value)


def test_conversion_needs_no_ros(tmp_path):
    write_lockstep_bag(tmp_path / "raw")
    code = ("import sys; from resfit_ros.bags.raw_record import read_raw_bag; "
            f"assert len(read_raw_bag({str(tmp_path / 'raw')!r}).episodes) == 2; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_parser')]; assert not bad, bad")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert result.returncode == 0, result.stderr


def test_import_writes_episode_bags_once_and_tools_point_at_it(tmp_path, capsys):
    from resfit_ros.cli import main
    from resfit_ros.learning.from_bags import BagIngest

    raw, out = tmp_path / "raw", tmp_path / "episodes"
    truth = write_lockstep_bag(raw)
    assert is_raw_bag(raw)
    # a raw bag where episode bags are expected: a clear problem, not silence
    [(path, problem)] = scan_episodes(raw)
    assert path == raw and "import-raw" in problem
    ingest = BagIngest(buffer=None)
    assert ingest.poll(raw, demo=True) == [] and "import-raw" in ingest.stats["demo"].skipped[str(raw)]
    assert main(["bags", "summary", str(raw)]) == 1                     # the unlabelled episode 3
    text = capsys.readouterr().out
    assert "raw rosbag2 recording" in text and "import-raw" in text and "no label" in text

    assert main(["bags", "import-raw", str(raw), "--out", str(out)]) == 0
    episodes = [e for _, e in scan_episodes(out)]
    assert [e.episode_id for e in episodes] == [1, 2] and all(not isinstance(e, str) for e in episodes)
    for ep in episodes:
        tr = truth.episodes[ep.episode_id]
        np.testing.assert_array_equal(ep.command, np.array(tr["commands"]))
        np.testing.assert_array_equal(ep.step_stamp_ns, tr["stamps"])
        assert ep.metadata["source"] == "raw_bag" and ep.base_action.shape[0] == 0   # no base given: like a demo
        # the raw inputs of the episode are in the episode bag too (re-synchronisable)
        from resfit_ros.bags import iter_messages
        assert sum(1 for _ in iter_messages(ep.path, [CAMERA])) == ep.num_observations
    capsys.readouterr()
    assert main(["bags", "import-raw", str(raw), "--out", str(out)]) == 0   # again: nothing new
    assert "exists already" in capsys.readouterr().out
    assert len(list(out.glob("episode_*"))) == 2


def test_a_bag_recorded_in_a_namespace_reads_with_that_namespace(tmp_path):
    """A graph started with namespace:=robot_a records /robot_a/joint_states, /robot_a/clock, ...:
    read with namespace='robot_a' it gives the episodes it holds, and the episode bags imported
    from it name every topic as at the root (like every episode bag)."""
    from rosbags.rosbag2 import Reader

    from resfit_ros.bags import iter_messages

    raw = tmp_path / "raw"
    truth = write_lockstep_bag(raw, namespace="robot_a")
    with Reader(raw) as reader:
        assert {c.topic for c in reader.connections} >= {"/robot_a" + JOINT_STATES, "/robot_a" + CLOCK}
    with pytest.raises(BagError, match="no /resfit/episode_status"):
        read_raw_bag(raw)                                        # the root's names are not in it
    rec = read_raw_bag(raw, namespace="robot_a")
    assert rec.clock == "clock"                                  # its /robot_a/clock was found
    _check_against_truth(rec, truth)
    result = import_raw_bag(raw, tmp_path / "episodes", namespace="/robot_a/")
    assert len(result.written) == 2
    for path in result.written:
        ep = read_episode(path)
        with Reader(path) as reader:
            topics = {c.topic for c in reader.connections}
        assert {CAMERA, JOINT_STATES, TASK, EPISODE_STATUS} <= topics and not any("robot_a" in tp for tp in topics)
        assert sum(1 for _ in iter_messages(path, [CAMERA])) == ep.num_observations


# --- the real graph -----------------------------------------------------------------------------------
RAW_TOPICS = [f"{CAMERA}:sensor_msgs/msg/Image", f"{JOINT_STATES}:sensor_msgs/msg/JointState",
              f"{TASK}:sensor_msgs/msg/JointState", f"{CLOCK}:rosgraph_msgs/msg/Clock",
              f"{EPISODE_STATUS}:resfit_ros/msg/EpisodeStatus",
              f"{STEP_RECORD}:resfit_ros/msg/StepRecord"] + [
    f"{tp}:std_msgs/msg/Float64MultiArray" for tp in COMMAND_TOPICS.values()]


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """Two state-only scripted demos and a BC base trained for a few steps (seconds)."""
    return build_tiny_base(tmp_path_factory.mktemp("base"))


def _wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, path.read_text(errors="replace")
        time.sleep(0.1)
    raise AssertionError(f"no '{text}' in {path} after {timeout} s")


@pytest.mark.ros
def test_raw_bag_of_the_sim_graph_gives_the_project_recordings_transitions(ros_domain, tmp_path, tiny_base):
    """Same run, two recordings: the project's recorder (observations from the live synchronizer,
    step records from the residual node) and a plain raw recording of the robot's topics. The raw
    bag's transitions -- observation state vectors (position, velocity, object pose), commands,
    labels, n-step targets, next observations -- equal the project's EXACTLY.

    Why exact equality holds although the two recorders receive at different times: in the
    lockstep simulator each step's joint state, task state and image carry one stamp, so every set
    matches with span 0 whatever the arrival order, and the synchronizer's `now` (live: its /clock;
    replay: the /clock the raw recorder received before the message, or the newest stamp) only
    decides drops that cannot happen during an episode (max_age 0.5 s, future tolerance 0.2 s of
    sim time). Commands carry no header; each is matched to the latest observation whose first
    input was received before it, which in lockstep is the one it acted on (the next one's inputs
    are only published after the simulator received the command). The recorder does receive
    camera images up to ~20 ms after the command that acted on them, the RUNNING status after the
    first command, the end of a reset before its last homing command: the matching rules are
    built for that (test_status_received_out_of_order_with_the_commands replays those races).

    Compared where the project recorded: a recorder can lose messages on a loaded machine (the
    project's now keeps deep queues; a lost label leaves a whole episode .incomplete, a lost step
    record or observation leaves a gap). So every transition the
    project DID record must be identical, complete project episodes entirely, and the raw bag's
    commands must give exactly the residual node's own step records (/resfit/step, recorded by the
    lossless raw recorder, which is why the test records that topic too and then drops it)."""
    from resfit_ros.learning.from_bags import BagIngest, demo_base_actions, episode_arrays, file_digest
    from resfit_ros.learning.replay import ReplayBuffer, ReplayConfig
    from resfit_ros.policy.base import load_base_policy

    demos, base = tiny_base
    out, raw_all = tmp_path / "run", tmp_path / "raw_all"
    env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain), PYTHONUNBUFFERED="1")
    rec_log = tmp_path / "raw_recorder.log"
    recorder = subprocess.Popen([sys.executable, "-m", "test.bags.raw_recorder", str(raw_all), *RAW_TOPICS],
                                env=env, cwd=str(REPO), stdout=open(rec_log, "w"), stderr=subprocess.STDOUT,
                                start_new_session=True)
    graph = None
    try:
        _wait_for_text(rec_log, "recording", recorder, 60)
        log = tmp_path / "launch.log"
        graph = subprocess.Popen(
            [sys.executable, "-m", "resfit_ros.cli", "launch", "train_sim", f"base_artifact:={base}",
             f"demos_dir:={demos}", f"output_dir:={out}", "episodes:=4", "max_steps:=25"],
            env=env, cwd=str(REPO), stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        assert graph.wait(timeout=300) == 0, log.read_text(errors="replace")[-4000:]
        time.sleep(1.0)   # messages still on the wire
        assert stop_process(recorder) == 0, rec_log.read_text(errors="replace")
    finally:
        if graph is not None:
            stop_process(graph)
        stop_process(recorder)

    # what `ros2 bag record` of the raw topics gives: no project topic except the labels
    raw = copy_bag(raw_all, tmp_path / "raw", exclude={STEP_RECORD})
    rec = read_raw_bag(raw)
    assert (rec.clock, rec.steps_rule) == ("clock", "lockstep")            # config/sim.yaml: lockstep simulator
    stamps_mode = read_raw_bag(raw, clock="stamps")
    recorded = read_raw_bag(raw_all)                                   # /resfit/step recorded too
    assert recorded.steps_rule == "records"
    with_steps = {e.episode_id: e for e in recorded.episodes}
    assert len([e for e in recorded.episodes if e.label is not None]) >= 3, recorded.problems   # the judge's
    # An episode the policy never acted in (aborted by the judge as stalled) is a problem in both.
    # The first episode starts right after the graph came up, while the raw recorder (a separate
    # process, like `ros2 bag record` started before a launch) may still be discovering the new
    # publishers: what is published before a publisher matched it never reaches it (seen once on a
    # loaded CI machine: the first step of episode 1). That episode may lack an input; no other.
    first_id = min([e.episode_id for e in recorded.episodes] + [eid for eid, _ in recorded.problems])
    for eid, why in recorded.problems:
        assert "no step" in why or (eid == first_id and "never received" in why), (eid, why)

    # 1. the raw commands give exactly the residual node's own step records, in every episode the
    # simulator ran in lockstep (the residual's records act on consecutive observations). In an
    # episode where the simulator advanced without a command (seen in this graph: two steps for one
    # recorded command set), the raw topics cannot say which observation the next command answered:
    # the conversion reports such an episode, or, when the extra step came right before the last
    # commands (undetectable), is exact up to that point.
    lockstep_ids = set()
    for conversion in (rec, stamps_mode):
        got = {e.episode_id: e for e in conversion.episodes}
        problems = dict(conversion.problems)
        index_of = {o.stamp_ns: i for i, o in enumerate(conversion.observations)}   # stamps are unique
        for eid, s in with_steps.items():
            acted = np.array([index_of[int(st)] for st in s.step_stamp_ns])
            breaks = np.flatnonzero(np.diff(acted) != 1)
            if breaks.size:
                assert eid in problems or np.array_equal(got[eid].command[:breaks[0] + 1], s.command[:breaks[0] + 1]), eid
                continue
            lockstep_ids.add(eid)
            assert eid in got, (eid, problems.get(eid))
            r = got[eid]
            assert r.num_steps == s.num_steps, (r.episode_id, r.num_steps, s.num_steps)
            np.testing.assert_array_equal(r.step_stamp_ns, s.step_stamp_ns)
            np.testing.assert_array_equal(r.command, s.command)
            np.testing.assert_array_equal(r.states(), s.states())
            np.testing.assert_array_equal(r.next_obs_index, s.next_obs_index)
            assert r.label == s.label
        assert set(got) <= set(with_steps)
    assert lockstep_ids, "no episode ran in lockstep: nothing to compare exactly"

    # 2. every transition the project recorded is identical in the raw bag's conversion
    project = {e.episode_id: e for _, e in scan_episodes(out / "episodes") if not isinstance(e, str)}
    assert project, "the project's recorder kept no episode"
    got = {e.episode_id: e for e in rec.episodes}
    complete = compared = 0
    for eid, p in project.items():
        if eid not in lockstep_ids:
            continue                                          # see 1.
        r = got[eid]
        assert (r.label, r.aborted) == (p.label, p.aborted)
        r_states, p_states = r.states(), p.states()
        r_step = {int(stamp): k for k, stamp in enumerate(r.step_stamp_ns)}
        for t in range(p.num_steps):
            if p.step_obs_index[t] < 0:
                continue                                      # the project lost this observation
            k = r_step[int(p.step_stamp_ns[t])]
            np.testing.assert_array_equal(r.command[k], p.command[t])
            np.testing.assert_array_equal(r_states[r.step_obs_index[k]], p_states[p.step_obs_index[t]])
            np.testing.assert_array_equal(r.images["head"][r.step_obs_index[k]], p.images["head"][p.step_obs_index[t]])
            pn, rn = p.next_obs_index[t], r.next_obs_index[k]
            if pn >= 0 and p.obs_stamp_ns[pn] == r.obs_stamp_ns[rn]:
                np.testing.assert_array_equal(r_states[rn], p_states[pn])
            compared += 1
        if np.array_equal(p.step, np.arange(p.num_steps)) and np.all(p.step_obs_index >= 0) and p.next_obs_index[-1] >= 0:
            complete += 1                                     # the project recorded the whole episode
            assert r.num_steps == p.num_steps
            np.testing.assert_array_equal(r_states[r.step_obs_index], p_states[p.step_obs_index])
            np.testing.assert_array_equal(r_states[r.next_obs_index], p_states[p.next_obs_index])
            np.testing.assert_array_equal(r.command, p.command)
            for a, b in zip(nstep_targets(r.num_steps, r.success, False, 3, 0.99, False),
                            nstep_targets(p.num_steps, p.success, False, 3, 0.99, False)):
                np.testing.assert_array_equal(a, b)
    assert compared >= 1, compared
    print(f"{len(lockstep_ids)} of {len(with_steps)} episodes in lockstep; compared {compared} transitions of "
          f"{len(project)} project episodes, {complete} complete")

    # 3. import with the base: base actions recomputed as for a demonstration, residual = command - base;
    # the learner's ingest takes the imported episodes as online episodes
    policy = load_base_policy(base)
    imported = tmp_path / "imported"
    result = import_raw_bag(raw, imported, base_policy=policy, base_artifact=base)
    assert len(result.written) == len(rec.episodes) and len(result.skipped) == len(rec.problems)
    for path in result.written:
        ep = read_episode(path)
        r = got[ep.episode_id]
        want_base = demo_base_actions(r, policy, file_digest(base))
        np.testing.assert_array_equal(ep.base_action, want_base[:-1])
        np.testing.assert_array_equal(ep.residual, ep.command - ep.base_action)
        np.testing.assert_array_equal(episode_arrays(ep).states, episode_arrays(r, want_base).states)
        np.testing.assert_array_equal(ep.command, r.command)
        p = project.get(ep.episode_id) if ep.episode_id in lockstep_ids else None
        if p is not None and np.array_equal(p.step, np.arange(p.num_steps)) and np.all(p.step_obs_index >= 0):
            np.testing.assert_array_equal(ep.base_action, demo_base_actions(p, policy, file_digest(base))[:-1])
    buffer = ReplayBuffer(ReplayConfig(), state_dim=rec.episodes[0].states().shape[1], action_dim=ROBOT.dof)
    ingest = BagIngest(buffer, base_policy=policy, base_artifact=base)
    labelled = [e for e in rec.episodes if e.label is not None]        # aborted ones are not trained on
    assert len(ingest.poll(imported, demo=False)) == len(labelled), ingest.stats["online"].skipped
    assert buffer.num_online_transitions == sum(e.num_steps for e in labelled)

    # the same raw run without labels, or without joint states, says what is missing
    for exclude, message in (({EPISODE_STATUS}, "no /resfit/episode_status: label the episodes first"),
                             ({JOINT_STATES}, "no joint states on /joint_states")):
        bad = copy_bag(raw, tmp_path / f"raw_without_{exclude.copy().pop().strip('/').replace('/', '_')}", exclude)
        with pytest.raises(BagError, match=message):
            read_raw_bag(bad)
