"""Rejected inputs are counted one by one but logged at most once per reason and throttle period,
without rclpy's throttle: that one inspects the caller's frame on every call (~0.4 ms even when it
suppresses the line), which under a flood of bad messages ate the control loop's CPU."""
import time

import pytest

from resfit_ros.nodes.common import Rejections, Throttle

pytestmark = pytest.mark.ros


def test_throttle_is_per_key_and_period():
    t = Throttle(0.2)
    assert t.due("nan") and not t.due("nan") and t.due("wrong_length")
    time.sleep(0.25)
    assert t.due("nan")


def test_rejections_count_every_one_and_log_once_per_reason(ros_context):
    lines = []
    node = ros_context.node
    rejections = Rejections(node, throttle_s=60.0)
    logger = node.get_logger()
    original = logger.warning
    logger.warning = lambda text, **kw: lines.append(text)
    try:
        for i in range(2000):
            rejections.reject("joint_state_nonfinite" if i % 2 else "joint_state_missing", f"message {i}")
    finally:
        logger.warning = original
    assert rejections.counts == {"joint_state_nonfinite": 1000, "joint_state_missing": 1000}
    # the logger is reached twice, not 2000 times (rclpy's own throttle is reached every time)
    assert len(lines) == 2 and "message 0" in lines[0] and "message 1" in lines[1]
