"""Robot description: joint order, limits, groups/controllers, home pose and cameras, from a YAML.

Every other component takes the joint order from here (29 joints on the humanoid). The simulated
robot's file is config/robots/g1_sim.yaml; a real robot gets its own file of the same shape:

    name: g1_sim
    joints:                      # in the order used for every vector in the stack
      - {name: waist_yaw_joint, group: waist, lower: -2.6, upper: 2.6, home: 0.0, max_velocity: 2.0}
      ...
    controllers:                 # ros2_control forward command controller per group
      waist: waist_controller
    cameras:                     # camera name -> raw image topic
      head: camera/head/image_raw
    joint_state_topics: [joint_states]

Topic names are relative (no leading `/`): each node resolves them in its graph's namespace, so
one description serves robots side by side (resfit_ros/names.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from resfit_ros.names import JOINT_STATES
from resfit_ros.config import ConfigError, require

PACKAGE_ROOT = Path(__file__).resolve().parent


def config_dir() -> Path:
    """config/ of this package: the source tree's, else the installed share/resfit_ros/config."""
    candidates = [PACKAGE_ROOT.parent / "config"]
    try:  # on a ROS install, config/ lives in the package's share directory
        from ament_index_python.packages import get_package_share_directory  # type: ignore

        candidates.append(Path(get_package_share_directory("resfit_ros")) / "config")
    except Exception:
        pass
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"no config directory among {[str(c) for c in candidates]}")


@dataclass(frozen=True)
class JointSpec:
    name: str
    group: str
    lower: float
    upper: float
    home: float
    max_velocity: float  # rad/s; the command's per-step change limit is max_velocity / control rate


@dataclass(frozen=True)
class RobotDescription:
    name: str
    joints: tuple[JointSpec, ...]
    controllers: dict[str, str]
    cameras: dict[str, str] = field(default_factory=dict)
    joint_state_topics: tuple[str, ...] = (JOINT_STATES,)

    def __post_init__(self) -> None:
        names = [j.name for j in self.joints]
        require(len(names) > 0, f"robot '{self.name}': no joints")
        dupes = sorted({n for n in names if names.count(n) > 1})
        require(not dupes, f"robot '{self.name}': duplicate joint names {dupes}")
        for j in self.joints:
            require(all(math.isfinite(v) for v in (j.lower, j.upper, j.home, j.max_velocity)),
                    f"robot '{self.name}': joint {j.name} has a non-finite limit/home/velocity")
            require(j.lower < j.upper, f"robot '{self.name}': joint {j.name} lower {j.lower} >= upper {j.upper}")
            require(j.lower <= j.home <= j.upper,
                    f"robot '{self.name}': joint {j.name} home {j.home} outside [{j.lower}, {j.upper}]")
            require(j.max_velocity > 0, f"robot '{self.name}': joint {j.name} max_velocity must be > 0")
            require(j.group in self.controllers,
                    f"robot '{self.name}': joint {j.name} group '{j.group}' has no entry in controllers")

    @property
    def dof(self) -> int:
        return len(self.joints)

    @property
    def joint_names(self) -> list[str]:
        return [j.name for j in self.joints]

    @property
    def lower(self) -> np.ndarray:
        return np.array([j.lower for j in self.joints], dtype=np.float64)

    @property
    def upper(self) -> np.ndarray:
        return np.array([j.upper for j in self.joints], dtype=np.float64)

    @property
    def home(self) -> np.ndarray:
        return np.array([j.home for j in self.joints], dtype=np.float64)

    @property
    def max_velocity(self) -> np.ndarray:
        return np.array([j.max_velocity for j in self.joints], dtype=np.float64)

    def group_indices(self) -> dict[str, list[int]]:
        """group -> indices into the joint order, groups in the order of `controllers`."""
        return {g: [i for i, j in enumerate(self.joints) if j.group == g] for g in self.controllers}

    @staticmethod
    def from_dict(doc: dict, source: str = "robot description") -> "RobotDescription":
        if not isinstance(doc, dict):
            raise ConfigError(f"{source}: expected a mapping")
        try:
            joints = tuple(
                JointSpec(name=str(j["name"]), group=str(j["group"]), lower=float(j["lower"]),
                          upper=float(j["upper"]), home=float(j.get("home", 0.0)),
                          max_velocity=float(j["max_velocity"]))
                for j in doc["joints"])
            return RobotDescription(
                name=str(doc.get("name", "robot")),
                joints=joints,
                controllers={str(k): str(v) for k, v in dict(doc["controllers"]).items()},
                cameras={str(k): str(v) for k, v in dict(doc.get("cameras") or {}).items()},
                joint_state_topics=tuple(str(t) for t in doc.get("joint_state_topics", [JOINT_STATES])),
            )
        except KeyError as exc:
            raise ConfigError(f"{source}: missing key {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{source}: {exc}") from None

    @staticmethod
    def load(path: str | Path) -> "RobotDescription":
        path = Path(path)
        if not path.is_absolute() and not path.exists():
            path = config_dir() / path
        try:
            doc = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ConfigError(f"cannot read robot description {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"robot description {path} is not valid YAML: {exc}") from None
        return RobotDescription.from_dict(doc, source=str(path))
