"""The frozen base policy API used by the base chunk server node, the evaluator and the residual
learner: `load_base_policy(path) -> BasePolicy`.

Two kinds of frozen policy plug in:
  * the project's BC artifact (`*.safetensors`, written by `resfit-ros train-bc`): weights without
    pickle + json config + normaliser statistics in one file;
  * any TorchScript module (`*.pt`, `*.ts`, `*.jit`, `*.torchscript`) with this contract:
        forward(state: (1, S) float32, images: (1, n_cameras, 3, H, W) uint8) -> (1, k, dof) float32
    where `state` is the RAW (un-normalised) concatenation of the observation parts in
    `state_keys` (default position, velocity, extra = ObservationData.state_vector()), joints in
    `joint_names` order, images RGB, and the output is k absolute joint position targets.
    Its description (joint_names, chunk_length, camera_names, image_size, state_keys,
    extra_names) comes from a json extra file `resfit_policy.json` inside the archive
    (torch.jit.save(m, path, _extra_files={"resfit_policy.json": ...}); `export_torchscript`
    writes it) or from keyword arguments of load_base_policy. An `encode_images(images)` method
    on the module is used for features when present.
"""
from __future__ import annotations

import json
import os
import warnings
from abc import ABC, abstractmethod
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from resfit_ros.config import ConfigError
from resfit_ros.core.observation import ObservationData
from resfit_ros.core.chunks import ChunkScheduler
from resfit_ros.policy.model import STATE_KEYS, BCPolicyConfig, BCPolicyNet

ARTIFACT_FORMAT = "resfit_ros.bc_policy/1"
TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".jit", ".torchscript")
TORCHSCRIPT_META = "resfit_policy.json"


class PolicyLoadError(ValueError):
    """A base-policy file is missing, of an unknown kind, or not a valid artifact."""


def state_from_observation(obs: ObservationData, state_keys: list[str], joint_names: list[str],
                           extra_names: list[str] | None = None) -> np.ndarray:
    """(S,) float32: the parts `state_keys` of `obs`, joints reordered to `joint_names`."""
    if list(obs.joint_names) == list(joint_names):
        order = None
    else:
        index = {n: i for i, n in enumerate(obs.joint_names)}
        missing = [n for n in joint_names if n not in index]
        if missing:
            raise ValueError(f"observation lacks joints the policy needs: {missing[:5]}")
        order = np.array([index[n] for n in joint_names])
    parts = []
    for key in state_keys:
        if key == "extra":
            if extra_names and list(obs.extra_names) != list(extra_names):
                raise ValueError(f"observation extra_names {list(obs.extra_names)} differ from the "
                                 f"policy's {list(extra_names)}")
            parts.append(np.asarray(obs.extra, dtype=np.float64))
        else:
            v = np.asarray(getattr(obs, key), dtype=np.float64)
            parts.append(v if order is None else v[order])
    if not parts:
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(parts).astype(np.float32)


class BasePolicy(ABC):
    """A frozen chunking policy: predict_chunk(ObservationData) -> (k, dof) joint targets.

    select_action(obs) executes chunks open-loop through the control loop's ChunkScheduler; call reset() at
    every episode start. Everything runs under torch.no_grad() in eval mode.
    """

    chunk_length: int
    joint_names: list[str]
    camera_names: list[str]
    image_size: int | None
    state_keys: list[str]
    extra_names: list[str]
    feature_dim: int  # length of encode_images() output (0 for a state-only policy)

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self._chunks: ChunkScheduler | None = None

    # --- inputs ---------------------------------------------------------------------------------
    def state_input(self, obs: ObservationData) -> np.ndarray:
        return state_from_observation(obs, self.state_keys, self.joint_names, self.extra_names)

    def image_input(self, obs: ObservationData) -> np.ndarray:
        """(n_cameras, 3, H, W) uint8 in camera_names order; checks the size."""
        if not self.camera_names:
            return np.zeros((0, 3, self.image_size or 0, self.image_size or 0), dtype=np.uint8)
        stack = obs.image_stack(self.camera_names)
        if self.image_size and stack.shape[2:] != (self.image_size, self.image_size):
            raise ValueError(f"policy expects {self.image_size}x{self.image_size} images, got "
                             f"{stack.shape[2]}x{stack.shape[3]} (resize in the synchronizer)")
        return stack

    # --- outputs --------------------------------------------------------------------------------
    @abstractmethod
    def predict_chunk_batch(self, state: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(B, S) float32 raw states, (B, ncam, 3, H, W) uint8 -> (B, k, dof) float64."""

    def predict_chunk(self, observation: ObservationData) -> np.ndarray:
        """(k, dof) float64 absolute joint targets for this observation."""
        state = self.state_input(observation)[None]
        images = self.image_input(observation)[None]
        chunk = self.predict_chunk_batch(state, images)[0]
        if not np.all(np.isfinite(chunk)):
            raise FloatingPointError("base policy produced a non-finite action chunk")
        return chunk

    @abstractmethod
    def encode_images(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """(B, ncam, 3, H, W) uint8 -> (B, feature_dim) float32 frozen-encoder features."""

    def observation_features(self, obs: ObservationData) -> np.ndarray:
        """(feature_dim,) float32: the frozen encoder's features of this observation's images (what
        a residual trained on base features reads; KeyError/ValueError for a missing or resized camera)."""
        return self.encode_images(self.image_input(obs)[None])[0]

    # --- open-loop execution --------------------------------------------------------------------
    def reset(self) -> None:
        """Start of an episode: forget the chunk being executed."""
        if self._chunks is not None:
            self._chunks.reset()

    def select_action(self, observation: ObservationData, execute_steps: int | None = None) -> np.ndarray:
        """(dof,): the next action of the current chunk, predicting a new chunk when it is used up."""
        prefetch = self.chunk_length - (execute_steps or self.chunk_length)   # rows not executed
        if self._chunks is None or self._chunks.prefetch_steps != prefetch:
            self._chunks = ChunkScheduler(self.chunk_length, prefetch)
        return self._chunks.next_action_now(lambda: self.predict_chunk(observation))

    def describe(self) -> dict:
        return {"kind": type(self).__name__, "chunk_length": self.chunk_length,
                "dof": len(self.joint_names), "camera_names": list(self.camera_names),
                "image_size": self.image_size, "state_keys": list(self.state_keys),
                "feature_dim": self.feature_dim}


def _as_tensor(x, dtype, device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.ascontiguousarray(x), dtype=dtype, device=device)


class BCBasePolicy(BasePolicy):
    """The project's BC chunk policy (BCPolicyNet) loaded from its artifact."""

    def __init__(self, net: BCPolicyNet, config: BCPolicyConfig, info: dict | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__(device)
        self.config = config
        self.info = info or {}
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.chunk_length = config.chunk_length
        self.joint_names = list(config.joint_names)
        self.camera_names = list(config.camera_names)
        self.image_size = config.image_size if config.camera_names else None
        self.state_keys = list(config.state_keys)
        self.extra_names = list(config.extra_names)
        self.feature_dim = config.feature_dim

    @torch.no_grad()
    def predict_chunk_batch(self, state, images) -> np.ndarray:
        out = self.net(_as_tensor(state, torch.float32, self.device), _as_tensor(images, torch.uint8, self.device))
        return out.double().cpu().numpy()

    @torch.no_grad()
    def encode_images(self, images) -> np.ndarray:
        return self.net.encode_images(_as_tensor(images, torch.uint8, self.device)).cpu().numpy()


class TorchScriptBasePolicy(BasePolicy):
    """Any TorchScript module with the contract in this module's docstring."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", **overrides) -> None:
        super().__init__(device)
        path = Path(path)
        extra = {TORCHSCRIPT_META: ""}
        try:
            with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; it still works
                warnings.simplefilter("ignore", DeprecationWarning)
                self.module = torch.jit.load(str(path), map_location=self.device, _extra_files=extra)
        except Exception as exc:  # torch raises RuntimeError/ValueError for bad archives
            raise PolicyLoadError(f"{path}: not a loadable TorchScript module ({exc})") from None
        self.module.eval()
        meta = json.loads(extra[TORCHSCRIPT_META]) if extra[TORCHSCRIPT_META] else {}
        meta.update({k: v for k, v in overrides.items() if v is not None})
        if "joint_names" not in meta:
            raise PolicyLoadError(f"{path}: TorchScript policy without '{TORCHSCRIPT_META}' needs "
                                  "joint_names (and camera_names, image_size, state_keys) given")
        self.joint_names = list(meta["joint_names"])
        self.camera_names = list(meta.get("camera_names", []))
        self.image_size = meta.get("image_size") if self.camera_names else None
        self.state_keys = list(meta.get("state_keys", STATE_KEYS))
        self.extra_names = list(meta.get("extra_names", []))
        self.feature_dim = int(meta.get("feature_dim", 0))
        self.chunk_length = int(meta["chunk_length"]) if "chunk_length" in meta else 0
        self._has_encoder = hasattr(self.module, "encode_images")

    @torch.no_grad()
    def predict_chunk_batch(self, state, images) -> np.ndarray:
        out = self.module(_as_tensor(state, torch.float32, self.device), _as_tensor(images, torch.uint8, self.device))
        out = out.double().cpu().numpy()
        dof = len(self.joint_names)
        if out.ndim != 3 or out.shape[0] != state.shape[0] or out.shape[2] != dof:
            raise ValueError(f"TorchScript policy returned shape {out.shape}, expected (B, k, {dof})")
        if self.chunk_length == 0:
            self.chunk_length = out.shape[1]
        elif out.shape[1] != self.chunk_length:
            raise ValueError(f"TorchScript policy returned {out.shape[1]} actions, declared {self.chunk_length}")
        return out

    @torch.no_grad()
    def encode_images(self, images) -> np.ndarray:
        if not self._has_encoder:
            raise NotImplementedError("this TorchScript policy has no encode_images method")
        return self.module.encode_images(_as_tensor(images, torch.uint8, self.device)).cpu().numpy()


# --- artifact -----------------------------------------------------------------------------------------
def save_artifact(net: BCPolicyNet, config: BCPolicyConfig, path: str | Path, info: dict | None = None) -> Path:
    """Write the frozen BC artifact: one .safetensors file (weights + normaliser buffers), with the
    config and training info as json in its metadata. No pickle."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    metadata = {"format": ARTIFACT_FORMAT, "config": json.dumps(asdict(config)),
                "info": json.dumps(info or {})}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # the temporary file was created private
    tmp.replace(path)
    return path


def load_artifact(path: str | Path) -> tuple[BCPolicyNet, BCPolicyConfig, dict]:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise PolicyLoadError(f"{path}: not a readable safetensors file ({exc})") from None
    if meta.get("format") != ARTIFACT_FORMAT:
        raise PolicyLoadError(f"{path}: not a BC policy artifact (format {meta.get('format')!r}, "
                              f"expected {ARTIFACT_FORMAT!r})")
    try:
        config = BCPolicyConfig(**json.loads(meta["config"]))
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise PolicyLoadError(f"{path}: bad policy config in the artifact: {exc}") from None
    net = BCPolicyNet(config)
    try:
        net.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise PolicyLoadError(f"{path}: weights do not match the config: {exc}") from None
    return net, config, json.loads(meta.get("info", "{}"))


def load_base_policy(path: str | Path, device: str | torch.device = "cpu", kind: str = "auto",
                     **torchscript_overrides) -> BasePolicy:
    """A frozen base policy from `path`. kind: "auto" (by extension: .safetensors = BC artifact,
    .pt/.ts/.jit/.torchscript = TorchScript), "bc" or "torchscript"."""
    path = Path(path)
    if not path.is_file():
        raise PolicyLoadError(f"base policy file {path} does not exist")
    if kind == "auto":
        if path.suffix == ".safetensors":
            kind = "bc"
        elif path.suffix in TORCHSCRIPT_SUFFIXES:
            kind = "torchscript"
        else:
            raise PolicyLoadError(f"{path}: cannot tell the policy kind from the extension "
                                  f"(.safetensors or {', '.join(TORCHSCRIPT_SUFFIXES)}); pass kind=")
    if kind == "bc":
        net, config, info = load_artifact(path)
        return BCBasePolicy(net, config, info, device)
    if kind == "torchscript":
        return TorchScriptBasePolicy(path, device, **torchscript_overrides)
    raise PolicyLoadError(f"unknown base policy kind '{kind}' (auto, bc or torchscript)")


class _ScriptablePolicy(torch.nn.Module):
    """BCPolicyNet with encode_images exported as a TorchScript method."""

    def __init__(self, net: BCPolicyNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.net(state, images)

    @torch.jit.export
    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return self.net.encode_images(images)


def export_torchscript(artifact: str | Path, out: str | Path) -> Path:
    """Export a BC artifact as a TorchScript policy (with its resfit_policy.json description)."""
    net, config, _ = load_artifact(artifact)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.script(_ScriptablePolicy(net.eval()))
    meta = {"joint_names": config.joint_names, "chunk_length": config.chunk_length,
            "camera_names": config.camera_names, "image_size": config.image_size,
            "state_keys": config.state_keys, "extra_names": config.extra_names,
            "feature_dim": config.feature_dim}
    out = Path(out)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(scripted, str(out), _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
    return out
