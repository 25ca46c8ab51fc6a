"""Arrival checks on message stamps for streams a node acts on once per message. No rclpy.

`StampOrder.check(stamp_ns, now_ns)` returns None (accepted: it becomes the last stamp) or the
reason the message is rejected, in this order:
  `future`        stamp > now + future_tolerance (a publisher with a wrong clock);
  `duplicate`     stamp == the last accepted stamp (the same message twice);
  `out_of_order`  stamp <  the last accepted stamp (older than what was already acted on).
The current time going BACK by more than `clock_jump` (simulator restart, looping bag) forgets the
last stamp, as the synchronizer does (core/sync.py), so a restarted clock is not rejected forever.
"""
from __future__ import annotations

NS_PER_S = 1_000_000_000

FUTURE = "future"
DUPLICATE = "duplicate"
OUT_OF_ORDER = "out_of_order"
REASONS = (FUTURE, DUPLICATE, OUT_OF_ORDER)


class StampOrder:
    def __init__(self, future_tolerance_s: float = 1.0, clock_jump_s: float = 1.0) -> None:
        if not future_tolerance_s >= 0 or not clock_jump_s > 0:
            raise ValueError(f"future_tolerance_s must be >= 0 and clock_jump_s > 0, got "
                             f"{future_tolerance_s}, {clock_jump_s}")
        self.future_tolerance_ns = int(round(future_tolerance_s * NS_PER_S))
        self.clock_jump_ns = int(round(clock_jump_s * NS_PER_S))
        self.last_stamp: int | None = None
        self._last_now: int | None = None

    def check(self, stamp_ns: int, now_ns: int | None = None) -> str | None:
        stamp_ns = int(stamp_ns)
        if now_ns is not None:
            now_ns = int(now_ns)
            if self._last_now is not None and now_ns < self._last_now - self.clock_jump_ns:
                self.last_stamp = None
            self._last_now = now_ns
            if stamp_ns > now_ns + self.future_tolerance_ns:
                return FUTURE
        if self.last_stamp is not None:
            if stamp_ns == self.last_stamp:
                return DUPLICATE
            if stamp_ns < self.last_stamp:
                return OUT_OF_ORDER
        self.last_stamp = stamp_ns
        return None

    def reset(self) -> None:
        self.last_stamp = None
