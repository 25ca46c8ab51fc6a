"""Inference-only residual policy: the weights dict in, a residual in joint units out.

The learner (ResidualAgent.get_weights) and the policy node (ResidualPolicy.load_weights) exchange
ONLY a dict[str, np.ndarray float32]:
    actor.*       the residual actor MLP
    encoder.*     the observation encoder the actor reads (trained by the critic)
    normaliser.*  state / action normalisation statistics (see normaliser.py)

Command composition (what the robot executes; the critic was trained on exactly this):
    command = denormalise(clamp(normalise(base) + residual_normalised, -1, 1))
    residual_joint = command - base = (clamp(nb + r, -1, 1) - nb) * half_range,  nb = normalise(base)
The second form is exact in float64: with r = 0 and the base inside the (widened) demo range the
residual is exactly 0, so the initial combined policy IS the base policy. A base outside that range
is pulled back onto its edge (the residual then exceeds action_scale * half_range in joint units).
"""
from __future__ import annotations

import numpy as np
import torch

from resfit_ros.learning.config import AgentConfig
from resfit_ros.learning.networks import FEATURE_CLIP, ObservationEncoder, ResidualActor
from resfit_ros.learning.normaliser import ACTION_SCALE, RESIDUAL_GAIN, RESIDUAL_LIMIT, Normaliser, residual_bounds

ACTOR_PREFIX = "actor."
ENCODER_PREFIX = "encoder."


def resize_image_stack(images: np.ndarray, image_size: tuple[int, int] | int) -> np.ndarray:
    """(..., 3, h, w) uint8 camera images -> (..., 3, H, W) uint8 at the learner's image size
    (bilinear with antialiasing). Use the same function for the replay and for the policy node."""
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-3] != 3:
        raise ValueError(f"images must be uint8 (..., 3, h, w), got {images.dtype} {images.shape}")
    if tuple(images.shape[-2:]) == tuple(image_size):
        return images
    lead = images.shape[:-3]
    flat = torch.from_numpy(np.ascontiguousarray(images)).reshape(-1, 3, *images.shape[-2:]).float()
    resized = torch.nn.functional.interpolate(flat, size=tuple(image_size), mode="bilinear",
                                              antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(torch.uint8).reshape(*lead, 3, *image_size).numpy()


def build_encoder(config: AgentConfig, n_cameras: int, image_size: tuple[int, int],
                  feature_dim: int) -> ObservationEncoder:
    return ObservationEncoder(n_cameras, image_size, feature_dim, config.encoder_channels,
                              config.encoder_kernels, config.encoder_strides, config.camera_feature_dim,
                              config.feature_projection_dim, config.augment_pad)


def build_actor(config: AgentConfig, encoder_dim: int, state_dim: int, action_dim: int) -> ResidualActor:
    # actor input: [encoder features, normalised state, normalised base action]
    return ResidualActor(encoder_dim + state_dim + action_dim, action_dim, config.actor_hidden_dims,
                         config.action_scale)


def export_weights(encoder: ObservationEncoder, actor: ResidualActor,
                   normaliser: Normaliser) -> dict[str, np.ndarray]:
    """The weights dict: float32 copies of everything an inference-only policy needs."""
    weights = {ACTOR_PREFIX + k: v.detach().cpu().numpy().astype(np.float32, copy=True)
               for k, v in actor.state_dict().items()}
    weights.update({ENCODER_PREFIX + k: v.detach().cpu().numpy().astype(np.float32, copy=True)
                    for k, v in encoder.state_dict().items()})
    weights.update(normaliser.to_arrays())
    return weights


def validate_weights(weights: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]],
                     action_scale: float) -> Normaliser:
    """Raise ValueError (naming the tensor and the problem) unless `weights` has exactly the
    expected names and shapes, dtype float32, finite values and a consistent normaliser.
    Returns the normaliser it carries. Touches nothing: the caller loads only after this passed."""
    if not isinstance(weights, dict):
        raise ValueError(f"weights must be a dict of name -> float32 array, got {type(weights).__name__}")
    # weights exported before the residual limit existed lack it: no limit (Normaliser.from_arrays)
    missing = sorted(set(expected) - set(weights) - {RESIDUAL_LIMIT})
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise ValueError(f"weights rejected: missing tensors {missing[:8]}, unexpected tensors {unexpected[:8]}")
    for name, shape in expected.items():
        if name not in weights:
            continue
        value = weights[name]
        if not isinstance(value, np.ndarray):
            raise ValueError(f"weights rejected: '{name}' is a {type(value).__name__}, not a numpy array")
        if value.dtype != np.float32:
            raise ValueError(f"weights rejected: '{name}' has dtype {value.dtype}, expected float32")
        if tuple(value.shape) != tuple(shape):
            raise ValueError(f"weights rejected: '{name}' has shape {tuple(value.shape)}, expected {tuple(shape)}")
        if not np.all(np.isfinite(value)):
            raise ValueError(f"weights rejected: '{name}' contains NaN or inf")
    try:
        normaliser = Normaliser.from_arrays({k: v for k, v in weights.items() if k.startswith("normaliser.")})
    except ValueError as exc:
        raise ValueError(f"weights rejected: {exc}") from None
    carried_scale = float(weights[ACTION_SCALE][0])
    if abs(carried_scale - action_scale) > 1e-6 * max(1.0, action_scale):
        raise ValueError(f"weights rejected: normaliser was widened with action_scale {carried_scale:g}, "
                         f"this policy's action_scale is {action_scale:g}")
    return normaliser


def expected_weight_shapes(encoder: ObservationEncoder, actor: ResidualActor, state_dim: int,
                           action_dim: int) -> dict[str, tuple[int, ...]]:
    shapes = {ACTOR_PREFIX + k: tuple(v.shape) for k, v in actor.state_dict().items()}
    shapes.update({ENCODER_PREFIX + k: tuple(v.shape) for k, v in encoder.state_dict().items()})
    shapes.update({"normaliser.state_mean": (state_dim,), "normaliser.state_std": (state_dim,),
                   "normaliser.action_low": (action_dim,), "normaliser.action_high": (action_dim,),
                   "normaliser.action_scale": (1,), "normaliser.state_clip": (1,),
                   RESIDUAL_GAIN: (action_dim,), RESIDUAL_LIMIT: (action_dim,)})
    return shapes


def load_modules(weights: dict[str, np.ndarray], encoder: ObservationEncoder, actor: ResidualActor) -> None:
    """Copy validated weights into the modules (strict: every parameter is replaced)."""
    def sub(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in weights.items()
                if k.startswith(prefix)}
    actor.load_state_dict(sub(ACTOR_PREFIX), strict=True)
    encoder.load_state_dict(sub(ENCODER_PREFIX), strict=True)


class ResidualPolicy:
    """Batch-1 residual inference for the policy node. Call load_weights before act."""

    def __init__(self, config: AgentConfig, state_dim: int, action_dim: int, camera_names: list[str] | tuple,
                 image_size: tuple[int, int] | int, feature_dim: int,
                 weights: dict[str, np.ndarray] | None = None):
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        self.config = config
        self.state_dim, self.action_dim = state_dim, action_dim
        if len(config.random_warmup_mask) not in (0, action_dim):
            raise ValueError(f"random_warmup_mask has {len(config.random_warmup_mask)} entries for {action_dim} actions")
        self.camera_names = list(camera_names)
        self.image_size = tuple(image_size)
        self.feature_dim = feature_dim
        with torch.random.fork_rng():      # module init must not disturb the caller's global RNG
            self.encoder = build_encoder(config, len(self.camera_names), self.image_size, feature_dim).eval()
            self.actor = build_actor(config, self.encoder.output_dim, state_dim, action_dim).eval()
        self.normaliser: Normaliser | None = None
        self.bounds = np.full(action_dim, float(config.action_scale))   # (A,) per-joint residual bound
        self._expected = expected_weight_shapes(self.encoder, self.actor, state_dim, action_dim)
        if weights is not None:
            self.load_weights(weights)

    @property
    def loaded(self) -> bool:
        return self.normaliser is not None

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        """Validate, then replace all weights; on ValueError the old weights stay in use."""
        normaliser = validate_weights(weights, self._expected, self.config.action_scale)
        load_modules(weights, self.encoder, self.actor)
        self.bounds = residual_bounds(self.config.action_scale, normaliser)                  # (A,)
        self.actor.set_residual_scale(self.bounds)
        self.normaliser = normaliser

    def reach(self) -> np.ndarray:
        """(A,) float64 largest |residual| per joint in joint units: what the actor was trained to ask."""
        if self.normaliser is None:
            raise RuntimeError("ResidualPolicy has no weights yet: call load_weights first")
        return self.bounds * self.normaliser.action_half_range

    def get_weights(self) -> dict[str, np.ndarray]:
        if self.normaliser is None:
            raise RuntimeError("ResidualPolicy has no weights yet: call load_weights first")
        return export_weights(self.encoder, self.actor, self.normaliser)

    def _residual_normalised(self, state: np.ndarray, base_normalised: np.ndarray,
                             images: np.ndarray | None, features: np.ndarray | None) -> np.ndarray:
        assert self.normaliser is not None
        pixels = feats = None
        if self.camera_names:
            if images is None:
                raise ValueError(f"this policy reads cameras {self.camera_names}: images are required")
            want = (len(self.camera_names), 3, *self.image_size)
            if images.shape != want or images.dtype != np.uint8:
                raise ValueError(f"images must be uint8 {want}, got {images.dtype} {images.shape}")
            pixels = torch.from_numpy(np.ascontiguousarray(images))                    # (ncam, 3, H, W)
        if self.feature_dim > 0:
            if features is None or np.shape(features) != (self.feature_dim,):
                raise ValueError(f"features must have shape ({self.feature_dim},), got "
                                 f"{None if features is None else np.shape(features)}")
            features = np.clip(np.asarray(features, dtype=np.float64), -FEATURE_CLIP, FEATURE_CLIP)
            feats = torch.from_numpy(features.astype(np.float32))                      # (F,)
        state_n = torch.from_numpy(self.normaliser.normalise_state(state))[None]           # (1, S)
        base_n = torch.from_numpy(np.clip(base_normalised, -1.0, 1.0).astype(np.float32))[None]  # (1, A)
        with torch.inference_mode():
            encoded = self.encoder.encode_one(pixels, feats)                               # (1, E)
            residual = self.actor(torch.cat([encoded, state_n, base_n], dim=1))             # (1, A)
        # float32 tanh * scale can exceed the float64 scale by 1 ulp: clip so the bound is exact.
        scale = self.bounds                                                                  # (A,)
        return np.clip(residual[0].numpy().astype(np.float64), -scale, scale)

    def act(self, state: np.ndarray, base_action: np.ndarray, images: np.ndarray | None = None,
            features: np.ndarray | None = None, explore: bool = False,
            rng: np.random.Generator | None = None, noise: np.ndarray | None = None) -> np.ndarray:
        """Residual (A,) float64 in JOINT units for one observation; base + residual is the command.

        state (S,), base_action (A,) joint units, images (ncam, 3, H, W) uint8 at the configured
        size, features (F,). explore=True adds N(0, exploration_std) noise in normalised units
        (needs `rng`; or the caller's (A,) `noise`, e.g. held over several steps: HeldNoise), times
        each joint's residual gain, clamped to +-action_scale * gain. Non-finite inputs give a NaN residual (the command
        layer's non-finite check then falls back); finite inputs of any size give a finite residual.
        """
        if self.normaliser is None:
            raise RuntimeError("ResidualPolicy has no weights yet: call load_weights first")
        state = np.asarray(state, dtype=np.float64).reshape(-1)
        base_action = np.asarray(base_action, dtype=np.float64).reshape(-1)
        if state.shape != (self.state_dim,) or base_action.shape != (self.action_dim,):
            raise ValueError(f"state must be ({self.state_dim},) and base_action ({self.action_dim},), "
                             f"got {state.shape} and {base_action.shape}")
        if not (np.all(np.isfinite(state)) and np.all(np.isfinite(base_action))
                and (features is None or np.all(np.isfinite(features)))):
            return np.full(self.action_dim, np.nan)    # flagged and replaced by the command layer
        base_n = self.normaliser.normalise_action(base_action)                               # (A,)
        residual_n = self._residual_normalised(state, base_n, images, features)
        if explore:
            if noise is None and rng is None:
                raise ValueError("explore=True needs a numpy Generator `rng` or the `noise`")
            if noise is None:
                noise = rng.normal(0.0, self.config.exploration_std, self.action_dim)
            gain = self.normaliser.residual_gain
            residual_n = residual_n + np.asarray(noise, dtype=np.float64).reshape(self.action_dim) * gain
            residual_n = np.clip(residual_n, -self.bounds, self.bounds)
        return self.compose(base_action, residual_n)

    def random_residual(self, base_action: np.ndarray, rng: np.random.Generator, scale: float,
                        noise: np.ndarray | None = None) -> np.ndarray:
        """Warm-up exploration: a uniform residual in [-scale, scale] (normalised units; or the
        caller's (A,) `noise`) times each joint's residual gain and the config's random_warmup_mask,
        clamped to +-action_scale * gain, composed like act(); (A,) float64 in joint units."""
        if self.normaliser is None:
            raise RuntimeError("ResidualPolicy has no weights yet: call load_weights first")
        draw = rng.uniform(-scale, scale, self.action_dim) if noise is None else np.asarray(noise, dtype=np.float64)
        draw = draw.reshape(self.action_dim)
        if self.config.random_warmup_mask:
            draw = draw * np.asarray(self.config.random_warmup_mask)
        residual_n = np.clip(draw * self.normaliser.residual_gain, -self.bounds, self.bounds)
        return self.compose(base_action, residual_n)

    def compose(self, base_action: np.ndarray, residual_normalised: np.ndarray) -> np.ndarray:
        """Joint-unit residual. For a base inside the (widened) demo range: base + residual =
        denormalise(clamp(nb + r, -1, 1)), as the critic models it. For a base outside it (rare: the
        range is the demos' widened by action_scale) the residual is the plain r * half range,
        so a zero residual leaves ANY base action exactly as it is; limits are the command layer's job."""
        assert self.normaliser is not None
        base_action = np.asarray(base_action, dtype=np.float64)
        base_n = self.normaliser.normalise_action(base_action)
        inside = np.abs(base_n) <= 1.0
        command_n = np.clip(base_n + residual_normalised, -1.0, 1.0)
        relative = (command_n - np.where(inside, base_n, 0.0)) * self.normaliser.action_half_range
        additive = np.asarray(residual_normalised, dtype=np.float64) * self.normaliser.action_half_range
        return np.where(inside, relative, additive)
