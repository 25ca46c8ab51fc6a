"""The reset state machine (core/reset.py) without DDS: the quiet policy, the scene reset's stamp,
late joint states, one homing command per produced state, the settle, every deadline."""
from __future__ import annotations

import numpy as np

from resfit_ros.core.command import CommandLimits
from resfit_ros.core.reset import JointStream, ResetPhase, ResetSequencer, ResetTiming, SceneReply

DOF = 3
LIMITS = CommandLimits(lower=[-1.0] * DOF, upper=[1.0] * DOF, home=[0.0] * DOF, max_step=[0.05] * DOF,
                       residual_bound=[0.1] * DOF, control_rate_hz=20.0)
TIMING = ResetTiming(reset_quiet_s=0.2, scene_reset_timeout_s=3.0, joint_state_timeout_s=1.0,
                     homing_settle_s=0.1, homing_speed_fraction=1.0, homing_min_duration_s=0.2)
AWAY = np.array([0.1, -0.1, 0.05])


def stream(stamp, received):
    return JointStream(stamp, received)


def scene_reset_done(seq: ResetSequencer, now: float = 10.0, stamp: int = 1_000) -> float:
    """Through the quiet wait and the scene reset; returns the time."""
    seq.begin()
    assert seq.tick(now, 0.0, stream(stamp, 5), AWAY).call_scene_reset
    tick = seq.tick(now + 0.05, 0.0, stream(stamp, 5), AWAY, SceneReply(True, "ok", stamp + 50))
    assert tick.clear_positions and seq.phase == ResetPhase.WAIT_STATE
    return now + 0.05


def test_nothing_moves_while_the_policy_is_still_stepping_the_ended_episode():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=True)
    seq.begin()
    for now in (10.0, 10.05, 10.1, 10.15):   # a step record at 10.0 and 10.1: not quiet for 0.2 s yet
        last_step = 10.1 if now >= 10.1 else 10.0
        tick = seq.tick(now, last_step, stream(1_000, 5), AWAY)
        assert not tick.call_scene_reset and tick.command is None and tick.outcome is None
    tick = seq.tick(10.31, 10.1, stream(1_000, 5), AWAY)
    assert tick.call_scene_reset and seq.phase == ResetPhase.SCENE_RESET
    assert seq.min_state_stamp == 1_000            # states up to the newest seen are from before the reset


def test_the_motion_home_is_planned_from_a_state_of_the_reset_scene_not_a_late_one():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=True)
    now = scene_reset_done(seq, stamp=1_000)
    assert seq.min_state_stamp == 1_049            # the reply's stamp - 1: a late state of the old scene is dropped
    assert seq.tick(now + 0.05, 0.0, stream(1_000, 5), None).command is None   # no fresh state of every joint yet
    seq.tick(now + 0.1, 0.0, stream(1_050, 6), AWAY)
    assert seq.phase == ResetPhase.HOMING and seq.planned_from_stamp == 1_050
    assert np.allclose(seq.homing.start, AWAY)


def test_each_homing_command_waits_for_the_state_the_previous_one_produced():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=False)
    seq.begin()
    seq.tick(1.0, 0.0, stream(100, 1), AWAY)       # quiet: planned at once (no scene reset)
    first = seq.tick(1.05, 0.0, stream(100, 1), AWAY).command
    assert first is not None
    assert seq.tick(1.1, 0.0, stream(100, 1), AWAY).command is None      # its state has not come
    assert seq.tick(1.15, 0.0, stream(99, 2), AWAY).command is None      # an older stamp is no answer
    second = seq.tick(1.2, 0.0, stream(101, 3), AWAY).command
    assert second is not None and np.all(np.abs(second - first) <= LIMITS.max_step + 1e-12)
    tick = seq.tick(1.2 + TIMING.state_wait_s + 0.01, 0.0, stream(101, 3), AWAY)
    assert tick.outcome is not None and not tick.outcome.ok
    assert tick.outcome.message == "no joint state after a homing command" and not seq.active


def test_ready_comes_with_the_stamp_of_the_last_commands_state_after_the_settle():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=False)
    seq.begin()
    now, stamp = 1.0, 100
    seq.tick(now, 0.0, stream(stamp, 1), AWAY)
    commands = []
    while seq.phase == ResetPhase.HOMING:
        now += 0.05
        commands.append(seq.tick(now, 0.0, stream(stamp, stamp), AWAY).command)
        stamp += 1                                  # each command produces one newer state
    assert np.allclose(commands[-1], LIMITS.home) and len(commands) == len(seq.homing)
    assert seq.tick(now + 0.01, 0.0, stream(stamp, stamp), AWAY).outcome is None   # settling
    tick = seq.tick(now + 0.11, 0.0, stream(stamp, stamp), AWAY)
    assert tick.outcome.ok and tick.outcome.ready_stamp_ns == stamp - 1
    assert "home reached" in tick.outcome.message and seq.min_state_stamp is None


def test_a_driver_that_stamps_zero_is_followed_by_arrival_order():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=False)
    seq.begin()
    seq.tick(1.0, 0.0, stream(0, 1), AWAY)
    assert seq.tick(1.05, 0.0, stream(0, 1), AWAY).command is not None
    assert seq.tick(1.1, 0.0, stream(0, 1), AWAY).command is None
    assert seq.tick(1.15, 0.0, stream(0, 2), AWAY).command is not None


def test_scene_reset_failures_end_the_reset_with_the_reason():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=True)
    seq.begin()
    seq.tick(1.0, 0.0, stream(5, 1), AWAY)
    tick = seq.tick(1.1, 0.0, stream(5, 1), AWAY, SceneReply(False, "an episode is running"))
    assert not tick.outcome.ok and tick.outcome.message == "scene reset failed: an episode is running"
    seq.begin()
    seq.tick(1.0, 0.0, stream(5, 1), AWAY)
    assert seq.tick(3.9, 0.0, stream(5, 1), AWAY).outcome is None
    tick = seq.tick(4.1, 0.0, stream(5, 1), AWAY)
    assert not tick.outcome.ok and "no answer in 3.0 s" in tick.outcome.message
    now = scene_reset_done(seq)
    tick = seq.tick(now + TIMING.state_wait_s + 0.01, 0.0, stream(5, 1), None)
    assert tick.outcome.message == "no fresh joint state of every joint after the scene reset"


def test_a_cancelled_reset_sends_nothing_more():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=False)
    seq.begin()
    seq.tick(1.0, 0.0, stream(100, 1), AWAY)
    assert seq.tick(1.05, 0.0, stream(100, 1), AWAY).command is not None
    seq.cancel()                                    # e-stop
    assert not seq.active
    assert seq.tick(1.1, 0.0, stream(101, 2), AWAY).command is None


def test_an_unplannable_position_fails_the_reset():
    seq = ResetSequencer(LIMITS, TIMING, scene_reset=False)
    seq.begin()
    tick = seq.tick(1.0, 0.0, stream(100, 1), None)
    assert not tick.outcome.ok and "cannot plan the motion home" in tick.outcome.message
