"""A sweep's search space: the method's default (declared next to its config, `Method.search_space`) or a YAML
file, checked against the method's config and resolved around the run's starting config.

The file maps config keys (dotted, or nested mappings, for nested configs such as UniErase's `edit.l2`) to one of
four kinds, or to a fixed value:

    lr: {log: [1e-5, 1e-3]}             # log-uniform
    epochs: {int: [3, 15]}              # integer
    retain_weight: {uniform: [0.5, 5]}
    retain: {choice: [gd, kl]}
    beta: {log: [0.5, 2], relative: true}   # multiples of the starting value (preset or default)
    batch_size: 8                       # fixed in every trial

Every key must be one of the method's config (an unknown key is an error with "did you mean"); every range end and
choice must make a valid config (checked before any trial runs)."""

from __future__ import annotations

import difflib
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from obliviate.config import Config, deep_merge, load_yaml
from obliviate.errors import ConfigError
from obliviate.methods.base import MethodInfo, Space

KINDS = ("log", "uniform", "int", "choice")


def config_keys(cls: type[BaseModel], prefix: str = "") -> list[str]:
    """Every settable key of a config, nested configs as dotted paths (`edit.l2`, `lora.r`)."""
    out: list[str] = []
    for name, f in cls.model_fields.items():
        key = prefix + name
        out.append(key)
        for arg in (f.annotation, *typing.get_args(f.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += config_keys(arg, key + ".")
    return out


def _get(values: Mapping[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"edit.l2": 1.0, "lr": 1e-4} -> {"edit": {"l2": 1.0}, "lr": 1e-4}."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = key.split(".")
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = v
    return out


def _is_spec(v: Any) -> bool:
    return isinstance(v, Mapping) and any(k in v for k in KINDS)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and not _is_spec(v):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _spec(key: str, v: Mapping[str, Any], where: str) -> Space:
    kinds = [k for k in KINDS if k in v]
    extra = sorted(set(v) - set(KINDS) - {"relative"})
    if len(kinds) != 1 or extra:
        raise ConfigError(f"{where}: {key}: give exactly one of {', '.join(KINDS)} (and optionally relative: true), "
                          f"got keys {sorted(v)}")
    kind, arg = kinds[0], v[kinds[0]]
    try:
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                raise ValueError("choice needs a non-empty list of values")
            return Space.choice(*arg)
        if not (isinstance(arg, list) and len(arg) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                                                for x in arg)):
            raise ValueError(f"{kind} needs [low, high], got {arg!r}")
        return Space(kind, arg[0], arg[1], relative=bool(v.get("relative", False)))
    except ValueError as e:
        raise ConfigError(f"{where}: {key}: {e}") from None


def load_space(path: str | os.PathLike[str]) -> tuple[dict[str, Space], dict[str, Any]]:
    """(searched keys -> Space, fixed keys -> value) from a YAML space file."""
    where = str(path)
    flat = _flatten(load_yaml(path))
    spaces = {k: _spec(k, v, where) for k, v in flat.items() if _is_spec(v)}
    fixed = {k: v for k, v in flat.items() if k not in spaces}
    return spaces, fixed


def check_keys(info: MethodInfo, keys: list[str], where: str) -> None:
    """Every key is one of the method's config, else one ConfigError naming each with "did you mean"."""
    known = config_keys(info.config_cls)
    bad = []
    for k in keys:
        if k not in known:
            close = difflib.get_close_matches(k, known, n=2, cutoff=0.6)
            bad.append(f"{k!r}" + (f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""))
    if bad:
        raise ConfigError(f"{where}: method {info.name!r} has no key {', '.join(bad)}; its keys: "
                          f"{', '.join(k for k in known if '.' not in k)}")


def resolve_space(info: MethodInfo, space: str | os.PathLike[str], start: Mapping[str, Any],
                  fixed: Mapping[str, Any]) -> tuple[dict[str, Space], dict[str, Any], list[str]]:
    """The absolute space a sweep samples, the starting overrides (with the file's fixed values), and notes on what
    was left out. `space` is "default" (the method's declaration) or a YAML file; keys also fixed on the command
    line (`fixed`) are not searched; relative ranges are resolved around the starting config."""
    where = "--space default" if str(space) == "default" else f"--space {space}"
    if str(space) == "default":
        declared, file_fixed = dict(info.cls.search_space), {}
    else:
        if not Path(space).is_file():
            raise ConfigError(f"--space {space}: no such file; give a YAML space file or 'default' (the method's "
                              f"declared space)")
        declared, file_fixed = load_space(space)
    check_keys(info, [*declared, *file_fixed], where)
    check_keys(info, list(_flatten(dict(fixed))), "config overrides")
    start = deep_merge(deep_merge(start, nest(file_fixed)), fixed)
    cfg = info.make_config(start)
    values = cfg.model_dump()
    fixed_keys = set(_flatten(dict(fixed)))
    notes: list[str] = []
    out: dict[str, Space] = {}
    for key, sp in declared.items():
        if key in fixed_keys:
            notes.append(f"{key} is fixed on the command line ({_get(fixed, key)!r}): not searched")
            continue
        if sp.when is not None and not sp.when(cfg):
            notes.append(f"{key} does not apply to this configuration of {info.name}: not searched")
            continue
        try:
            out[key] = sp.resolve(_get(values, key))
        except ValueError as e:
            raise ConfigError(f"{where}: {key}: {e}; give absolute bounds") from None
        _check_ends(info, key, out[key], start, where)
    if not out:
        raise ConfigError(f"{where}: nothing to search for method {info.name!r} (its declared space is empty or "
                          f"every key is fixed); give a space file (--space FILE, lines such as 'KEY: {{log: [LOW, "
                          f"HIGH]}}', see obliviate/runs/space.py)")
    return out, start, notes


def _check_ends(info: MethodInfo, key: str, sp: Space, start: Mapping[str, Any], where: str) -> None:
    """Each range end (or choice) makes a valid config: a bad bound fails now, not as trial after trial."""
    ends = sp.choices if sp.kind == "choice" else (sp.low, sp.high)
    for v in ends:
        v = int(v) if sp.kind == "int" else v  # type: ignore[arg-type]
        try:
            info.make_config(deep_merge(start, nest({key: v})))
        except ConfigError as e:
            raise ConfigError(f"{where}: {key} = {v!r} (a range end) is not a valid setting: {e}") from None


def suggest(trial: Any, key: str, sp: Space) -> Any:
    """Sample `key` from `sp` on an Optuna trial."""
    if sp.kind == "choice":
        return trial.suggest_categorical(key, list(sp.choices))
    if sp.kind == "int":
        return trial.suggest_int(key, int(sp.low), int(sp.high))  # type: ignore[arg-type]
    return trial.suggest_float(key, float(sp.low), float(sp.high), log=sp.kind == "log")  # type: ignore[arg-type]


def start_params(space: Mapping[str, Space], cfg: Config) -> dict[str, Any] | None:
    """The starting config's values of the searched keys, when every one lies in its range (then the sweep runs
    the starting config first, so its best is never worse than where it started); else None."""
    values = cfg.model_dump()
    out: dict[str, Any] = {}
    for key, sp in space.items():
        v = _get(values, key)
        if sp.kind == "choice":
            if v not in sp.choices:
                return None
        elif not isinstance(v, (int, float)) or not sp.low <= v <= sp.high:  # type: ignore[operator]
            return None
        out[key] = v
    return out


def describe(space: Mapping[str, Space]) -> dict[str, str]:
    return {k: sp.describe() for k, sp in space.items()}
