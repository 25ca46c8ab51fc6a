"""When the residual policy node may act (core/policy_gate.py), without DDS: the first step after
a reset, e-stop, a new episode, and the learner's pace (silent, restarted, behind)."""
from __future__ import annotations

from resfit_ros.core.policy_gate import EpisodeGate, LearnerPacer


def test_an_episodes_first_step_never_acts_on_an_observation_of_the_robot_before_its_reset():
    gate = EpisodeGate()
    assert not gate.may_act_on(100)                          # no episode yet
    gate.on_status(running=False, episode_id=0, ready=True, stamp_ns=500)   # reset done: the robot home at 500
    assert gate.on_status(running=True, episode_id=1, ready=False, stamp_ns=600)
    assert gate.step == 0 and gate.running
    assert not gate.may_act_on(500)                          # the homing's own state: one step late
    assert not gate.may_act_on(400)
    assert gate.may_act_on(501)
    gate.step = 1                                            # once stepping, order is StampOrder's business
    assert gate.may_act_on(450)
    assert not gate.on_status(running=True, episode_id=1, ready=False, stamp_ns=700)   # same episode: no restart
    assert gate.step == 1


def test_estop_and_an_ended_episode_stop_acting_and_a_new_one_starts_at_step_zero():
    gate = EpisodeGate()
    gate.on_status(True, 3, False, 10)
    gate.step = 7
    gate.estopped = True
    assert not gate.running and not gate.may_act_on(99)
    gate.estopped = False
    assert gate.running
    gate.on_status(False, 3, False, 20)                      # labelled: not running, no reset yet
    assert not gate.running and gate.ready_stamp_ns is None
    assert gate.on_status(True, 4, False, 30) and gate.step == 0
    assert gate.may_act_on(5)                                # no reset ever reported: any stamp


def test_the_pacer_waits_only_for_a_live_learner_that_knows_our_count():
    pacer = LearnerPacer(enabled=True, free_steps=20, timeout_s=60.0, seen_at=0.0)
    assert not pacer.behind(1000, training=True, now=1.0)   # no metrics yet: steps_allowed unknown
    pacer.on_metrics(env_steps=125, steps_allowed=110, now=1.0)
    assert not pacer.behind(130, True, 2.0)                 # 20 free steps beyond what it allows
    assert pacer.behind(131, True, 2.0)
    assert not pacer.behind(131, False, 2.0)                # evaluation episodes are never paced
    assert not pacer.behind(131, True, 62.0)                # silent for longer than the timeout
    pacer.on_metrics(env_steps=0, steps_allowed=0, now=63.0)  # restarted: it counts from 0 again
    assert not pacer.behind(131, True, 63.5)                  # it cannot know it owes updates
    pacer.on_metrics(env_steps=130, steps_allowed=0, now=64.0)  # one of our step records reached it
    assert pacer.behind(131, True, 64.5)
    # our records of steps 20..40 never reached it (sent before it matched us, or lost on a link):
    # it waits for steps while we would wait for its warm-up
    pacer.on_metrics(env_steps=19, steps_allowed=20, now=70.0)
    assert not pacer.behind(41, True, 70.5)
    pacer.on_metrics(env_steps=41, steps_allowed=20, now=71.0)   # the next record told it
    assert pacer.behind(41, True, 71.5)
    assert not LearnerPacer(enabled=False).behind(10**6, True, 0.0)


def test_a_fleet_shares_the_learners_pace_without_one_robot_blocking_another():
    from resfit_ros.core.policy_gate import paced_share

    # the schedule allows 100 steps; robot 0 took 70, robot 1 took 20: together 10 more
    assert paced_share(100, 90, 70) == 80 and paced_share(100, 90, 20) == 30
    pacers = [LearnerPacer(enabled=True, free_steps=0, timeout_s=60.0, seen_at=0.0) for _ in range(2)]
    steps = [70, 20]
    # each robot steps while its pacer allows; the fleet ends at what the schedule allows (each robot
    # one step beyond at most, as a lone robot: the learner learns of a step after it was taken)
    for _ in range(50):
        for i, pacer in enumerate(pacers):
            pacer.on_metrics(steps[i], paced_share(100, sum(steps), steps[i]), now=1.0)
            if not pacer.behind(steps[i] + 1, True, now=1.0):
                steps[i] += 1
    assert 100 <= sum(steps) <= 102 and steps[1] >= 25     # the robot behind is not starved
    # robot 0 stopped (an operator resets it): robot 1 alone takes what the schedule allows
    steps = [40, 40]
    for _ in range(50):
        pacers[1].on_metrics(steps[1], paced_share(100, sum(steps), steps[1]), now=1.0)
        if not pacers[1].behind(steps[1] + 1, True, now=1.0):
            steps[1] += 1
    assert steps[0] == 40 and 60 <= steps[1] <= 61
