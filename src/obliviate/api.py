"""The Python API: what `obliviate` does, one function per command. The CLI is a thin layer over these; each is
implemented in the application layer (`obliviate.runs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from obliviate.config import deep_merge
from obliviate.data.scenarios import Scenario
from obliviate.errors import ConfigError
from obliviate.runs import ledger as _ledger
from obliviate.runs.attacks import attack, input_model_of
from obliviate.runs.bench import bench
from obliviate.runs.build import BuildResult
from obliviate.runs.build import build as _build
from obliviate.models.loading import fingerprint
from obliviate.runs.common import ModelLike, load_model, load_scenario
from obliviate.runs.evaluate import evaluate
from obliviate.runs.forget import forget_by_name
from obliviate.runs.sweep import DEFAULT_OBJECTIVE, SweepResult
from obliviate.runs.sweep import sweep as _sweep
from obliviate.runs.unlearn import UnlearnResult
from obliviate.runs.unlearn import unlearn as _unlearn
from obliviate.utils.cache import Purged, purge
from obliviate.utils.io import claim_output

__all__ = ["BuildResult", "SweepResult", "UnlearnResult", "attack", "bench", "build", "evaluate", "forget",
           "input_model_of", "ledger", "load_scenario", "purge_cache", "sweep", "unlearn"]


def build(scenario: str, out: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
          overwrite: bool = False, data: str | None = None, progress=None, base: str = "tiny") -> BuildResult:
    """Train (or reuse from the cache) the scenario's target and retain models: tiny models from scratch, or a
    pretrained `base` (a base name, hub id, model directory or .gguf file) fine-tuned on the scenario's QA."""
    if data is not None:
        overrides = deep_merge(overrides or {}, {"scenario_options": {"data": data}})
    if base != "tiny":
        overrides = deep_merge(overrides or {}, {"base": base})
    if out is None:
        return _build(scenario, out, overrides, overwrite, progress)
    with claim_output(out, reuse=True):  # writable and not held by another run; the build decides about reuse
        return _build(scenario, out, overrides, overwrite, progress)


def unlearn(model: ModelLike, method: str, *, out: str | os.PathLike[str], scenario: str | Scenario | None = None,
            forget=None, retain=None, config: dict[str, Any] | None = None, overwrite: bool = False,
            evaluate: bool = False, reference: ModelLike | None = None, data: str | None = None,
            scenario_options: dict[str, Any] | None = None, eval_config: dict[str, Any] | None = None,
            allow_overlap: bool = False, fsdp: bool = False, progress=None, eval_progress=None) -> UnlearnResult:
    """Unlearn a forget set from `model` with a registered method and save the result (model + manifest.json).

    The forget/retain data come from `scenario` (its forget split and retain set) or from `forget` / `retain`
    (files or QA records); forget and retain must not share items (same id, or same question and answer) unless
    `allow_overlap`. With `evaluate`, the result is evaluated into `out/eval/` on exactly the forget data that was
    unlearned (a `forget` file replaces the scenario's forget split; without a scenario, the forget and retain
    files are the evaluation sets), reference = the retain model. With `fsdp`, training under several processes
    (torchrun / accelerate launch) is sharded with FSDP (as an accelerate FSDP config would). Returns an
    UnlearnResult (output path, manifest, evaluation summary). `progress(ProgressEvent)` follows the training,
    `eval_progress(description, done, total)` the evaluation's model passes."""
    if scenario is None and forget is None:
        raise ConfigError("give a forget set: --scenario NAME or --forget FILE")
    scen = load_scenario(scenario, data, **(scenario_options or {})) if scenario is not None else None
    return _unlearn(model, method, out=out, forget=forget, retain=retain, scenario=scen, config=config,
                    overwrite=overwrite, evaluate=evaluate, reference=reference, progress=progress,
                    eval_config=eval_config, allow_overlap=allow_overlap, fsdp=fsdp, eval_progress=eval_progress)


def forget(model: ModelLike, targets: list[str], *, out: str | os.PathLike[str], method: str = "reveal_release",
           config: dict[str, Any] | None = None, keep_revealed: bool = False, retain=None,
           scenario: str | Scenario | None = None, evaluate: bool = False, reference: ModelLike | None = None,
           data: str | None = None, scenario_options: dict[str, Any] | None = None,
           eval_config: dict[str, Any] | None = None, overwrite: bool = False, progress=None,
           eval_progress=None) -> UnlearnResult:
    """Forget everything `model` knows about the named `targets` WITHOUT any forget data, with a
    self-generated-data method (Reveal-and-Release by default), and save the model, manifest.json, the ledger and
    the per-round log to `out`. `retain` (file or records) is optional; the revealed text is saved only with
    `keep_revealed`. `scenario` serves only to evaluate the result (`evaluate`). Returns an UnlearnResult. When the
    model reveals nothing about the targets, raises NothingToForget (CLI exit code 3): no model is written, the
    attempt is recorded in `out/ledger.jsonl`."""
    if evaluate and scenario is None:
        raise ConfigError("--eval needs --scenario (the evaluation sets come from a scenario)")
    scen = load_scenario(scenario, data, **(scenario_options or {})) if scenario is not None else None
    return forget_by_name(model, targets, out, method=method, config=config, keep_revealed=keep_revealed,
                          retain=retain, scenario=scen, evaluate=evaluate, reference=reference, overwrite=overwrite,
                          progress=progress, eval_config=eval_config, eval_progress=eval_progress)


def sweep(method: str, *, out: str | os.PathLike[str], scenario: str | None = None, base: str = "tiny",
          model: str | os.PathLike[str] | None = None, reference: str | os.PathLike[str] | None = None,
          forget=None, retain=None, trials: int = 20, space: str | os.PathLike[str] = "default",
          objective: str = DEFAULT_OBJECTIVE, storage: str | None = None, study: str | None = None, seed: int = 0,
          sampler: str = "tpe", prune: bool = True, config: dict[str, Any] | None = None,
          scenario_options: dict[str, Any] | None = None, data: str | None = None,
          eval_config: dict[str, Any] | None = None, export_preset: str | os.PathLike[str] | None = None,
          progress=None) -> SweepResult:
    """Search `method`'s hyperparameters (its declared search space, or a YAML `space` file) for the best
    `objective` ("max forget_quality s.t. model_utility >= 0.95*target": obliviate.runs.objective) within `trials`
    trials, on Optuna (TPE, seeded; hopeless trials pruned after a few epochs). Each trial is an `unlearn` run with
    evaluation into `out/trials/<n>/`. The models are the `scenario`'s build (on `base`), or `model` (the target)
    with `reference` (the retain model or its saved evaluation) and the scenario's or `forget`/`retain` files'
    data. `config` fixes keys in every trial. The study lives in `storage` (default: out/study.db); workers given
    the same `storage` and `study` share it. Writes out/best.json, trials.jsonl, report.html, and the best config
    to `export_preset` (a preset file for `bench(presets=...)`). Raises NoFeasibleTrial (CLI exit 4) when no trial
    meets the constraints."""
    return _sweep(method, out=out, scenario=scenario, base=base, model=model, reference=reference, forget=forget,
                  retain=retain, trials=trials, space=space, objective=objective, storage=storage, study=study,
                  seed=seed, sampler=sampler, prune=prune, config=config, scenario_options=scenario_options,
                  data=data, eval_config=eval_config, export_preset=export_preset, progress=progress)


def ledger(model: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """A model directory's deletion history (ledger.jsonl), oldest request first."""
    return _ledger.read(Path(model))


def purge_cache(model: ModelLike | None = None) -> list[Purged]:
    """Delete cached data: everything obliviate keeps under the cache root ($OBLIVIATE_CACHE), or only what was
    computed from `model` (its pass cache and edit statistics, found by its weight fingerprint). Returns what was
    removed."""
    if model is None:
        return purge()
    m, _, _ = load_model(model, "model")
    return purge(fingerprint(m))
