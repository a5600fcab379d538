"""Pydantic configs: frozen, unknown keys rejected, dotted `key=value` overrides, one ConfigError listing
every problem at once."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from obliviate.errors import ConfigError

C = TypeVar("C", bound=BaseModel)


class Config(BaseModel):
    """Base of every config: immutable, and a typo in a key is an error, not a silently ignored setting. Every
    float field rejects inf and nan (`lr=inf` trained a model into NaN weights)."""

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=(), allow_inf_nan=False)


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Turn `["train.lr=1e-5", "lora.r=8"]` into a nested dict; values are parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not of the form key=value (e.g. lr=1e-5)")
        key, raw = pair.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {pair!r} has an empty key")
        value = parse_scalar(raw)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with an earlier override of {part!r}")
        if isinstance(node.get(parts[-1]), dict):
            raise ConfigError(f"override {pair!r} conflicts with an earlier override inside {key!r}")
        node[parts[-1]] = value
    return out


_SCI = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def parse_scalar(raw: str) -> Any:
    """YAML scalar parsing, plus what YAML 1.1 misses: `1e-5` (no dot) is a float, not a string."""
    if not raw.strip():
        return ""
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    if isinstance(value, str) and _SCI.match(raw.strip()):
        return float(raw)
    return value


def _floats(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _floats(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_floats(v) for v in obj]
    if isinstance(obj, str) and _SCI.match(obj.strip()):
        return float(obj)
    return obj


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(merged.get(k), Mapping):
            merged[k] = deep_merge(merged[k], v)
        else:
            merged[k] = v
    return merged


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such config file")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of keys to values")
    return _floats(data)


def build_config(cls: type[C], values: Mapping[str, Any] | None = None, *, where: str = "") -> C:
    """Validate `values` into `cls`, turning pydantic's errors into one ConfigError that lists them all."""
    try:
        return cls.model_validate(dict(values or {}))
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(config)"
            if err["type"] == "extra_forbidden":
                known = ", ".join(_field_names(cls, err["loc"][:-1]))
                problems.append(f"unknown key {loc!r} (known: {known})")
            else:
                problems.append(f"{loc}: {err['msg']} (got {err.get('input')!r})")
        prefix = f"{where}: " if where else f"{cls.__name__}: "
        raise ConfigError(prefix + "; ".join(problems)) from None


def _field_names(cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    model: Any = cls
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def override(cfg: C, overrides: Mapping[str, Any]) -> C:
    """A copy of `cfg` with nested overrides applied and re-validated."""
    return build_config(type(cfg), deep_merge(cfg.model_dump(), overrides))
