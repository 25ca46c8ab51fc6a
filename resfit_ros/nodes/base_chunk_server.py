"""base_chunk_server: the frozen base policy behind the GetActionChunk service.

Loads the artifact once (a BC artifact .safetensors or any TorchScript module with the same
contract; see resfit_ros/policy/base.py), answers each request with a (k x dof) chunk for the
request's observation, and resets the policy's temporal state when a request marks an episode
start. Inference runs here, in its own process, so it never sits on the residual node's control
path (the residual node asks ahead of time: resfit_ros/core/chunks.py).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from resfit_ros import names
from resfit_ros.config import require
from resfit_ros.msg import ActionChunk
from resfit_ros.nodes.common import Rejections, make_node, node_config, run
from resfit_ros.nodes.convert import ObservationError, msg_to_observation
from resfit_ros.srv import GetActionChunk


@dataclass
class BaseChunkServerConfig:
    base_artifact: str = ""          # frozen base policy file (.safetensors BC artifact or TorchScript)
    policy_kind: str = "auto"        # auto (by extension), bc or torchscript
    num_threads: int = 1             # torch threads for inference (leave cores to the learner)

    def __post_init__(self):
        require(bool(self.base_artifact), "base_artifact must name the frozen base policy file")
        require(self.policy_kind in ("auto", "bc", "torchscript"),
                f"policy_kind must be auto, bc or torchscript, got '{self.policy_kind}'")
        require(self.num_threads >= 1, f"num_threads must be >= 1, got {self.num_threads}")


class BaseChunkServer:
    def __init__(self):
        self.node = make_node("base_chunk_server")
        self.cfg = node_config(self.node, BaseChunkServerConfig)
        import torch

        from resfit_ros.policy.base import PolicyLoadError, load_base_policy

        torch.set_num_threads(self.cfg.num_threads)
        try:
            self.policy = load_base_policy(self.cfg.base_artifact, kind=self.cfg.policy_kind)
        except (PolicyLoadError, OSError) as exc:
            from resfit_ros.config import ConfigError

            raise ConfigError(f"cannot load the base policy: {exc}") from None
        self.served = 0
        # refused requests by reason (rejected/<reason> on /diagnostics): observation_*, inference_failed
        self.rejections = Rejections(self.node)
        self.rejections.start_diagnostics(1.0, extra=lambda: {"served": self.served})
        self.node.create_service(GetActionChunk, names.GET_ACTION_CHUNK, self.on_request)
        d = self.policy.describe()
        self.node.get_logger().info(
            f"serving {d['kind']} from {self.cfg.base_artifact}: chunks of {d['chunk_length']} x {d['dof']}, "
            f"cameras {d['camera_names']}")

    def on_request(self, request, response):
        t0 = time.perf_counter()
        try:
            obs = msg_to_observation(request.observation, dof=len(self.policy.joint_names))
        except ObservationError as exc:
            return self._refuse(response, f"observation_{exc.reason}", f"malformed observation: {exc}")
        if list(obs.joint_names) != list(self.policy.joint_names):
            return self._refuse(response, "observation_joint_names",
                                "observation joint order differs from the policy's")
        if request.episode_start:
            self.policy.reset()
        try:
            chunk = self.policy.predict_chunk(obs)            # (k, dof)
        except (ValueError, KeyError, FloatingPointError, RuntimeError, IndexError, TypeError) as exc:
            # an observation the network cannot take (other extras, image size, cameras): refuse it,
            # never let a bad request kill the server
            return self._refuse(response, "inference_failed", f"inference failed: {exc}")
        msg = ActionChunk(observation_sequence=obs.sequence, joint_names=list(self.policy.joint_names),
                          chunk_length=int(chunk.shape[0]), dof=int(chunk.shape[1]),
                          actions=np.asarray(chunk, dtype=np.float64).reshape(-1).tolist())
        msg.header.stamp = request.observation.header.stamp
        response.chunk = msg
        response.success = True
        response.message = f"{(time.perf_counter() - t0) * 1e3:.1f} ms"
        self.served += 1
        return response

    def _refuse(self, response, reason: str, message: str):
        self.rejections.reject(reason, message)
        response.success, response.message = False, message
        return response


def main(argv=None) -> int:
    return run(BaseChunkServer, argv, events=True)
