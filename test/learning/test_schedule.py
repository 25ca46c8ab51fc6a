"""The warm-up as ResFiT orders it: random residual steps with no update, then critic-only updates
on that finished buffer with no target smoothing noise, then training at the configured UTD."""
from __future__ import annotations

import pytest
import torch

from resfit_ros.learning.schedule import UpdateSchedule
from test.learning.conftest import ACTION_DIM, filled_buffer, make_agent


def test_no_update_during_the_random_steps_then_the_critic_warmup_then_utd_per_step():
    s = UpdateSchedule(utd=2, initial_updates=0, random_warmup_steps=100, critic_warmup_updates=500)
    assert [s.budget(n) for n in (0, 1, 99)] == [0, 0, 0]
    assert s.budget(100) == 500 and s.budget(101) == 502 and s.budget(150) == 600
    # pacing: the robot runs freely through the random steps, then waits for the warm-up updates
    assert s.steps_allowed(0) == 100 and s.steps_allowed(499) == 100
    assert s.steps_allowed(500) == 100 and s.steps_allowed(502) == 101
    for updates in range(0, 700, 7):                 # the two are inverse: on schedule at the allowance
        assert s.budget(s.steps_allowed(updates)) <= max(updates, s.budget(s.random_warmup_steps))
    assert s.achieved_utd(600, 150) == pytest.approx(2.0) and s.achieved_utd(0, 50) == 0.0


def test_initial_updates_on_the_demos_come_first_and_count_towards_the_critic_warmup():
    s = UpdateSchedule(utd=4, initial_updates=1000, random_warmup_steps=0, critic_warmup_updates=1000)
    assert s.budget(0) == 1000 and s.budget(3) == 1012
    assert s.steps_allowed(999) == 0 and s.steps_allowed(1000) == 0 and s.steps_allowed(1004) == 1
    with pytest.raises(ValueError, match="utd"):
        UpdateSchedule(utd=0)


def test_with_action_repeat_the_updates_come_per_decision():
    """utd updates after each completed decision of R steps; pacing lets the robot finish the
    decision whose updates are not due yet, never the next one."""
    s = UpdateSchedule(utd=10, initial_updates=0, random_warmup_steps=100, critic_warmup_updates=500,
                       action_repeat=5)
    assert s.budget(99) == 0 and s.budget(100) == 500 and s.budget(104) == 500 and s.budget(105) == 510
    assert s.budget(150) == 600
    assert s.steps_allowed(500) == 104 and s.steps_allowed(509) == 104 and s.steps_allowed(510) == 109
    for updates in range(500, 900, 3):               # the largest allowance that is on schedule
        allowed = s.steps_allowed(updates)
        assert s.budget(allowed) <= updates < s.budget(allowed + 1)
    assert s.achieved_utd(600, 150) == pytest.approx(10.0)     # per decision, comparable with utd
    with pytest.raises(ValueError, match="action_repeat"):
        UpdateSchedule(utd=1, action_repeat=0)


def test_no_target_smoothing_noise_during_the_critic_warmup():
    """With a zero actor the target action is exactly the next base action during the critic
    warm-up; once the warm-up is over the smoothing noise moves it."""
    agent = make_agent(cameras=False, features=False, critic_warmup_updates=3, exploration_std=0.3)
    buffer = filled_buffer(cameras=False, features=False)
    seen = []
    original = agent.critic_target.forward

    def recording(critic_input, heads=None):
        seen.append(critic_input[:, -ACTION_DIM:].clone())
        return original(critic_input, heads)

    agent.critic_target.forward = recording
    torch.manual_seed(0)
    for _ in range(5):
        batch = buffer.sample(8)
        agent.update(batch, update_actor=False)
        expected = agent._normalise_action(batch.next_base_action).clamp(-1, 1)   # noqa: SLF001
        warm = agent.critic_updates <= 3
        assert torch.allclose(seen[-1], expected, atol=1e-6) == warm, f"update {agent.critic_updates}"
