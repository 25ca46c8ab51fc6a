"""The workcell around the robot: floor, light, the wheeled-base stand-in, a table and the head camera.

World frame: x forward from the robot, y to its left, z up; the robot's pelvis is at (0, 0, 0.68).
Rendering settings favour CPU speed (no shadows, no multisampling; see simulated-humanoid.md).
"""
from __future__ import annotations

import mujoco
import numpy as np

from resfit_ros.sim.robot_model import PELVIS_HEIGHT

TABLE_CENTER_XY = (0.40, 0.0)
TABLE_HALF_SIZE = (0.20, 0.40)   # x, y half-extents, m
TABLE_HEIGHT = 0.64              # top surface, m; the hands reach it with bent elbows
HEAD_CAMERA_FOVY = 72.0  # the workspace from the baton spawn (y = -0.3) to the left hand, the lift height


def add_scene(spec: mujoco.MjSpec, max_image_size: int = 256) -> None:
    """Add floor, light, base, table and the 'head' camera to the robot spec (in place)."""
    spec.visual.quality.shadowsize = 0
    spec.visual.quality.offsamples = 0
    spec.visual.global_.offwidth = max(max_image_size, 64)
    spec.visual.global_.offheight = max(max_image_size, 64)
    spec.visual.headlight.ambient = [0.4, 0.4, 0.4]
    spec.visual.headlight.diffuse = [0.5, 0.5, 0.5]

    world = spec.worldbody
    spec.add_material(name="floor_mat", rgba=[0.35, 0.38, 0.42, 1])
    spec.add_material(name="table_mat", rgba=[0.55, 0.42, 0.30, 1])
    spec.add_material(name="base_mat", rgba=[0.15, 0.15, 0.18, 1])
    world.add_geom(name="floor", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[0, 0, 0.05], material="floor_mat")
    world.add_light(name="top_light", pos=[0.4, 0, 2.5], dir=[0, 0, -1], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL,
                    diffuse=[0.6, 0.6, 0.6], castshadow=0)

    # The wheeled base: a fixed cylinder up to just under the pelvis. It only stands there.
    base_top = PELVIS_HEIGHT - 0.12
    world.add_geom(name="base", type=mujoco.mjtGeom.mjGEOM_CYLINDER, size=[0.16, base_top / 2, 0],
                   pos=[-0.02, 0, base_top / 2], material="base_mat", contype=0, conaffinity=0)

    tx, ty = TABLE_CENTER_XY
    hx, hy = TABLE_HALF_SIZE
    world.add_geom(name="table", type=mujoco.mjtGeom.mjGEOM_BOX, size=[hx, hy, TABLE_HEIGHT / 2],
                   pos=[tx, ty, TABLE_HEIGHT / 2], material="table_mat", friction=[0.8, 0.005, 0.0001])

    # Head camera fixed to the torso (it turns with the waist), in front of the face, pitched 55
    # degrees down at the hands' workspace (MuJoCo cameras look along their local -z).
    pitch = np.radians(55.0)
    torso = spec.body("torso_link")
    torso.add_camera(name="head", pos=[0.10, 0.0, 0.45],
                     xyaxes=[0, -1, 0, np.sin(pitch), 0, np.cos(pitch)],
                     fovy=HEAD_CAMERA_FOVY)
