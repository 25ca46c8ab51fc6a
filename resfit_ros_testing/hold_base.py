"""A frozen base that holds the robot where it is: a TorchScript module with the base contract
(state (B, S) + images -> chunk (B, k, dof), the chunk repeating the current joint positions).

Benches and tests that measure the stack rather than a model use it (bench/control_loop.py,
bench/load.py, the residual node's tests in test/ros/test_residual_policy.py): it loads through the
same `load_base_policy` path as any foreign TorchScript base.
"""
from __future__ import annotations

import json
from pathlib import Path


def make_hold_base(path: Path, joint_names: list[str], chunk: int = 20) -> None:
    import torch

    from resfit_ros.policy.base import TORCHSCRIPT_META

    class Hold(torch.nn.Module):
        def __init__(self, dof: int, k: int):
            super().__init__()
            self.dof, self.k = dof, k

        def forward(self, state: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
            return state[:, : self.dof].unsqueeze(1).repeat(1, self.k, 1)   # (B, k, dof)

    meta = {"joint_names": joint_names, "chunk_length": chunk, "state_keys": ["position", "velocity"],
            "camera_names": []}
    torch.jit.save(torch.jit.script(Hold(len(joint_names), chunk)), str(path),
                   _extra_files={TORCHSCRIPT_META: json.dumps(meta)})
