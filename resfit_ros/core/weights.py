"""Policy weights on the wire: named float32 tensors as raw little-endian bytes, never pickle.

The learner packs `agent.get_weights()` with `pack_weights`; the residual node unpacks with
`unpack_weights`, checks that the version increases and hands them to
`ResidualPolicy.load_weights`, which validates names, shapes and finiteness: a bad message is
rejected with a reason and the old weights stay in use.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WeightsRejected(ValueError):
    """A weights update failed validation; the message says why, `reason` names the check for
    counters (bad_tensor, wrong_dof, old_version, ...)."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


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
            raise WeightsRejected(f"tensor '{t.name}': {len(data)} bytes for shape {shape} (expected {expected})",
                                  "bad_tensor")
        if t.name in weights:
            raise WeightsRejected(f"tensor '{t.name}' appears twice", "bad_tensor")
        weights[t.name] = np.frombuffer(data, dtype="<f4").reshape(shape).copy()
    return weights
