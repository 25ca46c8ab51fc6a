"""Shared pieces of the bad-input tests: a tiny base artifact, residual weights, command watchers."""
from __future__ import annotations

import numpy as np

from resfit_ros import names


def robot():
    from resfit_ros.robot import RobotDescription, config_dir

    return RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")


def robot_path() -> str:
    from resfit_ros.robot import config_dir

    return str(config_dir() / "robots" / "g1_sim.yaml")


def tiny_base(path, rob, cameras=("head",), chunk_length=20):
    """An untrained BC base artifact (seconds to build) whose actions stay within +-0.01 rad of home."""
    import torch

    from resfit_ros.policy import BCPolicyConfig, BCPolicyNet, save_artifact

    torch.manual_seed(0)
    cfg = BCPolicyConfig(joint_names=list(rob.joint_names), chunk_length=chunk_length, camera_names=list(cameras),
                         image_size=84, state_keys=["position"], state_dim=rob.dof, image_feature_dim=8,
                         conv_channels=[4, 4, 4, 4], hidden_dims=[32])
    net = BCPolicyNet(cfg)
    home = torch.as_tensor(np.asarray(rob.home), dtype=torch.float32)
    net.action_low.copy_(home - 0.01)
    net.action_high.copy_(home + 0.01)
    return save_artifact(net, cfg, path)


def weights_msg(version: int, cameras=("head",)):
    """A valid PolicyWeights message for a small residual actor on 29 joints (state: pos + vel)."""
    from resfit_ros.core.policy_spec import PolicySpec
    from resfit_ros.core.weights import pack_weights
    from resfit_ros.learning import AgentConfig, Normaliser, ResidualAgent
    from resfit_ros.msg import PolicyWeights, Tensor

    rng = np.random.default_rng(0)
    cfg = AgentConfig(actor_hidden_dims=(32, 32), critic_hidden_dims=(32, 32), num_critic_heads=2,
                      num_target_heads=2, encoder_channels=(4, 4, 4), camera_feature_dim=8,
                      feature_projection_dim=16)
    agent = ResidualAgent(cfg, 58, 29, list(cameras), 84, 0,
                          Normaliser.from_demonstrations(rng.normal(size=(20, 58)), rng.normal(size=(20, 29)),
                                                         cfg.action_scale))
    spec = PolicySpec(agent_config=dict(vars(agent.config)), state_dim=58, action_dim=29,
                      camera_names=tuple(cameras), image_size=(84, 84), feature_dim=0)
    msg = PolicyWeights(version=version, spec=spec.to_json())
    msg.tensors = [Tensor(name=t.name, shape=list(t.shape), data=t.data) for t in pack_weights(agent.get_weights())]
    return msg


class CommandWatch:
    """Every command sent to the robot's controllers, checked against the robot's limits."""

    def __init__(self, node, rob):
        from std_msgs.msg import Float64MultiArray

        from resfit_ros.nodes.common import STREAM

        self.robot = rob
        self.groups = rob.group_indices()
        self.messages: list[tuple[str, np.ndarray]] = []
        for group, controller in rob.controllers.items():
            node.create_subscription(Float64MultiArray, names.CONTROLLER_COMMANDS.format(controller=controller),
                                     lambda m, g=group: self.messages.append((g, np.array(m.data))), STREAM)

    @property
    def count(self) -> int:
        return len(self.messages)

    def problems(self) -> list[str]:
        out = []
        for group, data in self.messages:
            idx = self.groups[group]
            if data.shape != (len(idx),) or not np.all(np.isfinite(data)):
                out.append(f"{group}: malformed {data}")
            elif np.any(data < self.robot.lower[idx] - 1e-9) or np.any(data > self.robot.upper[idx] + 1e-9):
                out.append(f"{group}: outside the joint limits {data}")
        return out


class DiagWatch:
    """The newest /diagnostics values per node ("resfit_ros: <node>")."""

    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        self.values: dict[str, dict[str, str]] = {}
        node.create_subscription(DiagnosticArray, names.DIAGNOSTICS, self._on, 50)

    def _on(self, msg):
        for s in msg.status:
            if s.name.startswith("resfit_ros: "):
                self.values[s.name[len("resfit_ros: "):]] = {kv.key: kv.value for kv in s.values}

    def get(self, node: str, key: str, default: int = 0) -> int:
        v = self.values.get(node, {}).get(key)
        return default if v is None else int(float(v))
