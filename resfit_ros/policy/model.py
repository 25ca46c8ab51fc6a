"""The BC chunk policy network: a small conv encoder per camera + an MLP on the normalised state,
predicting k x dof joint targets. Normalisation lives inside the module (buffers), so
`forward(state, images)` takes raw inputs and returns absolute joint targets: the same contract a
plugged-in TorchScript policy has (see base.py), and `torch.jit.script(net)` exports it as is.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from resfit_ros.config import require

STATE_KEYS = ("position", "velocity", "extra")  # the parts of ObservationData a state may use


@dataclass
class BCPolicyConfig:
    """Architecture and input/output contract of a BC chunk policy (stored in the artifact)."""

    joint_names: list[str]
    """Joint order of the action (and of position/velocity in the state)."""
    chunk_length: int = 20
    """k: actions per predicted chunk (20 = 1 s at 20 Hz)."""
    camera_names: list[str] = field(default_factory=list)
    """Cameras the policy sees, in input order; empty = state-only policy."""
    image_size: int = 84
    """Square image side the encoder expects (pixels); ignored without cameras."""
    state_keys: list[str] = field(default_factory=lambda: ["position"])
    """Parts of the observation concatenated into the state: subset of position, velocity, extra."""
    state_dim: int = 29
    """Length of the raw state vector (29 per joint part + len(extra) for extra)."""
    extra_names: list[str] = field(default_factory=list)
    """Names of the extra entries when 'extra' is in state_keys (checked at inference)."""
    image_feature_dim: int = 128
    """Output size of each camera's encoder; encode_images returns n_cameras x this."""
    conv_channels: list[int] = field(default_factory=lambda: [32, 32, 64, 64])
    """Channels of the 4 conv layers of each encoder (3x3; strides 2, 2, 2, 1)."""
    hidden_dims: list[int] = field(default_factory=lambda: [512, 512])
    """MLP head hidden layer sizes."""

    def __post_init__(self) -> None:
        require(len(self.joint_names) > 0, "joint_names must not be empty")
        require(self.chunk_length >= 1, f"chunk_length must be >= 1, got {self.chunk_length}")
        require(self.image_size >= 32, f"image_size must be >= 32, got {self.image_size}")
        bad = [k for k in self.state_keys if k not in STATE_KEYS]
        require(not bad and len(self.state_keys) == len(set(self.state_keys)),
                f"state_keys must be distinct entries of {STATE_KEYS}, got {self.state_keys}")
        require(self.state_keys or self.camera_names, "a policy needs state_keys or camera_names")
        require(self.state_dim >= 0, f"state_dim must be >= 0, got {self.state_dim}")
        require(len(self.conv_channels) == 4, f"conv_channels needs 4 entries, got {self.conv_channels}")
        require(all(h > 0 for h in self.hidden_dims), f"hidden_dims must be > 0, got {self.hidden_dims}")
        require(self.image_feature_dim > 0, f"image_feature_dim must be > 0, got {self.image_feature_dim}")

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    @property
    def feature_dim(self) -> int:
        return len(self.camera_names) * self.image_feature_dim


class ImageEncoder(nn.Module):
    """(B, 3, H, W) float in [-0.5, 0.5] -> (B, feature_dim): 4 convs + linear + LayerNorm + tanh."""

    def __init__(self, image_size: int, channels: list[int], feature_dim: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2), nn.ReLU(),
            nn.Conv2d(c1, c2, 3, stride=2), nn.ReLU(),
            nn.Conv2d(c2, c3, 3, stride=2), nn.ReLU(),
            nn.Conv2d(c3, c4, 3, stride=1), nn.ReLU(),
            nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, 3, image_size, image_size)).shape[1]
        self.head = nn.Sequential(nn.Linear(flat, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.convs(x))


class BCPolicyNet(nn.Module):
    """forward(state (B, S) float32 raw, images (B, ncam, 3, H, W) uint8) -> (B, k, dof) targets."""

    def __init__(self, config: BCPolicyConfig) -> None:
        super().__init__()
        self.chunk_length = config.chunk_length
        self.dof = config.dof
        self.n_cameras = len(config.camera_names)
        self.state_dim = config.state_dim
        self.encoders = nn.ModuleList(
            ImageEncoder(config.image_size, config.conv_channels, config.image_feature_dim)
            for _ in config.camera_names)
        layers: list[nn.Module] = []
        width = config.feature_dim + config.state_dim
        for h in config.hidden_dims:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, config.chunk_length * config.dof))
        self.head = nn.Sequential(*layers)
        # normaliser (set from the demos before training; saved with the weights)
        self.register_buffer("state_mean", torch.zeros(config.state_dim))
        self.register_buffer("state_std", torch.ones(config.state_dim))
        self.register_buffer("action_low", -torch.ones(config.dof))
        self.register_buffer("action_high", torch.ones(config.dof))

    # --- normalisation: state z-score, action min-max to [-1, 1] ----------------------------------
    def normalize_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def normalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return 2.0 * (action - self.action_low) / (self.action_high - self.action_low) - 1.0

    def unnormalize_action(self, action: torch.Tensor) -> torch.Tensor:
        return (action + 1.0) * 0.5 * (self.action_high - self.action_low) + self.action_low

    # --- network ------------------------------------------------------------------------------------
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, ncam, 3, H, W) uint8 (or float already in [-0.5, 0.5]) -> (B, ncam * F) float32."""
        if self.n_cameras == 0:
            return torch.zeros(images.shape[0], 0, dtype=torch.float32, device=images.device)
        x = images.float() / 255.0 - 0.5 if images.dtype == torch.uint8 else images
        feats = [enc(x[:, i]) for i, enc in enumerate(self.encoders)]
        return torch.cat(feats, dim=1)

    def predict_normalized(self, state_norm: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """(B, S) normalised state, (B, ncam, 3, H, W) images -> (B, k, dof) normalised actions."""
        x = torch.cat([self.encode_images(images), state_norm], dim=1)
        return self.head(x).view(-1, self.chunk_length, self.dof)

    def forward(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        out = self.predict_normalized(self.normalize_state(state.float()), images)
        return self.unnormalize_action(out)


def random_shift(images: torch.Tensor, pad: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """DrQ random-shift augmentation: replicate-pad by `pad` and crop back at a random offset,
    independently per sample and camera. (B, ncam, 3, H, W) float -> same shape."""
    b, n, c, h, w = images.shape
    x = images.reshape(b * n, c, h, w)
    x = nn.functional.pad(x, (pad, pad, pad, pad), mode="replicate")
    oy = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator, device=images.device)
    ox = torch.randint(0, 2 * pad + 1, (b * n,), generator=generator, device=images.device)
    rows = (oy[:, None] + torch.arange(h, device=images.device))[:, :, None]      # (B*n, H, 1)
    cols = (ox[:, None] + torch.arange(w, device=images.device))[:, None, :]      # (B*n, 1, W)
    idx = torch.arange(b * n, device=images.device)[:, None, None]
    out = x.permute(0, 2, 3, 1)[idx, rows, cols]                                   # (B*n, H, W, C)
    return out.permute(0, 3, 1, 2).reshape(b, n, c, h, w)
