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

    def observation_problem(self, state_size: int, images: dict) -> tuple[str, str] | None:
        """(reason, text) when an observation does not fit the network, else None.

        state_size: len(ObservationData.state_vector()); images: camera -> (H, W, 3) array.
        Reasons: "state_dim" (other joints/extras than the weights were trained with) and "camera"
        (a camera the policy sees is missing or has another size).
        """
        if state_size != self.state_dim:
            return "state_dim", f"observation state has {state_size} values, the policy takes {self.state_dim}"
        for cam in self.camera_names:
            img = images.get(cam)
            if img is None:
                return "camera", f"observation has no image from camera '{cam}' (has {sorted(images)})"
            if tuple(img.shape[:2]) != tuple(self.image_size):
                return "camera", (f"camera '{cam}' image is {img.shape[1]}x{img.shape[0]}, the policy takes "
                                  f"{self.image_size[1]}x{self.image_size[0]}")
        return None
