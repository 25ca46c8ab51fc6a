"""Checkpoints: exact resume, crash safety, clear errors on corrupt or missing checkpoints."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from resfit_ros.learning import CheckpointError, ResidualAgent
from resfit_ros.learning import checkpoint as checkpoint_module
from test.learning.conftest import filled_buffer, make_agent


def trained_agent(seed=0):
    agent = make_agent(seed=seed)
    buffer = filled_buffer(seed=seed)
    for index in range(4):
        agent.update(buffer.sample(8), update_actor=index % 2 == 1)
    return agent, buffer


def all_tensors(agent):
    out = {}
    for name in ("encoder", "actor", "actor_target", "critic", "critic_target"):
        out.update({f"{name}.{k}": v.clone() for k, v in getattr(agent, name).state_dict().items()})
    return out


def test_round_trip_gives_identical_outputs_and_identical_next_update(tmp_path):
    agent, buffer = trained_agent()
    agent.save_checkpoint(tmp_path / "ckpt")
    fresh = make_agent(seed=123)                      # different initial weights and RNG
    fresh.load_checkpoint(tmp_path / "ckpt")
    assert (fresh.critic_updates, fresh.actor_updates) == (agent.critic_updates, agent.actor_updates)
    for key, value in all_tensors(agent).items():
        assert torch.equal(value, all_tensors(fresh)[key]), key
    for key, value in agent.get_weights().items():
        assert np.array_equal(value, fresh.get_weights()[key]), key
    batch = buffer.sample(8)
    stats_a = agent.update(batch, update_actor=True)
    stats_b = fresh.update(batch, update_actor=True)
    assert stats_a == stats_b                         # bitwise: same augmentation, noise, heads
    for key, value in all_tensors(agent).items():
        assert torch.equal(value, all_tensors(fresh)[key]), key
    for group_a, group_b in zip(agent.critic_optimizer.state.values(), fresh.critic_optimizer.state.values()):
        assert all(torch.equal(group_a[k], group_b[k]) for k in group_a)


def test_from_checkpoint_rebuilds_the_agent_and_restores_global_rngs(tmp_path):
    agent, buffer = trained_agent(seed=2)
    random.seed(5)
    np.random.seed(5)
    torch.manual_seed(5)
    path = agent.save_checkpoint(tmp_path)
    expected = (random.random(), np.random.random(), torch.rand(1).item())
    rebuilt = ResidualAgent.from_checkpoint(path)
    assert (random.random(), np.random.random(), torch.rand(1).item()) == expected
    batch = buffer.sample(8)
    assert rebuilt.update(batch, True) == agent.update(batch, True)


def test_corrupt_or_missing_checkpoints_raise_clear_errors(tmp_path):
    agent, _ = trained_agent()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        agent.load_checkpoint(tmp_path / "nothing")
    path = agent.save_checkpoint(tmp_path / "root")
    tensors = path / "tensors.safetensors"
    data = bytearray(tensors.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tensors.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="corrupt"):
        make_agent().load_checkpoint(tmp_path / "root")
    (path / "meta.json").write_text("{ truncated")
    with pytest.raises(CheckpointError, match="meta.json"):
        make_agent().load_checkpoint(path)
    (tmp_path / "root" / "latest").write_text("ckpt-999999\n")
    with pytest.raises(CheckpointError, match="not a complete checkpoint"):
        make_agent().load_checkpoint(tmp_path / "root")
    other = make_agent(cameras=False)
    good = agent.save_checkpoint(tmp_path / "other")
    with pytest.raises(CheckpointError, match="this agent is"):
        other.load_checkpoint(good)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    agent, buffer = trained_agent()
    agent.save_checkpoint(tmp_path)
    saved = agent.get_weights()
    agent.update(buffer.sample(8), update_actor=True)

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(checkpoint_module, "save_file", crash)
    with pytest.raises(OSError):
        agent.save_checkpoint(tmp_path)
    monkeypatch.undo()
    restored = make_agent()
    restored.load_checkpoint(tmp_path)
    assert all(np.array_equal(v, restored.get_weights()[k]) for k, v in saved.items())
    # later saves still work and old ones are pruned (keep_last=2)
    for _ in range(3):
        agent.save_checkpoint(tmp_path)
    names = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ckpt-"))
    assert len(names) == 2 and (tmp_path / "latest").read_text().strip() == names[-1]


def test_checkpoint_holds_no_pickle(tmp_path):
    agent, _ = trained_agent()
    path = agent.save_checkpoint(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "tensors.safetensors"]
    meta = json.loads((path / "meta.json").read_text())
    assert meta["state"]["__dict__"]["kind"] == "resfit_residual_agent"
