"""Policy weights on the wire: named float32 tensors as raw little-endian bytes, never pickle.

The learner packs `agent.get_weights()` with `pack_weights`; the residual node unpacks with
`unpack_weights` and checks them against the weights it already runs with `validate_update`
before `load_weights`: a bad message is rejected with a reason and the old weights stay in use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WeightsRejected(ValueError):
    """A weights update failed validation; the message says why."""


@dataclass(frozen=True)
class PackedTensor:
    name: str
    shape: tuple[int, ...]
    data: bytes          # float32 little-endian, C order


def pack_weights(weights: dict[str, np.ndarray]) -> list[PackedTensor]:
    out = []
    for name in sorted(weights):
        arr = np.ascontiguousarray(np.asarray(weights[name], dtype="<f4"))
        out.append(PackedTensor(name, tuple(int(d) for d in arr.shape), arr.tobytes()))
    return out


def unpack_weights(tensors: list[PackedTensor] | list) -> dict[str, np.ndarray]:
    """Inverse of pack_weights; also accepts resfit_ros/Tensor messages (name, shape, data)."""
    weights: dict[str, np.ndarray] = {}
    for t in tensors:
        shape = tuple(int(d) for d in t.shape)
        data = bytes(t.data)
        expected = int(np.prod(shape, dtype=np.int64)) * 4
        if len(data) != expected:
            raise WeightsRejected(f"tensor '{t.name}': {len(data)} bytes for shape {shape} (expected {expected})")
        if t.name in weights:
            raise WeightsRejected(f"tensor '{t.name}' appears twice")
        weights[t.name] = np.frombuffer(data, dtype="<f4").reshape(shape).copy()
    return weights


def validate_update(new: dict[str, np.ndarray], current: dict[str, np.ndarray],
                    new_version: int, current_version: int) -> None:
    """Raise WeightsRejected unless `new` can replace `current`: same names and shapes, all finite,
    version strictly increasing."""
    if new_version <= current_version:
        raise WeightsRejected(f"version {new_version} is not newer than the running version {current_version}")
    missing = sorted(set(current) - set(new))
    extra = sorted(set(new) - set(current))
    if missing or extra:
        raise WeightsRejected(f"tensor names differ: missing {missing[:5]}, unexpected {extra[:5]}")
    for name, arr in new.items():
        if arr.shape != current[name].shape:
            raise WeightsRejected(f"tensor '{name}': shape {arr.shape}, expected {current[name].shape}")
        if not np.all(np.isfinite(arr)):
            raise WeightsRejected(f"tensor '{name}' has non-finite values")
