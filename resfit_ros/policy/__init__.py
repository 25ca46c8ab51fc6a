"""The frozen base policy: BC chunk policy (network, training, artifact), TorchScript plug-in;
`select_action` executes its chunks open-loop through core/chunks.ChunkScheduler, as the node does.

    from resfit_ros.policy import load_base_policy
    base = load_base_policy("base.safetensors")       # or a TorchScript .pt
    chunk = base.predict_chunk(obs)                   # (k, 29)
    feats = base.encode_images(images)                # (B, n_cameras * 128) frozen features

Importing this package does not import the training code (policy.train).
"""
from resfit_ros.policy.base import (
    ARTIFACT_FORMAT, BasePolicy, BCBasePolicy, PolicyLoadError, TorchScriptBasePolicy,
    export_torchscript, load_artifact, load_base_policy, save_artifact, state_from_observation)
from resfit_ros.policy.model import STATE_KEYS, BCPolicyConfig, BCPolicyNet

__all__ = [
    "ARTIFACT_FORMAT", "BasePolicy", "BCBasePolicy", "BCPolicyConfig", "BCPolicyNet",
    "PolicyLoadError", "STATE_KEYS", "TorchScriptBasePolicy", "export_torchscript", "load_artifact",
    "load_base_policy", "save_artifact", "state_from_observation",
]
