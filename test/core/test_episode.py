"""Episode state machine: happy path, sparse reward, and every wrong-state call refused with no change."""
from __future__ import annotations

import pytest

from resfit_ros.core.episode import (LABEL_FAILURE, LABEL_NONE, LABEL_SUCCESS, EpisodeManager, EpisodeState,
                                     Outcome, sparse_rewards)


def test_happy_path_with_reward_on_final_step():
    m = EpisodeManager()
    assert m.state is EpisodeState.IDLE and m.status.episode_id == 0
    r = m.start(explore=True, note="first")
    assert r.accepted and r.episode_id == 1 and r.state is EpisodeState.RUNNING and m.status.explore
    assert [m.step_observed().step for _ in range(3)] == [0, 1, 2]
    r = m.label(success=True, note="nice")
    assert r.accepted and r.final_step == 2 and r.reward == 1.0
    s = m.status
    assert (s.state, s.label, s.steps, s.episodes_completed, s.successes) == (EpisodeState.IDLE, LABEL_SUCCESS, 3, 1, 1)
    assert m.reset_begin().state is EpisodeState.RESETTING
    assert m.reset_done().state is EpisodeState.IDLE
    r = m.start(explore=False)
    assert r.episode_id == 2 and not m.status.explore and m.status.steps == 0 and m.status.label == LABEL_NONE
    m.step_observed()
    r = m.label(success=False)
    assert r.reward == 0.0 and r.final_step == 0
    assert (m.status.episodes_completed, m.status.successes, m.status.label) == (2, 1, LABEL_FAILURE)
    m.start()
    m.step_observed()
    r = m.abort()
    assert r.accepted and m.status.aborted and m.status.label == LABEL_NONE
    assert (m.status.episodes_completed, m.status.episodes_aborted) == (2, 1)


def test_ready_only_after_a_successful_reset():
    m = EpisodeManager()
    assert not m.status.ready
    m.reset_begin()
    assert not m.status.ready
    m.reset_done()
    assert m.status.ready
    m.start()
    assert not m.status.ready
    m.abort()
    m.reset_begin()
    m.reset_done(ok=False, message="arm blocked")
    assert not m.status.ready and "arm blocked" in m.status.message


def test_require_reset_refuses_start_until_reset():
    m = EpisodeManager(require_reset=True)
    before = m.status
    r = m.start()
    assert r.outcome is Outcome.NOT_READY and m.status == before
    m.reset_begin(); m.reset_done()
    assert m.start().accepted
    m.step_observed(); m.label(True)
    assert m.start().outcome is Outcome.NOT_READY


def test_sparse_rewards():
    assert sparse_rewards(4, True).tolist() == [0, 0, 0, 1]
    assert sparse_rewards(4, False).tolist() == [0, 0, 0, 0]
    assert sparse_rewards(0, True).tolist() == []


def test_estop_while_running_aborts_and_clear_returns_to_idle():
    m = EpisodeManager()
    m.start()
    m.step_observed()
    r = m.estop(True)
    assert r.accepted and m.state is EpisodeState.ESTOPPED and m.status.aborted
    assert m.status.episodes_completed == 0 and m.status.episodes_aborted == 1
    assert "aborted" in r.message
    assert m.estop(False).state is EpisodeState.IDLE
    assert m.start().episode_id == 2


def test_estop_cancels_reset():
    m = EpisodeManager()
    m.reset_begin()
    assert m.estop(True).accepted and m.state is EpisodeState.ESTOPPED
    assert not m.reset_done().accepted


def _in_state(name):
    m = EpisodeManager()
    if name == "idle_fresh":
        pass
    elif name == "idle_after_episode":
        m.start(); m.step_observed(); m.label(True)
    elif name == "running":
        m.start(); m.step_observed()
    elif name == "running_no_steps":
        m.start()
    elif name == "resetting":
        m.reset_begin()
    elif name == "estopped":
        m.start(); m.step_observed(); m.estop(True)
    return m


CALLS = {
    "start": lambda m: m.start(True),
    "step_observed": lambda m: m.step_observed(),
    "label": lambda m: m.label(True),
    "abort": lambda m: m.abort(),
    "reset_begin": lambda m: m.reset_begin(),
    "reset_done": lambda m: m.reset_done(),
    "estop_engage": lambda m: m.estop(True),
    "estop_clear": lambda m: m.estop(False),
}

# state -> {call: expected refusal}
INVALID = {
    "idle_fresh": {"step_observed": Outcome.NOT_RUNNING, "label": Outcome.NOT_RUNNING,
                   "abort": Outcome.NOT_RUNNING, "reset_done": Outcome.NOT_RESETTING,
                   "estop_clear": Outcome.ESTOP_NOT_ENGAGED},
    "idle_after_episode": {"step_observed": Outcome.NOT_RUNNING, "label": Outcome.NOT_RUNNING,
                           "abort": Outcome.NOT_RUNNING, "reset_done": Outcome.NOT_RESETTING,
                           "estop_clear": Outcome.ESTOP_NOT_ENGAGED},
    "running": {"start": Outcome.ALREADY_RUNNING, "reset_begin": Outcome.ALREADY_RUNNING,
                "reset_done": Outcome.NOT_RESETTING, "estop_clear": Outcome.ESTOP_NOT_ENGAGED},
    "running_no_steps": {"start": Outcome.ALREADY_RUNNING, "label": Outcome.NO_STEPS,
                         "reset_begin": Outcome.ALREADY_RUNNING, "reset_done": Outcome.NOT_RESETTING,
                         "estop_clear": Outcome.ESTOP_NOT_ENGAGED},
    "resetting": {"start": Outcome.RESETTING, "step_observed": Outcome.NOT_RUNNING,
                  "label": Outcome.NOT_RUNNING, "abort": Outcome.NOT_RUNNING,
                  "reset_begin": Outcome.RESETTING, "estop_clear": Outcome.ESTOP_NOT_ENGAGED},
    "estopped": {"start": Outcome.ESTOPPED, "step_observed": Outcome.NOT_RUNNING,
                 "label": Outcome.NOT_RUNNING, "abort": Outcome.NOT_RUNNING,
                 "reset_begin": Outcome.ESTOPPED, "reset_done": Outcome.NOT_RESETTING,
                 "estop_engage": Outcome.ESTOP_ALREADY_ENGAGED},
}


@pytest.mark.parametrize("state, call", [(s, c) for s, calls in INVALID.items() for c in calls])
def test_wrong_state_call_is_refused_and_changes_nothing(state, call):
    m = _in_state(state)
    before = m.status
    r = CALLS[call](m)
    assert not r.accepted
    assert r.outcome is INVALID[state][call]
    assert m.status == before and r.status == before      # state, counters, ids AND message unchanged
    assert r.message.startswith(r.outcome.message) and r.message
    assert r.reward is None and r.final_step is None and r.step is None


@pytest.mark.parametrize("state, call", [(s, c) for s in INVALID for c in CALLS if c not in INVALID[s]])
def test_every_other_call_is_accepted(state, call):
    m = _in_state(state)
    assert CALLS[call](m).accepted


def test_outcomes_have_distinct_codes_and_messages():
    codes = [o.code for o in Outcome]
    assert len(set(codes)) == len(codes) and Outcome.ACCEPTED.code == 0
    assert all(o.message for o in Outcome)


def test_state_values_match_episode_status_msg():
    assert [s.value for s in EpisodeState] == [0, 1, 2, 3]  # EpisodeStatus IDLE RUNNING RESETTING ESTOPPED
    assert (LABEL_NONE, LABEL_FAILURE, LABEL_SUCCESS) == (-1, 0, 1)


def test_restore_after_a_restart_continues_ids_and_aborts_the_running_episode():
    m = EpisodeManager(require_reset=True)
    r = m.restore(7, state=EpisodeState.RUNNING, episodes_completed=5, successes=2, episodes_aborted=1)
    assert r.accepted and r.state is EpisodeState.IDLE and r.status.aborted and r.status.label == LABEL_NONE
    assert r.status.episode_id == 7 and r.status.episodes_aborted == 2 and not r.status.ready
    assert "restarted" in r.message
    assert not m.start().accepted                    # not ready: a reset first
    m.reset_begin()
    m.reset_done(True)
    assert m.start().status.episode_id == 8          # ids continue
    m2 = EpisodeManager()
    assert m2.restore(3, state=EpisodeState.ESTOPPED).state is EpisodeState.ESTOPPED   # an e-stop stays engaged
    assert not m2.start().accepted
    with pytest.raises(ValueError):
        EpisodeManager().restore(-1)


def test_not_ready_only_from_idle_and_ready():
    m = EpisodeManager()
    assert not m.not_ready("node restarted").accepted          # not ready yet: refused, unchanged
    m.reset_begin()
    m.reset_done(True)
    assert m.status.ready
    r = m.not_ready("residual_policy (re)started")
    assert r.accepted and not r.status.ready and r.message == "residual_policy (re)started"
