"""Shared-memory segments that Fast DDS leaves behind when a process is killed (kill -9, OOM, crash).

Every Fast DDS participant maps `/dev/shm/fastdds_<16 hex>` for its data and holds an exclusive
flock on the lock file `fastdds_<16 hex>_el` (or a shared one on `..._sl`) for as long as it lives.
A process that exits normally removes both; one that is killed cannot, and its segment stays in
RAM (tmpfs) until someone removes it: ~150 KB per killed process, and a robot whose runner respawns
crashed nodes for weeks, or a fault bench that kills nodes on purpose, piles them up (206 files,
56 MB on a test machine after a day of test and bench runs).

A segment is dead when nobody holds its lock: the lock can then be taken without waiting. Fresh
files are left alone whatever their lock says (a participant that is starting may not hold its
lock yet). Ports (`fastdds_port<N>`) are shared by every participant and are Fast DDS's own
business: never touched. No rclpy: the runner calls this after a node died and after shutdown.
"""
from __future__ import annotations

import fcntl
import os
import re
import time
from pathlib import Path

SHM_DIR = Path("/dev/shm")
SEGMENT_LOCK = re.compile(r"^fastdds_[0-9a-f]{16}_(el|sl)$")


def _lock_is_free(path: Path) -> bool:
    """True when an exclusive flock can be taken at once (then released): no live holder."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False                       # gone or unreadable: not ours to judge
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False                       # held by a live participant
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


def remove_dead_fastdds_segments(directory: Path = SHM_DIR, min_age_s: float = 10.0) -> int:
    """Remove the segments (and their lock files) of Fast DDS participants that no longer exist;
    returns how many segments were removed. Never raises: a file that vanishes meanwhile or that
    belongs to another user is skipped."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0                           # no /dev/shm (another OS): nothing to do
    now = time.time()
    removed = 0
    for name in names:
        if not SEGMENT_LOCK.match(name):
            continue
        lock = Path(directory) / name
        segment = lock.with_name(name[:-3])
        try:
            newest = max(lock.stat().st_mtime, segment.stat().st_mtime if segment.exists() else 0.0)
        except OSError:
            continue
        if now - newest < min_age_s or not _lock_is_free(lock):
            continue
        try:
            segment.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
        except OSError:
            continue                       # another user's (sticky /dev/shm): not ours to remove
        removed += 1
    return removed
