"""Helpers for tests that run node processes."""
from __future__ import annotations

import subprocess
import sys

from resfit_ros.runner import stop_process  # noqa: F401  (tests import it from here)


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
