"""The cores are plain Python: importing them must not pull in rclpy (nodes are the only ROS code)."""
from __future__ import annotations

import subprocess
import sys


def test_cores_import_without_rclpy():
    code = ("import sys; import resfit_ros.core.sync, resfit_ros.core.synchronizer, resfit_ros.core.joint_states, "
            "resfit_ros.core.images, resfit_ros.core.command, "
            "resfit_ros.core.episode; bad = [m for m in sys.modules if m.split('.')[0] in ('rclpy', 'rosidl_parser')]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
