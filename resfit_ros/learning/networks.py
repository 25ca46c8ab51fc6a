"""Networks of the residual agent: observation encoder, residual actor, batched critic ensemble.

Shapes: B batch, S state dim, A action dim, ncam cameras, H x W image size, F features.
Everything is float32 on CPU. No rclpy.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resfit_ros.names import OBS_FEATURES, OBS_IMAGES

# Precomputed features are clamped to +-FEATURE_CLIP before use: real encoder features are orders of
# magnitude smaller; the clamp only keeps an absurd value from overflowing float32 into NaN.
FEATURE_CLIP = 1e4


def random_shift(images: torch.Tensor, pad: int, generator: torch.Generator | None) -> torch.Tensor:
    """DrQ random-shift augmentation: replicate-pad by `pad`, random crop back to H x W.

    images (N, C, H, W) uint8 -> (N, C, H, W) uint8, one independent shift per image.
    Replicate padding + an integer crop is the same as clamping the shifted pixel coordinates to the
    image, so we gather with clamped indices: one gather over a flattened H*W axis, no padded copy
    and no float grid_sample (3x cheaper on CPU for a 256 x 3-camera batch).
    """
    n, c, h, w = images.shape
    if pad == 0:
        return images
    device = images.device
    dy = torch.randint(-pad, pad + 1, (n, 1, 1), generator=generator, device=device)
    dx = torch.randint(-pad, pad + 1, (n, 1, 1), generator=generator, device=device)
    rows = (torch.arange(h, device=device).view(1, h, 1) + dy).clamp_(0, h - 1)         # (N, H, 1)
    cols = (torch.arange(w, device=device).view(1, 1, w) + dx).clamp_(0, w - 1)         # (N, 1, W)
    flat_index = (rows * w + cols).view(n, 1, h * w).expand(n, c, h * w)  # (N, C, H*W)
    return torch.gather(images.reshape(n, c, h * w), 2, flat_index).view(n, c, h, w)


class CameraEncoder(nn.Module):
    """One camera: strided conv stem -> Linear -> LayerNorm -> tanh (the DrQ-v2 trunk).

    The default stem (16/32/32 channels, kernels 8/4/3, strides 4/2/1: 84 -> 20 -> 9 -> 7) costs
    ~2.3 M multiply-adds per 84x84 image, ~15x less than the DrQ-v2 stem, which is what makes image
    learning run at several iterations/s on two CPU cores.
    """

    def __init__(self, image_size: tuple[int, int], channels: tuple[int, ...], kernels: tuple[int, ...],
                 strides: tuple[int, ...], feature_dim: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 3
        for out_channels, kernel, stride in zip(channels, kernels, strides):
            layers += [nn.Conv2d(in_channels, out_channels, kernel, stride), nn.ReLU(inplace=True)]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        with torch.no_grad():
            flat_dim = self.convs(torch.zeros(1, 3, *image_size)).numel()
        self.trunk = nn.Sequential(nn.Linear(flat_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # pixels (B, 3, H, W) float in [-0.5, 0.5] -> (B, feature_dim)
        return self.trunk(self.convs(pixels).flatten(1))


class ObservationEncoder(nn.Module):
    """Images and/or precomputed features -> one feature vector (B, output_dim).

    output_dim is 0 in state-only mode (no cameras, no features): forward returns a (B, 0) tensor so
    the concatenations downstream need no special case. Trained by the critic loss only.
    """

    def __init__(self, n_cameras: int, image_size: tuple[int, int], feature_dim: int,
                 channels: tuple[int, ...], kernels: tuple[int, ...], strides: tuple[int, ...],
                 camera_feature_dim: int, feature_projection_dim: int, augment_pad: int):
        super().__init__()
        self.n_cameras = n_cameras
        self.augment_pad = augment_pad
        self.cameras = nn.ModuleList(
            CameraEncoder(image_size, channels, kernels, strides, camera_feature_dim) for _ in range(n_cameras))
        # Cached features from a frozen encoder (e.g. the BC base's): a small trainable projection
        # (Linear -> LayerNorm -> tanh) puts them on the same footing as the camera features.
        # feature_projection_dim 0 passes them through unchanged.
        self.feature_dim = feature_dim
        if feature_dim > 0 and feature_projection_dim > 0:
            self.feature_projection: nn.Module | None = nn.Sequential(
                nn.Linear(feature_dim, feature_projection_dim), nn.LayerNorm(feature_projection_dim), nn.Tanh())
            projected = feature_projection_dim
        else:
            self.feature_projection = None
            projected = feature_dim
        self.output_dim = n_cameras * camera_feature_dim + projected

    def forward(self, obs: dict[str, torch.Tensor], augment: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
        batch = next(iter(obs.values())).shape[0]
        parts: list[torch.Tensor] = []
        if self.n_cameras > 0:
            images = obs[OBS_IMAGES]                                       # (B, ncam, 3, H, W) uint8
            if augment and self.augment_pad > 0:
                b, ncam, c, h, w = images.shape
                images = random_shift(images.reshape(b * ncam, c, h, w), self.augment_pad,
                                      generator).view(b, ncam, c, h, w)
            for index, encoder in enumerate(self.cameras):
                pixels = images[:, index].float().mul_(1.0 / 255.0).sub_(0.5)  # (B, 3, H, W) in [-0.5, 0.5]
                parts.append(encoder(pixels))                              # (B, camera_feature_dim)
        if self.feature_dim > 0:
            features = obs[OBS_FEATURES].clamp(-FEATURE_CLIP, FEATURE_CLIP)  # (B, F) float32
            parts.append(self.feature_projection(features) if self.feature_projection is not None
                         else features)
        if not parts:
            return torch.zeros(batch, 0)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def encode_one(self, images: torch.Tensor | None, features: torch.Tensor | None) -> torch.Tensor:
        """forward({images, features}, augment=False) for ONE observation: images (ncam, 3, H, W)
        uint8, features (F,) float32 -> (1, output_dim); the same math on the same parameter tensors.

        The control tick runs this 20 times a second, 50 ms apart, so with cold caches. For batch 1
        the ~40 module calls and nine per-camera conversions of forward() are a good part of the
        cost: this path converts all cameras at once and calls the functional ops directly. Three
        84x84 cameras and the actor on these machines: back to back 0.93 -> 0.77 ms, 50 ms apart
        p50 2.0-2.35 -> 1.8-2.1 ms (the rest of the cold time is the kernels' code and weights
        coming back into the caches; `bench load` measures the whole control path).
        """
        parts: list[torch.Tensor] = []
        if self.n_cameras > 0:
            pixels = images.float().mul_(1.0 / 255.0).sub_(0.5)            # (ncam, 3, H, W) in [-0.5, 0.5]
            for index, camera in enumerate(self.cameras):
                h = pixels[index:index + 1]                                 # (1, 3, H, W)
                for conv in camera.convs:
                    if isinstance(conv, nn.Conv2d):                         # (the ReLUs are the relu_ here)
                        h = torch.relu_(F.conv2d(h, conv.weight, conv.bias, conv.stride))
                linear, norm = camera.trunk[0], camera.trunk[1]
                h = F.layer_norm(F.linear(h.flatten(1), linear.weight, linear.bias), norm.normalized_shape,
                                 norm.weight, norm.bias, norm.eps)
                parts.append(torch.tanh_(h))                                # (1, camera_feature_dim)
        if self.feature_dim > 0:
            features = features.clamp(-FEATURE_CLIP, FEATURE_CLIP)[None]  # (1, F)
            parts.append(self.feature_projection(features) if self.feature_projection is not None
                         else features)
        if not parts:
            return torch.zeros(1, 0)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


class ResidualActor(nn.Module):
    """[features, normalised state, normalised base action] -> residual in [-scale, scale] (normalised).

    Linear -> LayerNorm -> ReLU per hidden layer, then a ZERO-INITIALISED output layer: the initial
    residual is exactly 0, so training starts from the base policy (ResFiT).
    """

    def __init__(self, input_dim: int, action_dim: int, hidden_dims: tuple[int, ...], action_scale: float):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for hidden in hidden_dims:
            layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), nn.ReLU(inplace=True)]
            width = hidden
        self.hidden = nn.Sequential(*layers)
        self.output = nn.Linear(width, action_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)
        # (A,) per-joint bound, action_scale * residual gain (normaliser.py); not a weight: the
        # normaliser carries the gain, set_residual_scale copies it here
        self.register_buffer("residual_scale", torch.full((action_dim,), float(action_scale)), persistent=False)

    def set_residual_scale(self, residual_scale: np.ndarray) -> None:
        self.residual_scale.copy_(torch.as_tensor(np.asarray(residual_scale, dtype=np.float32)))

    def forward(self, actor_input: torch.Tensor) -> torch.Tensor:
        # actor_input (B, in) -> residual (B, A), |residual_j| <= residual_scale_j
        return torch.tanh(self.output(self.hidden(actor_input))) * self.residual_scale


class CriticEnsemble(nn.Module):
    """N independent Q heads evaluated as ONE batched computation.

    Each layer holds a (heads, in, out) weight; a layer is one torch.baddbmm over all heads, followed
    (for hidden layers) by LayerNorm with per-head affine and ReLU. LayerNorm after every hidden
    Linear is what keeps Q from collapsing on high-DoF tasks (ResFiT ablation).
    Initialisation per head matches nn.Linear's default (uniform +-1/sqrt(fan_in)).
    """

    def __init__(self, input_dim: int, hidden_dims: tuple[int, ...], num_heads: int, layer_norm: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.layer_norm = layer_norm      # False only for the ablation (bench/ablations.py)
        dims = (input_dim, *hidden_dims, 1)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.norm_weights = nn.ParameterList()   # LayerNorm gamma per head (hidden layers only)
        self.norm_biases = nn.ParameterList()    # LayerNorm beta per head
        for fan_in, fan_out in zip(dims[:-1], dims[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(num_heads, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(num_heads, 1, fan_out).uniform_(-bound, bound)))
        for hidden in hidden_dims:
            self.norm_weights.append(nn.Parameter(torch.ones(num_heads, 1, hidden)))
            self.norm_biases.append(nn.Parameter(torch.zeros(num_heads, 1, hidden)))

    def forward(self, critic_input: torch.Tensor, heads: torch.Tensor | None = None) -> torch.Tensor:
        """critic_input (B, in) -> Q (heads, B). `heads` (k,) long selects k heads (e.g. the 2
        target heads of the TD target) so the unused heads cost nothing."""
        def pick(param: torch.Tensor) -> torch.Tensor:
            return param if heads is None else param.index_select(0, heads)

        num = self.num_heads if heads is None else heads.shape[0]
        # Every head sees the same input: an expanded (stride-0) view, no copy.
        h = critic_input.unsqueeze(0).expand(num, *critic_input.shape)     # (heads, B, in)
        last = len(self.weights) - 1
        for layer in range(last):
            h = torch.baddbmm(pick(self.biases[layer]), h, pick(self.weights[layer]))  # (heads, B, hidden)
            if self.layer_norm:
                h = F.layer_norm(h, h.shape[-1:])
                h = torch.addcmul(pick(self.norm_biases[layer]), h, pick(self.norm_weights[layer]))
            h = torch.relu_(h)
        q = torch.baddbmm(pick(self.biases[last]), h, pick(self.weights[last]))  # (heads, B, 1)
        return q.squeeze(-1)
