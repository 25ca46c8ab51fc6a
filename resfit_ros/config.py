"""Config is data: one dataclass per component, filled from a ROS parameter YAML and validated once.

A parameter file looks like the ones `ros2 run ... --ros-args --params-file` takes:

    /**:                       # every node; or one node in any namespace: /**/residual_policy:
      ros__parameters:
        control_rate_hz: 20.0

`load_config(Cls, path, section)` reads the `ros__parameters` of node `section` (`/**/section`,
or a bare `section` as older files have it, over `/**`),
rejects unknown keys and wrong types with a message naming the file, key and value, and lets the
dataclass's own `__post_init__` check ranges. No rclpy here: nodes pass their parameter dict to
`config_from_dict`.
"""
from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


# Parameters any node may have besides its component's config: the graphs pass the first two to
# every node, rclpy declares the third itself, and every node's process reads the last two
# (resfit_ros/nodes/common.py apply_cpu_priority). A config dataclass may use them or not.
COMMON_PARAMETERS = frozenset({"use_sim_time", "robot_description", "start_type_description_service", "nice",
                               "realtime_priority"})


def component_values(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` without the common node parameters that `cls` does not use."""
    fields = getattr(cls, "__dataclass_fields__", {})
    return {k: v for k, v in values.items()
            if k in fields or not (k in COMMON_PARAMETERS or k.startswith("qos_overrides."))}


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


def require(condition: bool, message: str) -> None:
    """Validation helper for __post_init__: raise ConfigError(message) unless condition holds."""
    if not condition:
        raise ConfigError(message)


def section_keys(section: str) -> tuple[str, ...]:
    """The top-level keys of a parameter YAML that hold node `section`'s parameters, in the order
    they are merged: every node (`/**`), the node in any namespace (`/**/<node>`), the bare name
    (rcl applies a bare name at the root only)."""
    if section == "/**":
        return ("/**",)
    return ("/**", f"/**/{section}", section)


def read_parameters(path: str | Path, section: str = "/**") -> dict[str, Any]:
    """The `ros__parameters` mapping of node `section` in a ROS parameter YAML (see section_keys)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return section_parameters(doc, section, str(path))


def section_parameters(doc: Any, section: str, where: str) -> dict[str, Any]:
    """The `ros__parameters` mapping of node `section` in a parameter document (`where` names it in errors)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{where}: expected a mapping of node names at the top level")
    merged: dict[str, Any] = {}
    for key in section_keys(section):
        block = doc.get(key)
        if block is None:
            continue
        if not isinstance(block, dict) or not isinstance(block.get("ros__parameters", {}), dict):
            raise ConfigError(f"{where}: '{key}' must hold a 'ros__parameters' mapping")
        merged.update(block.get("ros__parameters", {}) or {})
    return merged


def overlaid_parameters(base: str | Path, *overlays: str | Path) -> dict[str, Any]:
    """The parameter document of `base` with each overlay's values put over it in turn, node section
    by node section: a value replaces the one below, `null` removes the key (the node's default then
    applies: rcl cannot read an empty list from a file). ConfigError for a node section `base` lacks."""
    docs = []
    for path in (base, *overlays):
        try:
            doc = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read parameter file {path}: {exc}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{path}: expected a mapping of node names at the top level")
        docs.append(doc)
    merged = docs[0]
    for overlay, extra in zip(overlays, docs[1:]):
        for section, block in extra.items():
            if section not in merged:
                raise ConfigError(f"{overlay}: node section '{section}' is not in {base}")
            params = merged[section].setdefault("ros__parameters", {})
            for key, value in ((block or {}).get("ros__parameters") or {}).items():
                if value is None:
                    params.pop(key, None)
                else:
                    params[key] = value
    return merged


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_check_type(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    return value


def field_descriptions(cls: type) -> dict[str, str]:
    """Each field's description for `ros2 param describe`: its trailing comment in the class
    source (the one place a field is explained), with its type and default."""
    import inspect
    import re

    comments: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            m = re.match(r"\s+(\w+)\s*:[^#]*#\s*(.+)$", line)
            if m:
                comments[m.group(1)] = m.group(2).strip()
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = (f.default if f.default is not dataclasses.MISSING else
                   f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        hint = hints[f.name]
        kind = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
        text = comments.get(f.name, "")
        out[f.name] = (f"{text} " if text else "") + f"[{kind}, default {default!r}]"
    return out


def config_from_dict(cls: type[T], values: Mapping[str, Any], source: str = "config") -> T:
    """Build dataclass `cls` from `values`; unknown keys and wrong types raise ConfigError."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} for {cls.__name__}; "
            f"known keys: {', '.join(sorted(fields))}")
    kwargs = {k: _check_type(v, hints[k], f"{source}: {k}") for k, v in values.items()}
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_config(cls: type[T], path: str | Path, section: str = "/**") -> T:
    """Read `section` of the parameter YAML at `path` into dataclass `cls`, validated."""
    return config_from_dict(cls, component_values(cls, read_parameters(path, section)), source=f"{path} [{section}]")


def config_to_dict(config: Any) -> dict[str, Any]:
    """The plain-data form of a config dataclass (for checkpoints and ROS parameter declaration)."""
    return dataclasses.asdict(config)
