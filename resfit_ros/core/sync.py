"""Approximate-time synchronisation of camera and joint-state streams and control-rate emission.
No rclpy.

The synchronizer node and offline bag replay run THIS code with the same inputs; every decision
is a function of the call sequence `add(input_index, stamp_ns, payload, now_ns)` only (the clock is
always passed in, there is no time.time() here), so identical input gives identical output.

ApproximateTimeSync: message_filters' ApproximateTimeSynchronizer semantics, plus checks
------------------------------------------------------------------------------------------
* One queue per input, keyed by header stamp, at most `queue_size` messages; beyond it the
  OLDEST is dropped (`queue_overflow`), as in message_filters.
* A message is checked before it is queued, in this order:
    `future`        stamp > now + future_tolerance (a publisher with a wrong clock);
    `duplicate`     stamp == the last accepted stamp of this input;
    `out_of_order`  stamp <  the last accepted stamp of this input;
    `stale`         stamp <  now - max_age (too old to be part of any usable set).
  Rejected messages are counted and never queued. So every queue is strictly increasing.
* Staleness: the age of a set is now - its OLDEST stamp, and a set older than `max_age` must never
  be emitted. Rather than find a stale set and then drop it, every `add` first drops queued
  messages older than now - max_age (`stale`), so a stale message can neither be emitted nor block
  a fresh match. (`prune(now_ns)` does the same without a new message.)
* Matching is eager, like message_filters' Python ApproximateTimeSynchronizer: when a message
  arrives, the complete sets (one message per input) that contain it and span <= `slop`
  (`max - min <= slop`: exactly slop matches, slop + 1 ns does not) are considered, and the one with
  the SMALLEST span is emitted at once (ties: the newest set, i.e. the largest oldest stamp; then
  the smallest stamps input by input). Only sets containing the new message can be complete: any
  other set was already complete, and checked, when its own last message arrived.
* Emitting consumes the set's messages and drops every OLDER message of each input (`superseded`:
  sets are emitted in stamp order, an older message can never be used any more). So no message is
  ever emitted twice, and successive sets are strictly increasing on every input.
* Time jumping back by more than `clock_jump` (simulation reset, looping bag) empties the queues
  (`incomplete`) and forgets the last stamps; otherwise every later message would be
  `out_of_order` forever. `reset()` does the same on request.
* Statistics: received, emitted, drops by reason, clock resets, and the p50/p99 age of emitted sets
  (now - oldest stamp) over a fixed-size ring of recent sets (bounded memory).

Control-rate emission: decision and why
---------------------------------------
The synchronizer node publishes at most one observation per control period. Two options:
  (a) a timer ticking at the control rate emits the latest complete set at each tick;
  (b) every synchronised set passes a gate that keeps the FIRST set of each control period of the
      set's joint-state STAMP.
We use (b), `ControlRateGate`: the gate keeps a set iff its reference stamp lies in a later period
`stamp_ns // period_ns` than the last kept set AND at least `min_spacing_fraction * period` after it.
Why:
  * Reproducible: (a) depends on when the node's timer fired, which no bag records; (b) depends
    only on message stamps, so replaying the bag's raw messages through `ControlRateSynchronizer`
    (see `replay`) reproduces the live observations.
  * No added latency: a set is published the moment it is complete; (a) waits up to a period.
  * The grid is absolute (stamp // period), so a replay that starts mid-bag lands on the same
    control steps as the live run.
  * The minimum spacing keeps two observations from arriving a few microseconds apart across a
    period boundary (stamp jitter), which would let the command's per-step change limit
    (max_velocity / control rate) be applied twice in almost no time. With sets arriving faster
    than the control rate the mean output rate is still the control rate.
Exactness of the replay needs the same arrival order across inputs and the same `now` values as
the live node: `replay` feeds the bag in log-time order with now = log time. Where the recorder's
receive order/time can differ from the synchronizer's, record the synchronizer's own call sequence
(input index, stamp, now per `add`; `ControlRateSynchronizer.trace` keeps it when asked) and replay
that: the payload is found by (input, stamp), which is unique because duplicates are rejected.
`core/synchronizer.SynchronizerCore` is the node's whole per-message logic around these
classes (topic -> input, JointState checks (core/joint_states.py), assembly, sequence numbers);
the node and the conversion of `ros2 bag record` bags (bags/raw_record.py) both run it.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np

from resfit_ros.config import require

NS_PER_S = 1_000_000_000

# drop reasons of ApproximateTimeSync (keys of SyncStats.dropped)
DROP_QUEUE_OVERFLOW = "queue_overflow"
DROP_STALE = "stale"
DROP_OUT_OF_ORDER = "out_of_order"
DROP_DUPLICATE = "duplicate"
DROP_FUTURE = "future"
DROP_SUPERSEDED = "superseded"
DROP_INCOMPLETE = "incomplete"
DROP_REASONS = (DROP_QUEUE_OVERFLOW, DROP_STALE, DROP_OUT_OF_ORDER, DROP_DUPLICATE, DROP_FUTURE,
                DROP_SUPERSEDED, DROP_INCOMPLETE)

def seconds_to_ns(seconds: float) -> int:
    return int(round(seconds * NS_PER_S))


@dataclass
class SyncConfig:
    """Synchronizer: which inputs are aligned, how tightly, how fresh, and at what rate."""

    inputs: list[str] = field(default_factory=lambda: ["joint_states"])
    """Names of the synchronised inputs in index order (cameras and joint-state topics); used in
    messages and statistics. The node maps each subscription to its index."""
    reference_input: str = "joint_states"
    """The input whose stamp is the control-step time (Observation.header.stamp) and drives the
    control-rate gate: a joint-state input."""
    queue_size: int = 10
    """Messages kept per input while waiting for a match; beyond it the oldest is dropped."""
    queue_sizes: list[int] = field(default_factory=list)
    """Per-input queue sizes in `inputs` order (e.g. larger for a 500 Hz joint-state input);
    empty = `queue_size` for every input."""
    slop_s: float = 0.02
    """Largest allowed span (newest - oldest stamp) of a synchronised set, seconds; inclusive."""
    max_age_s: float = 0.2
    """Messages older than this relative to the current time are dropped; no set with an older
    member is ever emitted (its age = now - oldest stamp), seconds."""
    future_tolerance_s: float = 0.01
    """Stamps more than this ahead of the current time are rejected (publisher clock wrong)."""
    clock_jump_s: float = 1.0
    """The current time going BACK by more than this (sim reset, looping bag) resets the
    synchronizer; smaller backward steps (thread scheduling) are tolerated."""
    control_rate_hz: float = 20.0
    """At most one observation per control period of the reference stamp (ControlRateGate)."""
    min_spacing_fraction: float = 0.5
    """Two emitted observations are at least this fraction of a control period apart (stamps)."""
    age_window: int = 1000
    """Number of recent emitted sets the age percentiles are computed over (bounded memory)."""
    ignored_joint_names: list[str] = field(default_factory=list)
    """Joint names in JointState messages that are not in the robot description and are
    silently skipped (e.g. passive wheels); any other unknown name rejects the message."""
    velocity_required: bool = True
    """Reject JointState messages without velocities; false = a missing velocity array reads as 0."""

    def __post_init__(self) -> None:
        require(len(self.inputs) >= 1, f"inputs must name at least one input, got {self.inputs!r}")
        dupes = sorted({n for n in self.inputs if self.inputs.count(n) > 1})
        require(not dupes, f"inputs has duplicate names {dupes}")
        require(self.reference_input in self.inputs,
                f"reference_input {self.reference_input!r} is not one of inputs {self.inputs!r}")
        require(self.queue_size >= 1, f"queue_size must be >= 1, got {self.queue_size}")
        require(not self.queue_sizes or len(self.queue_sizes) == len(self.inputs),
                f"queue_sizes has {len(self.queue_sizes)} entries for {len(self.inputs)} inputs: "
                f"{self.queue_sizes!r}")
        require(all(q >= 1 for q in self.queue_sizes), f"queue_sizes must all be >= 1, got {self.queue_sizes!r}")
        require(self.slop_s >= 0 and np.isfinite(self.slop_s), f"slop_s must be >= 0, got {self.slop_s}")
        require(self.max_age_s > 0 and np.isfinite(self.max_age_s), f"max_age_s must be > 0, got {self.max_age_s}")
        require(self.max_age_s >= self.slop_s,
                f"max_age_s ({self.max_age_s}) must be >= slop_s ({self.slop_s}) or no set can be fresh")
        require(self.future_tolerance_s >= 0 and np.isfinite(self.future_tolerance_s),
                f"future_tolerance_s must be >= 0, got {self.future_tolerance_s}")
        require(self.clock_jump_s > 0 and np.isfinite(self.clock_jump_s),
                f"clock_jump_s must be > 0, got {self.clock_jump_s}")
        require(self.control_rate_hz > 0 and np.isfinite(self.control_rate_hz),
                f"control_rate_hz must be > 0, got {self.control_rate_hz}")
        require(0.0 <= self.min_spacing_fraction <= 1.0,
                f"min_spacing_fraction must be in [0, 1], got {self.min_spacing_fraction}")
        require(self.age_window >= 1, f"age_window must be >= 1, got {self.age_window}")

    def input_queue_sizes(self) -> list[int]:
        return list(self.queue_sizes) if self.queue_sizes else [self.queue_size] * len(self.inputs)

    @property
    def reference_index(self) -> int:
        return self.inputs.index(self.reference_input)


@dataclass(frozen=True)
class SyncedSet:
    """One emitted set: one message per input, in input order."""

    stamps_ns: tuple[int, ...]   # (n_inputs,) header stamps
    payloads: tuple[Any, ...]    # (n_inputs,) what was passed to add()
    emitted_at_ns: int           # `now` of the add() that completed the set

    @property
    def oldest_ns(self) -> int:
        return min(self.stamps_ns)

    @property
    def newest_ns(self) -> int:
        return max(self.stamps_ns)

    @property
    def span_ns(self) -> int:
        return self.newest_ns - self.oldest_ns

    @property
    def age_ns(self) -> int:
        """now - oldest stamp at emission."""
        return self.emitted_at_ns - self.oldest_ns


@dataclass(frozen=True)
class SyncStats:
    received: int
    emitted: int
    dropped: dict[str, int]          # reason -> messages, every reason in DROP_REASONS present
    dropped_by_input: list[dict[str, int]]  # the same per input
    clock_resets: int
    age_p50_s: float                 # NaN before the first emitted set
    age_p99_s: float
    queued: list[int]                # messages waiting per input

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class ApproximateTimeSync:
    """message_filters ApproximateTime policy + max age, order and future checks (module doc).

    Thread-safe (one lock around add/prune/reset), but deterministic only for a fixed call order.
    """

    def __init__(self, num_inputs: int, queue_sizes: int | Sequence[int], slop_ns: int, max_age_ns: int,
                 future_tolerance_ns: int = 10_000_000, clock_jump_ns: int = NS_PER_S,
                 age_window: int = 1000, input_names: Sequence[str] | None = None) -> None:
        if num_inputs < 1:
            raise ValueError(f"num_inputs must be >= 1, got {num_inputs}")
        sizes = [queue_sizes] * num_inputs if isinstance(queue_sizes, (int, np.integer)) else list(queue_sizes)
        if len(sizes) != num_inputs or any(int(q) < 1 for q in sizes):
            raise ValueError(f"queue_sizes must be one int >= 1 or {num_inputs} of them, got {queue_sizes!r}")
        for name, v in (("slop_ns", slop_ns), ("max_age_ns", max_age_ns),
                        ("future_tolerance_ns", future_tolerance_ns)):
            if int(v) < 0:
                raise ValueError(f"{name} must be >= 0, got {v}")
        if clock_jump_ns <= 0 or age_window < 1:
            raise ValueError(f"clock_jump_ns and age_window must be > 0, got {clock_jump_ns}, {age_window}")
        self.num_inputs = num_inputs
        self.queue_sizes = [int(q) for q in sizes]
        self.slop_ns = int(slop_ns)
        self.max_age_ns = int(max_age_ns)
        self.future_tolerance_ns = int(future_tolerance_ns)
        self.clock_jump_ns = int(clock_jump_ns)
        self.input_names = list(input_names) if input_names is not None else [str(i) for i in range(num_inputs)]
        if len(self.input_names) != num_inputs:
            raise ValueError(f"{len(self.input_names)} input names for {num_inputs} inputs")
        self._lock = threading.Lock()
        self.last_rejection: str | None = None
        self._stamps: list[list[int]] = [[] for _ in range(num_inputs)]     # strictly increasing
        self._payloads: list[list[Any]] = [[] for _ in range(num_inputs)]
        self._last_stamp: list[int | None] = [None] * num_inputs
        self._last_now: int | None = None
        self._received = 0
        self._emitted = 0
        self._clock_resets = 0
        self._dropped = [{r: 0 for r in DROP_REASONS} for _ in range(num_inputs)]
        self._ages = np.zeros(age_window, dtype=np.int64)  # ring of recent set ages, ns
        self._n_ages = 0

    @classmethod
    def from_config(cls, config: SyncConfig) -> "ApproximateTimeSync":
        return cls(len(config.inputs), config.input_queue_sizes(), seconds_to_ns(config.slop_s),
                   seconds_to_ns(config.max_age_s), seconds_to_ns(config.future_tolerance_s),
                   seconds_to_ns(config.clock_jump_s), config.age_window, config.inputs)

    # --- public API ---------------------------------------------------------------------------
    def add(self, input_index: int, stamp_ns: int, payload: Any, now_ns: int) -> list[SyncedSet]:
        """Offer one message of input `input_index`; returns the sets this completed (0 or 1)."""
        if not 0 <= input_index < self.num_inputs:
            raise IndexError(f"input_index {input_index} out of range for {self.num_inputs} inputs")
        stamp_ns, now_ns = int(stamp_ns), int(now_ns)
        with self._lock:
            self._received += 1
            self._advance_clock(now_ns)
            reason = self._check(input_index, stamp_ns, now_ns)
            self.last_rejection = reason  # why THIS message was not queued (None: queued)
            if reason is not None:
                self._dropped[input_index][reason] += 1
                return []
            self._last_stamp[input_index] = stamp_ns
            stamps, payloads = self._stamps[input_index], self._payloads[input_index]
            stamps.append(stamp_ns)
            payloads.append(payload)
            while len(stamps) > self.queue_sizes[input_index]:
                del stamps[0], payloads[0]
                self._dropped[input_index][DROP_QUEUE_OVERFLOW] += 1
            picks = self._best_set(input_index, stamp_ns)
            if picks is None:
                return []
            return [self._emit(picks, now_ns)]

    def prune(self, now_ns: int) -> None:
        """Drop queued messages that have become stale at `now_ns` (also done by every add)."""
        with self._lock:
            self._advance_clock(int(now_ns))

    def reset(self) -> None:
        """Empty the queues (counted `incomplete`) and forget the last stamps and time."""
        with self._lock:
            self._reset_locked()

    def stats(self) -> SyncStats:
        with self._lock:
            total = {r: sum(d[r] for d in self._dropped) for r in DROP_REASONS}
            n = min(self._n_ages, len(self._ages))
            if n:
                p50, p99 = np.percentile(self._ages[:n], [50, 99]) / NS_PER_S
            else:
                p50 = p99 = float("nan")
            return SyncStats(self._received, self._emitted, total, [dict(d) for d in self._dropped],
                             self._clock_resets, float(p50), float(p99), [len(s) for s in self._stamps])

    @property
    def clock_resets(self) -> int:
        return self._clock_resets

    def queued_stamps(self) -> list[list[int]]:
        """Copy of the stamps waiting per input (diagnostics, tests)."""
        with self._lock:
            return [list(s) for s in self._stamps]

    # --- internals ----------------------------------------------------------------------------
    def _reset_locked(self) -> None:
        for i in range(self.num_inputs):
            self._dropped[i][DROP_INCOMPLETE] += len(self._stamps[i])
            self._stamps[i].clear()
            self._payloads[i].clear()
        self._last_stamp = [None] * self.num_inputs
        self._last_now = None

    def _advance_clock(self, now_ns: int) -> None:
        if self._last_now is not None and now_ns < self._last_now - self.clock_jump_ns:
            self._clock_resets += 1
            self._reset_locked()
        self._last_now = now_ns if self._last_now is None else max(self._last_now, now_ns)
        cutoff = now_ns - self.max_age_ns  # stamps < cutoff are stale
        for i in range(self.num_inputs):
            stamps = self._stamps[i]
            k = bisect.bisect_left(stamps, cutoff)
            if k:
                del stamps[:k], self._payloads[i][:k]
                self._dropped[i][DROP_STALE] += k

    def _check(self, i: int, stamp_ns: int, now_ns: int) -> str | None:
        if stamp_ns > now_ns + self.future_tolerance_ns:
            return DROP_FUTURE
        last = self._last_stamp[i]
        if last is not None:
            if stamp_ns == last:
                return DROP_DUPLICATE
            if stamp_ns < last:
                return DROP_OUT_OF_ORDER
        if stamp_ns < now_ns - self.max_age_ns:
            self._last_stamp[i] = stamp_ns  # in order, just too old: later messages compare to it
            return DROP_STALE
        return None

    def _best_set(self, pivot_input: int, pivot_stamp: int) -> list[int] | None:
        """Per-input queue positions of the best complete set containing the new message, or None.

        Every window [lo, lo + slop] with lo an existing stamp in [pivot - slop, pivot] is tried;
        in it each other input takes its earliest stamp >= lo (this minimises the set's newest
        stamp for that oldest stamp). Best = smallest span, then largest lo, then smallest stamps.
        """
        slop = self.slop_ns
        lows = {pivot_stamp}
        for j in range(self.num_inputs):
            if j == pivot_input:
                continue
            s = self._stamps[j]
            if not s:
                return None
            a = bisect.bisect_left(s, pivot_stamp - slop)
            b = bisect.bisect_right(s, pivot_stamp)
            lows.update(s[a:b])
        best_key = None
        best_picks = None
        for lo in lows:
            picks = []
            newest = pivot_stamp
            ok = True
            for j in range(self.num_inputs):
                s = self._stamps[j]
                if j == pivot_input:
                    picks.append(len(s) - 1)  # the new message is the newest of its queue
                    continue
                k = bisect.bisect_left(s, lo)
                if k == len(s) or s[k] > lo + slop:
                    ok = False
                    break
                picks.append(k)
                newest = max(newest, s[k])
            if not ok or newest - lo > slop:
                continue
            key = (newest - lo, -lo, tuple(self._stamps[j][k] for j, k in enumerate(picks)))
            if best_key is None or key < best_key:
                best_key, best_picks = key, picks
        return best_picks

    def _emit(self, picks: list[int], now_ns: int) -> SyncedSet:
        stamps, payloads = [], []
        for j, k in enumerate(picks):
            stamps.append(self._stamps[j][k])
            payloads.append(self._payloads[j][k])
            self._dropped[j][DROP_SUPERSEDED] += k  # older than the emitted message: unusable
            del self._stamps[j][:k + 1], self._payloads[j][:k + 1]
        out = SyncedSet(tuple(stamps), tuple(payloads), now_ns)
        self._ages[self._n_ages % len(self._ages)] = out.age_ns
        self._n_ages += 1
        self._emitted += 1
        return out


class ControlRateGate:
    """Keeps at most one set per control period of its reference stamp (see the module doc).

    A stamp is kept iff `stamp // period` is later than the last kept one's AND it is at least
    `min_spacing` after the last kept stamp. Depends on stamps only (reproducible offline).
    """

    def __init__(self, control_rate_hz: float, min_spacing_fraction: float = 0.5) -> None:
        if not (control_rate_hz > 0 and np.isfinite(control_rate_hz)):
            raise ValueError(f"control_rate_hz must be > 0, got {control_rate_hz}")
        if not 0.0 <= min_spacing_fraction <= 1.0:
            raise ValueError(f"min_spacing_fraction must be in [0, 1], got {min_spacing_fraction}")
        self.period_ns = max(1, int(round(NS_PER_S / control_rate_hz)))
        self.min_spacing_ns = int(round(self.period_ns * min_spacing_fraction))
        self._last_stamp: int | None = None
        self.passed = 0
        self.decimated = 0

    def offer(self, stamp_ns: int) -> bool:
        stamp_ns = int(stamp_ns)
        last = self._last_stamp
        if last is not None and (stamp_ns // self.period_ns <= last // self.period_ns
                                 or stamp_ns - last < self.min_spacing_ns):
            self.decimated += 1
            return False
        self._last_stamp = stamp_ns
        self.passed += 1
        return True

    def reset(self) -> None:
        self._last_stamp = None


class SyncEvent(NamedTuple):
    """One call of the synchronizer: what the node saw, or what replay feeds it."""

    input_index: int
    stamp_ns: int
    now_ns: int
    payload: Any = None


class ControlRateSynchronizer:
    """ApproximateTimeSync followed by ControlRateGate on the reference input's stamp.

    What the synchronizer node runs live and `replay` runs offline. `trace=True` keeps the call
    sequence (SyncEvent without payload) so a replay can use the exact live arrival order.
    """

    def __init__(self, config: SyncConfig, trace: bool = False) -> None:
        self.config = config
        self.sync = ApproximateTimeSync.from_config(config)
        self.gate = ControlRateGate(config.control_rate_hz, config.min_spacing_fraction)
        self.reference_index = config.reference_index
        self.trace: list[SyncEvent] | None = [] if trace else None
        self._clock_resets_seen = 0

    def add(self, input_index: int, stamp_ns: int, payload: Any, now_ns: int) -> list[SyncedSet]:
        """Offer a message; returns the sets to publish now (0 or 1)."""
        if self.trace is not None:
            self.trace.append(SyncEvent(int(input_index), int(stamp_ns), int(now_ns)))
        sets = self.sync.add(input_index, stamp_ns, payload, now_ns)
        resets = self.sync.clock_resets
        if resets != self._clock_resets_seen:  # time jumped back: the period grid restarts too
            self._clock_resets_seen = resets
            self.gate.reset()
        return [s for s in sets if self.gate.offer(s.stamps_ns[self.reference_index])]

    def drain_trace(self) -> list[SyncEvent]:
        """The calls traced since the last drain (then forgotten: bounded memory in a live node)."""
        if self.trace is None:
            return []
        out, self.trace = self.trace, []
        return out

    def reset(self) -> None:
        self.sync.reset()
        self.gate.reset()

    def stats(self) -> dict[str, Any]:
        """Flat statistics for diagnostics: sync counters, drops by reason, gate counters."""
        s = self.sync.stats()
        out: dict[str, Any] = {"received": s.received, "synchronised": s.emitted,
                               "published": self.gate.passed, "decimated": self.gate.decimated,
                               "clock_resets": s.clock_resets, "age_p50_s": s.age_p50_s,
                               "age_p99_s": s.age_p99_s}
        out.update({f"dropped/{r}": n for r, n in s.dropped.items()})
        return out


def replay(config: SyncConfig, events: Iterable[SyncEvent | tuple]) -> list[SyncedSet]:
    """Run the live synchronizer's code over recorded events; returns the published sets.

    `events`: (input_index, stamp_ns, now_ns, payload) in arrival order. From a bag: every raw
    camera/joint-state message in log-time order, now_ns = its log time, stamp = header.stamp.
    """
    syn = ControlRateSynchronizer(config)
    out: list[SyncedSet] = []
    for ev in events:
        ev = SyncEvent(*ev)
        out.extend(syn.add(ev.input_index, ev.stamp_ns, ev.payload, ev.now_ns))
    return out
