"""The cut G1 model against config/robots/g1_sim.yaml: 29 position actuators, same names, order, limits."""
from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")

import mujoco  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from resfit_ros.robot import RobotDescription  # noqa: E402
from resfit_ros.sim import robot_model  # noqa: E402
from resfit_ros.sim.robot_model import ACTUATED_JOINTS, GROUPS, JOINT_GROUPS  # noqa: E402


@pytest.fixture(scope="module")
def model() -> mujoco.MjModel:
    return robot_model.build_robot_spec().compile()


@pytest.fixture(scope="module")
def robot() -> RobotDescription:
    return RobotDescription.load("robots/g1_sim.yaml")


def test_exactly_29_position_actuators_in_group_order(model):
    assert model.nu == 29
    names = [model.actuator(i).name for i in range(model.nu)]
    assert names == list(ACTUATED_JOINTS)
    counts = {g: len(JOINT_GROUPS[g]) for g in GROUPS}
    assert counts == {"waist": 1, "left_arm": 7, "right_arm": 7, "left_hand": 7, "right_hand": 7}
    # position servos: gain kp, bias -kp * q, each on the joint of the same name
    for i in range(model.nu):
        assert model.actuator_trntype[i] == mujoco.mjtTrn.mjTRN_JOINT
        assert model.joint(model.actuator_trnid[i, 0]).name == names[i]
        assert model.actuator_gainprm[i, 0] > 0 and model.actuator_biasprm[i, 1] == -model.actuator_gainprm[i, 0]


def test_fixed_base_and_only_actuated_joints(model):
    # no free joint, no legs, no waist roll/pitch: every robot joint is one of the 29 hinges
    assert model.njnt == 29 and model.nq == 29
    assert all(model.jnt_type[j] == mujoco.mjtJoint.mjJNT_HINGE for j in range(model.njnt))
    assert mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "left_hip_pitch_link") < 0
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    assert data.body("pelvis").xpos[2] == pytest.approx(robot_model.PELVIS_HEIGHT)


def test_meshes_are_decimated(model):
    assert model.nmesh > 0
    assert int(model.mesh_facenum.max()) <= robot_model.MAX_MESH_FACES


def test_yaml_matches_model_names_order_limits(model, robot):
    assert robot.dof == 29
    assert robot.joint_names == [model.actuator(i).name for i in range(model.nu)]
    ctrl = model.actuator_ctrlrange
    joint_range = np.array([model.joint(n).range for n in robot.joint_names])
    np.testing.assert_allclose(robot.lower, ctrl[:, 0], atol=1e-5)
    np.testing.assert_allclose(robot.upper, ctrl[:, 1], atol=1e-5)
    np.testing.assert_allclose(ctrl, joint_range, atol=1e-6)
    assert [j.group for j in robot.joints] == [g for g in GROUPS for _ in JOINT_GROUPS[g]]
    assert robot.controllers == {g: f"{g}_controller" for g in GROUPS}
    assert robot.cameras == {"head": "camera/head/image_raw"}      # node-relative: in the graph's namespace
    assert robot.joint_state_topics == ("joint_states",)


def test_home_is_inside_limits_with_room_to_move(robot):
    assert np.all(robot.home >= robot.lower) and np.all(robot.home <= robot.upper)
    assert np.all(robot.max_velocity[1:15] >= 2.0)     # arms: not slower than 2 rad/s
    assert np.all(robot.max_velocity[15:] > robot.max_velocity[1:15].max())  # fingers faster


def test_decimated_mesh_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("RESFIT_ROS_CACHE", str(tmp_path))
    files = {"pelvis": robot_model.g1_xml_path().parent / "assets" / "pelvis.STL"}
    first = robot_model.decimated_meshes(files)
    cached = list(tmp_path.glob("g1_meshes_*.npz"))
    assert len(cached) == 1
    again = robot_model.decimated_meshes(files)
    np.testing.assert_array_equal(first["pelvis"][1], again["pelvis"][1])
    assert len(first["pelvis"][1]) <= robot_model.MAX_MESH_FACES
    cached[0].write_bytes(b"not an npz")  # a corrupt cache is rebuilt, not fatal
    rebuilt = robot_model.decimated_meshes(files)
    np.testing.assert_array_equal(first["pelvis"][0], rebuilt["pelvis"][0])
