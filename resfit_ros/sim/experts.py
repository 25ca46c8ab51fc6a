"""Scripted experts: straight-line hand moves solved by IK (mj_jacSite), from privileged object state.

An expert is a list of phases. Each phase decides its goal when it begins, from the state at that
moment (so a later phase aims at where the object actually is, not where it was at reset): for
each arm that moves, a grasp-site goal (position + yaw; the hands stay level), and for each hand
that moves, a finger shape. During the phase the grasp site follows a straight line to its goal
(IK every step, warm-started): a straight joint-space move between two IK solutions can roll the
wrist on the way and swing a held object about. The phase then holds for `settle` steps.
Every command change stays inside the robot description's per-step velocity limit, so a
rate-limiting command pipeline passes the expert's actions through unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from resfit_ros.core.observation import ObservationData
from resfit_ros.sim.ik import ArmIK
from resfit_ros.sim.robot_model import JOINT_GROUPS

SIDES = ("left", "right")
# Finger targets with right-hand signs; the left hand mirrors them. OPEN swings the thumb back so
# the open hand can slide down around an object; CLOSED lies past the contact pose so the fingers
# squeeze with their actuator force limit.
OPEN_HAND = {"thumb_0": 0.0, "thumb_1": 0.5, "thumb_2": 0.0, "index_0": 0.0, "index_1": 0.0,
             "middle_0": 0.0, "middle_1": 0.0}
CLOSED_HAND = {"thumb_0": 0.0, "thumb_1": -0.6, "thumb_2": -0.9, "index_0": 1.1, "index_1": 1.1,
               "middle_0": 1.1, "middle_1": 1.1}


@dataclass
class Goal:
    """What a phase moves: arms to grasp-site (position, yaw), hands to finger shapes."""
    arms: dict[str, tuple[np.ndarray, float]] = field(default_factory=dict)
    hands: dict[str, dict[str, float]] = field(default_factory=dict)


@dataclass
class Phase:
    name: str
    goal: Callable[[], Goal]  # called once, when the phase starts
    steps: int                # control steps to reach the goal (at 20 Hz; scaled to the env's rate)
    settle: int = 0           # extra steps holding it (likewise)


def yaw_of(quat_wxyz: np.ndarray) -> float:
    w, x, y, z = quat_wxyz
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def box_face_yaw(quat_wxyz: np.ndarray) -> float:
    """The object's yaw folded into [-45, 45) degrees: a square section looks the same every 90."""
    return float((yaw_of(quat_wxyz) + np.pi / 4) % (np.pi / 2) - np.pi / 4)


def rot_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def quat_to_mat(quat_wxyz: np.ndarray) -> np.ndarray:
    w, x, y, z = quat_wxyz
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


class ScriptedExpert:
    """Runs the phases that subclasses build in plan()."""

    IK_ITERATIONS = 25  # per control step, warm-started from the previous step's solution

    def __init__(self, env):
        self.env = env
        self.index = {n: i for i, n in enumerate(env.joint_names)}
        self.max_delta = env.robot.max_velocity * env.control_dt  # per-step command change limit
        self.rate_scale = 0.05 / env.control_dt  # phase lengths are written for 20 Hz control
        self.ik = {s: ArmIK(env.model, f"{s}_grasp", JOINT_GROUPS[f"{s}_arm"]) for s in SIDES}
        self.arm_idx = {s: np.array([self.index[j] for j in JOINT_GROUPS[f"{s}_arm"]]) for s in SIDES}
        self.reset()

    def reset(self) -> None:
        self.phases: list[Phase] = []
        self.phase_i = -1
        self.step_in_phase = 0
        self.cmd: np.ndarray | None = None
        self.yaw = {s: 0.0 for s in SIDES}  # current grasp-site yaw of each hand

    def plan(self) -> list[Phase]:
        raise NotImplementedError

    @property
    def phase_name(self) -> str:
        return self.phases[self.phase_i].name if 0 <= self.phase_i < len(self.phases) else "none"

    # ------------------------------------------------------------ phase engine
    def _begin(self, i: int) -> None:
        self.phase_i, self.step_in_phase = i, 0
        self.goal = self.phases[i].goal()
        self.start_cmd = self.cmd.copy()
        self.start_site = {s: self.site_pos(s) for s in self.goal.arms}
        self.start_yaw = dict(self.yaw)
        self.goal_cmd = self.start_cmd.copy()
        for side, shape in self.goal.hands.items():
            self.goal_cmd = self.with_hand(side, shape, self.goal_cmd)

    def act(self, obs: ObservationData | None = None) -> np.ndarray:
        """(29,) joint position targets for the next control step."""
        if self.cmd is None:  # first call of an episode: plan from the state after reset
            self.cmd = self.env.data.ctrl[self.env.actuator_ids].copy()
            self.phases = self.plan()
            self._begin(0)
        phase = self.phases[self.phase_i]
        steps = max(1, round(phase.steps * self.rate_scale))
        if self.step_in_phase >= steps + round(phase.settle * self.rate_scale) and self.phase_i + 1 < len(self.phases):
            self._begin(self.phase_i + 1)
            phase = self.phases[self.phase_i]
            steps = max(1, round(phase.steps * self.rate_scale))
        self.step_in_phase += 1
        alpha = min(1.0, self.step_in_phase / steps)
        wanted = self.start_cmd + alpha * (self.goal_cmd - self.start_cmd)  # fingers (and idle arms)
        for side, (pos, yaw) in self.goal.arms.items():
            site = self.start_site[side] + alpha * (np.asarray(pos) - self.start_site[side])
            self.yaw[side] = self.start_yaw[side] + alpha * (yaw - self.start_yaw[side])
            wanted[self.arm_idx[side]] = self.solve_arm(side, site, self.yaw[side], self.cmd)
        self.cmd = self.cmd + np.clip(wanted - self.cmd, -self.max_delta, self.max_delta)
        return self.cmd.copy()

    # ------------------------------------------------------------- helpers
    def commanded_qpos(self, cmd: np.ndarray | None = None) -> np.ndarray:
        """Full model qpos with the robot at the command (planning ignores the small tracking sag)."""
        full = self.env.data.qpos.copy()
        full[self.env.qpos_idx] = self.cmd if cmd is None else cmd
        return full

    def site_pos(self, side: str) -> np.ndarray:
        return self.ik[side].site_pose(self.commanded_qpos())[0]

    def solve_arm(self, side: str, pos: np.ndarray, yaw: float, seed_cmd: np.ndarray) -> np.ndarray:
        return self.ik[side].solve(self.commanded_qpos(seed_cmd), np.asarray(pos, np.float64), rot_z(yaw),
                                   iterations=self.IK_ITERATIONS)

    def with_hand(self, side: str, shape: dict[str, float], base: np.ndarray) -> np.ndarray:
        q = base.copy()
        sign = 1.0 if side == "right" else -1.0
        for joint, value in shape.items():
            q[self.index[f"{side}_hand_{joint}_joint"]] = sign * value
        return q

    def object_pose(self) -> tuple[np.ndarray, np.ndarray]:
        pose = self.env.object_pose()
        return pose[:3], pose[3:]


class PickLiftExpert(ScriptedExpert):
    """Right hand: above the box, straight down around it, close, lift."""

    ABOVE = 0.11      # m, grasp site above the box centre before descending (clears its top)
    GRASP_DZ = 0.015  # m, grasp site above the box centre when closing
    LIFT = 0.18       # m, final lift of the grasp site (success needs 0.10 of the box)

    def plan(self) -> list[Phase]:
        pos0, quat0 = self.object_pose()
        yaw = box_face_yaw(quat0)
        xy = pos0[:2].copy()

        def above() -> Goal:
            return Goal(arms={"right": (np.array([*xy, pos0[2] + self.ABOVE]), yaw)}, hands={"right": OPEN_HAND})

        def down() -> Goal:
            return Goal(arms={"right": (np.array([*xy, pos0[2] + self.GRASP_DZ]), yaw)})

        def close() -> Goal:
            return Goal(hands={"right": CLOSED_HAND})

        def lift() -> Goal:
            return Goal(arms={"right": (np.array([*xy, pos0[2] + self.GRASP_DZ + self.LIFT]), yaw)})

        return [Phase("above", above, steps=25, settle=3), Phase("down", down, steps=15, settle=3),
                Phase("close", close, steps=8, settle=6), Phase("lift", lift, steps=25, settle=1000)]


class HandoverExpert(ScriptedExpert):
    """Right hand picks the baton below its middle, lifts it and carries it to the middle, turning
    its fingers in toward the midline; the left hand, turned in the other way, comes down onto the
    upper half and closes; the right hand opens and backs off away from its palm; the left lifts.
    Turning both hands in (HANDOVER_YAW) keeps each upper arm off the torso near the midline."""

    R_GRASP_ABOVE_CENTRE = -0.045  # m, right grasp site relative to the baton's centre
    L_GRASP_ABOVE_CENTRE = 0.05    # m, left grasp site relative to the baton's centre
    CLEAR = 0.07                   # m, grasp site above the baton's top before descending onto it
    HANDOVER_XY = (0.32, -0.01)    # where the right hand brings the baton
    HANDOVER_YAW = 0.5             # rad, right hand turned left (+), left hand turned right (-)
    CARRY_LIFT = 0.06              # m the baton is raised off the table before it is carried
    RETREAT = 0.12                 # m the open right hand backs away from its palm
    LEFT_LIFT = 0.15               # m the left hand raises the baton after the handover

    def plan(self) -> list[Phase]:
        half = self.env.task.object_half_size[2]
        pos0, _ = self.object_pose()
        r_xy = pos0[:2].copy()
        r_grasp_z = pos0[2] + self.R_GRASP_ABOVE_CENTRE
        carry_z = r_grasp_z + self.CARRY_LIFT
        l_yaw = -self.HANDOVER_YAW
        state: dict[str, np.ndarray] = {}

        def r_up() -> Goal:
            # Rise above the baton's top first: a direct move from home would sweep through it.
            site = self.site_pos("right")
            return Goal(arms={"right": (np.array([site[0], site[1], pos0[2] + half + self.CLEAR]), 0.0)},
                        hands={"right": OPEN_HAND})

        def r_above() -> Goal:
            return Goal(arms={"right": (np.array([*r_xy, pos0[2] + half + self.CLEAR]), 0.0)})

        def r_down() -> Goal:
            return Goal(arms={"right": (np.array([*r_xy, r_grasp_z]), 0.0)})

        def r_close() -> Goal:
            return Goal(hands={"right": CLOSED_HAND})

        def r_lift() -> Goal:
            return Goal(arms={"right": (np.array([*r_xy, carry_z]), 0.0)})

        def r_carry() -> Goal:
            return Goal(arms={"right": (np.array([*self.HANDOVER_XY, carry_z]), self.HANDOVER_YAW)})

        def l_up() -> Goal:
            pos, _ = self.object_pose()
            site = self.site_pos("left")
            state["l_clear_z"] = np.array(pos[2] + half + self.CLEAR)
            return Goal(arms={"left": (np.array([site[0], site[1], state["l_clear_z"]]), 0.0)},
                        hands={"left": OPEN_HAND})

        def l_above() -> Goal:
            # Aim at a point on the baton's own axis: it may lean a little in the right hand.
            pos, quat = self.object_pose()
            axis = quat_to_mat(quat)[:, 2]
            state["l_target"] = pos + axis * (self.L_GRASP_ABOVE_CENTRE / max(axis[2], 0.5))
            return Goal(arms={"left": (np.array([*state["l_target"][:2], state["l_clear_z"]]), l_yaw)})

        def l_down() -> Goal:
            return Goal(arms={"left": (state["l_target"], l_yaw)})

        def l_close() -> Goal:
            return Goal(hands={"left": CLOSED_HAND})

        def r_open() -> Goal:
            return Goal(hands={"right": OPEN_HAND})

        def r_retreat() -> Goal:
            # Straight away from the palm: the open fingers and swung-back thumb clear the baton.
            site = self.site_pos("right")
            away = -rot_z(self.yaw["right"])[:, 1]
            return Goal(arms={"right": (site + self.RETREAT * away, self.yaw["right"])})

        def l_lift() -> Goal:
            site = self.site_pos("left")
            return Goal(arms={"left": (site + [0.0, 0.0, self.LEFT_LIFT], self.yaw["left"])})

        return [Phase("r_up", r_up, steps=8), Phase("r_above", r_above, steps=20, settle=3),
                Phase("r_down", r_down, steps=20, settle=3), Phase("r_close", r_close, steps=8, settle=6),
                Phase("r_lift", r_lift, steps=10, settle=2), Phase("r_carry", r_carry, steps=30, settle=6),
                Phase("l_up", l_up, steps=10), Phase("l_above", l_above, steps=25, settle=3),
                Phase("l_down", l_down, steps=15, settle=3), Phase("l_close", l_close, steps=8, settle=6),
                Phase("r_open", r_open, steps=6, settle=4), Phase("r_retreat", r_retreat, steps=15, settle=2),
                Phase("l_lift", l_lift, steps=25, settle=1000)]


EXPERTS: dict[str, type[ScriptedExpert]] = {
    "g1_pick_lift": PickLiftExpert,
    "g1_handover": HandoverExpert,
}
