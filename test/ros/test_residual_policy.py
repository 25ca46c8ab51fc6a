"""The residual policy node validates weights from the network and keeps the old ones on a bad message."""
import numpy as np
import pytest

from resfit_ros import names
from resfit_ros.robot import config_dir
from test.support import node_argv

pytestmark = pytest.mark.ros


def _weights_msg(version, agent, spec, corrupt=False):
    from resfit_ros.core.weights import pack_weights
    from resfit_ros.msg import PolicyWeights, Tensor

    w = agent.get_weights()
    if corrupt:
        key = next(k for k in w if k.startswith("actor."))
        w[key] = np.full_like(w[key], np.nan)
    msg = PolicyWeights(version=version, spec=spec.to_json())
    msg.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data) for t in pack_weights(w)]
    return msg


def test_bad_weights_are_rejected_and_the_old_ones_stay(ros_context, spawn):
    from diagnostic_msgs.msg import DiagnosticArray

    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent
    from resfit_ros.msg import PolicyWeights
    from resfit_ros.nodes.common import LATCHED

    proc = spawn(node_argv("residual_policy", "-p", f"robot_description:={config_dir() / 'robots' / 'g1_sim.yaml'}",
                           "-p", "diagnostics_period_s:=0.2"), name="residual")
    rng = np.random.default_rng(0)
    agent = ResidualAgent(AgentConfig(), 58, 29, [], 84, 0,
                          Normaliser.from_demonstrations(rng.normal(size=(20, 58)), rng.normal(size=(20, 29)), 0.1))
    spec = PolicySpec(agent_config=dict(vars(agent.config)), state_dim=58, action_dim=29, camera_names=(),
                      image_size=(84, 84), feature_dim=0)
    diag = {}
    ros_context.node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, lambda m: [diag.update(
        {kv.key: kv.value for kv in s.values}) for s in m.status if s.name.endswith("residual_policy")], 10)
    pub = ros_context.node.create_publisher(PolicyWeights, names.POLICY_WEIGHTS, LATCHED)

    pub.publish(_weights_msg(1, agent, spec))
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "1", 30), open(proc.log_path).read()
    pub.publish(_weights_msg(2, agent, spec, corrupt=True))          # NaN in the actor
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "1", 10)
    assert diag["weights_version"] == "1"
    pub.publish(_weights_msg(1, agent, spec))                         # not newer
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "2", 10)
    wrong = PolicySpec(**{**spec.__dict__, "action_dim": 7})
    pub.publish(_weights_msg(3, agent, wrong))                        # for another robot
    assert ros_context.spin_until(lambda: diag.get("weights_rejected") == "3", 10)
    pub.publish(_weights_msg(4, agent, spec))                         # a good one is taken again
    assert ros_context.spin_until(lambda: diag.get("weights_version") == "4", 10)
    log = open(proc.log_path).read()
    assert "non-finite" in log or "NaN" in log or "finite" in log, log
