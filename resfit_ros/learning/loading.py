"""Load a trained residual for acting (evaluation, the policy node) from a learner checkpoint."""
from __future__ import annotations

from pathlib import Path

from resfit_ros.learning.agent import ResidualAgent
from resfit_ros.learning.policy import ResidualPolicy


def load_residual_policy(path: str | Path, base=None) -> ResidualPolicy:
    """An inference-only ResidualPolicy with the actor weights of the checkpoint at `path` (a
    checkpoint directory or the learner's checkpoints/ root: the newest valid one is used).

    `base` (optional) is checked for compatibility: same joint count as the residual's actions.
    """
    agent = ResidualAgent.from_checkpoint(path)
    if base is not None and len(base.joint_names) != agent.action_dim:
        raise ValueError(f"residual acts on {agent.action_dim} joints, the base on {len(base.joint_names)}")
    return ResidualPolicy(agent.config, agent.state_dim, agent.action_dim, agent.camera_names, agent.image_size,
                          agent.feature_dim, weights=agent.get_weights())
