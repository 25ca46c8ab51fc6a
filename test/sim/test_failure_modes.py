"""bench/failure_modes.py sorts real simulated episodes by what the object did."""
from __future__ import annotations

import os
import runpy
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")

from resfit_ros.jobs.evaluate import policy_in_sim  # noqa: E402
from resfit_ros.jobs.sim_episodes import run_episode  # noqa: E402
from resfit_ros.sim.tasks import TASKS  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "bench" / "failure_modes.py"


def test_an_expert_lift_is_a_success_and_a_robot_standing_still_never_touches_the_object():
    classify = runpy.run_path(str(BENCH), run_name="bench_failure_modes")["classify"]
    spec = TASKS["g1_pick_lift"]
    env, expert_act, on_reset = policy_in_sim("g1_pick_lift", None, None)
    lift = run_episode(env, expert_act, 100, on_reset, record=True, max_steps=200)
    category, step = classify(lift, spec, max_steps=120)
    assert lift.success and (category, step) == ("success", lift.steps)
    # the same success counted against a limit it overran
    assert classify(lift, spec, max_steps=lift.steps - 1) == ("success after the limit", lift.steps)
    still = run_episode(env, lambda o: (env.home.copy(), None, None), 100, lambda: None, record=True, max_steps=20)
    env.close()
    assert classify(still, spec, max_steps=120) == ("never touched", -1)
