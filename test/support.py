"""Helpers for tests that run node processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys


def stop_process(proc: subprocess.Popen, grace: float = 5.0) -> int:
    """Stop a child that may ignore signals: SIGINT, SIGTERM, then SIGKILL; never hangs."""
    for sig, wait_s in ((signal.SIGINT, grace), (signal.SIGTERM, 3.0), (signal.SIGKILL, 3.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait(timeout=5)



def node_argv(executable: str, *ros_args: str) -> list[str]:
    return [sys.executable, "-m", "resfit_ros.nodes", executable, "--ros-args", *ros_args]


def build_tiny_base(root) -> tuple:
    """Two state-only scripted demos and a BC base trained for a few steps (seconds): (demos, base)."""
    demos, base = root / "demos", root / "base.safetensors"
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "demos", "--task", "g1_pick_lift", "--episodes", "2",
                    "--out", str(demos), "--no-images", "--no-progress"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "train-bc", "--demos", str(demos), "--out", str(base),
                    "--steps", "30", "--state-only", "--no-progress"], check=True, timeout=300)
    return demos, base
