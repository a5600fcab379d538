"""`obliviate forget --target NAME`: forget what a model knows about named targets WITHOUT any forget data, with
a self-generated-data method (Reveal-and-Release by default), through the same run as `unlearn`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from obliviate.data.records import QA
from obliviate.errors import ConfigError
from obliviate.methods import METHODS
from obliviate.runs.common import load_model
from obliviate.runs.rehearsal import NAMED_RETAIN, named_retain
from obliviate.runs.unlearn import UnlearnResult, resolve_method, unlearn


def self_generated_methods() -> list[str]:
    """The registered methods that work from target names alone."""
    return [n for n, info in METHODS.items() if info.self_generated]


def forget_by_name(model, targets: Sequence[str], out: str | os.PathLike[str], *, method: str = "reveal_release",
                   config: dict[str, Any] | None = None, keep_revealed: bool = False, retain=None, scenario=None,
                   evaluate: bool = False, reference=None, overwrite: bool = False, progress=None,
                   eval_config: dict[str, Any] | None = None, eval_progress=None) -> UnlearnResult:
    """Forget everything `model` knows about each name in `targets`, without any forget data, and save the model,
    manifest.json and the per-round log (`<method>.json`) to `out` (atomically, through `unlearn`). When the model
    reveals nothing about the targets, no weight changes: NothingToForget (exit 3), no model is written, and the
    attempt is recorded in `out/ledger.jsonl` alone.

    `retain`: optional retain records/file (else the method makes its own neutral retain data), or `general` /
    `facts`: the model's own answers to obliviate's general-knowledge questions, none naming a target
    (runs.rehearsal.named_retain), so that what the model knows at large is held. `keep_revealed`:
    also save what the model revealed (it may be exactly the private data being deleted). `scenario` (a Scenario)
    is used only to evaluate the result when `evaluate`."""
    given = list(targets)
    names = [n.strip() for n in given if isinstance(n, str) and n.strip()]
    if not names or len(names) != len(given):
        raise ConfigError(f"give one or more non-empty target names (--target \"Name\"); got {len(given)} name(s), "
                          f"{len(given) - len(names)} of them empty")
    dup = next((i for i, n in enumerate(names) if n.casefold() in {m.casefold() for m in names[:i]}), None)
    if dup is not None:
        raise ConfigError(f"--target number {dup + 1} repeats an earlier target (names are compared ignoring case); "
                          f"give each target once")
    info, _ = resolve_method(method, config)
    allowed = self_generated_methods()
    if not info.self_generated:
        raise ConfigError(f"method {method!r} trains on the forget data itself, which forgetting by name does not "
                          f"have; use a self-generated-data method: {', '.join(allowed)}")
    cfg = dict(config or {})
    if keep_revealed:
        if "keep_revealed" not in info.config_cls.model_fields:
            raise ConfigError(f"method {method!r} has no keep_revealed option")
        cfg["keep_revealed"] = True
    records = [QA(id=f"target:{i}", question="", answer="", subject=n, group=f"target{i}") for i, n in enumerate(names)]
    if isinstance(retain, (str, os.PathLike)) and str(retain) in NAMED_RETAIN:
        m, tok, _ = load_model(model)
        retain = named_retain(m, tok, str(retain), names)
        del m
    return unlearn(model, method, out=out, forget=records, retain=retain, scenario=scenario, config=cfg,
                   overwrite=overwrite, evaluate=evaluate, reference=reference, progress=progress,
                   eval_config=eval_config, targets=names, eval_progress=eval_progress)
