"""`resfit-ros launch` runs a graph of real node processes, respawns, and shuts down on Ctrl-C."""
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from resfit_ros.graph import GRAPHS, NODE_EXECUTABLES, resolve_args
from resfit_ros.nodes import NODE_MODULES
from resfit_ros.runner import node_command
from test.support import fastdds_segment_locks, stop_process

pytestmark = pytest.mark.ros


def _pids(log_text: str, name: str) -> list[int]:
    return [int(p) for p in re.findall(rf"started {name} \(pid (\d+)\)", log_text)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is not alive for our purpose
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_every_executable_has_a_module_and_a_cmake_launcher():
    assert NODE_EXECUTABLES == tuple(NODE_MODULES)
    # CMakeLists.txt reads the table's lines with this pattern (test_cmake_install builds it)
    table = open(os.path.join(os.path.dirname(__file__), "..", "..", "resfit_ros", "nodes", "__init__.py")).read()
    listed = re.findall(r'^    "([a-z_]+)": "resfit_ros\.nodes\.[a-z_]+",$', table, flags=re.M)
    assert listed == list(NODE_MODULES)
    for graph in GRAPHS.values():
        for node in graph.nodes:
            assert node.executable in NODE_EXECUTABLES, (graph.name, node.executable)


def test_node_command_matches_ros2_run_conventions():
    graph = GRAPHS["train_sim"]
    args = resolve_args(graph, {"output_dir": "/tmp/x"}, package_config_dir="/cfg")
    rec = next(n for n in graph.nodes if n.name == "recorder")
    cmd = node_command(rec, args)
    assert cmd[1:4] == ["-m", "resfit_ros.nodes", "recorder"]
    assert cmd[cmd.index("--params-file") + 1] == "/cfg/sim.yaml"
    assert "output_dir:=/tmp/x/episodes" in cmd and "__node:=recorder" in cmd
    with pytest.raises(KeyError, match="bogus"):
        resolve_args(graph, {"bogus": "1"})


def test_runner_relays_respawns_and_stops_on_ctrl_c(ros_context, ros_domain, tmp_path):
    from resfit_ros.msg import Observation

    from resfit_ros.nodes.common import STREAM

    log = tmp_path / "launch.log"
    runner = subprocess.Popen([sys.executable, "-m", "resfit_ros.cli", "launch", "echo_pair", "prefix:=/rt"],
                              env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        received = []
        ros_context.node.create_subscription(Observation, "/rt/out", received.append, STREAM)
        pub = ros_context.node.create_publisher(Observation, "/rt/in", STREAM)

        def relay_works(seq=[0]):
            if not received:
                pub.publish(Observation(sequence=seq[0]))
                seq[0] += 1
            return bool(received)

        assert ros_context.spin_until(relay_works, timeout=25), log.read_text()

        # kill -9 the respawning node: the runner must start a new one
        first = _pids(log.read_text(), "echo_a")[0]
        left_behind = fastdds_segment_locks(first)
        os.kill(first, signal.SIGKILL)
        for lock in left_behind:   # older than the runner's freshness guard (a starting process's are young)
            for path in (lock, lock.with_name(lock.name[:-3])):
                os.utime(path, (time.time() - 60, time.time() - 60))
        assert ros_context.spin_until(lambda: len(_pids(log.read_text(), "echo_a")) >= 2, timeout=10), log.read_text()
        received.clear()
        assert ros_context.spin_until(relay_works, timeout=25), "relay did not recover after respawn"

        # Ctrl-C: every node gone within a few seconds, runner exits 0
        children = _pids(log.read_text(), "echo_a") + _pids(log.read_text(), "echo_b")
        t0 = time.monotonic()
        os.killpg(runner.pid, signal.SIGINT)
        code = runner.wait(timeout=15)
        elapsed = time.monotonic() - t0
        assert code == 0, log.read_text()
        assert elapsed < 10, f"shutdown took {elapsed:.1f} s"
        assert not any(_alive(p) for p in children), log.read_text()
        # the killed node could not remove its DDS shared memory: the runner did
        assert left_behind and not any(p.exists() or p.with_name(p.name[:-3]).exists() for p in left_behind)
        assert "shared-memory segment(s) of DDS participants that no longer exist" in log.read_text()
    finally:
        stop_process(runner)


def test_runner_rejects_unknown_graph_and_arguments():
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "launch", "nope"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown graph 'nope'" in r.stderr
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "launch", "echo_pair", "wrong:=1"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "wrong" in r.stderr
    r = subprocess.run([sys.executable, "-m", "resfit_ros.cli", "launch", "echo_pair", "novalue"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "key:=value" in r.stderr


def test_runner_pid_files_follow_respawns_and_go_at_shutdown(ros_domain, tmp_path):
    log, pids = tmp_path / "launch.log", tmp_path / "pids"
    runner = subprocess.Popen([sys.executable, "-m", "resfit_ros.cli", "launch", "--pid-dir", str(pids),
                               "--max-restarts", "1", "echo_pair", "prefix:=/pf"],
                              env=dict(os.environ, ROS_DOMAIN_ID=str(ros_domain)), stdout=open(log, "w"),
                              stderr=subprocess.STDOUT, start_new_session=True)

    def pid_file(name):
        try:
            return int((pids / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None

    def wait(predicate, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not predicate():
            time.sleep(0.05)
        return predicate()

    try:
        assert wait(lambda: pid_file("echo_a") and pid_file("echo_b")), log.read_text()
        assert pid_file("runner") == runner.pid
        first = pid_file("echo_a")
        assert first == _pids(log.read_text(), "echo_a")[0] and _alive(first)
        os.kill(first, signal.SIGKILL)
        assert wait(lambda: pid_file("echo_a") not in (None, first)), log.read_text()
        second = pid_file("echo_a")
        assert second == _pids(log.read_text(), "echo_a")[1] and _alive(second)
        # --max-restarts 1: the second death stops the graph
        os.kill(second, signal.SIGKILL)
        assert runner.wait(timeout=20) == 1, "giving up on a node is a failure for a supervisor"
        assert "died 2 times; giving up" in log.read_text(), log.read_text()
        assert not any(pids.glob("*.pid")), sorted(p.name for p in pids.iterdir())
    finally:
        stop_process(runner)
