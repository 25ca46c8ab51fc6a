"""Helpers for tests that run node processes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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


def build_tiny_robot_base(root) -> tuple:
    """Like build_tiny_base, with the observations a robot has (no simulator task state): the
    demos and base for train_real's nodes (the robot_sim graph). (demos, base)"""
    demos, base = root / "robot_demos", root / "robot_base.safetensors"
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "demos", "--task", "g1_pick_lift", "--episodes", "2",
                    "--out", str(demos), "--no-images", "--no-task-state", "--no-progress"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "train-bc", "--demos", str(demos), "--out", str(base),
                    "--steps", "30", "--state-only", "--no-progress"], check=True, timeout=300)
    return demos, base


def build_tiny_image_base(root) -> tuple:
    """Two image demos recorded as a robot observes (no task state) and an image base on joint
    positions + head camera trained for a few steps: `main-job --cameras`' data, small. (demos, base)"""
    from resfit_ros.jobs.main_job import observation_flags

    demos, base = root / "demos", root / "base.safetensors"
    demo_flags, bc_flags = observation_flags(cameras=True)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "demos", "--task", "g1_pick_lift", "--episodes", "2",
                    "--out", str(demos), "--seed", "0", *demo_flags, "--no-progress"], check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "resfit_ros.cli", "train-bc", "--demos", str(demos), "--out", str(base),
                    *bc_flags, "--steps", "20", "--chunk", "10", "--batch-size", "16", "--no-progress"],
                   check=True, timeout=300)
    return demos, base


def fastdds_segment_locks(pid: int | str = "self") -> list[Path]:
    """/dev/shm lock files (`fastdds_<hex>_el`) of the Fast DDS segments process `pid` holds open."""
    paths = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in os.listdir(fd_dir):
        try:
            target = Path(os.readlink(fd_dir / fd))
        except OSError:
            continue                                  # closed meanwhile
        if target.parent == Path("/dev/shm") and re.fullmatch(r"fastdds_[0-9a-f]{16}_el", target.name):
            paths.append(target)
    return sorted(set(paths))
