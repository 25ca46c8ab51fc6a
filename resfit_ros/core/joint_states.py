"""JointStateMerger maps each JointState input (any name order, any subset of the robot's joints) by NAME into the
robot description's order and merges the group messages of one synchronised set into full (dof,)
position and velocity vectors. Unknown names, duplicate names, wrong array lengths, non-finite
values (per message) and missing or doubly covered joints (per set) are rejected with a reason,
counted, and reported by name.

ExtraStateParser: named task-state values (a JointState used as names + positions), checked the
same way. `stale_or_future`: whether a state may stand for the robot's position now. No rclpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

# rejection reasons of JointStateMerger (keys of JointStateMerger.rejected)
JS_UNKNOWN_NAME = "unknown_name"
JS_DUPLICATE_NAME = "duplicate_name"
JS_WRONG_LENGTH = "wrong_length"
JS_NONFINITE = "nonfinite"
JS_EMPTY = "empty"
JS_MISSING = "missing"
JS_OVERLAP = "overlap"
JS_REASONS = (JS_UNKNOWN_NAME, JS_DUPLICATE_NAME, JS_WRONG_LENGTH, JS_NONFINITE, JS_EMPTY,
              JS_MISSING, JS_OVERLAP)


class JointStateError(ValueError):
    """A JointState message or set was rejected; `reason` is one of JS_REASONS."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class JointSample:
    """One validated JointState message, mapped into the robot's joint order."""

    indices: np.ndarray   # (k,) int, positions in the robot's joint order
    position: np.ndarray  # (k,) float64
    velocity: np.ndarray  # (k,) float64


class JointStateMerger:
    """Name-based mapping of JointState inputs into the robot's order (see the module doc).

    parse(): per message (rejects unknown/duplicate names, wrong lengths, NaN/inf, empty).
    merge(): per synchronised set (rejects joints covered by no input or by two inputs).
    Both raise JointStateError(reason, message) and count the reason in `rejected`.
    """

    def __init__(self, joint_names: Sequence[str], ignored_names: Sequence[str] = (),
                 velocity_required: bool = True) -> None:
        self.joint_names = list(joint_names)
        if len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f"joint_names has duplicates: {self.joint_names}")
        self._index = {n: i for i, n in enumerate(self.joint_names)}
        overlap = sorted(set(ignored_names) & set(self._index))
        if overlap:
            raise ValueError(f"ignored_names {overlap} are joints of the robot")
        self.ignored = frozenset(ignored_names)
        self.velocity_required = velocity_required
        self.rejected = {r: 0 for r in JS_REASONS}
        self.accepted = 0
        self._maps: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}  # names -> (src, dst)

    @property
    def dof(self) -> int:
        return len(self.joint_names)

    def _reject(self, reason: str, message: str) -> JointStateError:
        self.rejected[reason] += 1
        return JointStateError(reason, message)

    def _mapping(self, names: tuple[str, ...], where: str) -> tuple[np.ndarray, np.ndarray]:
        cached = self._maps.get(names)
        if cached is not None:
            return cached
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise self._reject(JS_DUPLICATE_NAME, f"{where}: duplicate joint name(s) {dupes}")
        unknown = [n for n in names if n not in self._index and n not in self.ignored]
        if unknown:
            raise self._reject(JS_UNKNOWN_NAME,
                               f"{where}: joint name(s) {unknown} are not in the robot description "
                               f"(add them to ignored_joint_names if they should be skipped)")
        src = np.array([k for k, n in enumerate(names) if n in self._index], dtype=np.intp)
        dst = np.array([self._index[names[k]] for k in src], dtype=np.intp)
        if len(dst) == 0:
            raise self._reject(JS_EMPTY, f"{where}: no joint of the robot in names {list(names)}")
        if len(self._maps) < 64:  # a publisher normally uses one name order; bound the cache anyway
            self._maps[names] = (src, dst)
        return src, dst

    def parse(self, names: Sequence[str], position: Any, velocity: Any = (),
              source: str = "joint state") -> JointSample:
        """Validate one JointState (names, position, velocity arrays) and map it by name."""
        names = tuple(str(n) for n in names)
        if not names:
            raise self._reject(JS_EMPTY, f"{source}: message has no joint names")
        pos = np.asarray(position, dtype=np.float64).reshape(-1)
        vel = np.asarray(velocity if velocity is not None else (), dtype=np.float64).reshape(-1)
        if len(pos) != len(names):
            raise self._reject(JS_WRONG_LENGTH,
                               f"{source}: {len(names)} names but {len(pos)} positions")
        if len(vel) == 0 and not self.velocity_required:
            vel = np.zeros(len(names))
        elif len(vel) != len(names):
            raise self._reject(JS_WRONG_LENGTH,
                               f"{source}: {len(names)} names but {len(vel)} velocities"
                               + ("" if len(vel) else " (set velocity_required false to accept none)"))
        src, dst = self._mapping(names, source)
        p, v = pos[src], vel[src]
        bad = ~(np.isfinite(p) & np.isfinite(v))
        if bad.any():
            bad_names = [self.joint_names[d] for d in dst[bad]]
            raise self._reject(JS_NONFINITE, f"{source}: non-finite position/velocity for {bad_names}")
        self.accepted += 1
        return JointSample(dst, p, v)

    def merge(self, samples: Sequence[JointSample]) -> tuple[np.ndarray, np.ndarray]:
        """(position, velocity), each (dof,), from the samples of one set; all joints exactly once."""
        position = np.zeros(self.dof)
        velocity = np.zeros(self.dof)
        count = np.zeros(self.dof, dtype=np.int64)
        for s in samples:
            position[s.indices] = s.position
            velocity[s.indices] = s.velocity
            count[s.indices] += 1
        if (count > 1).any():
            names = [self.joint_names[i] for i in np.flatnonzero(count > 1)]
            raise self._reject(JS_OVERLAP, f"joint(s) {names} are published by more than one input")
        if (count == 0).any():
            names = [self.joint_names[i] for i in np.flatnonzero(count == 0)]
            raise self._reject(JS_MISSING, f"no joint-state input publishes joint(s) {names}")
        return position, velocity


# rejection reasons of ExtraStateParser (keys of ExtraStateParser.rejected)
EXTRA_EMPTY = "empty"
EXTRA_WRONG_LENGTH = "wrong_length"
EXTRA_NONFINITE = "nonfinite"
EXTRA_NAMES_CHANGED = "names_changed"
EXTRA_REASONS = (EXTRA_EMPTY, EXTRA_WRONG_LENGTH, EXTRA_NONFINITE, EXTRA_NAMES_CHANGED)


class ExtraStateParser:
    """Named task-state values (a JointState used as names + positions) checked on arrival.

    The first accepted message of an input fixes its names (the layout of `Observation.extra`, i.e.
    of the policy's state vector); later messages must carry the same names in the same order.
    Rejects no names, names/values of different lengths and NaN/inf values. Raises
    JointStateError(reason in EXTRA_REASONS, message) and counts the reason in `rejected`.
    """

    def __init__(self) -> None:
        self.names: dict[str, tuple[str, ...]] = {}   # input -> names fixed by its first message
        self.rejected = {r: 0 for r in EXTRA_REASONS}

    def _reject(self, reason: str, message: str) -> JointStateError:
        self.rejected[reason] += 1
        return JointStateError(reason, message)

    def parse(self, source: str, names: Sequence[str], values: Any) -> tuple[list[str], list[float]]:
        names = tuple(str(n) for n in names)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if not names:
            raise self._reject(EXTRA_EMPTY, f"{source}: task state without names")
        if len(vals) != len(names):
            raise self._reject(EXTRA_WRONG_LENGTH, f"{source}: {len(names)} names but {len(vals)} values")
        if not np.all(np.isfinite(vals)):
            bad = [n for n, v in zip(names, vals) if not np.isfinite(v)]
            raise self._reject(EXTRA_NONFINITE, f"{source}: non-finite task state {bad}")
        expected = self.names.setdefault(source, names)
        if names != expected:
            raise self._reject(EXTRA_NAMES_CHANGED,
                               f"{source}: names {list(names)} differ from the first message's {list(expected)}")
        return list(names), vals.tolist()


FUTURE_TOLERANCE_NS = 1_000_000_000     # a state stamped further ahead comes from a wrong (or forged) clock
CLOCK_RESTART_NS = 10_000_000_000       # older than the newest by more: a restarted clock, not a late delivery


def stale_or_future(stamp_ns: int, newest_ns: int | None, now_ns: int) -> str | None:
    """Why a state stamped `stamp_ns` must not replace the newest one (`newest_ns`, None: none yet)
    as the robot's position: "future" (beyond the clock's tolerance) or "late" (an older state
    delivered after it); None if it may. A clock that went back by more than CLOCK_RESTART_NS (a
    restarted simulator's) starts over."""
    if stamp_ns > now_ns + FUTURE_TOLERANCE_NS:
        return "future"
    if newest_ns is not None and newest_ns - CLOCK_RESTART_NS < stamp_ns < newest_ns:
        return "late"
    return None
