"""Every node's config fields are declared ROS parameters: described (the field's comment, type
and default), read-only once the node has read them, and a `ros2 param set` is refused with the
reason instead of being accepted and ignored."""
from __future__ import annotations

import dataclasses

import pytest

from resfit_ros.config import field_descriptions
from resfit_ros.nodes.base_chunk_server import BaseChunkServerConfig
from resfit_ros.nodes.episode_manager import EpisodeManagerConfig
from resfit_ros.nodes.judge import JudgeConfig
from resfit_ros.nodes.learner import LearnerConfig
from resfit_ros.nodes.recorder import RecorderConfig
from resfit_ros.nodes.residual_policy import ResidualPolicyConfig
from resfit_ros.nodes.sim_robot import SimRobotConfig
from resfit_ros.nodes.success_detector import SuccessDetectorConfig
from resfit_ros.nodes.synchronizer import SynchronizerConfig

CONFIGS = [BaseChunkServerConfig, EpisodeManagerConfig, JudgeConfig, LearnerConfig, RecorderConfig,
           ResidualPolicyConfig, SimRobotConfig, SuccessDetectorConfig, SynchronizerConfig]
REQUIRED = {BaseChunkServerConfig: {"base_artifact": "base.safetensors"},   # no default for these
            SuccessDetectorConfig: {"detector": "detector.safetensors"}}


def test_descriptions_come_from_the_fields_comments():
    d = field_descriptions(ResidualPolicyConfig)
    assert set(d) == {f.name for f in dataclasses.fields(ResidualPolicyConfig) if f.init}
    assert d["residual_bound"].startswith("|residual| <= this, rad") and "default [0.2]" in d["residual_bound"]
    assert "[bool, default False]" in d["pace_learner"]


@pytest.mark.ros
@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_every_field_is_a_described_read_only_parameter(ros_context, cls):
    import rclpy
    from rclpy.parameter import Parameter

    from resfit_ros.nodes.common import node_config

    # one field given as an override (declared from it), the rest from the dataclass defaults
    given = next(f for f in dataclasses.fields(cls) if f.init and type(f.default) in (int, float))
    node = rclpy.create_node(f"params_{cls.__name__.lower()}", context=ros_context.context,
                             automatically_declare_parameters_from_overrides=True, allow_undeclared_parameters=True,
                             parameter_overrides=[Parameter(given.name, value=given.default + 1)] + [
                                 Parameter(k, value=v) for k, v in REQUIRED.get(cls, {}).items()])
    try:
        cfg = node_config(node, cls)
        assert getattr(cfg, given.name) == given.default + 1
        for f in dataclasses.fields(cls):
            if not f.init or getattr(cfg, f.name) is None:
                continue
            descriptor = node.describe_parameter(f.name)
            assert descriptor.read_only and descriptor.description == field_descriptions(cls)[f.name], f.name
        result = node.set_parameters([Parameter(given.name, value=given.default + 2)])[0]
        assert not result.successful and "read-only" in result.reason
        assert node.get_parameter(given.name).value == given.default + 1
        result = node.set_parameters([Parameter("not_a_field", value=1.0)])[0]
        assert not result.successful and "once at start-up" in result.reason
    finally:
        node.destroy_node()


@pytest.mark.ros
def test_ros2_param_services_of_a_running_node(ros_context, spawn):
    """What `ros2 param describe/get/set` do, through the node's own parameter services."""
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import DescribeParameters, GetParameters, SetParameters

    from test.support import node_argv

    spawn(node_argv("residual_policy", "-p", "residual_bound:=[0.1]"), name="residual")
    node = ros_context.node
    describe = node.create_client(DescribeParameters, "/residual_policy/describe_parameters")
    get = node.create_client(GetParameters, "/residual_policy/get_parameters")
    set_ = node.create_client(SetParameters, "/residual_policy/set_parameters")
    assert describe.wait_for_service(timeout_sec=60)
    ros_context.spin_until(lambda: False, 2.0)             # its config is read and declared after start-up
    names = ["residual_bound", "pace_learner", "watchdog_timeout_s"]
    descriptors = ros_context.call(describe, DescribeParameters.Request(names=names)).descriptors
    assert [d.name for d in descriptors] == names
    assert all(d.read_only and "default" in d.description for d in descriptors)
    assert descriptors[0].description.startswith("|residual| <= this, rad")
    bad = ParameterMsg(name="residual_bound", value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE_ARRAY,
                                                                   double_array_value=[0.5]))
    assert not ros_context.call(set_, SetParameters.Request(parameters=[bad])).results[0].successful
    values = ros_context.call(get, GetParameters.Request(names=["residual_bound"])).values
    assert list(values[0].double_array_value) == [0.1]
