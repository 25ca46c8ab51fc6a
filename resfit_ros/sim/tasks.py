"""Tasks on the simulated G1: which object, where it spawns, how long an episode is, what success is.

Both tasks have a sparse success flag computed from privileged sim state:
  g1_pick_lift  the box's centre has risen >= LIFT_HEIGHT above its resting height (right hand's job)
  g1_handover   the baton has risen >= LIFT_HEIGHT, the left hand touches it and the right hand does not.
                It spawns far to the robot's right, out of the left hand's reach, so the right hand
                has to bring it over: the task needs both hands.
"""
from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from resfit_ros.sim.scene import TABLE_HEIGHT

LIFT_HEIGHT = 0.10  # m the object's centre must rise above where it rests on the table


@dataclass(frozen=True)
class TaskSpec:
    name: str
    max_steps: int                        # control steps per episode at the default 20 Hz
    object_shape: str                     # "box" or "cylinder" (upright)
    object_half_size: tuple[float, float, float]  # half-extents x, y, z, m (cylinder: radius, radius, half-length)
    object_mass: float                    # kg
    object_friction: float                # sliding friction against fingers and table
    object_rgba: tuple[float, float, float, float]
    spawn_xy: tuple[float, float]         # nominal object centre on the table (world x, y)
    spawn_range_xy: tuple[float, float]   # uniform +- offset of the centre, m
    spawn_yaw_range: float                # uniform +- yaw, rad
    holder: str                           # hand that must touch the object at success (or "")
    forbidden: str                        # hand that must NOT touch it at success (or "")
    description: str

    @property
    def rest_height(self) -> float:
        """World z of the object's centre when it stands on the table."""
        return TABLE_HEIGHT + self.object_half_size[2]


TASKS: dict[str, TaskSpec] = {
    "g1_pick_lift": TaskSpec(
        name="g1_pick_lift", max_steps=200,
        object_shape="box", object_half_size=(0.02, 0.02, 0.05), object_mass=0.05, object_friction=1.0,
        object_rgba=(0.85, 0.15, 0.15, 1.0),
        spawn_xy=(0.30, -0.15), spawn_range_xy=(0.03, 0.03), spawn_yaw_range=0.2,
        holder="", forbidden="",
        description="right hand lifts a 4x4x10 cm box >= 10 cm off the table"),
    "g1_handover": TaskSpec(
        name="g1_handover", max_steps=400,
        # A round baton: the hands meet it at different yaws (each forearm angled in toward the
        # midline keeps the upper arms off the torso), which a square section would not allow.
        object_shape="cylinder", object_half_size=(0.018, 0.018, 0.12), object_mass=0.05, object_friction=1.2,
        object_rgba=(0.15, 0.35, 0.85, 1.0),
        spawn_xy=(0.28, -0.30), spawn_range_xy=(0.02, 0.02), spawn_yaw_range=0.0,
        holder="left_hand", forbidden="right_hand",
        description="right hand picks a 24 cm baton, passes it to the left hand, which alone lifts it"),
}


def add_task_object(spec: mujoco.MjSpec, task: TaskSpec) -> None:
    """Add the task's free-floating object (body and geom both named 'object')."""
    body = spec.worldbody.add_body(name="object", pos=[task.spawn_xy[0], task.spawn_xy[1], task.rest_height])
    body.add_freejoint(name="object_joint")
    if task.object_shape == "box":
        geom_type, size = mujoco.mjtGeom.mjGEOM_BOX, list(task.object_half_size)
    elif task.object_shape == "cylinder":
        geom_type, size = mujoco.mjtGeom.mjGEOM_CYLINDER, [task.object_half_size[0], task.object_half_size[2], 0.0]
    else:
        raise ValueError(f"task {task.name}: unknown object shape {task.object_shape!r}")
    body.add_geom(name="object", type=geom_type, size=size,
                  mass=task.object_mass, rgba=list(task.object_rgba),
                  # torsional friction (a ~2 cm contact patch) keeps a pinched object from pivoting
                  # about the finger-thumb axis
                  friction=[task.object_friction, 0.02, 0.0002],
                  # contacts stiffer than the default (0.02 s) keep a squeezed object from sinking
                  # into the fingers
                  condim=4, solref=[0.01, 1.0])


def sample_object_pose(task: TaskSpec, rng: np.random.Generator) -> np.ndarray:
    """Free-joint qpos (x, y, z, qw, qx, qy, qz) of a randomised spawn on the table."""
    dx, dy = (rng.uniform(-r, r) for r in task.spawn_range_xy)
    yaw = rng.uniform(-task.spawn_yaw_range, task.spawn_yaw_range)
    return np.array([task.spawn_xy[0] + dx, task.spawn_xy[1] + dy, task.rest_height,
                     np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)])


def is_success(task: TaskSpec, object_z: float, touching: dict[str, bool]) -> bool:
    lifted = object_z - task.rest_height >= LIFT_HEIGHT
    if task.holder and not touching[task.holder]:
        return False
    if task.forbidden and touching[task.forbidden]:
        return False
    return bool(lifted)
