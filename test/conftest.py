"""Shared test fixtures: a private ROS_DOMAIN_ID per test, in-process rclpy, node processes that
always die at teardown (SIGINT -> SIGTERM -> SIGKILL, bounded)."""
from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path

import pytest

from test.support import stop_process

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("MUJOCO_GL", "egl")


def _free_domain_id() -> int:
    # 0..101 and 215..232 are the usable ids on Linux with default Fast DDS ports; a random one
    # per test keeps parallel/consecutive tests from seeing each other.
    return random.SystemRandom().randint(1, 100)


@pytest.fixture
def ros_domain(monkeypatch):
    domain = _free_domain_id()
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


@pytest.fixture
def ros_context(ros_domain):
    """An initialised rclpy context on the test's domain, with a node and an executor."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=ros_domain)
    node = rclpy.create_node(f"test_{os.getpid()}_{random.randint(0, 1 << 30)}", context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)

    class Ros:
        context = ctx

        def __init__(self):
            self.node = node
            self.executor = executor

        def spin_until(self, predicate, timeout=10.0) -> bool:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if predicate():
                    return True
                self.executor.spin_once(timeout_sec=0.05)
            return bool(predicate())

        def call(self, client, request, timeout=10.0):
            assert client.wait_for_service(timeout_sec=timeout), f"service {client.srv_name} not available"
            future = client.call_async(request)
            assert self.spin_until(future.done, timeout), f"service {client.srv_name} did not answer"
            return future.result()

    yield Ros()
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


@pytest.fixture
def spawn(ros_domain, tmp_path):
    """spawn(args...) starts `python -m resfit_ros.nodes ...` (or any argv list) on the test's domain."""
    procs: list[tuple[subprocess.Popen, Path]] = []

    def _spawn(argv: list[str], env: dict | None = None, name: str = "proc") -> subprocess.Popen:
        log = tmp_path / f"{name}_{len(procs)}.log"
        full_env = dict(os.environ, ROS_DOMAIN_ID=str(ros_domain), PYTHONUNBUFFERED="1")
        full_env.update(env or {})
        proc = subprocess.Popen(argv, env=full_env, stdout=open(log, "w"), stderr=subprocess.STDOUT,
                                cwd=str(REPO), start_new_session=True)
        proc.log_path = log  # type: ignore[attr-defined]
        procs.append((proc, log))
        return proc

    yield _spawn
    for proc, log in procs:
        stop_process(proc)
