"""JointStateMerger: JointState inputs mapped by joint NAME into the robot's order."""
from __future__ import annotations

import numpy as np
import pytest

from resfit_ros.core.joint_states import JointStateError, JointStateMerger

NAMES = ["waist", "l_arm", "r_arm", "l_hand", "r_hand"]


def merger(**kw):
    return JointStateMerger(NAMES, **kw)


def test_shuffled_single_message_maps_by_name():
    m = merger()
    order = ["r_hand", "waist", "l_hand", "r_arm", "l_arm"]
    pos = [5.0, 1.0, 4.0, 3.0, 2.0]
    s = m.parse(order, pos, [50.0, 10.0, 40.0, 30.0, 20.0])
    p, v = m.merge([s])
    assert p.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert v.tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]


def test_two_group_messages_merge_into_full_order():
    m = merger()
    arm = m.parse(["r_arm", "waist", "l_arm"], [3.0, 1.0, 2.0], [0.3, 0.1, 0.2], source="arm")
    hand = m.parse(["r_hand", "l_hand"], [5.0, 4.0], [0.5, 0.4], source="hand")
    p, v = m.merge([hand, arm])
    assert p.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert v.tolist() == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert m.accepted == 2


def _rejected(m, reason, fn, *args, match=None, **kw):
    before = dict(m.rejected)
    with pytest.raises(JointStateError, match=match) as info:
        fn(*args, **kw)
    assert info.value.reason == reason
    assert m.rejected[reason] == before[reason] + 1
    return info.value


def test_unknown_name_rejected_and_named():
    m = merger()
    _rejected(m, "unknown_name", m.parse, ["waist", "wheel"], [0.0, 0.0], [0.0, 0.0], match="'wheel'")


def test_ignored_names_are_skipped():
    m = merger(ignored_names=["wheel"])
    s = m.parse(["wheel", "waist"], [9.0, 1.0], [9.0, 0.5])
    assert s.indices.tolist() == [0] and s.position.tolist() == [1.0]


def test_missing_joint_rejected_at_merge_and_named():
    m = merger()
    arm = m.parse(["waist", "l_arm", "r_arm"], [1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    hand = m.parse(["l_hand"], [4.0], [0.0])
    _rejected(m, "missing", m.merge, [arm, hand], match="r_hand")


def test_joint_in_two_inputs_rejected():
    m = merger()
    a = m.parse(NAMES, [0.0] * 5, [0.0] * 5)
    b = m.parse(["l_hand"], [1.0], [0.0])
    _rejected(m, "overlap", m.merge, [a, b], match="l_hand")


@pytest.mark.parametrize("pos, vel, match", [
    ([1.0, 2.0], [0.0, 0.0, 0.0], "3 names but 2 positions"),
    ([1.0, 2.0, 3.0], [0.0], "3 names but 1 velocities"),
    ([1.0, 2.0, 3.0, 4.0], [0.0] * 3, "3 names but 4 positions"),
    ([1.0, 2.0, 3.0], [], "3 names but 0 velocities"),
])
def test_wrong_lengths_rejected(pos, vel, match):
    m = merger()
    _rejected(m, "wrong_length", m.parse, ["waist", "l_arm", "r_arm"], pos, vel, match=match)


def test_missing_velocity_allowed_when_configured():
    m = merger(velocity_required=False)
    s = m.parse(["waist"], [1.0], [])
    assert s.velocity.tolist() == [0.0]


@pytest.mark.parametrize("pos, vel", [([np.nan, 1.0], [0.0, 0.0]), ([0.0, 1.0], [0.0, np.inf])])
def test_nonfinite_rejected_and_named(pos, vel):
    m = merger()
    err = _rejected(m, "nonfinite", m.parse, ["waist", "l_arm"], pos, vel)
    assert ("waist" in str(err)) == (not np.isfinite(pos[0]))
    assert ("l_arm" in str(err)) == (not np.isfinite(vel[1]))


def test_duplicate_and_empty_names_rejected():
    m = merger()
    _rejected(m, "duplicate_name", m.parse, ["waist", "waist"], [0.0, 1.0], [0.0, 0.0])
    _rejected(m, "empty", m.parse, [], [], [])


def test_rejected_message_does_not_poison_the_name_cache():
    m = merger()
    with pytest.raises(JointStateError):
        m.parse(["waist", "l_arm"], [np.nan, 0.0], [0.0, 0.0])
    s = m.parse(["waist", "l_arm"], [1.0, 2.0], [0.0, 0.0])
    assert s.position.tolist() == [1.0, 2.0]


def test_a_state_stands_for_the_robot_only_if_newest_and_not_from_the_future():
    from resfit_ros.core.joint_states import stale_or_future

    s = 1_000_000_000
    assert stale_or_future(100 * s, None, 100 * s) is None            # the first one
    assert stale_or_future(100 * s, 99 * s, 100 * s) is None          # newer
    assert stale_or_future(100 * s, 100 * s, 100 * s) is None         # the same state again
    assert stale_or_future(99 * s, 100 * s, 100 * s) == "late"        # delivered after a newer one
    assert stale_or_future(2 * s, 100 * s, 100 * s) is None           # a restarted clock starts over
    assert stale_or_future(100 * s + 3600 * s, None, 100 * s) == "future"
