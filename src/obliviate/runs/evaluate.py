"""`obliviate eval`: one model on a scenario's splits, or on forget/retain/holdout files, against an optional
reference (the retain model)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from obliviate.config import build_config
from obliviate.data.scenarios import Scenario, from_files
from obliviate.errors import ConfigError
from obliviate.eval.report import write_eval
from obliviate.eval.runner import PassProgress
from obliviate.eval.suite import EvalConfig, EvalResult, evaluate_runner, make_runner
from obliviate.runs.common import ModelLike, load_model, load_scenario, resolve_reference
from obliviate.utils import dist
from obliviate.utils.io import claim_output

PathLike = str | os.PathLike[str]


def evaluate(model: ModelLike, scenario: str | Scenario | None = "synthetic", *, reference: ModelLike | None = None,
             out: PathLike | None = None, overwrite: bool = False, data: str | None = None,
             config: dict[str, Any] | EvalConfig | None = None, scenario_options: dict[str, Any] | None = None,
             forget: PathLike | None = None, retain: PathLike | None = None,
             holdout: PathLike | None = None, progress: PassProgress | None = None) -> EvalResult:
    """Evaluate a model on a scenario's splits: every TOFU, extraction and membership-inference metric.

    `forget` (a file of question/answer records) evaluates exactly those items: with `scenario`, in place of its
    forget split (its other sets kept); with `scenario=None`, alone, with the optional `retain` and `holdout` files
    (metrics that need a missing set are absent, and the result's meta says why). `reference` is the retain model
    (a model directory / hub id / (model, tokenizer) pair) or the directory of its saved evaluation (holding
    eval.json); it gives forget quality, privleak and the reference attack, on the same items only. Each model is
    tokenised as it was trained (config `tokenize=auto`: the mode obliviate recorded with it, else joint) unless
    `tokenize` or `compat=openunlearning` (joint) says otherwise. With `out`,
    eval.json, summary.json and report.md are written there atomically. `progress(description, done, total)`
    follows each model pass as it runs."""
    cfg = config if isinstance(config, EvalConfig) else build_config(EvalConfig, config or {}, where="eval config")
    if forget is None and (retain is not None or holdout is not None):
        raise ConfigError("--retain / --holdout go with --forget FILE (the forget set to evaluate)")
    if forget is None and scenario is None:
        raise ConfigError("give what to evaluate: --scenario NAME or --forget FILE")
    guard = (claim_output(out, overwrite, inputs=[model, reference], lock=dist.is_main()) if out is not None
             else contextlib.nullcontext())
    with guard:
        base = load_scenario(scenario, data, **(scenario_options or {})) if scenario is not None else None
        scen = from_files(forget, retain, holdout, base=base) if forget is not None else base
        if scen is None:  # unreachable: checked above; narrows the type
            raise ConfigError("give what to evaluate: --scenario NAME or --forget FILE")
        m, tok, name = load_model(model, "model")
        runner = make_runner(m, tok, cfg, name, progress, source=model)  # tokenised as `model` was trained
        ref = resolve_reference(reference, scen, cfg)
        result = evaluate_runner(runner, scen, cfg, ref)
        if out is not None and dist.is_main():  # under torchrun every rank holds the gathered result; one writes
            write_eval(Path(out), result, overwrite=True)
        dist.barrier()
    return result
