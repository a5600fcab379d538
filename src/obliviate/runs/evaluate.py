"""`obliviate eval`: one model on a scenario's splits, or on forget/retain/holdout files, against an optional
reference (the retain model)."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Mapping
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
from obliviate.utils.hashing import stable_hash
from obliviate.utils.io import atomic_dir, atomic_write_json, cache_root, claim_output, read_json

PathLike = str | os.PathLike[str]


def evaluate(model: ModelLike, scenario: str | Scenario | None = "synthetic", *, reference: ModelLike | None = None,
             out: PathLike | None = None, overwrite: bool = False, data: str | None = None,
             config: dict[str, Any] | EvalConfig | None = None, scenario_options: dict[str, Any] | None = None,
             forget: PathLike | None = None, retain: PathLike | None = None,
             holdout: PathLike | None = None, progress: PassProgress | None = None,
             label: str | None = None) -> EvalResult:
    """Evaluate a model on a scenario's splits: every TOFU, extraction and membership-inference metric.

    `forget` (a file of question/answer records) evaluates exactly those items: with `scenario`, in place of its
    forget split (its other sets kept); with `scenario=None`, alone, with the optional `retain` and `holdout` files
    (metrics that need a missing set are absent, and the result's meta says why). `reference` is the retain model
    (a model directory / hub id / (model, tokenizer) pair) or the directory of its saved evaluation (holding
    eval.json); it gives forget quality, privleak and the reference attack, on the same items only. Each model is
    tokenised as it was trained (config `tokenize=auto`: the mode obliviate recorded with it, else joint) unless
    `tokenize` or `compat=openunlearning` (joint) says otherwise. With `out`,
    eval.json, summary.json and report.md are written there atomically. `progress(description, done, total)`
    follows each model pass as it runs. `label` names the model in the progress and in eval.json (default: its path
    or hub id; for a model in memory, the path it was loaded from)."""
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
        runner = make_runner(m, tok, cfg, label or name, progress, source=model)  # tokenised as `model` was trained
        ref = resolve_reference(reference, scen, cfg)
        result = evaluate_runner(runner, scen, cfg, ref)
        if out is not None and dist.is_main():  # under torchrun every rank holds the gathered result; one writes
            write_eval(Path(out), result, overwrite=True)
        dist.barrier()
    return result


def _model_identity(model: ModelLike) -> Any:
    """What a reference evaluation's key names the model by: a model in memory by nothing that outlives it; a
    directory by its resolved path and its weight files' sizes and modification times (an `unlearn --overwrite`
    into the same path changes them); a file (`.gguf`) by its path, size and modification time; a hub id by its
    name and the commit of its snapshot in the local Hugging Face cache (None before the first download, so a
    model the hub has updated since is evaluated again, not mistaken for the one evaluated)."""
    if isinstance(model, tuple):
        return "memory"
    p = Path(model)
    if p.is_dir():
        return [str(p.resolve()), sorted((f.name, f.stat().st_size, f.stat().st_mtime_ns)
                                         for f in p.glob("*.safetensors"))]
    if p.exists():
        return [str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
    return ["hub", str(model), _hub_snapshot(str(model))]


def _hub_snapshot(repo_id: str) -> str | None:
    """The commit of the snapshot the local Hugging Face cache would load for `repo_id` (its `main`), or None."""
    from huggingface_hub import try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # not a valid repo id: nothing cached under it
        return None
    return Path(hit).parent.name if isinstance(hit, str) else None


def reference_key(model: ModelLike, scen: Scenario, reference: ModelLike | None,
                  config: Mapping[str, Any] | None) -> str:
    """The key of a reference evaluation: the model, the reference it was scored against (a saved evaluation by its
    own key, or its eval.json's content), the evaluation data and settings."""
    ref_key: Any = None if reference is None else _model_identity(reference)
    if reference is not None and not isinstance(reference, tuple) and Path(reference).is_dir():
        rp = Path(reference)
        if (rp / "reference_key").is_file():
            ref_key = (rp / "reference_key").read_text()
        elif (rp / "eval.json").is_file():
            ref_key = stable_hash((rp / "eval.json").read_text())
    return stable_hash([_model_identity(model), ref_key, scen.name,
                        {n: s.digest for n, s in scen.eval_splits.items()}, dict(config or {})])


def evaluate_reference(model: ModelLike, scen: Scenario, d: Path, reference: ModelLike | None,
                       config: Mapping[str, Any] | None, role: str, say: Callable[[str], None]) -> dict[str, Any]:
    """Evaluate a benchmark's retain or target model into `d` once per (model, reference, data, settings) and
    return its summary: an evaluation with the same key already in `d`, or in the cache's `evals` namespace (made
    by another sweep or bench), is reused, not recomputed."""
    key = reference_key(model, scen, reference, config)
    if (d / "summary.json").is_file() and (d / "reference_key").is_file() and (d / "reference_key").read_text() == key:
        return read_json(d / "summary.json")
    shared = None if isinstance(model, tuple) else cache_root() / "evals" / key
    if shared is not None and (shared / "summary.json").is_file() and (shared / "reference_key").is_file():
        say(f"the {role} model's evaluation: reusing {shared}")
        with atomic_dir(d, overwrite=True) as tmp:
            shutil.copytree(shared, tmp, dirs_exist_ok=True)
            meta = read_json(tmp / "eval.json")
            if meta.get("reference") is not None:  # the reference it was scored against, as it lies here
                atomic_write_json(tmp / "eval.json", {**meta, "reference": str(reference)})
        return read_json(d / "summary.json")
    say(f"evaluating the {role} model")
    res = evaluate(model, scen, reference=reference, out=d, overwrite=True, config=dict(config or {}))
    (d / "reference_key").write_text(key)
    if shared is not None:
        with atomic_dir(shared, overwrite=True) as tmp:
            shutil.copytree(d, tmp, dirs_exist_ok=True)
    return res.summary
