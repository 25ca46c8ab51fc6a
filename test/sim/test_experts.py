"""The scripted experts solve both tasks on a handful of seeded episodes (50-episode rates: bench/sim.py)."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from resfit_ros.sim import make_env, make_expert  # noqa: E402
from resfit_ros.sim.experts import rot_z  # noqa: E402

EPISODES = 5


def run(env, expert, seed: int) -> tuple[bool, float]:
    """(success within max_steps, largest command change / per-step velocity limit)."""
    obs = env.reset(seed=seed)
    expert.reset()
    prev, worst = env.home.copy(), 0.0
    limit = env.robot.max_velocity * env.control_dt
    for _ in range(env.max_steps):
        command = expert.act(obs)
        assert command.shape == (29,)
        worst = max(worst, float(np.max(np.abs(command - prev) / limit)))
        prev = command
        obs, success = env.step(command)
        if success:
            return True, worst
    return False, worst


@pytest.mark.parametrize("task", ["g1_pick_lift", "g1_handover"])
def test_expert_succeeds_and_respects_velocity_limits(task):
    env = make_env(task, render=False, seed=0)
    expert = make_expert(task, env)
    results = [run(env, expert, seed) for seed in range(100, 100 + EPISODES)]
    wins = sum(ok for ok, _ in results)
    assert wins >= EPISODES - 1, f"{task}: expert succeeded {wins}/{EPISODES}"
    assert max(w for _, w in results) <= 1.0 + 1e-9  # a rate limiter passes its commands unchanged


def test_expert_is_deterministic():
    env = make_env("g1_pick_lift", render=False, seed=0)
    expert = make_expert("g1_pick_lift", env)
    trajectories = []
    for _ in range(2):
        obs = env.reset(seed=7)
        expert.reset()
        actions = []
        for _ in range(40):
            actions.append(expert.act(obs))
            obs, _ = env.step(actions[-1])
        trajectories.append(np.array(actions))
    np.testing.assert_array_equal(trajectories[0], trajectories[1])


def test_handover_baton_starts_out_of_left_arm_reach():
    """No collision-free left-arm pose, in any hand yaw, brings the left grasp point to the baton
    at its nearest spawn: the task needs the right hand to bring it over."""
    env = make_env("g1_handover", render=False, seed=0)
    expert = make_expert("g1_handover", env)
    ik, m = expert.ik["left"], env.model
    task = env.task
    nearest = np.array([task.spawn_xy[0] - task.spawn_range_xy[0], task.spawn_xy[1] + task.spawn_range_xy[1]])
    data = mujoco.MjData(m)
    for z in (task.rest_height - 0.05, task.rest_height + 0.05):
        target = np.array([*nearest, z])
        for yaw in np.linspace(-1.5, 1.5, 7):
            full = env.data.qpos.copy()
            full[env.qpos_idx] = env.home
            q = ik.solve(full, target, rot_z(yaw), iterations=200)
            full[ik.qpos_idx] = q
            data.qpos[:] = full
            mujoco.mj_forward(m, data)
            robot_self_contact = any(
                m.geom_bodyid[data.contact[i].geom1] != 0 and m.geom_bodyid[data.contact[i].geom2] != 0
                and env.object_geom not in (data.contact[i].geom1, data.contact[i].geom2)
                and data.contact[i].dist < -0.002 for i in range(data.ncon))
            reached = np.linalg.norm(ik.site_pose(full)[0] - target) < 0.02
            assert robot_self_contact or not reached, f"left hand reaches the baton at z={z:.2f}, yaw={yaw:.2f}"
