"""Every node's optional `nice` and `realtime_priority` parameters: all of its threads are scheduled
so; a bad value stops the node with a line naming it (after the node's own start-up lines: the node
reads them once built); without the privilege to raise a priority the node says so and runs on."""
from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from test.support import node_argv

REPO = Path(__file__).resolve().parents[2]


def thread_nice(pid: int) -> dict[int, int]:
    """nice value of every thread of process `pid` (field 19 of /proc/<pid>/task/<tid>/stat)."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            stat = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()          # after "pid (comm) "
        out[int(tid)] = int(fields[16])                       # field 19 overall
    return out


def wait_for_line(proc, text: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and text not in proc.log_path.read_text():
        assert proc.poll() is None, proc.log_path.read_text()
        time.sleep(0.2)
    log = proc.log_path.read_text()
    assert text in log, log
    return log


def test_nice_applies_to_every_thread_of_the_node(spawn):
    proc = spawn(node_argv("echo_observation", "-p", "nice:=7"), name="echo")
    wait_for_line(proc, "running with nice 7")
    nice = thread_nice(proc.pid)
    assert len(nice) > 1                                      # DDS threads too, not just the main one
    assert set(nice.values()) == {7}, nice


def may_raise_priorities() -> bool:
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))
    except PermissionError:
        return False
    os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return True


def test_realtime_priority_puts_every_thread_under_sched_fifo_or_says_why_not(spawn):
    proc = spawn(node_argv("echo_observation", "-p", "realtime_priority:=10"), name="echo")
    if may_raise_priorities():
        wait_for_line(proc, "running with realtime_priority 10")
        tids = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task")]
        assert len(tids) > 1
        policies = {tid: os.sched_getscheduler(tid) for tid in tids}
        assert set(policies.values()) == {os.SCHED_FIFO}, policies
        assert {os.sched_getparam(tid).sched_priority for tid in tids} == {10}
    else:   # an unprivileged user: the node runs on, normally scheduled, and says why
        wait_for_line(proc, "cannot set realtime_priority 10")
        time.sleep(1.0)
        assert proc.poll() is None
        assert os.sched_getscheduler(proc.pid) == os.SCHED_OTHER


def test_a_bad_nice_value_stops_the_node_with_one_line(ros_domain):
    r = subprocess.run(node_argv("echo_observation", "-p", "nice:=42"), cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "[FATAL] configuration error: node 'echo_observation' parameters: nice must be a whole number in "
        "[-20, 19], got 42")


def test_a_bad_realtime_priority_stops_the_node_with_one_line(ros_domain):
    r = subprocess.run(node_argv("echo_observation", "-p", "realtime_priority:=120"), cwd=REPO, capture_output=True,
                       text=True, timeout=60, env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "[FATAL] configuration error: node 'echo_observation' parameters: realtime_priority must be a whole "
        "number in [0, 99] (0: normal scheduling), got 120")
