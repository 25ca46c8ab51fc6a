"""One residual bound: the actor the learner trains never asks for more than the residual node executes.

The node clips every residual to its `residual_bound`; the critic only ever sees executed actions.
An actor allowed past that bound is optimised where the critic has no data (measured on the main
job: fingers asking -0.31 rad, getting -0.2, their sign swinging between checkpoints)."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from resfit_ros.config import load_config
from resfit_ros.core.command import reach_beyond_bound
from resfit_ros.learning import ResidualPolicy
from resfit_ros.learning.normaliser import residual_bounds
from resfit_ros.learning.offline import OfflineSettings, demo_normaliser
from resfit_ros.nodes.learner import LearnerConfig
from resfit_ros.nodes.residual_policy import ResidualPolicyConfig
from resfit_ros.robot import RobotDescription, config_dir

ROBOT = RobotDescription.load(config_dir() / "robots" / "g1_sim.yaml")


def demo_actions(rng: np.random.Generator, n: int = 200) -> np.ndarray:
    """(n, 29) commands like the pick-lift demos: the right fingers close by up to 1.2 rad, the right
    arm moves 0.3 rad, everything else stays at home."""
    travel = np.array([1.2 if name.startswith("right_hand_") and "thumb_0" not in name else
                       0.3 if name.startswith("right_") else 0.0 for name in ROBOT.joint_names])
    inward = np.where(ROBOT.upper - ROBOT.home > ROBOT.home - ROBOT.lower, 1.0, -1.0)
    return ROBOT.home + inward * travel * rng.uniform(0, 1, (n, ROBOT.dof))


@pytest.mark.parametrize("config_file", ["sim.yaml", "real.yaml"])
def test_the_learner_and_the_residual_node_read_the_same_residual_bound(config_file):
    learner = load_config(LearnerConfig, config_dir() / config_file, "learner")
    node = load_config(ResidualPolicyConfig, config_dir() / config_file, "residual_policy")
    assert learner.residual_bound == node.residual_bound


def test_the_sim_recipe_never_asks_the_robot_for_more_than_the_residual_node_executes():
    rng = np.random.default_rng(0)
    learner = load_config(LearnerConfig, config_dir() / "sim.yaml", "learner")
    node_bound = np.broadcast_to(load_config(ResidualPolicyConfig, config_dir() / "sim.yaml",
                                             "residual_policy").residual_bound, (ROBOT.dof,))
    settings = dataclasses.replace(OfflineSettings.from_object(learner), hidden_dim=16, num_critic_heads=2)
    commands = demo_actions(rng)
    normaliser = demo_normaliser(rng.normal(size=(200, 5)), commands, commands, settings, ROBOT.joint_names)
    reach = residual_bounds(settings.action_scale, normaliser) * normaliser.action_half_range   # (29,) rad
    assert reach_beyond_bound(reach, node_bound) == []
    fingers = [j for j, name in enumerate(ROBOT.joint_names) if name.startswith("right_hand_") and "thumb_0" not in name]
    np.testing.assert_allclose(reach[fingers], node_bound[fingers], rtol=1e-5)   # the gain reaches it: no less

    config = settings.agent_config(ROBOT.joint_names)
    from resfit_ros.learning import ResidualAgent

    agent = ResidualAgent(config, 5, ROBOT.dof, [], 84, 0, normaliser)
    policy = ResidualPolicy(config, 5, ROBOT.dof, [], 84, 0, agent.get_weights())
    assert reach_beyond_bound(policy.reach(), node_bound) == []
    # the actor saturated, with any exploration noise: within the node's bound on every joint
    with np.errstate(all="ignore"):
        for layer in agent.actor.modules():
            if hasattr(layer, "bias") and layer.bias is not None:
                layer.bias.data.fill_(50.0)
    policy.load_weights(agent.get_weights())
    base = commands[0]
    for noise in (None, np.full(ROBOT.dof, 100.0), np.full(ROBOT.dof, -100.0)):
        residual = policy.act(rng.normal(size=5), base, explore=noise is not None, noise=noise)
        assert reach_beyond_bound(np.abs(residual), node_bound) == [], residual
    assert np.abs(policy.act(rng.normal(size=5), base))[fingers].max() > 0.19    # saturated: at the bound
    # the learner's target policy: the same bound in its units
    target_reach = agent._residual_scale.numpy() * normaliser.action_half_range
    assert reach_beyond_bound(target_reach, node_bound) == []


def test_a_residual_bound_for_the_wrong_number_of_joints_is_refused_at_set_up():
    from resfit_ros.learning.offline import SetupError

    rng = np.random.default_rng(1)
    settings = OfflineSettings(residual_bound=[0.1, 0.2], hidden_dim=16, num_critic_heads=2)
    commands = demo_actions(rng, 20)
    with pytest.raises(SetupError, match="residual_bound has 2 values for 29 joints"):
        demo_normaliser(rng.normal(size=(20, 5)), commands, commands, settings, ROBOT.joint_names)
    from resfit_ros.config import ConfigError

    with pytest.raises(ConfigError, match="residual_bound"):
        OfflineSettings(residual_bound=[-0.1])
