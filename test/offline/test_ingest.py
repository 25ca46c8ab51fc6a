"""Episode bags -> BagIngest -> ReplayBuffer equals the same episodes added in memory; bad
episodes are skipped with a reason while the rest of the directory loads."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.learning.from_bags import BagIngest
from resfit_ros.learning.replay import ReplayBuffer, ReplayConfig, nstep_targets
from test.offline.synth import DOF, EXTRA, JOINTS, add_bad_episodes, write_online

STATE = 2 * DOF + EXTRA


def _buffers(cameras, size):
    cfg = ReplayConfig(online_capacity=500, demo_capacity=10, nstep=3, gamma=0.9)
    return (ReplayBuffer(cfg, STATE, DOF, len(cameras), size, seed=7),
            ReplayBuffer(cfg, STATE, DOF, len(cameras), size, seed=7))


@pytest.mark.parametrize("cameras", [(), ("head",)])
def test_round_trip_equals_in_memory(tmp_path, cameras):
    size = 16
    from_bags, in_memory = _buffers(cameras, size)
    specs = [(7, True), (3, False), (1, True), (12, False)]
    for i, (steps, success) in enumerate(specs):
        _, obs, bases, commands = write_online(tmp_path, i + 1, steps, seed=i, success=success, cameras=cameras,
                                               size=size)
        states = np.stack([o.state_vector() for o in obs])
        base_actions = np.concatenate([bases, bases[-1:]])
        images = np.stack([o.image_stack(list(cameras)) for o in obs]) if cameras else None
        in_memory.add_episode(states, base_actions, commands, success, demo=False, images=images)
    ingest = BagIngest(from_bags, list(cameras))
    added = ingest.poll(tmp_path, demo=False)
    assert len(added) == len(specs) and not ingest.stats["online"].skipped
    assert ingest.poll(tmp_path, demo=False) == []          # each episode exactly once
    assert from_bags.num_online_transitions == sum(s for s, _ in specs) == in_memory.num_online_transitions
    a, b = from_bags._online.arrays(), in_memory._online.arrays()
    assert set(a) == set(b) == ({"state", "base_action", "action", "nstep_reward", "nstep_discount", "next_offset"}
                                | ({"images"} if cameras else set()))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    # n-step targets, independently: episode 1 (7 steps, success) occupies slots 0..7
    reward, discount, offset = nstep_targets(7, True, False, 3, 0.9, False)
    np.testing.assert_array_equal(a["nstep_reward"][:7], reward)
    np.testing.assert_array_equal(a["nstep_discount"][:7], discount)
    np.testing.assert_array_equal(a["next_offset"][:7], offset)
    assert a["nstep_reward"][6] == 1.0 and a["nstep_discount"][6] == 0.0 and a["next_offset"][7] == 0
    # same contents + same seed -> identical batches
    x, y = from_bags.sample(32), in_memory.sample(32)
    for field in ("base_action", "action", "nstep_reward", "nstep_discount", "next_base_action"):
        assert np.array_equal(getattr(x, field).numpy(), getattr(y, field).numpy()), field
    for key in x.obs:
        assert np.array_equal(x.obs[key].numpy(), y.obs[key].numpy()) and \
            np.array_equal(x.next_obs[key].numpy(), y.next_obs[key].numpy()), key
    hist = ingest.history
    assert [h[1] for h in hist] == [s for _, s in specs] and [h[3] for h in hist] == [s for s, _ in specs]


def test_bad_episodes_are_skipped_with_a_reason(tmp_path):
    good, *_ = write_online(tmp_path, 1, 5, seed=0)
    write_online(tmp_path, 2, 4, seed=1, success=False)
    bad = add_bad_episodes(tmp_path, good)
    buffer, _ = _buffers((), 16)
    ingest = BagIngest(buffer, [])
    added = ingest.poll(tmp_path, demo=False)
    assert sorted(p.name for p in added) == sorted(p.name for p in tmp_path.iterdir()
                                                   if p.name.startswith(("episode_000001", "episode_000002")))
    assert buffer.num_online_transitions == 9
    skipped = ingest.stats["online"].skipped
    assert len(skipped) == len(bad)
    for kind, (path, fragment) in bad.items():
        assert fragment in skipped[str(path)], (kind, skipped.get(str(path)))


def test_bags_summary_reports_problems_and_windows(tmp_path, capsys):
    from resfit_ros.cli import main
    from resfit_ros.jobs.bags import summarise

    outcomes = [False, False, True, True, True]
    good = None
    for i, ok in enumerate(outcomes):
        path, *_ = write_online(tmp_path, i + 1, 3 + i, seed=i, success=ok, explore=i != 4)
        good = good or path
    bad = add_bad_episodes(tmp_path, good)
    s = summarise(tmp_path, window=2)
    assert [r["steps"] for r in s["rows"]] == [3, 4, 5, 6, 7]
    assert [r["kind"] for r in s["rows"]] == ["explore"] * 4 + ["eval"]
    assert s["windows"]["all"] == [(1, 2, 0.0), (3, 4, 1.0), (5, 5, 1.0)]
    assert s["windows"]["eval"] == [(1, 1, 1.0)]
    assert len(s["problems"]) == len(bad)
    assert main(["bags", "summary", str(tmp_path), "--window", "2"]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM" in out and "truncated" in out and "missing metadata.yaml" in out
    assert "unknown message type" in out and "empty episode" in out and "success 3/5 = 0.60" in out
    assert "residual per 2 eval episodes" in out and "1-1: " in out        # where the residual acts
    assert main(["bags", str(tmp_path), "--quiet"]) == 1     # the old form still works
    assert "3 success, 2 failure, 0 aborted, 4 unreadable" in capsys.readouterr().out


def test_bags_summary_says_which_joints_carry_the_residual_and_how_often_it_was_clipped(tmp_path):
    from resfit_ros.bags.reader import read_episode
    from resfit_ros.jobs.bags import residual_windows, summarise
    from resfit_ros.names import SAFETY_RESIDUAL_CLIPPED

    paths = [write_online(tmp_path, i + 1, 4, seed=i, explore=True,
                          safety_flags=[SAFETY_RESIDUAL_CLIPPED, 0, 0, 0] if i == 0 else None)[0] for i in range(3)]
    residuals = [read_episode(p, images=False).residual for p in paths]
    kind, windows = residual_windows(summarise(tmp_path)["rows"], window=2, top=2)
    assert kind == "explore" and [(w["first"], w["last"]) for w in windows] == [(1, 2), (3, 3)]
    first = np.concatenate(residuals[:2])                                       # (8, dof)
    j = int(np.argmax(np.abs(first).mean(axis=0)))
    assert windows[0]["joints"][0][0] == JOINTS[j]
    np.testing.assert_allclose(windows[0]["joints"][0][1:], (np.abs(first[:, j]).mean(), first[:, j].mean()))
    assert windows[0]["clipped"] == 1 / 8 and windows[1]["clipped"] == 0.0


def test_an_episode_with_another_state_size_is_refused_with_the_fix(tmp_path):
    # the replay built from 58-D robot demos (no task state); the robot's episode carries 67-D states
    cfg = ReplayConfig(online_capacity=500, demo_capacity=10, nstep=3, gamma=0.9)
    buffer = ReplayBuffer(cfg, 2 * DOF, DOF, 0, 16, seed=0)
    path, *_ = write_online(tmp_path, 1, 5, seed=0)
    ingest = BagIngest(buffer, [])
    assert ingest.poll(tmp_path, demo=False) == []
    reason = ingest.stats["online"].skipped[str(path)]
    assert f"{STATE}-D" in reason and f"{2 * DOF}-D" in reason and "--no-task-state" in reason, reason
    assert buffer.num_online_transitions == 0


def test_an_episode_aborted_before_its_first_step_is_left_out_as_aborted(tmp_path):
    """Not reported as a damaged bag (the learner logs those as errors): left out on purpose."""
    from resfit_ros.bags import EpisodeWriter
    from resfit_ros.learning.from_bags import EXCLUDED_ABORTED

    write_online(tmp_path, 1, 4, seed=0)
    path = EpisodeWriter(tmp_path, 2).finish(aborted=True, message="recorder stopped during the episode")
    buffer, _ = _buffers((), 16)
    ingest = BagIngest(buffer, [])
    assert len(ingest.poll(tmp_path, demo=False)) == 1
    assert ingest.stats["online"].skipped[str(path)].startswith(EXCLUDED_ABORTED)


def test_steps_an_operator_drove_reach_the_replay_as_interventions(tmp_path):
    """Recorded step records flagged SAFETY_OPERATOR (without SAFETY_HOLD) are the episode's
    interventions: the whole episode is an online one, those steps are also in the intervention
    store; a hold while the operator's device was silent is not an intervention."""
    from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR, SAFETY_RATE_LIMITED

    flags = [0, 0, SAFETY_OPERATOR | SAFETY_RATE_LIMITED, SAFETY_OPERATOR, SAFETY_OPERATOR | SAFETY_HOLD, 0]
    write_online(tmp_path, 1, 6, seed=0, safety_flags=flags)
    write_online(tmp_path, 2, 4, seed=1)                        # no operator
    buffer, _ = _buffers((), 16)
    ingest = BagIngest(buffer, [])
    assert len(ingest.poll(tmp_path, demo=False)) == 2
    assert buffer.num_online_transitions == 10 and buffer.num_intervention_transitions == 2
    assert [h[4] for h in ingest.history] == [2, 0]
    assert ingest.stats["online"].intervention_steps == 2


def test_a_fleet_store_holds_one_folder_per_robot(tmp_path):
    """Two robots' recorders each write their own folder of one store (their episode ids overlap);
    the learner's ingest, the bags summary and main-job all read both, by their names in the store."""
    from resfit_ros.bags import scan_episodes
    from resfit_ros.bags.reader import store_folders

    write_online(tmp_path / "robot_0", 1, 5, seed=0)
    write_online(tmp_path / "robot_0", 2, 3, seed=1, success=False)
    write_online(tmp_path / "robot_1", 1, 4, seed=2)
    (tmp_path / ".base_actions").mkdir()          # a cache, not a robot
    assert [p.name for p in store_folders(tmp_path)] == [tmp_path.name, "robot_0", "robot_1"]
    buffer, _ = _buffers((), 16)
    ingest = BagIngest(buffer, [])
    added = ingest.poll(tmp_path, demo=False)
    assert len(added) == 3 and buffer.num_online_transitions == 12
    names_in_store = sorted(h[0] for h in ingest.history)
    assert [n.split("/")[0] for n in names_in_store] == ["robot_0", "robot_0", "robot_1"]
    assert names_in_store[0].startswith("robot_0/episode_000001") and names_in_store[2].startswith("robot_1/episode_000001")
    write_online(tmp_path / "robot_1", 2, 2, seed=3)
    assert [p.parent.name for p in ingest.poll(tmp_path, demo=False)] == ["robot_1"]   # each exactly once
    assert len([e for _, e in scan_episodes(tmp_path) if not isinstance(e, str)]) == 4
