"""Replay buffer: demo/online mixing, oldest-first eviction, persistence, thread safety."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from resfit_ros.learning import ReplayBuffer, ReplayConfig
from test.learning.conftest import filled_buffer


def marked_episode(marker: float, steps: int = 4, state_dim: int = 2, action_dim: int = 2):
    """An episode whose states are all `marker` (to recognise where sampled rows came from)."""
    return dict(states=np.full((steps + 1, state_dim), marker, np.float32),
                base_actions=np.zeros((steps + 1, action_dim), np.float32),
                actions=np.zeros((steps, action_dim), np.float32))


def test_batches_mix_demo_and_online_by_the_configured_fraction():
    buffer = ReplayBuffer(ReplayConfig(online_capacity=100, demo_capacity=100, demo_fraction=0.25), 2, 2)
    buffer.add_episode(**marked_episode(1.0), success=True, demo=True)
    assert (buffer.sample(40).obs["state"][:, 0] == 1.0).all()          # online empty: all demos
    buffer.add_episode(**marked_episode(-1.0), success=False, demo=False)
    for _ in range(5):
        demo_rows = int((buffer.sample(100).obs["state"][:, 0] == 1.0).sum())
        assert demo_rows == 25
    only_online = ReplayBuffer(ReplayConfig(online_capacity=100, demo_capacity=100), 2, 2)
    only_online.add_episode(**marked_episode(-1.0), success=False, demo=False)
    assert (only_online.sample(40).obs["state"][:, 0] == -1.0).all()    # demo empty: all online
    with pytest.raises(ValueError, match="empty"):
        ReplayBuffer(ReplayConfig(), 2, 2).sample(4)


def test_online_eviction_is_whole_episodes_oldest_first_and_demos_are_never_evicted():
    # capacity 12 slots, episodes of 5 observations: the ring wraps and leaves a 2-slot gap
    buffer = ReplayBuffer(ReplayConfig(online_capacity=12, demo_capacity=10), 2, 2, seed=1)
    stored_after = []
    for episode_id in range(6):
        buffer.add_episode(**marked_episode(float(episode_id)), success=False, demo=False)
        ids = sorted(set(buffer.sample(256).obs["state"][:, 0].long().tolist()))
        stored_after.append(ids)
    assert stored_after == [[0], [0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    assert buffer.num_online_transitions == 8
    buffer.add_episode(**marked_episode(100.0), success=True, demo=True)
    buffer.add_episode(**marked_episode(101.0), success=True, demo=True)
    with pytest.raises(ValueError, match="never evicted"):
        buffer.add_episode(**marked_episode(102.0), success=True, demo=True)
    assert buffer.num_demo_transitions == 8


def test_add_episode_rejects_inconsistent_shapes_and_non_finite_values():
    buffer = ReplayBuffer(ReplayConfig(online_capacity=50, demo_capacity=50), 2, 2)
    episode = marked_episode(0.0)
    with pytest.raises(ValueError, match="states must be"):
        buffer.add_episode(episode["states"][:-1], episode["base_actions"], episode["actions"], True, False)
    episode["actions"][1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        buffer.add_episode(**episode, success=True, demo=False)
    with pytest.raises(ValueError, match="images"):
        ReplayBuffer(ReplayConfig(online_capacity=50), 2, 2, n_cameras=1, image_size=8).add_episode(
            **marked_episode(0.0), success=True, demo=False)


def test_save_and_load_round_trip(tmp_path):
    buffer = filled_buffer(seed=4, episodes=8)
    path = tmp_path / "replay.npz"
    buffer.save(path)
    restored = filled_buffer(seed=99, episodes=0)
    restored.load(path)
    assert (restored.num_demo_transitions, restored.num_online_transitions) == \
        (buffer.num_demo_transitions, buffer.num_online_transitions)
    assert restored.online_episodes() == buffer.online_episodes()
    a, b = buffer.sample(32), restored.sample(32)      # the sampling RNG state is restored too
    for key in a.obs:
        assert (a.obs[key] == b.obs[key]).all() and (a.next_obs[key] == b.next_obs[key]).all()
    for field in ("base_action", "action", "nstep_reward", "nstep_discount", "next_base_action"):
        assert (getattr(a, field) == getattr(b, field)).all()
    with pytest.raises(ValueError, match="feature_dim"):
        filled_buffer(features=False, episodes=0).load(path)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="cannot read"):
        restored.load(tmp_path / "bad.npz")


def test_concurrent_add_and_sample_smoke():
    buffer = ReplayBuffer(ReplayConfig(online_capacity=200, demo_capacity=200), 2, 2, seed=0)

    def indexed_episode(episode_id: int, steps: int):
        # state = [episode id, observation index]
        states = np.stack([np.full(steps + 1, episode_id), np.arange(steps + 1)], 1).astype(np.float32)
        return dict(states=states, base_actions=np.zeros((steps + 1, 2), np.float32),
                    actions=np.zeros((steps, 2), np.float32))

    buffer.add_episode(**indexed_episode(0, 5), success=True, demo=True)
    errors: list[BaseException] = []
    stop = time.monotonic() + 1.0

    def writer(start: int):
        try:
            episode_id = start
            while time.monotonic() < stop:
                buffer.add_episode(**indexed_episode(episode_id, 3 + episode_id % 5), success=True, demo=False)
                episode_id += 2
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def reader():
        try:
            while time.monotonic() < stop:
                batch = buffer.sample(64)
                # every row's bootstrap observation belongs to the same episode, later in it
                assert (batch.next_obs["state"][:, 0] == batch.obs["state"][:, 0]).all()
                assert (batch.next_obs["state"][:, 1] > batch.obs["state"][:, 1]).all()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in (1, 2)] + \
              [threading.Thread(target=reader) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert 0 < buffer.num_online_transitions <= 200


def test_eviction_keeps_a_suffix_of_the_added_episodes_for_any_lengths():
    rng = np.random.default_rng(7)
    buffer = ReplayBuffer(ReplayConfig(online_capacity=23, demo_capacity=10), 2, 2, seed=2)
    for episode_id in range(60):
        steps = int(rng.integers(1, 9))
        buffer.add_episode(**marked_episode(float(episode_id), steps=steps), success=False, demo=False)
        stored = sorted(set(buffer.sample(512).obs["state"][:, 0].long().tolist()))
        # whole episodes, oldest evicted first: what is left is the newest few, without holes
        assert stored == list(range(stored[0], episode_id + 1)), (episode_id, stored)
        slots = sum(n for _, n in buffer.online_episodes())
        assert buffer.num_online_transitions == slots - len(buffer.online_episodes()) <= 23


def test_with_action_repeat_online_transitions_start_at_decisions_and_span_nstep_decisions(tmp_path):
    """R = 3, n = 2: an online episode of 10 steps has transitions at steps 0, 3, 6, 9 only, each
    bootstrapping 6 steps later (or ending with the episode); a demo has one at every step."""
    import json

    gamma = 0.9
    buffer = ReplayBuffer(ReplayConfig(nstep=2, gamma=gamma, action_repeat=3, demo_fraction=0.0), 1, 1)
    T = 10
    states = np.arange(T + 1, dtype=np.float32)[:, None]           # state = its step index
    episode = dict(states=states, base_actions=np.zeros((T + 1, 1), np.float32),
                   actions=np.zeros((T, 1), np.float32))
    buffer.add_episode(**episode, success=True, demo=False)
    assert buffer.num_online_transitions == 4
    batch = buffer.sample(400)
    rows = {int(s): (int(n), float(r), float(d)) for s, n, r, d in zip(
        batch.obs["state"][:, 0], batch.next_obs["state"][:, 0], batch.nstep_reward, batch.nstep_discount)}
    assert sorted(rows) == [0, 3, 6, 9]
    assert rows[0] == (6, 0.0, pytest.approx(gamma ** 6)) and rows[3] == (9, 0.0, pytest.approx(gamma ** 6))
    assert rows[6] == (10, pytest.approx(gamma ** 3), 0.0) and rows[9] == (10, 1.0, 0.0)
    buffer.add_episode(**episode, success=True, demo=True)
    assert buffer.num_demo_transitions == T
    # a replay file keeps its action_repeat; one written before the field existed reads as 1
    path = tmp_path / "replay.npz"
    buffer.save(path)
    with pytest.raises(ValueError, match="action_repeat"):
        ReplayBuffer(ReplayConfig(nstep=2, gamma=gamma), 1, 1).load(path)
    with np.load(path) as data:
        contents = {key: data[key] for key in data.files}
    meta = json.loads(bytes(contents["meta"]).decode())
    del meta["action_repeat"]
    contents["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(path, **contents)
    older = ReplayBuffer(ReplayConfig(nstep=2, gamma=gamma), 1, 1)
    older.load(path)
    assert older.num_online_transitions == 4 and older.num_demo_transitions == T


def test_an_interventions_steps_join_the_demo_share_and_the_whole_episode_the_online_store(tmp_path):
    buffer = ReplayBuffer(ReplayConfig(online_capacity=100, demo_capacity=100, intervention_capacity=20,
                                       demo_fraction=0.5, nstep=2), 2, 2, seed=3)
    buffer.add_episode(**marked_episode(1.0, steps=4), success=True, demo=True)          # 4 demo transitions
    operator = np.array([False, False, True, True])
    episode = marked_episode(-1.0, steps=4)
    episode["states"][:, 1] = np.arange(5)                                           # step index in state[1]
    buffer.add_episode(**episode, success=True, demo=False, intervention=operator)
    assert buffer.num_online_transitions == 4 and buffer.num_intervention_transitions == 2
    assert len(buffer) == 8                                          # the copies are not counted twice
    batch = buffer.sample(400)
    rows = batch.intervention
    assert rows is not None and bool((batch.demo[rows]).all())       # interventions are in the demo share
    assert int(batch.demo.sum()) == 200
    # uniform over 4 demo + 2 operator transitions: a third of the demo share (binomial, 200 draws)
    assert 45 <= int(rows.sum()) <= 90
    # only the operator's steps start a transition of the copy, with the episode's own n-step targets
    steps = set(batch.obs["state"][rows, 1].long().tolist())
    assert steps == {2, 3}
    last = batch.obs["state"][rows, 1] == 3
    assert bool((batch.nstep_reward[rows][last] == 1.0).all())
    assert bool((batch.obs["state"][batch.demo & ~rows, 0] == 1.0).all())
    # an intervention mask must match the episode and never comes with a demonstration
    with pytest.raises(ValueError, match="intervention must be"):
        buffer.add_episode(**episode, success=True, demo=False, intervention=operator[:3])
    with pytest.raises(ValueError, match="demonstration has no intervention"):
        buffer.add_episode(**marked_episode(1.0, steps=4), success=True, demo=True, intervention=operator)
    # the intervention store evicts its oldest copies instead of failing like the demo store
    for _ in range(10):
        buffer.add_episode(**episode, success=False, demo=False, intervention=operator)
    assert buffer.num_intervention_transitions <= 20 // 5 * 2
    # saved and loaded with the rest; a file from before the intervention store loads with none
    buffer.save(tmp_path / "r.npz")
    restored = ReplayBuffer(buffer.config, 2, 2)
    restored.load(tmp_path / "r.npz")
    assert restored.num_intervention_transitions == buffer.num_intervention_transitions
    with np.load(tmp_path / "r.npz") as data:
        old = {k: data[k] for k in data.files if not k.startswith("intervention/")}
    import json
    meta = json.loads(bytes(old["meta"]).decode())
    del meta["intervention"]
    old["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "old.npz", **old)
    older = ReplayBuffer(buffer.config, 2, 2)
    older.load(tmp_path / "old.npz")
    assert older.num_intervention_transitions == 0 and older.num_online_transitions == buffer.num_online_transitions
