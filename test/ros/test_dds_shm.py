"""The runner's clean-up of Fast DDS segments left by killed processes (resfit_ros/dds_shm.py)."""
from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from resfit_ros.dds_shm import SHM_DIR, remove_dead_fastdds_segments
from test.support import fastdds_segment_locks


def fake_segment(directory: Path, hex16: str, age_s: float) -> tuple[Path, Path]:
    segment, lock = directory / f"fastdds_{hex16}", directory / f"fastdds_{hex16}_el"
    for path in (segment, lock):
        path.write_bytes(b"x")
        then = time.time() - age_s
        os.utime(path, (then, then))
    return segment, lock


def test_only_old_segments_whose_lock_nobody_holds_are_removed(tmp_path):
    dead = fake_segment(tmp_path, "0123456789abcdef", age_s=60)
    fresh = fake_segment(tmp_path, "1111111111111111", age_s=0)       # a participant still starting
    held = fake_segment(tmp_path, "2222222222222222", age_s=60)
    port = tmp_path / "fastdds_port7411"                                # shared ports: never touched
    port.write_bytes(b"x")
    (tmp_path / "fastdds_port7411_el").write_bytes(b"x")
    other = tmp_path / "fastdds_notahexname_el"
    other.write_bytes(b"x")
    with open(held[1], "rb") as holder:                                 # a live participant's lock
        fcntl.flock(holder, fcntl.LOCK_EX)
        assert remove_dead_fastdds_segments(tmp_path, min_age_s=10) == 1
    assert not dead[0].exists() and not dead[1].exists()
    assert all(p.exists() for p in (*fresh, *held, port, other))
    assert remove_dead_fastdds_segments(tmp_path / "missing") == 0


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this machine")
def test_a_killed_participants_segment_goes_and_a_live_ones_stays(ros_context):
    # our own participant (ros_context) is alive; a child process with its own participant is killed -9
    ours = fastdds_segment_locks()
    assert ours, "Fast DDS shared memory is not in use here"
    child = subprocess.Popen([sys.executable, "-c", (
        "import time, rclpy\n"
        "rclpy.init(); node = rclpy.create_node('doomed')\n"
        "print('up', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "up"
        theirs = fastdds_segment_locks(child.pid)
        assert theirs and all(p.exists() for p in theirs)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    assert all(p.exists() for p in theirs)                              # kill -9 leaves them behind
    assert remove_dead_fastdds_segments(min_age_s=0) >= len(theirs)
    assert not any(p.exists() or p.with_name(p.name[:-3]).exists() for p in theirs)
    assert all(p.exists() and p.with_name(p.name[:-3]).exists() for p in ours)
    # and our participant still works: a message to ourselves arrives
    from std_msgs.msg import String
    got = []
    ros_context.node.create_subscription(String, "/shm_check", lambda m: got.append(m.data), 10)
    pub = ros_context.node.create_publisher(String, "/shm_check", 10)
    assert ros_context.spin_until(lambda: (pub.publish(String(data="ok")), bool(got))[1], timeout=10)


def test_a_segment_that_cannot_be_removed_is_skipped_without_an_error(tmp_path):
    # unlink fails (as for another user's file in sticky /dev/shm; a directory fails even for root)
    stuck = tmp_path / "fastdds_3333333333333333"
    stuck.mkdir()
    lock = tmp_path / "fastdds_3333333333333333_el"
    lock.write_bytes(b"x")
    for path in (stuck, lock):
        os.utime(path, (time.time() - 60, time.time() - 60))
    dead = fake_segment(tmp_path, "4444444444444444", age_s=60)
    assert remove_dead_fastdds_segments(tmp_path) == 1                 # the other one still goes
    assert stuck.exists() and lock.exists() and not dead[0].exists()
