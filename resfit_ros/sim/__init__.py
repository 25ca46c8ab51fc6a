"""ROS-free MuJoCo simulation of the 29-DoF humanoid: robot model, tasks, scripted experts.

    from resfit_ros.sim import make_env, make_expert, TASKS
    env = make_env("g1_pick_lift", image_size=84, cameras=("head",), render=True, control_hz=20.0, seed=0)
    obs = env.reset()
    expert = make_expert("g1_pick_lift", env); expert.reset()
    obs, success = env.step(expert.act(obs))

Modules: robot_model (cut G1 + decimated-mesh cache), scene (table, base, camera), tasks (objects,
spawns, success), env (G1Env), ik (arm IK), experts (scripted demonstrators).
"""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede any mujoco import

from resfit_ros.sim.tasks import TASKS, TaskSpec  # noqa: E402


def make_env(task_name: str = "g1_pick_lift", image_size: int = 84, cameras=("head",), render: bool = True,
             control_hz: float = 20.0, seed: int | None = 0, **kwargs):
    """A G1Env for `task_name` (one of TASKS)."""
    from resfit_ros.sim.env import G1Env

    return G1Env(task_name, image_size=image_size, cameras=cameras, render=render, control_hz=control_hz,
                 seed=seed, **kwargs)


def make_expert(task_name: str, env):
    """The scripted expert for `task_name`, acting in `env` (it reads privileged sim state)."""
    from resfit_ros.sim.experts import EXPERTS

    if task_name not in EXPERTS:
        raise ValueError(f"no expert for task '{task_name}'; known: {sorted(EXPERTS)}")
    return EXPERTS[task_name](env)


__all__ = ["TASKS", "TaskSpec", "make_env", "make_expert"]
