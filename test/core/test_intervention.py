"""An operator's take-over (core/intervention.py): which targets are executed, and when."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.core.intervention import OperatorInput, intervention_steps
from resfit_ros.core.joint_states import JointStateError
from resfit_ros.names import SAFETY_HOLD, SAFETY_OPERATOR, SAFETY_POSITION_CLIPPED

JOINTS = ["a_joint", "b_joint", "c_joint"]
S = 1_000_000_000


def test_the_operator_drives_only_while_the_flag_is_set_and_unnamed_joints_follow_the_base():
    op = OperatorInput(JOINTS, max_age_s=0.5)
    base = np.array([0.1, 0.2, 0.3])
    op.on_target(["c_joint", "a_joint"], [1.0, -1.0], stamp_ns=10 * S, now_ns=10 * S)
    assert op.tick(10 * S, base).target is None                  # flag not set: the policy drives
    op.set_active(True)
    tick = op.tick(10 * S + S // 10, base)
    np.testing.assert_array_equal(tick.target, [-1.0, 0.2, 1.0])
    assert not tick.hold
    # the device went silent: no target is executed, the robot holds
    silent = op.tick(11 * S, base)
    assert silent.target is None and silent.hold
    op.set_active(False)
    assert op.tick(11 * S, base) == op.tick(11 * S, base) and op.tick(11 * S, base).target is None


@pytest.mark.parametrize("names, positions, stamp, reason", [
    (["a_joint", "x_joint"], [0.0, 0.0], 10 * S, "unknown_name"),
    (["a_joint"], [float("nan")], 10 * S, "nonfinite"),
    (["a_joint", "b_joint"], [0.0], 10 * S, "wrong_length"),
    (["a_joint"], [0.0], 9 * S, "stale"),
    (["a_joint"], [0.0], 12 * S, "future"),
    ([], [], 10 * S, "empty"),
])
def test_a_bad_target_is_refused_with_its_reason_and_the_previous_one_stays(names, positions, stamp, reason):
    op = OperatorInput(JOINTS, max_age_s=0.5, future_tolerance_s=1.0)
    op.set_active(True)
    op.on_target(["b_joint"], [0.7], stamp_ns=10 * S, now_ns=10 * S)
    with pytest.raises(JointStateError) as err:
        op.on_target(names, positions, stamp_ns=stamp, now_ns=10 * S)
    assert err.value.reason == reason
    np.testing.assert_array_equal(op.tick(10 * S, np.zeros(3)).target, [0.0, 0.7, 0.0])


def test_interventions_are_the_operator_driven_steps_not_its_holds():
    flags = np.array([0, SAFETY_OPERATOR, SAFETY_OPERATOR | SAFETY_POSITION_CLIPPED, SAFETY_OPERATOR | SAFETY_HOLD,
                      SAFETY_HOLD], dtype=np.uint32)
    assert intervention_steps(flags).tolist() == [False, True, True, False, False]
