"""G1Env: the ROS-free simulated robot with one task, stepped at the control rate.

The interface mirrors the real robot's: 29 joint position targets in, ObservationData out (joint
positions/velocities in the robot description's order, camera images, sim time as the stamp),
plus a sparse success flag. `extra` carries privileged task state that only the simulator has
(EXTRA_NAMES): the object's world position (x, y, z) and wxyz quaternion, then 1.0/0.0 flags for
whether the left / right hand touches it.

Time: stamp_ns is the simulation time, which restarts at 0 on every reset().
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # before mujoco is imported: headless rendering
import mujoco  # noqa: E402
import numpy as np  # noqa: E402

from resfit_ros.core.observation import ObservationData  # noqa: E402
from resfit_ros.robot import RobotDescription  # noqa: E402
from resfit_ros.sim import robot_model, scene  # noqa: E402
from resfit_ros.sim.tasks import TASKS, TaskSpec, add_task_object, is_success, sample_object_pose  # noqa: E402

ROBOT_DESCRIPTION = "robots/g1_sim.yaml"
PHYSICS_TIMESTEP = 0.002  # s; finger contacts stay stable at this step with implicitfast
EXTRA_NAMES = ["object_x", "object_y", "object_z", "object_qw", "object_qx", "object_qy", "object_qz",
               "left_hand_contact", "right_hand_contact"]


def build_model(task: TaskSpec, image_size: int = 84) -> mujoco.MjModel:
    """Robot + workcell + the task's object, compiled."""
    spec = robot_model.build_robot_spec()
    scene.add_scene(spec, max_image_size=image_size)
    add_task_object(spec, task)
    spec.option.timestep = PHYSICS_TIMESTEP
    return spec.compile()


class G1Env:
    def __init__(self, task_name: str = "g1_pick_lift", image_size: int = 84,
                 cameras: tuple[str, ...] | list[str] = ("head",), render: bool = True,
                 control_hz: float = 20.0, seed: int | None = 0,
                 robot_description: str | Path = ROBOT_DESCRIPTION, max_steps: int | None = None,
                 spawn_range: float | None = None):
        """spawn_range (m) overrides the task's +- randomisation of the object's x and y (harder
        or easier variants of a task); max_steps overrides the episode length."""
        if task_name not in TASKS:
            raise ValueError(f"unknown task '{task_name}'; known: {sorted(TASKS)}")
        if control_hz <= 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.task: TaskSpec = TASKS[task_name]
        if spawn_range is not None:
            if spawn_range < 0:
                raise ValueError(f"spawn_range must be >= 0, got {spawn_range}")
            self.task = dataclasses.replace(self.task, spawn_range_xy=(spawn_range, spawn_range))
        self.task_name = task_name
        self.robot = RobotDescription.load(robot_description)
        self.joint_names: list[str] = self.robot.joint_names
        self.image_size = int(image_size)
        self.cameras = tuple(cameras)
        self.render_enabled = bool(render)

        self.model = build_model(self.task, self.image_size)
        self.data = mujoco.MjData(self.model)
        m = self.model
        missing = [j for j in self.joint_names if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_ACTUATOR, j) < 0]
        if missing:
            raise ValueError(f"robot description joints {missing} have no actuator in the sim model")
        for cam in self.cameras:
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_CAMERA, cam) < 0:
                raise ValueError(f"unknown camera '{cam}'")
        # Index maps from the description's joint order into the model's arrays.
        self.actuator_ids = np.array([m.actuator(j).id for j in self.joint_names])
        joint_ids = [m.joint(j).id for j in self.joint_names]
        self.qpos_idx = m.jnt_qposadr[joint_ids].copy()
        self.dof_idx = m.jnt_dofadr[joint_ids].copy()
        self.ctrl_low = m.actuator_ctrlrange[self.actuator_ids, 0].copy()
        self.ctrl_high = m.actuator_ctrlrange[self.actuator_ids, 1].copy()

        # The physics step divides the control period; the control rate is rounded to it.
        self.n_substeps = max(1, int(round(1.0 / (control_hz * m.opt.timestep))))
        self.control_dt = self.n_substeps * m.opt.timestep
        # Episodes last as long in seconds at any rate: max_steps is given for 20 Hz.
        self.max_steps = int(max_steps if max_steps is not None else round(self.task.max_steps * 0.05 / self.control_dt))

        self.object_qpos_idx = m.jnt_qposadr[m.joint("object_joint").id]
        self.object_dof_idx = m.jnt_dofadr[m.joint("object_joint").id]
        self.object_geom = m.geom("object").id
        self.hand_body_ids = {side: self._subtree_bodies(f"{side.split('_')[0]}_wrist_yaw_link")
                              for side in ("left_hand", "right_hand")}

        self.home = np.clip(self.robot.home, self.ctrl_low, self.ctrl_high)
        self._rng = np.random.default_rng(seed)
        self._renderer: mujoco.Renderer | None = None
        self.steps = 0
        self.reset()

    # ----------------------------------------------------------------- episode
    def reset(self, seed: int | None = None) -> ObservationData:
        """Robot to home, object to a randomised spawn (reseeded when `seed` is given)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        d = self.data
        mujoco.mj_resetData(self.model, d)
        d.qpos[self.qpos_idx] = self.home
        d.ctrl[self.actuator_ids] = self.home
        d.qpos[self.object_qpos_idx:self.object_qpos_idx + 7] = sample_object_pose(self.task, self._rng)
        mujoco.mj_forward(self.model, d)
        self.steps = 0
        return self.observe()

    def step(self, command: np.ndarray) -> tuple[ObservationData, bool]:
        """Hold `command` (29 joint position targets, clipped to ctrlrange) for one control period."""
        self.set_targets(command)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.steps += 1
        return self.observe(), self.success()

    # -- the real-time stand-in (resfit_ros/sim/realtime.py) drives physics and sensing apart --
    def set_targets(self, command: np.ndarray) -> None:
        """Position targets for every actuator (29, clipped to ctrlrange), held from the next physics step."""
        command = np.asarray(command, dtype=np.float64).reshape(-1)
        if command.shape != (len(self.joint_names),):
            raise ValueError(f"command must have {len(self.joint_names)} values, got {command.shape}")
        if not np.all(np.isfinite(command)):
            raise ValueError("command contains NaN or inf")
        self.data.ctrl[self.actuator_ids] = np.clip(command, self.ctrl_low, self.ctrl_high)

    def advance(self, physics_steps: int) -> None:
        """Run `physics_steps` physics steps (PHYSICS_TIMESTEP each) with the targets as they are."""
        if physics_steps > 0:
            mujoco.mj_step(self.model, self.data, nstep=int(physics_steps))

    def joint_state(self) -> tuple[np.ndarray, np.ndarray]:
        """(29,) positions and (29,) velocities now, in the description's order (no rendering)."""
        return self.data.qpos[self.qpos_idx].copy(), self.data.qvel[self.dof_idx].copy()

    def set_joint_positions(self, q: np.ndarray) -> None:
        """Teleport the robot to q (29,) at rest, targets = q (a reset service's 'go home')."""
        q = np.clip(np.asarray(q, dtype=np.float64).reshape(-1), self.ctrl_low, self.ctrl_high)
        if q.shape != (len(self.joint_names),):
            raise ValueError(f"q must have {len(self.joint_names)} values, got {q.shape}")
        self.data.qpos[self.qpos_idx] = q
        self.data.qvel[self.dof_idx] = 0.0
        self.data.ctrl[self.actuator_ids] = q
        mujoco.mj_forward(self.model, self.data)

    def set_object_pose(self, pos: np.ndarray, quat: np.ndarray = (1.0, 0.0, 0.0, 0.0)) -> None:
        """Place the object (world position, wxyz quaternion) at rest; used by tests and resets."""
        a = self.object_qpos_idx
        self.data.qpos[a:a + 3] = pos
        self.data.qpos[a + 3:a + 7] = quat
        self.data.qvel[self.object_dof_idx:self.object_dof_idx + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    # ------------------------------------------------------------------- state
    @property
    def time_ns(self) -> int:
        return int(round(self.data.time * 1e9))

    def object_pose(self) -> np.ndarray:
        """(7,) object position and wxyz quaternion."""
        a = self.object_qpos_idx
        return self.data.qpos[a:a + 7].copy()

    def hand_contacts(self) -> dict[str, bool]:
        """Whether any geom of each hand (wrist_yaw_link and below) touches the object."""
        touching = {"left_hand": False, "right_hand": False}
        d, m = self.data, self.model
        for i in range(d.ncon):
            c = d.contact[i]
            if c.geom1 == self.object_geom:
                other = c.geom2
            elif c.geom2 == self.object_geom:
                other = c.geom1
            else:
                continue
            body = m.geom_bodyid[other]
            for hand, bodies in self.hand_body_ids.items():
                if body in bodies:
                    touching[hand] = True
        return touching

    def success(self) -> bool:
        return is_success(self.task, float(self.object_pose()[2]), self.hand_contacts())

    def extra(self) -> np.ndarray:
        touching = self.hand_contacts()
        return np.concatenate([self.object_pose(),
                               [float(touching["left_hand"]), float(touching["right_hand"])]])

    def observe(self) -> ObservationData:
        return ObservationData(
            stamp_ns=self.time_ns, sequence=self.steps, joint_names=list(self.joint_names),
            position=self.data.qpos[self.qpos_idx].copy(), velocity=self.data.qvel[self.dof_idx].copy(),
            images=self.render_images() if self.render_enabled else {},
            extra=self.extra(), extra_names=list(EXTRA_NAMES))

    def render_images(self) -> dict[str, np.ndarray]:
        """camera -> (H, W, 3) uint8 RGB of the current state (the renderer is made on first use)."""
        if self._renderer is None:
            self._renderer = mujoco.Renderer(self.model, self.image_size, self.image_size)
        images = {}
        for cam in self.cameras:
            self._renderer.update_scene(self.data, camera=cam)
            images[cam] = self._renderer.render().copy()
        return images

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def _subtree_bodies(self, root: str) -> set[int]:
        m = self.model
        root_id = m.body(root).id
        ids = {root_id}
        for b in range(m.nbody):  # bodies are stored parents first
            if m.body_parentid[b] in ids:
                ids.add(b)
        return ids
