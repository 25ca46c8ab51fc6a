"""ApproximateTimeSync, ControlRateGate and replay: message_filters semantics plus the project's checks."""
from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resfit_ros.config import ConfigError
from resfit_ros.core.sync import (DROP_REASONS, ApproximateTimeSync, ControlRateGate, ControlRateSynchronizer,
    SyncConfig, SyncEvent, replay)

MS = 1_000_000


def make_sync(n=2, q=5, slop=10, max_age=1000, fut=5, jump=10_000, window=100):
    return ApproximateTimeSync(n, q, slop, max_age, fut, jump, window)


def stamps_of(sets):
    return [s.stamps_ns for s in sets]


# --- basic semantics --------------------------------------------------------------------------
def test_emits_when_set_completes_regardless_of_input_order():
    a = make_sync()
    assert a.add(1, 100, "b100", now_ns=100) == []      # input 1 first
    out = a.add(0, 102, "a102", now_ns=103)
    assert stamps_of(out) == [(102, 100)]
    assert out[0].payloads == ("a102", "b100")          # in INPUT order, not arrival order
    assert out[0].span_ns == 2 and out[0].age_ns == 3


def test_slop_is_inclusive_to_the_nanosecond():
    a = make_sync(slop=10)
    a.add(0, 100, None, 100)
    assert stamps_of(a.add(1, 110, None, 110)) == [(100, 110)]  # span == slop: emitted
    b = make_sync(slop=10)
    b.add(0, 100, None, 100)
    assert b.add(1, 111, None, 111) == []                       # slop + 1 ns: not
    assert b.queued_stamps() == [[100], [111]]


def test_picks_smallest_span_among_candidates():
    a = make_sync(slop=10)
    for t in (90, 95, 99):
        a.add(0, t, t, t)
    out = a.add(1, 100, "b", 100)
    assert stamps_of(out) == [(99, 100)]


def test_equal_span_prefers_the_newest_set():
    a = make_sync(n=2, slop=10)
    a.add(0, 8, "old", 20)
    a.add(0, 12, "new", 20)
    out = a.add(1, 10, "b", 20)               # {8, 10} and {10, 12} both span 2
    assert out[0].payloads == ("new", "b")


def test_emission_consumes_set_and_drops_older_messages():
    a = make_sync(slop=10)
    for t in (90, 95, 99, 120):   # 120 is newer than the set: must survive
        a.add(0, t, t, 120)
    a.add(1, 100, "b", 120)
    assert a.queued_stamps() == [[120], []]
    st_ = a.stats()
    assert st_.dropped["superseded"] == 2 and st_.emitted == 1


def test_queue_overflow_drops_oldest():
    a = make_sync(q=2, slop=1)
    for t in (100, 200, 300):
        a.add(0, t, t, 300)
    assert a.queued_stamps()[0] == [200, 300]
    assert a.stats().dropped["queue_overflow"] == 1
    assert a.add(1, 100, None, 300) == []   # its partner was pushed out
    assert stamps_of(a.add(1, 200, None, 300)) == [(200, 200)]


def test_per_input_queue_sizes():
    a = ApproximateTimeSync(2, [1, 3], 1, 10_000)
    for t in (1, 2, 3):
        a.add(0, t * 100, None, 300)
        a.add(1, t * 100 + 50, None, 300)
    assert a.queued_stamps() == [[300], [150, 250, 350]]


def test_duplicate_and_out_of_order_rejected_per_input():
    a = make_sync(slop=0)
    a.add(0, 100, "first", 100)
    assert a.add(0, 100, "dup", 101) == []
    assert a.add(0, 90, "old", 101) == []
    assert a.queued_stamps()[0] == [100]
    # the same stamp on ANOTHER input is normal
    out = a.add(1, 100, "b", 101)
    assert out[0].payloads == ("first", "b")
    # after emission, older/equal stamps on input 0 are still out of order / duplicates
    a.add(0, 100, "again", 102)
    a.add(0, 50, "older", 102)
    d = a.stats().dropped
    assert d["duplicate"] == 2 and d["out_of_order"] == 2


def test_future_stamps_rejected_beyond_tolerance():
    a = make_sync(fut=5)
    assert a.add(0, 105, None, 100) == []        # exactly the tolerance: accepted
    assert a.add(1, 107, None, 101) == []        # 6 ns ahead: rejected
    assert a.queued_stamps() == [[105], []]
    assert a.stats().dropped["future"] == 1
    assert a.add(1, 106, None, 102) != []        # a rejected future stamp does not block the input


def test_stale_message_rejected_on_arrival():
    a = make_sync(max_age=50)
    assert a.add(0, 100, None, 151) == []
    assert a.stats().dropped["stale"] == 1
    a.add(0, 101, None, 151)                     # age exactly max_age: accepted
    assert a.queued_stamps()[0] == [101]


def test_queued_message_expires_and_is_never_emitted():
    a = make_sync(slop=10, max_age=50)
    a.add(0, 100, "old", 100)
    # the partner arrives, in slop, but the clock says the first message is now 51 ns old
    assert a.add(1, 105, "b", 151) == []
    assert a.queued_stamps() == [[], [105]]
    assert a.stats().dropped["stale"] == 1
    assert a.stats().emitted == 0


def test_prune_without_new_message():
    a = make_sync(max_age=50)
    a.add(0, 100, None, 100)
    a.prune(151)
    assert a.queued_stamps() == [[], []] and a.stats().dropped["stale"] == 1


def test_single_input_emits_every_message():
    a = ApproximateTimeSync(1, 3, 0, 1000)
    assert [s.stamps_ns for t in (1, 2, 3) for s in a.add(0, t, t, t)] == [(1,), (2,), (3,)]


def test_clock_jump_back_resets_queues_and_order():
    a = make_sync(jump=1000)
    a.add(0, 5000, None, 5000)
    a.add(0, 5010, None, 5010)
    a.add(1, 4500, None, 4500)             # 510 ns back: tolerated, stamp in order for input 1
    assert a.stats().clock_resets == 0
    assert a.add(0, 10, None, 10) == []    # sim reset: 5000 ns back
    s = a.stats()
    assert s.clock_resets == 1 and s.dropped["incomplete"] == 3
    assert a.queued_stamps() == [[10], []]
    assert stamps_of(a.add(1, 12, None, 12)) == [(10, 12)]  # not "out of order" any more


def test_stats_counts_and_age_percentiles():
    a = make_sync(n=2, slop=0, max_age=10_000, window=4)
    for k in range(10):
        t = 1000 * (k + 1)
        a.add(0, t, None, t)
        a.add(1, t, None, t + k)           # ages 0..9 ns
    s = a.stats()
    assert s.received == 20 and s.emitted == 10 and s.dropped_total == 0
    assert set(s.dropped) == set(DROP_REASONS)
    # ring of the last 4 ages: 6, 7, 8, 9 ns
    assert s.age_p50_s == pytest.approx(7.5e-9) and s.age_p99_s == pytest.approx(8.97e-9)
    assert s.dropped_by_input[0]["stale"] == 0


def test_invalid_input_index_raises():
    with pytest.raises(IndexError):
        make_sync().add(2, 0, None, 0)


# --- against a brute-force reference ------------------------------------------------------------
class ReferenceSync:
    """Independent, slow statement of the semantics: search ALL complete sets in all queues."""

    def __init__(self, n, q, slop, max_age, fut):
        self.q, self.slop, self.max_age, self.fut = q, slop, max_age, fut
        self.queues = [dict() for _ in range(n)]
        self.last = [None] * n
        self.dropped = {r: 0 for r in DROP_REASONS}

    def add(self, i, t, payload, now):
        for qd in self.queues:
            for s in [s for s in qd if s < now - self.max_age]:
                del qd[s]
                self.dropped["stale"] += 1
        if t > now + self.fut:
            self.dropped["future"] += 1
            return []
        if self.last[i] is not None and t <= self.last[i]:
            self.dropped["duplicate" if t == self.last[i] else "out_of_order"] += 1
            return []
        self.last[i] = t
        if t < now - self.max_age:
            self.dropped["stale"] += 1
            return []
        self.queues[i][t] = payload
        if len(self.queues[i]) > self.q:
            del self.queues[i][min(self.queues[i])]
            self.dropped["queue_overflow"] += 1
        best = None
        for combo in itertools.product(*[sorted(qd) for qd in self.queues]):
            span = max(combo) - min(combo)
            if span <= self.slop:
                key = (span, -min(combo), combo)
                best = key if best is None or key < best else best
        if best is None:
            return []
        combo = best[2]
        assert combo[i] == t, "a complete set without the newest message was left over"
        payloads = tuple(self.queues[j][s] for j, s in enumerate(combo))
        for j, s in enumerate(combo):
            older = [s2 for s2 in self.queues[j] if s2 <= s]
            self.dropped["superseded"] += len(older) - 1
            for s2 in older:
                del self.queues[j][s2]
        return [(combo, payloads)]


event_lists = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(-3, 25)),
                       min_size=1, max_size=80)


@settings(max_examples=300, deadline=None)
@given(events=event_lists, n=st.integers(1, 4), q=st.integers(1, 4), slop=st.integers(0, 6),
       max_age=st.integers(6, 30))
def test_matches_brute_force_reference(events, n, q, slop, max_age):
    fast = ApproximateTimeSync(n, q, slop, max_age, future_tolerance_ns=1, clock_jump_ns=10**9)
    ref = ReferenceSync(n, q, slop, max_age, fut=1)
    now = 100
    for k, (i, dt, delay) in enumerate(events):
        i %= n
        now += dt
        got = [(s.stamps_ns, s.payloads) for s in fast.add(i, now - delay, k, now)]
        assert got == ref.add(i, now - delay, k, now)
    assert fast.stats().dropped == ref.dropped


@settings(max_examples=200, deadline=None)
@given(events=event_lists, slop=st.integers(0, 6))
def test_no_message_emitted_twice_and_sets_increase(events, slop):
    a = ApproximateTimeSync(3, 4, slop, 20, 1)
    seen = set()
    last = None
    now = 0
    for k, (i, dt, delay) in enumerate(events):
        now += dt
        for s in a.add(i % 3, now - delay, k, now):
            assert s.span_ns <= slop and s.age_ns <= 20
            for p in s.payloads:
                assert p not in seen
                seen.add(p)
            if last is not None:
                assert all(x > y for x, y in zip(s.stamps_ns, last))
            last = s.stamps_ns


# --- control rate and replay --------------------------------------------------------------------
def test_gate_keeps_first_set_per_period_with_min_spacing():
    g = ControlRateGate(20.0, 0.5)            # 50 ms periods, 25 ms spacing
    stamps = [0, 10, 49, 50, 60, 99, 100, 149, 151]
    kept = [t for t in stamps if g.offer(t * MS)]
    assert kept == [0, 50, 100, 151]          # the first stamp of each 50 ms period
    g2 = ControlRateGate(20.0, 0.5)
    kept = [t for t in [49, 51, 80, 101, 106] if g2.offer(t * MS)]
    # 51: new period but 2 ms after 49; 101: new period but 21 ms after 80: too close
    assert kept == [49, 80, 106]
    assert g2.decimated == 2 and g2.passed == 3


def test_gate_rate_from_30hz_sets_is_20hz():
    g = ControlRateGate(20.0, 0.5)
    stamps = [round(k * 1e9 / 30) + 12345 for k in range(300)]  # 10 s at 30 Hz
    kept = [t for t in stamps if g.offer(t)]
    assert len(kept) in (199, 200, 201)
    gaps = [b - a for a, b in zip(kept, kept[1:])]
    assert min(gaps) >= 25 * MS


def _camera_js_events(seconds=3.0, js_hz=500, cam_hz=30, cam_latency_ms=35, js_latency_ms=2):
    """(input, stamp, now) of a 500 Hz joint-state input (1) and a 30 Hz camera (0), log-time order."""
    ev = []
    for k in range(int(seconds * js_hz)):
        t = k * 1e9 / js_hz
        ev.append((1, round(t), round(t + js_latency_ms * MS)))
    for k in range(int(seconds * cam_hz)):
        t = k * 1e9 / cam_hz + 0.3 * MS
        ev.append((0, round(t), round(t + cam_latency_ms * MS)))
    ev.sort(key=lambda e: (e[2], e[0]))
    return [SyncEvent(i, s, n, payload=(i, s)) for i, s, n in ev]


def _cfg(**kw):
    base = dict(inputs=["camera", "joint_states"], reference_input="joint_states",
                queue_sizes=[5, 50], slop_s=0.005, max_age_s=0.2, control_rate_hz=20.0)
    base.update(kw)
    return SyncConfig(**base)


def test_replay_is_deterministic_and_at_control_rate():
    events = _camera_js_events()
    first = replay(_cfg(), events)
    second = replay(_cfg(), list(events))
    assert [(s.stamps_ns, s.payloads, s.emitted_at_ns) for s in first] == \
           [(s.stamps_ns, s.payloads, s.emitted_at_ns) for s in second]
    assert 55 <= len(first) <= 61                         # ~20 Hz over 3 s
    for s in first:
        assert s.span_ns <= 5 * MS


def test_replay_from_the_middle_lands_on_the_same_control_steps():
    events = _camera_js_events()
    full = {s.stamps_ns for s in replay(_cfg(), events)}
    tail = [e for e in events if e.now_ns >= 1_000 * MS]
    part = {s.stamps_ns for s in replay(_cfg(), tail)}
    later = {s for s in full if s[1] >= 1_100 * MS}
    assert later <= part


def test_trace_replays_exactly():
    live = ControlRateSynchronizer(_cfg(), trace=True)
    events = _camera_js_events(seconds=1.0)
    out_live = [s for e in events for s in live.add(e.input_index, e.stamp_ns, e.payload, e.now_ns)]
    payload_of = {(e.input_index, e.stamp_ns): e.payload for e in events}
    trace = live.drain_trace()
    assert live.trace == [] and len(trace) == len(events)
    rebuilt = [SyncEvent(t.input_index, t.stamp_ns, t.now_ns, payload_of[(t.input_index, t.stamp_ns)])
               for t in trace]
    assert [s.stamps_ns for s in replay(_cfg(), rebuilt)] == [s.stamps_ns for s in out_live]
    stats = live.stats()
    assert stats["published"] == len(out_live) and stats["decimated"] == stats["synchronised"] - len(out_live)


def test_clock_jump_restarts_the_gate_too():
    syn = ControlRateSynchronizer(SyncConfig(inputs=["js"], reference_input="js", control_rate_hz=20.0,
                                             clock_jump_s=0.5))
    assert syn.add(0, 10_000 * MS, None, 10_000 * MS)
    assert syn.add(0, 10 * MS, None, 10 * MS)      # sim reset: published again at once


def test_sync_config_validation_names_the_bad_value():
    with pytest.raises(ConfigError, match="reference_input 'cam'"):
        SyncConfig(inputs=["js"], reference_input="cam")
    with pytest.raises(ConfigError, match="queue_sizes has 1 entries for 2 inputs"):
        SyncConfig(inputs=["a", "js"], reference_input="js", queue_sizes=[3])
    with pytest.raises(ConfigError, match="slop_s must be >= 0, got -0.1"):
        SyncConfig(slop_s=-0.1)
    with pytest.raises(ConfigError, match="max_age_s"):
        SyncConfig(slop_s=0.5, max_age_s=0.1)


def test_assemble_observation_from_a_published_set():
    import numpy as np

    from resfit_ros.core.images import rgb_to_image_fields
    from resfit_ros.core.joint_states import JointStateMerger
    from resfit_ros.core.synchronizer import assemble_observation

    names = ["head_cam", "arm_js", "hand_js"]
    merger = JointStateMerger(["a", "b", "c"])
    arm = merger.parse(["b", "a"], [2.0, 1.0], [0.2, 0.1])
    hand = merger.parse(["c"], [3.0], [0.3])
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 200
    s = replay(SyncConfig(inputs=names, reference_input="arm_js", slop_s=0.001),
               [(1, 1000, 1000, arm), (2, 1100, 1100, hand), (0, 900, 2000, rgb_to_image_fields(rgb))])[0]
    obs = assemble_observation(s, names, {"head_cam": "head"}, merger, (4, 4), sequence=7, reference_index=1)
    assert obs.stamp_ns == 1000 and obs.sequence == 7 and obs.source_stamps_ns == [900, 1000, 1100]
    assert obs.position.tolist() == [1.0, 2.0, 3.0] and obs.velocity.tolist() == [0.1, 0.2, 0.3]
    assert obs.images["head"].shape == (4, 4, 3) and (obs.images["head"][..., 0] == 200).all()
