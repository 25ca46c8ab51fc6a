"""ROS-free residual off-policy RL (ResFiT): normaliser, n-step replay, TD3 agent, policy, checkpoints.

Nothing here imports rclpy; the learner and policy nodes are thin adapters over these classes and
exchange weights only through ResidualAgent.get_weights() / ResidualPolicy.load_weights().
"""
from resfit_ros.learning.agent import ResidualAgent, train_iteration
from resfit_ros.learning.checkpoint import CheckpointError
from resfit_ros.learning.config import AgentConfig
from resfit_ros.learning.loading import load_residual_policy
from resfit_ros.learning.normaliser import Normaliser, NormaliserConfig
from resfit_ros.learning.policy import ResidualPolicy, resize_image_stack
from resfit_ros.learning.replay import Batch, ReplayBuffer, ReplayConfig, nstep_targets

__all__ = ["AgentConfig", "Batch", "CheckpointError", "Normaliser", "NormaliserConfig", "ReplayBuffer",
           "ReplayConfig", "ResidualAgent", "ResidualPolicy", "load_residual_policy", "nstep_targets", "resize_image_stack", "train_iteration"]
