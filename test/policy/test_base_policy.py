"""BC base policy: learning, frozen artifact round trip, TorchScript plug-in, open-loop chunks."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from resfit_ros.core.chunks import ChunkScheduler
from resfit_ros.bags import load_episodes
from resfit_ros.core.observation import ObservationData
from resfit_ros.policy import (
    BCPolicyConfig, PolicyLoadError, TorchScriptBasePolicy, export_torchscript,
    load_base_policy, save_artifact)
from resfit_ros.policy.model import random_shift
from resfit_ros.policy.train import BCTrainConfig, DemoError, plot_losses, train_bc
from test.bags.synthetic import JOINTS, write_linear_demo

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    root = tmp_path_factory.mktemp("demos")
    for i in range(3):
        write_linear_demo(root, i + 1, steps=30, seed=i, size=32)
    return load_episodes(root)


def _obs(size=32, seed=0, cams=("head",)) -> ObservationData:
    rng = np.random.default_rng(seed)
    return ObservationData(stamp_ns=0, sequence=0, joint_names=list(JOINTS), position=rng.normal(size=29),
                           velocity=np.zeros(29), images={c: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
                                                          for c in cams},
                           extra=np.array([0.5]), extra_names=["phase"])


@pytest.fixture(scope="module")
def trained(demos):
    cfg = BCTrainConfig(chunk_length=5, steps=150, batch_size=32, lr=1e-3, warmup_steps=10,
                        image_feature_dim=16, hidden_dims=[64, 64], seed=0)
    return train_bc(demos, cfg, progress=False)


def test_bc_overfits_tiny_dataset(trained):
    _, _, info = trained
    losses = info["losses"]
    assert np.mean(losses[-10:]) < 0.05 * np.mean(losses[:5]), (losses[:5], losses[-10:])


def test_normaliser_from_demos_is_stored(trained, demos):
    net, cfg, info = trained
    states = np.concatenate([ep.position[ep.step_obs_index] for ep in demos])
    np.testing.assert_allclose(net.state_mean.numpy(), states.mean(0), rtol=1e-5, atol=1e-6)
    cmds = np.concatenate([ep.command for ep in demos])
    np.testing.assert_allclose(net.action_low.numpy(), cmds.min(0), rtol=1e-6, atol=1e-6)
    assert cfg.state_keys == ["position"] and cfg.camera_names == ["head"] and cfg.image_size == 32


def test_artifact_round_trip_gives_identical_chunks(trained, tmp_path):
    net, cfg, info = trained
    path = save_artifact(net, cfg, tmp_path / "base.safetensors", info)
    with open(path, "rb") as f:  # safetensors: json header, raw tensors; no pickle opcodes
        assert f.read(8) and b"resfit_ros.bc_policy/1" in f.read(20000)
    a = load_base_policy(path)
    b = load_base_policy(path)
    obs = _obs()
    chunk = a.predict_chunk(obs)
    assert chunk.shape == (5, 29) and chunk.dtype == np.float64
    np.testing.assert_array_equal(chunk, b.predict_chunk(obs))
    with torch.no_grad():
        direct = net.eval()(torch.as_tensor(obs.position, dtype=torch.float32)[None],
                            torch.as_tensor(obs.image_stack())[None])[0].double().numpy()
    np.testing.assert_array_equal(chunk, direct)
    assert a.chunk_length == 5 and a.joint_names == JOINTS and a.camera_names == ["head"] and a.image_size == 32
    feats = a.encode_images(obs.image_stack()[None])
    assert feats.shape == (1, a.feature_dim) == (1, 16)


def test_learned_policy_beats_the_mean_action(trained, tmp_path, demos):
    net, cfg, info = trained
    base = load_base_policy(save_artifact(net, cfg, tmp_path / "b.safetensors", info))
    mean_cmd = np.concatenate([ep.command for ep in demos]).mean(0)
    err_model, err_mean = [], []
    for ep in demos:
        for t in (0, 10, 20):
            target = ep.command[t]
            err_model.append(np.abs(base.predict_chunk(ep.observation(t))[0] - target).mean())
            err_mean.append(np.abs(mean_cmd - target).mean())
    assert np.mean(err_model) < 0.5 * np.mean(err_mean), (np.mean(err_model), np.mean(err_mean))


def test_torchscript_plugin_matches_bc(trained, tmp_path):
    net, cfg, info = trained
    art = save_artifact(net, cfg, tmp_path / "base.safetensors", info)
    ts_path = export_torchscript(art, tmp_path / "base.pt")
    ts = load_base_policy(ts_path)
    assert isinstance(ts, TorchScriptBasePolicy)
    bc = load_base_policy(art)
    obs = _obs(seed=3)
    np.testing.assert_allclose(ts.predict_chunk(obs), bc.predict_chunk(obs), atol=1e-5)
    assert ts.chunk_length == 5 and ts.camera_names == ["head"]
    np.testing.assert_allclose(ts.encode_images(obs.image_stack()[None]), bc.encode_images(obs.image_stack()[None]),
                               atol=1e-5)


def test_foreign_torchscript_module_by_configuration(tmp_path):
    """Any module with the contract plugs in; its description can come from keyword arguments."""

    class Hold(torch.nn.Module):  # holds the current position for k=3 steps
        def forward(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            return state[:, :29].unsqueeze(1).repeat(1, 3, 1)

    path = tmp_path / "hold.ts"
    torch.jit.save(torch.jit.script(Hold()), str(path))
    with pytest.raises(PolicyLoadError, match="joint_names"):
        load_base_policy(path)
    policy = load_base_policy(path, joint_names=JOINTS, state_keys=["position"])
    obs = _obs(cams=())
    chunk = policy.predict_chunk(obs)
    assert chunk.shape == (3, 29) and policy.chunk_length == 3
    np.testing.assert_allclose(chunk[2], obs.position, atol=1e-6)


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(PolicyLoadError, match="does not exist"):
        load_base_policy(tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(PolicyLoadError, match="safetensors"):
        load_base_policy(bad)
    odd = tmp_path / "x.bin"
    odd.write_bytes(b"")
    with pytest.raises(PolicyLoadError, match="extension"):
        load_base_policy(odd)


def test_state_only_policy_and_wrong_image_size(tmp_path, demos):
    cfg = BCTrainConfig(chunk_length=4, steps=5, batch_size=8, state_only=True, hidden_dims=[32])
    net, pcfg, info = train_bc(demos, cfg, progress=False)
    assert pcfg.camera_names == [] and pcfg.state_keys == ["position", "velocity", "extra"]
    base = load_base_policy(save_artifact(net, pcfg, tmp_path / "s.safetensors", info))
    assert base.predict_chunk(_obs(cams=())).shape == (4, 29)
    assert base.feature_dim == 0 and base.encode_images(np.zeros((2, 0, 3, 84, 84), np.uint8)).shape == (2, 0)
    image_cfg = BCTrainConfig(chunk_length=4, steps=2, batch_size=8, hidden_dims=[32], image_feature_dim=8)
    net, pcfg, info = train_bc(demos, image_cfg, progress=False)
    img_base = load_base_policy(save_artifact(net, pcfg, tmp_path / "i.safetensors", info))
    with pytest.raises(ValueError, match="expects 32x32 images"):
        img_base.predict_chunk(_obs(size=40))


def test_train_rejects_unusable_demos(demos):
    with pytest.raises(DemoError, match="no successful demos"):
        train_bc([], BCTrainConfig(steps=1), progress=False)
    with pytest.raises(DemoError, match="camera"):
        train_bc(demos, BCTrainConfig(steps=1, camera_names=["wrist"]), progress=False)


def test_loss_plot_is_written(tmp_path):
    png = plot_losses(list(np.linspace(1, 0.01, 100)), tmp_path / "loss.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_shift_keeps_shape_and_shifts():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 1, 3, 8, 8)
    y = random_shift(x, pad=2, generator=g)
    assert y.shape == x.shape
    assert not torch.equal(x, random_shift(x, pad=2, generator=g)) or not torch.equal(x, y)
    assert torch.equal(random_shift(x, pad=0), x)


def test_config_validation():
    from resfit_ros.config import ConfigError

    with pytest.raises(ConfigError, match="chunk_length"):
        BCPolicyConfig(joint_names=JOINTS, chunk_length=0)
    with pytest.raises(ConfigError, match="state_keys"):
        BCPolicyConfig(joint_names=JOINTS, state_keys=["torque"])
    with pytest.raises(ConfigError, match="steps"):
        BCTrainConfig(steps=0)


# --- open-loop chunks in process: the node's ChunkScheduler, answered at once -----------------------
def test_in_process_chunks_execute_k_rows_then_a_fresh_chunk():
    s = ChunkScheduler(chunk_length=4, prefetch_steps=0)
    calls = []

    def predict():
        calls.append(1)
        return np.arange(4 * 2, dtype=float).reshape(4, 2) + 100 * len(calls)

    got = np.stack([s.next_action_now(predict) for _ in range(6)])
    np.testing.assert_array_equal(got[:4], np.arange(8).reshape(4, 2) + 100)
    np.testing.assert_array_equal(got[4:], np.arange(4).reshape(2, 2) + 200)
    assert len(calls) == 2
    s.reset()                                   # a new episode starts from a fresh chunk
    np.testing.assert_array_equal(s.next_action_now(predict), [300, 301])
    with pytest.raises(ValueError, match="chunk"):
        ChunkScheduler(chunk_length=4, prefetch_steps=0).next_action_now(lambda: np.zeros((3, 2)))


def test_in_process_prefetch_is_the_receding_horizon():
    # prefetch p executes k - p rows of each chunk: k=5, p=3 -> 2 rows per chunk
    s = ChunkScheduler(chunk_length=5, prefetch_steps=3)
    calls = []

    def predict():
        calls.append(1)
        return np.full((5, 1), float(len(calls)))

    out = [s.next_action_now(predict)[0] for _ in range(5)]
    assert out == [1, 1, 2, 2, 3] and len(calls) == 3
    with pytest.raises(ValueError):
        ChunkScheduler(chunk_length=3, prefetch_steps=3)


def test_base_policy_reset_clears_its_queue(trained, tmp_path):
    net, cfg, info = trained
    base = load_base_policy(save_artifact(net, cfg, tmp_path / "b.safetensors", info))
    obs_a, obs_b = _obs(seed=1), _obs(seed=2)
    first = base.select_action(obs_a)
    np.testing.assert_array_equal(first, base.predict_chunk(obs_a)[0])
    base.select_action(obs_a)
    base.reset()  # new episode: the next action comes from a chunk for the NEW observation
    np.testing.assert_array_equal(base.select_action(obs_b), base.predict_chunk(obs_b)[0])


def test_info_is_json_serialisable(trained):
    _, _, info = trained
    json.dumps(info)
