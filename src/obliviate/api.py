"""The Python API. The CLI is a thin layer over these functions."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from obliviate.config import build_config, deep_merge
from obliviate.data.scenarios import Scenario, get_scenario
from obliviate.errors import ConfigError, ModelError
from obliviate.eval.report import write_eval
from obliviate.eval.suite import (EvalConfig, EvalResult, Reference, evaluate_runner, load_reference_eval, make_runner,
                                  reference_from_runner)
from obliviate.models.build import BuildResult
from obliviate.models.build import build as _build
from obliviate.models.loading import is_model_dir, load_model_and_tokenizer
from obliviate.utils import dist
from obliviate.utils.io import check_output_dir

log = logging.getLogger(__name__)

ModelLike = str | os.PathLike[str] | tuple[Any, Any]


def load_scenario(scenario: str | Scenario, data: str | None = None, **options: Any) -> Scenario:
    """A scenario by registry name (`synthetic`, `tofu`, `tofu-mini`) or an already-built Scenario."""
    if isinstance(scenario, Scenario):
        return scenario
    if data is not None:
        if not scenario.startswith("tofu"):
            raise ConfigError(f"--data applies to the TOFU scenarios, not {scenario!r}")
        options = {**options, "data": data}
    return get_scenario(scenario, **options)


def build(scenario: str, out: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
          overwrite: bool = False, data: str | None = None, progress=None) -> BuildResult:
    """Train (or reuse from the cache) the scenario's offline target and retain models."""
    if data is not None:
        overrides = deep_merge(overrides or {}, {"scenario_options": {"data": data}})
    return _build(scenario, out, overrides, overwrite, progress)


def _load(model: ModelLike, name: str):
    if isinstance(model, tuple):
        return model[0], model[1], getattr(model[0], "name_or_path", name)
    return (*load_model_and_tokenizer(model), str(model))


def evaluate(model: ModelLike, scenario: str | Scenario = "synthetic", *, reference: ModelLike | None = None,
             out: str | os.PathLike[str] | None = None, overwrite: bool = False, data: str | None = None,
             config: dict[str, Any] | EvalConfig | None = None,
             scenario_options: dict[str, Any] | None = None) -> EvalResult:
    """Evaluate a model on a scenario's splits: every TOFU, extraction and membership-inference metric.

    `reference` is the retain model (a model directory / hub id / (model, tokenizer) pair) or the directory of its
    saved evaluation (holding eval.json); it gives forget quality, privleak and the reference attack. With `out`,
    eval.json, summary.json and report.md are written there atomically."""
    cfg = config if isinstance(config, EvalConfig) else build_config(EvalConfig, config or {}, where="eval config")
    if out is not None:
        check_output_dir(out, overwrite)
    scen = load_scenario(scenario, data, **(scenario_options or {}))
    m, tok, name = _load(model, "model")
    runner = make_runner(m, tok, cfg, name)
    ref = _reference(reference, scen, cfg)
    result = evaluate_runner(runner, scen, cfg, ref)
    if out is not None and dist.is_main():  # under torchrun every rank holds the gathered result; one writes
        write_eval(Path(out), result, overwrite=overwrite)
    dist.barrier()
    return result


def unlearn(model: ModelLike, method: str, *, out: str | os.PathLike[str], scenario: str | Scenario | None = None,
            forget=None, retain=None, config: dict[str, Any] | None = None, overwrite: bool = False,
            evaluate: bool = False, reference: ModelLike | None = None, data: str | None = None,
            scenario_options: dict[str, Any] | None = None, eval_config: dict[str, Any] | None = None,
            progress=None):
    """Unlearn a forget set from `model` with a registered method and save the result (model + manifest.json).

    The forget/retain data come from `scenario` (its forget split and retain set) or from `forget` / `retain`
    (files or QA records). With `evaluate`, the result is evaluated on the scenario (reference = the retain
    model) into `out/eval/`. Returns an UnlearnResult (output path, manifest, evaluation summary)."""
    from obliviate.methods.run import unlearn as _unlearn

    if scenario is None and forget is None:
        raise ConfigError("give a forget set: --scenario NAME or --forget FILE")
    scen = load_scenario(scenario, data, **(scenario_options or {})) if scenario is not None else None
    return _unlearn(model, method, out=out, forget=forget, retain=retain, scenario=scen, config=config,
                    overwrite=overwrite, evaluate=evaluate, reference=reference, progress=progress,
                    eval_config=eval_config)


def _reference(reference: ModelLike | None, scen: Scenario, cfg: EvalConfig) -> Reference | None:
    if reference is None:
        return None
    if not isinstance(reference, tuple):
        p = Path(reference)
        if (p / "eval.json").is_file():
            return load_reference_eval(p, scen)
        if p.is_dir() and not is_model_dir(p):
            raise ModelError(f"{p}: neither a model directory nor a saved evaluation (no config.json, no eval.json)")
    m, tok, name = _load(reference, "reference")
    return reference_from_runner(make_runner(m, tok, cfg, name), scen, cfg)


def forget(model: ModelLike, targets: list[str], *, out: str | os.PathLike[str], method: str = "reveal_release",
           config: dict[str, Any] | None = None, keep_revealed: bool = False, retain=None,
           scenario: str | Scenario | None = None, evaluate: bool = False, reference: ModelLike | None = None,
           data: str | None = None, scenario_options: dict[str, Any] | None = None,
           eval_config: dict[str, Any] | None = None, overwrite: bool = False, progress=None):
    """Forget everything `model` knows about the named `targets` WITHOUT any forget data, with a
    self-generated-data method (Reveal-and-Release by default), and save the model, manifest.json, the ledger and
    the per-round log to `out`. `retain` (file or records) is optional; the revealed text is saved only with
    `keep_revealed`. `scenario` serves only to evaluate the result (`evaluate`). Returns an UnlearnResult."""
    from obliviate.methods.reveal_release import forget_by_name

    if evaluate and scenario is None:
        raise ConfigError("--eval needs --scenario (the evaluation sets come from a scenario)")
    scen = load_scenario(scenario, data, **(scenario_options or {})) if scenario is not None else None
    return forget_by_name(model, targets, out, method=method, config=config, keep_revealed=keep_revealed,
                          retain=retain, scenario=scen, evaluate=evaluate, reference=reference, overwrite=overwrite,
                          progress=progress, eval_config=eval_config)
