"""Fixtures of the learning tests: tiny, seeded agents and buffers; one torch thread.

One intra-op thread: the nets here are tiny, and on a shared 2-core machine two OpenMP threads
can spin against other processes and run 50x slower (measured: 9 ms vs 500 ms per iteration).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from resfit_ros.learning import AgentConfig, Normaliser, ReplayBuffer, ReplayConfig, ResidualAgent

STATE_DIM, ACTION_DIM, FEATURE_DIM, IMAGE = 5, 3, 6, 24
CAMERAS = ["left", "right"]


@pytest.fixture(autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> AgentConfig:
    values = dict(actor_hidden_dims=(16, 16), critic_hidden_dims=(16, 16), num_critic_heads=5,
                  encoder_channels=(4, 8), encoder_kernels=(4, 3), encoder_strides=(2, 2),
                  camera_feature_dim=8, feature_projection_dim=7, critic_warmup_updates=0, batch_size=8,
                  actor_lr=1e-3)
    values.update(overrides)
    return AgentConfig(**values)


def tiny_normaliser(action_scale: float = 0.1, seed: int = 0) -> Normaliser:
    rng = np.random.default_rng(seed)
    return Normaliser.from_demonstrations(rng.normal(size=(64, STATE_DIM)),
                                          rng.uniform(-2.0, 2.0, size=(64, ACTION_DIM)), action_scale)


def make_agent(cameras: bool = True, features: bool = True, seed: int = 0, device: str = "cpu",
               **overrides) -> ResidualAgent:
    config = tiny_config(**overrides)
    return ResidualAgent(config, STATE_DIM, ACTION_DIM, CAMERAS if cameras else [], IMAGE,
                         FEATURE_DIM if features else 0, tiny_normaliser(config.action_scale), seed=seed,
                         device=device)


def random_episode(rng: np.random.Generator, steps: int, cameras: bool = True, features: bool = True):
    return dict(
        states=rng.normal(size=(steps + 1, STATE_DIM)).astype(np.float32),
        base_actions=rng.uniform(-1.5, 1.5, size=(steps + 1, ACTION_DIM)).astype(np.float32),
        actions=rng.uniform(-1.5, 1.5, size=(steps, ACTION_DIM)).astype(np.float32),
        images=rng.integers(0, 256, size=(steps + 1, len(CAMERAS), 3, IMAGE, IMAGE), dtype=np.uint8)
        if cameras else None,
        features=rng.normal(size=(steps + 1, FEATURE_DIM)).astype(np.float32) if features else None,
    )


def filled_buffer(cameras: bool = True, features: bool = True, seed: int = 0, episodes: int = 6,
                  **config) -> ReplayBuffer:
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer(ReplayConfig(**{"online_capacity": 500, "demo_capacity": 500, **config}), STATE_DIM,
                          ACTION_DIM, n_cameras=len(CAMERAS) if cameras else 0, image_size=IMAGE,
                          feature_dim=FEATURE_DIM if features else 0, seed=seed)
    for index in range(episodes):
        buffer.add_episode(**random_episode(rng, int(rng.integers(3, 12)), cameras, features),
                           success=bool(index % 2), demo=index < episodes // 2)
    return buffer
