"""The spec that travels with residual weights: what network the tensors belong to (JSON data).

The learner writes it from its agent; the residual node builds a ResidualPolicy from it, so the
two only share weights, never config files or code objects.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class PolicySpec:
    agent_config: dict          # resfit_ros.learning.config.AgentConfig fields
    state_dim: int
    action_dim: int
    camera_names: tuple[str, ...]
    image_size: tuple[int, int]
    feature_dim: int

    def to_json(self) -> str:
        d = asdict(self)
        d["camera_names"], d["image_size"] = list(self.camera_names), list(self.image_size)
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "PolicySpec":
        try:
            d = json.loads(text)
            known = {f.name for f in fields(PolicySpec)}
            if not isinstance(d, dict) or set(d) != known:
                raise ValueError(f"expected keys {sorted(known)}")
            return PolicySpec(agent_config=dict(d["agent_config"]), state_dim=int(d["state_dim"]),
                              action_dim=int(d["action_dim"]), camera_names=tuple(map(str, d["camera_names"])),
                              image_size=tuple(int(x) for x in d["image_size"]), feature_dim=int(d["feature_dim"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"malformed policy spec: {exc}") from None
