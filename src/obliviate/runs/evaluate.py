"""`obliviate eval`: one model on a scenario's splits, against an optional reference (the retain model)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from obliviate.config import build_config
from obliviate.data.scenarios import Scenario
from obliviate.eval.report import write_eval
from obliviate.eval.suite import EvalConfig, EvalResult, evaluate_runner, make_runner
from obliviate.runs.common import ModelLike, load_model, load_scenario, resolve_reference
from obliviate.utils import dist
from obliviate.utils.io import check_output_dir


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
    m, tok, name = load_model(model, "model")
    runner = make_runner(m, tok, cfg, name)
    ref = resolve_reference(reference, scen, cfg)
    result = evaluate_runner(runner, scen, cfg, ref)
    if out is not None and dist.is_main():  # under torchrun every rank holds the gathered result; one writes
        write_eval(Path(out), result, overwrite=overwrite)
    dist.barrier()
    return result
