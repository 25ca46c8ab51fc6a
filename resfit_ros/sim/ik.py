"""Damped-least-squares inverse kinematics of one arm to a site pose (used by the scripted experts).

It runs on a scratch MjData, so planning never disturbs the simulation it plans for.
"""
from __future__ import annotations

import mujoco
import numpy as np


class ArmIK:
    def __init__(self, model: mujoco.MjModel, site: str, joints: list[str] | tuple[str, ...]):
        self.model = model
        self.data = mujoco.MjData(model)
        self.site_id = model.site(site).id
        jids = [model.joint(j).id for j in joints]
        self.qpos_idx = np.array([model.jnt_qposadr[j] for j in jids])
        self.dof_idx = np.array([model.jnt_dofadr[j] for j in jids])
        self.lower = model.jnt_range[jids, 0].copy()
        self.upper = model.jnt_range[jids, 1].copy()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def site_pose(self, qpos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position (3,), rotation (3,3)) of the site for a full qpos."""
        self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        return self.data.site_xpos[self.site_id].copy(), self.data.site_xmat[self.site_id].reshape(3, 3).copy()

    def solve(self, qpos: np.ndarray, target_pos: np.ndarray, target_rot: np.ndarray | None = None,
              rot_weight: float = 0.3, iterations: int = 60, damping: float = 1e-2, max_step: float = 0.1,
              tolerance: float = 1e-4, rest: np.ndarray | None = None, rest_weight: float = 0.0) -> np.ndarray:
        """Arm joint angles (in `joints` order) that put the site at target_pos [and target_rot].

        Starts from `qpos` (full model qpos; other joints stay fixed). rot_weight trades orientation
        error (rad) against position error (m). rest/rest_weight pull the null space toward a pose.
        Each iteration's joint step is capped at max_step (rad): near a singularity an uncapped
        damped-least-squares step can jump the arm onto another branch.
        """
        d = self.data
        d.qpos[:] = qpos
        q = d.qpos[self.qpos_idx].copy()
        err_rot = np.zeros(3)
        quat_site, quat_target = np.zeros(4), np.zeros(4)
        if target_rot is not None:
            mujoco.mju_mat2Quat(quat_target, np.asarray(target_rot, np.float64).ravel())
        for _ in range(iterations):
            d.qpos[self.qpos_idx] = q
            mujoco.mj_kinematics(self.model, d)
            mujoco.mj_comPos(self.model, d)
            err_pos = target_pos - d.site_xpos[self.site_id]
            mujoco.mj_jacSite(self.model, d, self._jacp, self._jacr, self.site_id)
            J = self._jacp[:, self.dof_idx]
            err = err_pos
            if target_rot is not None:
                mujoco.mju_mat2Quat(quat_site, d.site_xmat[self.site_id])
                mujoco.mju_subQuat(err_rot, quat_target, quat_site)  # in the site's frame
                err_rot = d.site_xmat[self.site_id].reshape(3, 3) @ err_rot  # jacr is world-frame
                J = np.vstack([J, rot_weight * self._jacr[:, self.dof_idx]])
                err = np.concatenate([err_pos, rot_weight * err_rot])
            if np.linalg.norm(err) < tolerance:
                break
            dq = J.T @ np.linalg.solve(J @ J.T + damping * np.eye(len(err)), err)
            if rest is not None and rest_weight > 0:  # secondary task in the Jacobian's null space
                null = np.eye(len(q)) - np.linalg.pinv(J) @ J
                dq += null @ (rest_weight * (rest - q))
            biggest = np.abs(dq).max()
            if biggest > max_step:
                dq *= max_step / biggest
            q = np.clip(q + dq, self.lower, self.upper)
        return q

    def position_error(self, qpos: np.ndarray, q_arm: np.ndarray, target_pos: np.ndarray) -> float:
        full = np.array(qpos, dtype=np.float64)
        full[self.qpos_idx] = q_arm
        return float(np.linalg.norm(self.site_pose(full)[0] - target_pos))
