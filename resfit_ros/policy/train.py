"""Behaviour cloning of the chunk policy from episode bags (training code; loading needs none of it).

Targets: for every step t of a demo, the chunk command[t : t + k] (past the end of the episode the
last command repeats: the robot holds). Loss: MSE on min-max normalised actions. Images get
DrQ random-shift augmentation. AdamW, linear warm-up then cosine decay, gradient clipping.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from resfit_ros.bags.reader import Episode
from resfit_ros.config import require
from resfit_ros.policy.model import STATE_KEYS, BCPolicyConfig, BCPolicyNet, random_shift

ACTION_RANGE_FLOOR = 1e-2  # min-max range floor (rad) for joints the demos never move


@dataclass
class BCTrainConfig:
    """How `train-bc` trains a base policy."""

    chunk_length: int = 20
    """k: actions per chunk (20 = 1 s at 20 Hz)."""
    steps: int = 2000
    """Gradient steps."""
    batch_size: int = 64
    """Samples per gradient step."""
    lr: float = 3e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear learning-rate warm-up, then cosine decay to 10 % of lr."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    state_only: bool = False
    """True: no cameras; state = state_keys (default position, velocity, extra)."""
    state_keys: list[str] | None = None
    """Observation parts in the state; None = ["position"] with cameras, all three state-only."""
    camera_names: list[str] | None = None
    """Cameras to use; None = every camera in the demos (ignored when state_only)."""
    state_std_floor: float = 0.1
    """Floor of the state z-score std: dims (almost) constant in the demos (velocities of idle
    joints) would otherwise turn tiny deviations into huge inputs (measured on g1_pick_lift with
    position+velocity+extra, 20 demos: floor 0.01 -> 10 % success, 0.1 -> 60 %, 0.3 -> 83 %)."""
    shift_pad: int = 4
    """Random-shift augmentation: pixels of replicate padding (0 = off)."""
    image_feature_dim: int = 128
    """Features per camera encoder."""
    hidden_dims: list[int] = field(default_factory=lambda: [512, 512])
    """MLP head hidden sizes."""
    num_demos: int = 0
    """Use only the first N successful demos (sorted by name); 0 = all."""
    seed: int = 0
    """Seed of initialisation, batches and augmentation."""
    threads: int = 1
    """torch intra-op threads (1: on a shared 2-core machine 2 threads ran 4-10x SLOWER)."""

    def __post_init__(self) -> None:
        require(self.chunk_length >= 1, f"chunk_length must be >= 1, got {self.chunk_length}")
        require(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        require(self.grad_clip > 0, f"grad_clip must be > 0, got {self.grad_clip}")
        require(self.state_std_floor > 0, f"state_std_floor must be > 0, got {self.state_std_floor}")
        require(self.shift_pad >= 0, f"shift_pad must be >= 0, got {self.shift_pad}")
        require(self.num_demos >= 0, f"num_demos must be >= 0, got {self.num_demos}")
        require(self.threads >= 1, f"threads must be >= 1, got {self.threads}")
        if self.state_keys is not None:
            bad = [k for k in self.state_keys if k not in STATE_KEYS]
            require(not bad, f"state_keys must be from {STATE_KEYS}, got {self.state_keys}")

    def resolved_state_keys(self) -> list[str]:
        if self.state_keys is not None:
            return list(self.state_keys)
        return list(STATE_KEYS) if self.state_only else ["position"]


class DemoError(ValueError):
    """The demos cannot be used for training (none, inconsistent joints/cameras/sizes)."""


@dataclass
class DemoData:
    """All training samples in memory. Sample i = step i over all demos."""

    states: np.ndarray          # (N, S) float32 raw
    images: np.ndarray          # (N, ncam, 3, H, W) uint8
    actions: np.ndarray         # (N, dof) float64 command of each step
    chunk_index: np.ndarray     # (N, k) int64 rows of `actions` forming the target chunk
    joint_names: list[str]
    camera_names: list[str]
    extra_names: list[str]
    image_size: int
    episodes: int


def _state_parts(ep: Episode, keys: list[str], rows: np.ndarray) -> np.ndarray:
    parts = [getattr(ep, k)[rows] for k in keys]
    return np.concatenate(parts, axis=1).astype(np.float32) if parts else np.zeros((len(rows), 0), np.float32)


def build_demo_data(episodes: list[Episode], chunk_length: int, state_keys: list[str],
                    camera_names: list[str]) -> DemoData:
    if not episodes:
        raise DemoError("no successful demos to train on")
    first = episodes[0]
    states, images, actions, chunks = [], [], [], []
    offset = 0
    image_size = 0
    for ep in episodes:
        if ep.joint_names != first.joint_names:
            raise DemoError(f"{ep.path}: joint names differ from {first.path}")
        if "extra" in state_keys and ep.extra_names != first.extra_names:
            raise DemoError(f"{ep.path}: extra_names {ep.extra_names} differ from {first.extra_names}")
        missing = [c for c in camera_names if c not in ep.images]
        if missing:
            raise DemoError(f"{ep.path}: no images from camera(s) {missing} (has {ep.camera_names})")
        rows = ep.step_obs_index
        valid = rows >= 0
        if not valid.all():
            rows = rows[valid]
        cmd = ep.command[valid]
        t = len(cmd)
        if t == 0:
            continue
        states.append(_state_parts(ep, state_keys, rows))
        if camera_names:
            imgs = np.stack([ep.images[c][rows].transpose(0, 3, 1, 2) for c in camera_names], axis=1)
            size = imgs.shape[-1]
            if imgs.shape[-2] != size or (image_size and size != image_size):
                raise DemoError(f"{ep.path}: images are {imgs.shape[-2]}x{size}; all demos need one square size")
            image_size = size
            images.append(imgs)
        actions.append(cmd)
        idx = np.minimum(np.arange(t)[:, None] + np.arange(chunk_length)[None, :], t - 1)
        chunks.append(idx + offset)
        offset += t
    if offset == 0:
        raise DemoError("the demos contain no steps")
    n = offset
    return DemoData(
        states=np.concatenate(states), actions=np.concatenate(actions), chunk_index=np.concatenate(chunks),
        images=np.concatenate(images) if camera_names else np.zeros((n, 0, 3, 0, 0), np.uint8),
        joint_names=list(first.joint_names), camera_names=list(camera_names),
        extra_names=list(first.extra_names) if "extra" in state_keys else [],
        image_size=image_size or 84, episodes=len(episodes))


def set_normalizer(net: BCPolicyNet, data: DemoData, state_std_floor: float = 0.1) -> dict:
    """State z-score and action min-max statistics from the demos, into the net's buffers."""
    mean = data.states.mean(axis=0)
    std = np.maximum(data.states.std(axis=0), state_std_floor)
    low, high = data.actions.min(axis=0), data.actions.max(axis=0)
    narrow = (high - low) < ACTION_RANGE_FLOOR
    mid = 0.5 * (low + high)
    low = np.where(narrow, mid - ACTION_RANGE_FLOOR / 2, low)
    high = np.where(narrow, mid + ACTION_RANGE_FLOOR / 2, high)
    with torch.no_grad():
        net.state_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        net.state_std.copy_(torch.as_tensor(std, dtype=torch.float32))
        net.action_low.copy_(torch.as_tensor(low, dtype=torch.float32))
        net.action_high.copy_(torch.as_tensor(high, dtype=torch.float32))
    return {"state_mean": mean.tolist(), "state_std": std.tolist(), "action_low": low.tolist(),
            "action_high": high.tolist()}


def _lr_factor(step: int, cfg: BCTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * progress))


def train_bc(episodes: list[Episode], cfg: BCTrainConfig, progress: bool = True,
             log: Callable[[str], None] | None = None) -> tuple[BCPolicyNet, BCPolicyConfig, dict]:
    """Train on `episodes` (already filtered to successful demos). Returns the net (eval mode),
    its config and an info dict (losses, timing, demos) for the artifact."""
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if not episodes:
        raise DemoError("no successful demos to train on")
    if cfg.num_demos:
        episodes = episodes[: cfg.num_demos]
    state_keys = cfg.resolved_state_keys()
    if cfg.state_only:
        cameras: list[str] = []
    elif cfg.camera_names is not None:
        cameras = list(cfg.camera_names)
    else:
        cameras = list(episodes[0].camera_names) if episodes else []
    if not cfg.state_only and not cameras:
        raise DemoError("the demos have no camera images; record them with images or use --state-only")
    data = build_demo_data(episodes, cfg.chunk_length, state_keys, cameras)
    pcfg = BCPolicyConfig(
        joint_names=data.joint_names, chunk_length=cfg.chunk_length, camera_names=data.camera_names,
        image_size=data.image_size, state_keys=state_keys, state_dim=data.states.shape[1],
        extra_names=data.extra_names, image_feature_dim=cfg.image_feature_dim,
        hidden_dims=list(cfg.hidden_dims))
    net = BCPolicyNet(pcfg)
    stats = set_normalizer(net, data, cfg.state_std_floor)
    if log:
        log(f"train-bc: {data.episodes} demos, {len(data.states)} samples, state {pcfg.state_dim} "
            f"({'+'.join(state_keys)}), cameras {cameras or 'none'}, chunk {cfg.chunk_length}, "
            f"{sum(p.numel() for p in net.parameters()):,} parameters")

    states = torch.as_tensor(data.states)
    images = torch.as_tensor(data.images)
    actions_norm = net.normalize_action(torch.as_tensor(data.actions, dtype=torch.float32))
    chunk_index = torch.as_tensor(data.chunk_index)
    states_norm = net.normalize_state(states)
    gen = torch.Generator().manual_seed(cfg.seed)

    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, cfg))
    losses: list[float] = []
    net.train()
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=cfg.steps, desc="train-bc", unit="step", dynamic_ncols=True)
    n = len(states)
    for step in range(cfg.steps):
        idx = torch.as_tensor(rng.integers(0, n, size=cfg.batch_size))
        s = states_norm[idx]
        img = images[idx]
        if cameras:
            img = img.float() / 255.0 - 0.5
            if cfg.shift_pad:
                img = random_shift(img, cfg.shift_pad, gen)
        target = actions_norm[chunk_index[idx]]                    # (B, k, dof)
        pred = net.predict_normalized(s, img)                       # (B, k, dof)
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if bar is not None:
            bar.update(1)
            if step % 20 == 0 or step == cfg.steps - 1:
                bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    if bar is not None:
        bar.close()
    net.eval()
    info = {
        "train_config": asdict(cfg), "demos": data.episodes, "samples": int(n),
        "demo_paths": [str(ep.path) for ep in episodes], "train_seconds": time.perf_counter() - t0,
        "final_loss": float(np.mean(losses[-50:])), "losses": losses, "normalizer": stats,
        "task": episodes[0].metadata.get("task", "") if episodes else "",
    }
    return net, pcfg, info


def plot_losses(losses: list[float], path: str | Path, title: str = "BC training loss") -> Path:
    """Loss curve (raw and smoothed, log scale) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    y = np.asarray(losses)
    ax.plot(y, alpha=0.3, lw=0.8, label="batch")
    if len(y) >= 10:
        w = max(5, len(y) // 50)
        smooth = np.convolve(y, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(w - 1, len(y)), smooth, lw=1.5, label=f"mean of {w}")
    ax.set_yscale("log")
    ax.set_xlabel("gradient step")
    ax.set_ylabel("MSE (normalised actions)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
