"""Episode bags: round trip, metadata, type hashes, raw pass-through, crash safety, bad bags."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from resfit_ros import names
from resfit_ros.bags import (
    INCOMPLETE_SUFFIX, BagError, EpisodeUnlabelledError, EpisodeWriter, StepData, iter_messages,
    read_episode, scan_episodes, type_hash, typestore)
from resfit_ros.bags import convert
from resfit_ros.bags import types as t
from test.bags.synthetic import JOINTS, make_observation, write_episode

REPO = Path(__file__).resolve().parents[2]

# RIHS01 hashes of the current .msg files (rosidl generates the same ones; see the json test)
EXPECTED_HASHES = {
    "resfit_ros/msg/Observation": "RIHS01_983d5a35bb225f96d11bf9984574985a18ad794ecf9ac74acd89c8e674314779",
    "resfit_ros/msg/StepRecord": "RIHS01_7a341624f94bc2e418e4b7979038dd4b45955a703bf18278e13cd0304f5c50cf",
}


def test_round_trip_gives_identical_arrays(tmp_path):
    path, observations, steps, _ = write_episode(tmp_path, 7, steps=12, metadata={"task": "t", "seed": 3})
    ep = read_episode(path)
    assert path.name.startswith("episode_000007_") and path.is_dir()
    assert ep.label == "success" and ep.success and not ep.aborted and ep.episode_id == 7
    assert ep.metadata["task"] == "t" and ep.metadata["seed"] == "3" and ep.metadata["label"] == "success"
    assert ep.num_observations == 13 and ep.num_steps == 12
    assert ep.joint_names == observations[0].joint_names
    assert ep.extra_names == observations[0].extra_names and ep.camera_names == ["head"]
    np.testing.assert_array_equal(ep.position, np.stack([o.position for o in observations]))
    np.testing.assert_array_equal(ep.velocity, np.stack([o.velocity for o in observations]))
    np.testing.assert_array_equal(ep.extra, np.stack([o.extra for o in observations]))
    np.testing.assert_array_equal(ep.images["head"], np.stack([o.images["head"] for o in observations]))
    np.testing.assert_array_equal(ep.obs_stamp_ns, [o.stamp_ns for o in observations])
    np.testing.assert_array_equal(ep.obs_sequence, np.arange(13))
    np.testing.assert_array_equal(ep.command, np.stack([s.command for s in steps]))
    np.testing.assert_array_equal(ep.base_action, np.stack([s.base_action for s in steps]))
    np.testing.assert_array_equal(ep.residual, np.stack([s.residual for s in steps]))
    np.testing.assert_array_equal(ep.exploration, [s.exploration for s in steps])
    np.testing.assert_array_equal(ep.weights_version, [s.weights_version for s in steps])
    np.testing.assert_array_equal(ep.safety_flags, [s.safety_flags for s in steps])
    np.testing.assert_array_equal(ep.latency, [s.latency for s in steps])
    np.testing.assert_array_equal(ep.step_obs_index, np.arange(12))
    np.testing.assert_array_equal(ep.next_obs_index, np.arange(1, 13))
    # ObservationData view and state vectors agree with the originals
    o5 = ep.observation(5)
    np.testing.assert_array_equal(o5.state_vector(), observations[5].state_vector())
    np.testing.assert_array_equal(ep.states()[5], observations[5].state_vector())
    np.testing.assert_array_equal(ep.image_stack()[5], observations[5].image_stack())


def test_demo_without_base_action_and_failure_label(tmp_path):
    path, _, steps, _ = write_episode(tmp_path, 1, steps=4, success=False, residual=False)
    ep = read_episode(path)
    assert ep.label == "failure" and not ep.success
    assert ep.base_action.shape == (0, 29) and ep.residual.shape == (0, 29)
    assert ep.command.shape == (4, 29)


def test_aborted_episode_is_kept_and_marked(tmp_path):
    path, *_ = write_episode(tmp_path, 2, steps=3, success=None)
    ep = read_episode(path)
    assert ep.aborted and ep.label is None


def test_metadata_yaml_lists_topics_types_and_hashes(tmp_path):
    path, *_ = write_episode(tmp_path, 1, steps=3, cameras=("head", "wrist"))
    info = yaml.safe_load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["storage_identifier"] == "mcap"
    assert info["relative_file_paths"] == [f"{path.name}.mcap"] and (path / f"{path.name}.mcap").is_file()
    topics = {e["topic_metadata"]["name"]: e for e in info["topics_with_message_count"]}
    expected = {
        "/resfit/observation": ("resfit_ros/msg/Observation", 4),   # every name as at the root
        "/resfit/step": ("resfit_ros/msg/StepRecord", 3),
        "/resfit/episode_status": ("resfit_ros/msg/EpisodeStatus", 1),
        "/joint_states": ("sensor_msgs/msg/JointState", 4),
        "/camera/head/image_raw": ("sensor_msgs/msg/Image", 4),
        "/camera/wrist/image_raw": ("sensor_msgs/msg/Image", 4),
    }
    assert set(topics) == set(expected)
    for topic, (msgtype, count) in expected.items():
        meta = topics[topic]["topic_metadata"]
        assert meta["type"] == msgtype and topics[topic]["message_count"] == count
        assert meta["type_description_hash"] == type_hash(msgtype)
    assert info["custom_data"]["format"] == "resfit_ros.episode/1"


def test_custom_type_hashes_are_stable():
    for msgtype, digest in EXPECTED_HASHES.items():
        assert type_hash(msgtype) == digest


def test_custom_type_hashes_match_rosidl():
    share = Path(sys.prefix) / "share" / "resfit_ros" / "msg"
    files = sorted(share.glob("*.json"))
    if not files:
        pytest.skip("no rosidl-generated interfaces installed")
    for f in files:
        doc = json.loads(f.read_text())
        for entry in doc["type_hashes"]:
            if entry["type_name"].startswith("resfit_ros/"):
                assert type_hash(entry["type_name"]) == entry["hash_string"], entry["type_name"]


def test_bag_is_readable_by_rosbags_reader(tmp_path):
    from rosbags.rosbag2 import Reader

    path, *_ = write_episode(tmp_path, 1, steps=3)
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        obs = [typestore().deserialize_cdr(raw, c.msgtype)
               for c, _, raw in reader.messages() if c.topic == t.TOPIC_OBSERVATION]
    assert counts[t.TOPIC_OBSERVATION] == 4 and len(obs) == 4 and obs[2].sequence == 2


def test_raw_cdr_bytes_pass_through_and_status_label(tmp_path):
    store = typestore()
    rng = np.random.default_rng(1)
    w = EpisodeWriter(tmp_path, 5)
    raw_inputs = []
    for i in range(3):
        obs = make_observation(i, rng)
        js = store.serialize_cdr(convert.joint_state_msg(obs), t.JOINT_STATE)
        img = store.serialize_cdr(convert.image_msg(obs.images["head"], obs.stamp_ns), t.IMAGE)
        raw_inputs.append((js, img))
        w.write_raw(names.JOINT_STATES, js, obs.stamp_ns)
        w.write_raw(names.CAMERA_TOPIC.format(name="head"), img, obs.stamp_ns)
        w.write_raw(names.OBSERVATION, store.serialize_cdr(convert.observation_msg(obs), t.OBSERVATION), obs.stamp_ns)
        if i < 2:
            step = convert.step_record_msg(StepData(step=i, observation_sequence=i, command=obs.position),
                                           5, obs.stamp_ns, obs.joint_names)
            w.write_raw(names.STEP_RECORD, store.serialize_cdr(step, t.STEP_RECORD), obs.stamp_ns)
    status = convert.episode_status_msg(10**9, state=convert.STATE_IDLE, episode_id=5, label=convert.LABEL_SUCCESS)
    w.write_raw(names.EPISODE_STATUS, store.serialize_cdr(status, t.EPISODE_STATUS), 10**9)
    path = w.finish()  # label taken from the status bytes
    assert path.name.endswith(path.name) and not path.name.endswith(INCOMPLETE_SUFFIX)
    assert read_episode(path).success
    # written under node-relative names (as the recorder subscribes them), kept as at the root
    assert {tp for tp, _, _ in iter_messages(path)} == {t.TOPIC_JOINT_STATES, t.TOPIC_CAMERA.format(name="head"),
                                                       t.TOPIC_OBSERVATION, t.TOPIC_STEP_RECORD, t.TOPIC_EPISODE_STATUS}
    got = [bytes(store.serialize_cdr(m, t.JOINT_STATE)) for _, _, m in iter_messages(path, [names.JOINT_STATES])]
    assert got == [js for js, _ in raw_inputs]
    with pytest.raises(ValueError, match="no message type known"):
        EpisodeWriter(tmp_path, 6).write_raw("/some/topic", b"\0\1\0\0", 0)


def test_unlabelled_finish_leaves_bag_incomplete(tmp_path):
    path, _, _, w = write_episode(tmp_path, 3, steps=2, finish=False)
    with pytest.raises(EpisodeUnlabelledError, match="no label"):
        w.finish()
    assert path.name.endswith(INCOMPLETE_SUFFIX) and path.is_dir()
    with pytest.raises(BagError, match="incomplete"):
        read_episode(path)


def test_exception_in_with_block_leaves_bag_incomplete(tmp_path):
    rng = np.random.default_rng(0)
    with pytest.raises(RuntimeError):
        with EpisodeWriter(tmp_path, 4) as w:
            w.write_observation(make_observation(0, rng))
            raise RuntimeError("robot fell over")
    (only,) = list(tmp_path.iterdir())
    assert only.name.endswith(INCOMPLETE_SUFFIX)
    # closed properly, so still inspectable
    assert len(list(iter_messages(only, [names.OBSERVATION]))) == 1


def _crash_script(root: Path) -> str:
    return textwrap.dedent(f"""
        import os, numpy as np
        from pathlib import Path
        from test.bags.synthetic import write_episode, make_observation
        from resfit_ros.bags import EpisodeWriter
        root = Path({str(root)!r})
        write_episode(root, 1, steps=5, seed=1)
        write_episode(root, 2, steps=5, seed=2)
        w = EpisodeWriter(root, 3)
        rng = np.random.default_rng(3)
        for i in range(50):
            w.write_observation(make_observation(i, rng, size=84))
        os._exit(9)  # crash: no close, no label
        """)


def test_crash_leaves_earlier_episodes_intact(tmp_path):
    proc = subprocess.run([sys.executable, "-c", _crash_script(tmp_path)], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 9, proc.stderr
    results = scan_episodes(tmp_path)
    assert [p.name.split("_")[1] for p, _ in results] == ["000001", "000002", "000003"]
    (p1, e1), (p2, e2), (p3, e3) = results
    assert not isinstance(e1, str) and not isinstance(e2, str) and e1.num_steps == 5
    assert isinstance(e3, str) and "incomplete" in e3 and p3.name.endswith(INCOMPLETE_SUFFIX)
    with pytest.raises(BagError) as info:
        read_episode(p3)
    assert str(p3) in str(info.value)


def _copy_episode(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.fixture
def bad_bags(tmp_path):
    """A directory with one good episode and one of each kind of bad one."""
    root = tmp_path / "episodes"
    good, *_ = write_episode(root, 1, steps=4)
    bad = {}
    # truncated mcap: cut the file in the middle (no footer)
    trunc = _copy_episode(good, root / "episode_000002_truncated")
    mcap = trunc / f"{good.name}.mcap"
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) // 2])
    bad["truncated"] = (trunc, "truncated")
    # corrupt mcap: garbage in the middle of a record
    corrupt = _copy_episode(good, root / "episode_000003_corrupt")
    mcap = corrupt / f"{good.name}.mcap"
    data = bytearray(mcap.read_bytes())
    data[40:48] = b"\xff" * 8  # a record length far beyond the file
    mcap.write_bytes(bytes(data))
    bad["corrupt"] = (corrupt, "corrupt")
    # missing metadata.yaml
    nometa = _copy_episode(good, root / "episode_000004_nometa")
    (nometa / "metadata.yaml").unlink()
    bad["nometa"] = (nometa, "missing metadata.yaml")
    # unknown message type on the observation topic
    unknown = root / "episode_000005_unknown"
    from rosbags.rosbag2 import StoragePlugin, Writer

    with Writer(unknown, version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conn = w.add_connection(t.TOPIC_OBSERVATION, "other_msgs/msg/Observation",
                                msgdef="uint8 x", rihs01="RIHS01_" + "0" * 64)
        w.write(conn, 1, b"\x00\x01\x00\x00\x07")
    bad["unknown"] = (unknown, "unknown message type 'other_msgs/msg/Observation'")
    # empty episode: labelled but nothing recorded
    w = EpisodeWriter(root, 6)
    empty = w.finish(success=True)
    bad["empty"] = (empty, "empty episode")
    # no label: a closed bag renamed by hand
    _, _, _, w = write_episode(root, 7, steps=2, finish=False)
    w.close()
    nolabel = root / "episode_000007_nolabel"
    os.rename(w.path, nolabel)
    bad["nolabel"] = (nolabel, "no label")
    # incomplete: left as written
    _, _, _, w = write_episode(root, 8, steps=2, finish=False)
    w.close()
    bad["incomplete"] = (w.path, "incomplete")
    return root, good, bad


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "nometa", "unknown", "empty", "nolabel", "incomplete"])
def test_bad_episode_gives_clear_error(bad_bags, kind):
    _, _, bad = bad_bags
    path, fragment = bad[kind]
    with pytest.raises(BagError) as info:
        read_episode(path)
    assert fragment in str(info.value) and str(path) in str(info.value)


def test_scan_loads_the_good_and_reports_each_bad(bad_bags):
    root, good, bad = bad_bags
    results = dict(scan_episodes(root))
    assert not isinstance(results[good], str) and results[good].num_steps == 4
    for path, fragment in bad.values():
        assert isinstance(results[path], str) and fragment in results[path], (path, results[path])
    assert len(results) == 1 + len(bad)


def test_type_hash_mismatch_is_reported(tmp_path):
    path, *_ = write_episode(tmp_path, 1, steps=2)
    meta = path / "metadata.yaml"
    meta.write_text(meta.read_text().replace(type_hash(t.OBSERVATION), "RIHS01_" + "1" * 64))
    with pytest.raises(BagError, match="another definition"):
        read_episode(path)


def test_fast_decoder_handles_changing_layouts(tmp_path):
    """Messages whose byte layout changes mid-episode (frame ids) take the per-message path."""
    rng = np.random.default_rng(0)
    store = typestore()
    obs_list = []
    w = EpisodeWriter(tmp_path, 1, joint_names=JOINTS)
    for i in range(6):
        obs = make_observation(i, rng)
        obs_list.append(obs)
        msg = convert.observation_msg(obs)
        msg.header.frame_id = "x" * i  # different lengths -> different offsets
        w.write_raw(names.OBSERVATION, store.serialize_cdr(msg, t.OBSERVATION), obs.stamp_ns)
        w.write_step(StepData(step=i, observation_sequence=i, command=obs.position), obs.stamp_ns)
    ep = read_episode(w.finish(success=True))
    np.testing.assert_array_equal(ep.position, np.stack([o.position for o in obs_list]))
    np.testing.assert_array_equal(ep.images["head"], np.stack([o.images["head"] for o in obs_list]))


def test_scan_reads_long_camera_episodes(tmp_path):
    """Three 200-step episodes with an 84x84 camera scan back whole (the speed is bench/ingest.py's
    and bench/bag_decode.py's figure, not a timed test's)."""
    for e in range(3):
        write_episode(tmp_path, e + 1, steps=200, seed=e, size=84)
    eps = [e for _, e in scan_episodes(tmp_path)]
    assert len(eps) == 3 and all(not isinstance(e, str) for e in eps)
    assert [e.num_steps for e in eps] == [200, 200, 200]
    assert all(e.images["head"].shape == (e.num_observations, 84, 84, 3) for e in eps)


def test_zstd_compressed_bag_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    w = EpisodeWriter(tmp_path, 1, compress=True)
    observations = []
    for i in range(4):
        obs = make_observation(i, rng)
        observations.append(obs)
        w.write_observation(obs)
        w.write_step(StepData(step=i, observation_sequence=i, command=obs.position), obs.stamp_ns)
    ep = read_episode(w.finish(success=False))
    assert ep.label == "failure"
    np.testing.assert_array_equal(ep.images["head"], np.stack([o.images["head"] for o in observations]))
    np.testing.assert_array_equal(ep.command, np.stack([o.position for o in observations]))


def test_steps_recorded_after_the_label_are_not_part_of_the_episode(tmp_path):
    """The lockstep simulator keeps stepping on the policy's commands until the policy hears that
    the episode ended, and the recorder keeps those step records: the episode is the steps the
    episode manager counted when it was labelled, the reward on the last of them."""
    rng = np.random.default_rng(0)
    w = EpisodeWriter(tmp_path, 4, metadata={"task": "synthetic"})
    for t_ in range(6):
        obs = make_observation(t_, rng, ("head",), 16)
        w.write_observation(obs)
        if t_ == 3:   # the label arrives here: the manager counted steps 0, 1, 2
            w.write_status(convert.STATE_IDLE, obs.stamp_ns, label=convert.LABEL_SUCCESS)
        if t_ < 5:
            w.write_step(StepData(step=t_, observation_sequence=obs.sequence, command=rng.normal(size=29)),
                         obs.stamp_ns)
    path = w.finish()
    ep = read_episode(path)
    assert ep.num_steps == 3 and list(ep.step) == [0, 1, 2] and ep.success
    assert list(ep.next_obs_index) == [1, 2, 3]          # the last counted step's next observation


# --- a recorder killed after the label, before the bag was closed ---------------------------------------
def _labelled_then_killed(root: Path, episode_id: int, *, steps: int = 6, flush_after_label: bool = True,
                          drop_step: int | None = None, rng_seed: int = 0):
    """An episode written as the recorder does, whose process is 'killed' after the label: the
    bag directory is copied as the disk holds it at that moment (the writer still open), then the
    writer is closed normally elsewhere. Returns (copy of the killed bag, observations, commands)."""
    import shutil

    rng = np.random.default_rng(rng_seed)
    work = root / "live"
    w = EpisodeWriter(work, episode_id, metadata={"task": "synthetic"})
    w.write_status(convert.STATE_RUNNING, 1, label=convert.LABEL_NONE)
    observations, commands = [], []
    for i in range(steps + 1):
        obs = make_observation(i, rng, ("head",), 16)
        observations.append(obs)
        w.write_observation(obs)
        if i < steps and i != drop_step:
            commands.append(rng.normal(size=len(obs.position)))
            w.write_step(StepData(step=i, observation_sequence=obs.sequence, command=commands[-1]), obs.stamp_ns)
    w.steps = steps                      # the episode manager's count (what the label carries)
    w.write_status(convert.STATE_IDLE, observations[-1].stamp_ns, label=convert.LABEL_SUCCESS)
    if flush_after_label:
        w.flush()
    killed = root / "episodes"
    killed.mkdir()
    shutil.copytree(w.path, killed / w.path.name)      # what kill -9 leaves on disk
    w.close()
    return killed / w.path.name, observations, commands


def test_a_labelled_episode_whose_recorder_died_before_closing_is_recovered(tmp_path):
    from resfit_ros.bags.recover import recover_episodes

    bag, observations, commands = _labelled_then_killed(tmp_path, 9)
    assert bag.name.endswith(INCOMPLETE_SUFFIX)
    with pytest.raises(BagError, match="incomplete"):
        read_episode(bag)
    [(src, result)] = recover_episodes(bag.parent, metadata={"task": "synthetic"})
    assert src == bag and isinstance(result, Path), result
    ep = read_episode(result)
    assert result.name == bag.name.removesuffix(INCOMPLETE_SUFFIX) and not bag.exists()
    assert ep.success and ep.episode_id == 9 and ep.num_steps == 6
    assert ep.metadata["recovered"] == "true" and ep.metadata["task"] == "synthetic"
    np.testing.assert_array_equal(ep.command, np.stack(commands))
    np.testing.assert_array_equal(ep.position, np.stack([o.position for o in observations]))
    np.testing.assert_array_equal(ep.images["head"], np.stack([o.images["head"] for o in observations]))
    assert sorted(p.name for p in bag.parent.iterdir()) == [result.name]      # no leftovers


def test_a_bag_without_the_label_or_a_counted_step_on_disk_stays_incomplete(tmp_path):
    from resfit_ros.bags.recover import recover_episodes

    # the label never reached the disk (no flush): nothing says the episode ended
    bag, _, _ = _labelled_then_killed(tmp_path / "a", 1, flush_after_label=False)
    [(_, why)] = recover_episodes(bag.parent)
    assert isinstance(why, str) and ("file is empty" in why or "no label on disk" in why), why
    assert bag.is_dir() and sorted(p.name for p in bag.parent.iterdir()) == [bag.name]
    # a step the manager counted is missing: training on it would put the reward on the wrong step
    bag, _, _ = _labelled_then_killed(tmp_path / "b", 2, drop_step=3)
    [(_, why)] = recover_episodes(bag.parent)
    assert why == "1 of the 6 counted steps are not on disk (first: step 3)"
    assert bag.is_dir() and sorted(p.name for p in bag.parent.iterdir()) == [bag.name]


def test_an_interrupted_recovery_is_undone_and_redone(tmp_path):
    import shutil

    from resfit_ros.bags.recover import RECOVERING_PREFIX, recover_episodes

    bag, _, commands = _labelled_then_killed(tmp_path, 5)
    name = bag.name.removesuffix(INCOMPLETE_SUFFIX)
    # killed while rebuilding: the original moved aside, a half-written replacement beside it
    work = bag.with_name(RECOVERING_PREFIX + name)
    os.rename(bag, work)
    (bag.parent / (name + INCOMPLETE_SUFFIX)).mkdir()
    [(_, result)] = recover_episodes(bag.parent)
    assert isinstance(result, Path) and not work.exists()
    np.testing.assert_array_equal(read_episode(result).command, np.stack(commands))
    # killed after the rebuilt bag was renamed: only the original's copy is left to delete
    shutil.copytree(result, work)
    assert recover_episodes(bag.parent) == [] and not work.exists() and result.is_dir()
    # an incomplete bag beside a finished one of the same name is never rebuilt over it
    shutil.copytree(result, bag)
    [(_, why)] = recover_episodes(bag.parent)
    assert why == f"a finished bag {result.name} exists already" and result.is_dir() and bag.is_dir()
    np.testing.assert_array_equal(read_episode(result).command, np.stack(commands))


def test_an_unclosed_mcap_file_reads_up_to_its_last_complete_record(tmp_path):
    from resfit_ros.bags.mcap_scan import McapError, read_mcap

    bag, _, commands = _labelled_then_killed(tmp_path, 3)
    [mcap] = bag.glob("*.mcap")
    size = mcap.stat().st_size
    with open(mcap, "ab") as f:              # the start of a chunk the writer was writing when killed
        f.write(b"\x06" + (10_000).to_bytes(8, "little") + b"\x00" * 100)
    with pytest.raises(McapError, match="truncated"):
        read_mcap(mcap)
    got = read_mcap(mcap, allow_truncated=True)
    assert got.truncated_at == size
    assert len(got.messages[t.TOPIC_STEP_RECORD]) == len(commands) == 6


def test_an_episode_aborted_before_its_first_step_is_left_out_not_an_error(tmp_path):
    """A node went down right after the start: the bag has no step. The reader says so with its own
    error type (the replay ingest leaves such an episode out as aborted: test/offline/test_ingest.py)."""
    from resfit_ros.bags.errors import AbortedBeforeFirstStep

    path = EpisodeWriter(tmp_path, 4).finish(aborted=True, message="recorder stopped during the episode")
    with pytest.raises(AbortedBeforeFirstStep, match="aborted before its first step"):
        read_episode(path)
    empty = EpisodeWriter(tmp_path / "other", 5).finish(success=True)
    with pytest.raises(BagError, match="empty episode") as info:
        read_episode(empty)
    assert not isinstance(info.value, AbortedBeforeFirstStep)
