"""Every node's optional `nice` parameter: all of its threads run at that CPU priority; a bad value
stops the node with a line naming it (after the node's own start-up lines: the node reads it once built)."""
from __future__ import annotations

import os
import subprocess
import sys
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


def test_nice_applies_to_every_thread_of_the_node(spawn):
    proc = spawn(node_argv("echo_observation", "-p", "nice:=7"), name="echo")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "running at nice 7" not in proc.log_path.read_text():
        assert proc.poll() is None, proc.log_path.read_text()
        time.sleep(0.2)
    assert "running at nice 7" in proc.log_path.read_text(), proc.log_path.read_text()
    nice = thread_nice(proc.pid)
    assert len(nice) > 1                                      # DDS threads too, not just the main one
    assert set(nice.values()) == {7}, nice


def test_a_bad_nice_value_stops_the_node_with_one_line(ros_domain):
    r = subprocess.run(node_argv("echo_observation", "-p", "nice:=42"), cwd=REPO, capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "[FATAL] configuration error: node 'echo_observation' parameters: nice must be a whole number in "
        "[-20, 19], got 42")
