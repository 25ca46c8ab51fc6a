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
    # with feature_dim > 0: the file digest of the frozen base whose image encoder gives the
    # features (the residual node computes them with its own copy of that base, and checks it)
    base_digest: str = ""

    @staticmethod
    def of_agent(agent, base_digest: str = "") -> "PolicySpec":
        """The spec of a ResidualAgent (learning/agent.py) or anything with the same attributes."""
        return PolicySpec(agent_config=dict(vars(agent.config)), state_dim=agent.state_dim,
                          action_dim=agent.action_dim, camera_names=tuple(agent.camera_names),
                          image_size=tuple(agent.image_size), feature_dim=agent.feature_dim,
                          base_digest=base_digest if agent.feature_dim else "")

    def to_json(self) -> str:
        d = asdict(self)
        d["camera_names"], d["image_size"] = list(self.camera_names), list(self.image_size)
        return json.dumps(d, sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "PolicySpec":
        try:
            d = json.loads(text)
            known = {f.name for f in fields(PolicySpec)}
            if not isinstance(d, dict) or not known - {"base_digest"} <= set(d) <= known:
                raise ValueError(f"expected keys {sorted(known)}")
            return PolicySpec(agent_config=dict(d["agent_config"]), state_dim=int(d["state_dim"]),
                              action_dim=int(d["action_dim"]), camera_names=tuple(map(str, d["camera_names"])),
                              image_size=tuple(int(x) for x in d["image_size"]), feature_dim=int(d["feature_dim"]), base_digest=str(d.get("base_digest", "")))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"malformed policy spec: {exc}") from None

    def feature_base_problem(self, base, digest: str) -> tuple[str, str] | None:
        """(text, reason) when these weights, which read base features, cannot run with `base`
        (a base policy, or None) whose file digest is `digest`; None when they can."""
        if base is None:
            return ("the weights read the base's image features: set base_artifact to the frozen base", "no_base")
        if self.base_digest and self.base_digest != digest:
            return (f"the weights read the features of base {self.base_digest}, base_artifact is {digest}: "
                    "the learner and this node must use the same base file", "base_mismatch")
        if base.feature_dim != self.feature_dim:
            return (f"the weights read {self.feature_dim} features, the base's encoder gives {base.feature_dim}",
                    "base_mismatch")
        return None

    def observation_problem(self, state_size: int, images: dict) -> tuple[str, str] | None:
        """(reason, text) when an observation does not fit the network, else None.

        state_size: len(ObservationData.state_vector()); images: camera -> (H, W, 3) array.
        Reasons: "state_dim" (other joints/extras than the weights were trained with) and "camera"
        (a camera the policy sees is missing or has another size).
        """
        if state_size != self.state_dim:
            return "state_dim", f"observation state has {state_size} values, the policy takes {self.state_dim}"
        return camera_problem(self.camera_names, self.image_size, images)


def camera_problem(camera_names, image_size, images: dict) -> tuple[str, str] | None:
    """("camera", text) when a camera of `camera_names` is missing from `images` or is not
    `image_size` (an int n for n x n, or (H, W)), else None."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    for cam in camera_names:
        img = images.get(cam)
        if img is None:
            return "camera", f"observation has no image from camera '{cam}' (has {sorted(images)})"
        if tuple(img.shape[:2]) != size:
            return "camera", (f"camera '{cam}' image is {img.shape[1]}x{img.shape[0]}, the policy takes "
                              f"{size[1]}x{size[0]}")
    return None
