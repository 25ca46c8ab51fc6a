"""The real-time stand-in's ROS-free core: physics paced by a wall clock, sensor delivery delays,
and G1Env's split of a control step into targets + physics steps."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from resfit_ros.sim.realtime import DelayQueue, PhysicsPacer, SensorDelay  # noqa: E402

MS = 1_000_000


def test_pacer_follows_the_wall_clock_in_whole_steps():
    pacer = PhysicsPacer(timestep_s=0.002, max_catchup_s=0.1)
    t0 = 5_000 * MS
    assert pacer.due(t0) == 0                     # the first call starts the clock
    assert pacer.due(t0 + 1 * MS) == 0            # half a step: nothing yet
    assert pacer.due(t0 + 10.5 * MS) == 5
    assert pacer.due(t0 + 10.9 * MS) == 0
    assert pacer.due(t0 + 12 * MS) == 1
    assert pacer.steps == 6 and pacer.skipped_steps == 0


def test_pacer_skips_ahead_after_a_stall_and_counts_it():
    pacer = PhysicsPacer(timestep_s=0.002, max_catchup_s=0.1)
    pacer.restart(0)
    assert pacer.due(1000 * MS) == 50             # at most 0.1 s of physics at once
    assert pacer.skipped_steps == 450 and pacer.skipped_s == pytest.approx(0.9)
    assert pacer.due(1004 * MS) == 2              # then on the wall clock again, no backlog
    pacer.restart(2000 * MS)                       # a scene reset: physics time 0 again
    assert pacer.due(2004 * MS) == 2 and pacer.skipped_steps == 450


def test_pacer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="timestep_s"):
        PhysicsPacer(0.0)
    with pytest.raises(ValueError, match="max_catchup_s"):
        PhysicsPacer(0.002, max_catchup_s=0.001)


def test_sensor_delay_is_latency_plus_bounded_jitter_in_order():
    delay = SensorDelay(latency_s=0.015, jitter_s=0.005, seed=3)
    acquired = np.arange(200) * 5 * MS            # faster than the jitter: order must hold anyway
    due = np.array([delay.due(int(t)) for t in acquired])
    lag = due - acquired
    assert lag.min() >= 15 * MS and lag.max() <= 20 * MS
    assert np.all(np.diff(due) >= 0), "a stream is delivered in acquisition order"
    assert lag.std() > 0.5 * MS, "jitter varies the delay"
    burst = SensorDelay(latency_s=0.0, jitter_s=0.010, seed=0)
    dues = [burst.due(t) for t in (0, 1, 2, 3, 4)]   # samples 1 ns apart, up to 10 ms jitter
    assert dues == sorted(dues)
    assert SensorDelay(0.0, 0.0).immediate and not delay.immediate
    with pytest.raises(ValueError, match="latency_s"):
        SensorDelay(latency_s=-0.001)


def test_delay_queue_hands_items_over_when_due_in_due_order():
    q = DelayQueue()
    q.push(30, "c")
    q.push(10, "a")
    q.push(20, "b1")
    q.push(20, "b2")
    assert q.next_due() == 10 and len(q) == 4
    assert q.pop_due(9) == []
    assert q.pop_due(20) == ["a", "b1", "b2"]     # equal due times keep their push order
    assert q.pop_due(100) == ["c"] and q.next_due() is None


def test_env_targets_plus_physics_steps_equal_a_control_step():
    """set_targets + advance(n_substeps) is exactly env.step's physics (the lockstep path), and the
    targets are held: a second advance keeps moving towards the same target."""
    from resfit_ros.sim import make_env

    a = make_env("g1_pick_lift", render=False, cameras=(), seed=0)
    b = make_env("g1_pick_lift", render=False, cameras=(), seed=0)
    try:
        a.reset(seed=4)
        b.reset(seed=4)
        target = a.home.copy()
        target[8] -= 0.4
        for _ in range(3):
            obs, _ = a.step(target)
        b.set_targets(target)
        for _ in range(3):
            b.advance(b.n_substeps)
        q, v = b.joint_state()
        assert np.array_equal(q, obs.position) and np.array_equal(v, obs.velocity)
        b.advance(10 * b.n_substeps)              # no new command: the last one is held
        assert abs(b.joint_state()[0][8] - target[8]) < abs(q[8] - target[8])
        with pytest.raises(ValueError, match="NaN"):
            b.set_targets(np.full(29, np.nan))
    finally:
        a.close()
        b.close()
