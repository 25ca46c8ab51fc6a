"""Crash-safe checkpoints without pickle: safetensors for tensors, JSON for everything else.

Layout of a checkpoint root directory:

    root/
      latest                  one line: the name of the newest complete checkpoint
      ckpt-000007/
        tensors.safetensors   every tensor (weights, optimiser moments, RNG states)
        meta.json             the rest + the SHA-256 of tensors.safetensors

A save writes a NEW directory under a temporary name, fsyncs it, renames it into place (atomic),
then atomically replaces `latest` (write temp file + os.replace) and finally prunes old
checkpoints. A crash at any point leaves `latest` pointing at a complete checkpoint.

`flatten`/`unflatten` turn a nested state dict (dicts, lists, tensors, numbers, strings, None) into
(tensors, json) and back; dicts with non-string keys (optimiser states are keyed by int) survive.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

TENSORS_FILE = "tensors.safetensors"
META_FILE = "meta.json"
LATEST_FILE = "latest"
PREFIX = "ckpt-"
FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete or corrupt (the message names the path and the problem)."""


# --- nested state <-> (tensors, json) -----------------------------------------------------------
def flatten(state: Any, tensors: dict[str, torch.Tensor], path: str = "") -> Any:
    """JSON-able skeleton of `state`; tensors/arrays are moved into `tensors` under their path."""
    if isinstance(state, torch.Tensor):
        tensors[path] = state.detach().cpu().contiguous().clone()
        return {"__tensor__": path}
    if isinstance(state, np.ndarray):
        tensors[path] = torch.from_numpy(np.ascontiguousarray(state).copy())
        return {"__ndarray__": path}
    if isinstance(state, dict):
        if all(isinstance(k, str) for k in state):
            return {"__dict__": {k: flatten(v, tensors, f"{path}.{k}" if path else k) for k, v in state.items()}}
        return {"__items__": [[k, flatten(v, tensors, f"{path}.{k}")] for k, v in state.items()]}
    if isinstance(state, (list, tuple)):
        kind = "__tuple__" if isinstance(state, tuple) else "__list__"
        return {kind: [flatten(v, tensors, f"{path}.{i}") for i, v in enumerate(state)]}
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    if isinstance(state, (np.integer, np.floating, np.bool_)):
        return state.item()
    raise TypeError(f"cannot checkpoint {path!r} of type {type(state).__name__}")


def unflatten(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__ndarray__" in skeleton:
            return tensors[skeleton["__ndarray__"]].numpy()
        if "__dict__" in skeleton:
            return {k: unflatten(v, tensors) for k, v in skeleton["__dict__"].items()}
        if "__items__" in skeleton:
            return {k: unflatten(v, tensors) for k, v in skeleton["__items__"]}
        if "__tuple__" in skeleton:
            return tuple(unflatten(v, tensors) for v in skeleton["__tuple__"])
        if "__list__" in skeleton:
            return [unflatten(v, tensors) for v in skeleton["__list__"]]
        raise CheckpointError(f"unknown checkpoint node {sorted(skeleton)}")
    return skeleton


# --- files -----------------------------------------------------------------------------------------
def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _existing(root: Path) -> list[Path]:
    return sorted(p for p in root.glob(PREFIX + "*") if p.is_dir() and p.name[len(PREFIX):].isdigit())


def write_checkpoint(root: str | Path, state: dict[str, Any], keep_last: int = 2) -> Path:
    """Save nested `state` as a new checkpoint under `root`; returns its directory."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    existing = _existing(root)
    number = int(existing[-1].name[len(PREFIX):]) + 1 if existing else 1
    final = root / f"{PREFIX}{number:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    save_file(tensors, str(tmp / TENSORS_FILE))
    meta = {"format_version": FORMAT_VERSION, "tensors_sha256": _sha256(tmp / TENSORS_FILE),
            "state": skeleton}
    with open(tmp / META_FILE, "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp / TENSORS_FILE, "rb+") as f:
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    os.rename(tmp, final)                      # atomic: `final` is complete or absent
    latest_tmp = root / f".{LATEST_FILE}.tmp-{os.getpid()}"
    with open(latest_tmp, "w") as f:
        f.write(final.name + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(latest_tmp, root / LATEST_FILE)   # atomic switch to the new checkpoint
    _fsync_dir(root)
    for old in _existing(root)[:-max(keep_last, 1)]:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory: `path` itself if it holds meta.json, else the one `latest` names."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return path
    latest = path / LATEST_FILE
    if not latest.is_file():
        raise CheckpointError(f"no checkpoint at {path}: neither {META_FILE} nor {LATEST_FILE} exists")
    name = latest.read_text().strip()
    target = path / name
    if not name or not (target / META_FILE).is_file():
        raise CheckpointError(f"{latest} names {name!r}, which is not a complete checkpoint directory")
    return target


def checkpoint_candidates(path: str | Path) -> list[Path]:
    """Checkpoint directories to resume from, best first: `path` itself if it is one; otherwise
    the one `latest` names, then every other `ckpt-*` directory of the root, newest first. A
    reader tries them in order, so a corrupt newest checkpoint falls back to the one before it."""
    path = Path(path)
    if (path / META_FILE).is_file():
        return [path]
    out: list[Path] = []
    latest = path / LATEST_FILE
    if latest.is_file():
        try:
            name = latest.read_text().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if name and "/" not in name and (path / name).is_dir():
            out.append(path / name)
    out += [p for p in reversed(_existing(path)) if p not in out]
    return out


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], Path]:
    """(nested state, checkpoint directory). Raises CheckpointError on anything missing or corrupt."""
    directory = resolve_checkpoint(path)
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint {directory}: {META_FILE} is unreadable or corrupt ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {directory}: unsupported format version "
                              f"{meta.get('format_version') if isinstance(meta, dict) else None!r}")
    tensor_path = directory / TENSORS_FILE
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint {directory}: {TENSORS_FILE} is missing")
    if _sha256(tensor_path) != meta.get("tensors_sha256"):
        raise CheckpointError(f"checkpoint {directory}: {TENSORS_FILE} is corrupt (checksum mismatch)")
    try:
        tensors = load_file(str(tensor_path))
        state = unflatten(meta["state"], tensors)
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {directory}: cannot decode ({exc})") from None
    return state, directory
