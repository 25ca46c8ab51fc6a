"""The learning core is ROS-free: importing it (and the bench) never imports rclpy."""
from __future__ import annotations

import subprocess
import sys


def test_learning_core_does_not_import_rclpy():
    code = ("import sys; import resfit_ros.learning, resfit_ros.learning.offline, resfit_ros.learning.schedule; "
            "assert 'rclpy' not in sys.modules, 'rclpy imported'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
