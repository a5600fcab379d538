"""`obliviate.unlearn`: load, validate, run a method (the shared loop or its own procedure), save atomically
with a manifest, optionally evaluate. The input model is never modified, and the output appears only when
complete; an interrupted run resumes from its last epoch checkpoint when the same command is run again."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from obliviate.config import Config
from obliviate.data.records import QA, Split, load_split, overlap_count
from obliviate.errors import ConfigError, DataError, ObliviateError
from obliviate.methods.base import (METHODS, ApplyContext, GradientMethod, MethodInfo, ProceduralMethod, Progress,
                                    TrainConfig)
from obliviate.methods.engine import train
from obliviate.models.loading import fingerprint
from obliviate.runs import ledger
from obliviate.runs.common import git_revision, load_model, save_model, versions
from obliviate.runs.evaluate import evaluate as run_eval
from obliviate.utils import dist
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_write_json, check_output_dir, read_json
from obliviate.utils.memory import peak_bytes, reset_peak

log = logging.getLogger(__name__)


@dataclass
class UnlearnResult:
    out: Path
    manifest: dict[str, Any]
    summary: dict[str, Any] | None = None  # evaluation summary when evaluated


def resolve_method(name: str, overrides: dict[str, Any] | None = None) -> tuple[MethodInfo, Config]:
    info = METHODS.get(name)
    return info, info.make_config(overrides)


def load_forget_retain(forget: str | os.PathLike[str] | Sequence[QA] | None, retain: str | os.PathLike[str] | Sequence[QA] | None,
                       scenario=None) -> tuple[list[QA], list[QA], dict[str, str]]:
    """Forget and retain records from files/records, or from a scenario; returns them and their data hashes."""
    hashes: dict[str, str] = {}

    def load(src, role: str) -> list[QA]:
        if src is None:
            return []
        if isinstance(src, (str, os.PathLike)):
            split = load_split(src, None, allow_hub=False)
            hashes[role] = f"sha256:{file_hash(src)}"
            return list(split.records)
        recs = list(src)
        hashes[role] = f"records:{Split(role, tuple(recs)).digest}"
        return recs

    if scenario is not None and forget is None:
        f = [r.with_(paraphrased_answer=None, perturbed_answers=()) for r in scenario.forget.records]
        hashes["forget"] = f"scenario:{scenario.name}:{scenario.forget.digest}"
        r = list(load(retain, "retain")) if retain is not None else list(scenario.unlearn_retain.records)
        hashes.setdefault("retain", f"scenario:{scenario.name}:{scenario.unlearn_retain.digest}")
        return f, r, hashes
    return load(forget, "forget"), load(retain, "retain"), hashes


def validate_inputs(info: MethodInfo, cfg: Config, forget: list[QA], retain: list[QA]) -> None:
    if not forget:
        raise DataError("the forget set is empty; give a forget file with at least one question/answer record")
    if info.needs_retain(cfg) and not retain:
        raise DataError(f"method {info.name!r} needs a retain set (it trains on retain data too); pass --retain FILE "
                        f"or --scenario NAME")
    for f in info.required_fields:
        missing = [r.id for r in forget if not getattr(r, f)]
        if missing:
            raise DataError(f"method {info.name!r} needs field {f!r} on every forget record; {len(missing)} lack it "
                            f"(e.g. {missing[0]})")
    n = overlap_count(forget, retain)
    if n:
        log.warning("%d of %d forget records also appear in the retain set; they are pulled both ways", n, len(forget))


def work_dir_for(out: Path) -> Path:
    """A stable sibling of the output that holds checkpoints until the run completes (found again on resume)."""
    return out.parent / f".{out.name}.partial"


def run_method(info: MethodInfo, cfg: Config, model, tokenizer, forget: list[QA], retain: list[QA], work: Path,
               progress: Progress | None, scenario=None) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run one method; returns the final (merged) model, the extras to save beside it (histories, logs) and the
    method's run_info for the manifest."""
    method = info.create(cfg)
    if isinstance(method, ProceduralMethod):
        def keep(m, name: str) -> None:  # intermediate models (UniErase's sequential requests) go to out/requests
            if dist.is_main():
                save_model(m, tokenizer, work / "requests" / name)

        ctx = ApplyContext(model, tokenizer, forget, retain, work, progress, scenario, save_model=keep)
        model = method.apply(ctx)
        return model, method.extras(), method.run_info()
    if not isinstance(method, GradientMethod):
        raise TypeError(f"method {info.name!r}: {type(method).__name__} is neither a GradientMethod nor a "
                        f"ProceduralMethod")
    model, state = train(method, model, tokenizer, forget, retain, work, progress, scenario=scenario)
    extras: dict[str, Any] = {"history": state.history, **method.extras()}
    lora = cfg.lora if isinstance(cfg, TrainConfig) else None
    if lora is not None:
        if lora.keep_adapter:
            model.save_pretrained(work / "final_adapter")
        model = model.merge_and_unload()
    return model, extras, method.run_info()


def unlearn(model: str | os.PathLike[str] | tuple[Any, Any], method: str, *, out: str | os.PathLike[str],
            forget=None, retain=None, scenario=None, config: dict[str, Any] | None = None, overwrite: bool = False,
            evaluate: bool = False, reference=None, progress: Progress | None = None,
            eval_config: dict[str, Any] | None = None, targets: Sequence[str] = ()) -> UnlearnResult:
    """Unlearn `forget` from `model` with `method` and save the result to `out` (see module docstring)."""
    out_p = Path(out)
    work = work_dir_for(out_p)
    check_output_dir(out_p, overwrite)
    info, cfg = resolve_method(method, config)
    if evaluate and scenario is None:
        raise ConfigError("--eval needs --scenario (the evaluation sets come from a scenario)")
    if isinstance(model, (str, os.PathLike)) and out_p.resolve() == Path(model).resolve():
        raise ConfigError("--out is the input model's directory; the input model is never modified: choose another --out")
    f_recs, r_recs, hashes = load_forget_retain(forget, retain, scenario)
    validate_inputs(info, cfg, f_recs, r_recs)
    m, tok, name = load_model(model, "model")
    input_fp = fingerprint(m)
    run_key = stable_hash([info.name, cfg.model_dump(), input_fp, hashes])
    key_file = work / "run_key"
    fresh = not key_file.is_file() or key_file.read_text() != run_key
    if dist.is_main():  # under torchrun / accelerate launch one process owns the files, the others wait
        if work.exists() and fresh:
            shutil.rmtree(work)  # a stale partial run of another command: start afresh
        work.mkdir(parents=True, exist_ok=True)
        key_file.write_text(run_key)
    dist.barrier()

    # metrics before, for the ledger (model passes are cached by fingerprint, so a benchmark pays for this once)
    before = run_eval((m, tok), scenario, reference=reference, config=eval_config).summary if evaluate else None
    reset_peak()
    t0 = time.time()
    try:
        new_model, extras, run_info = run_method(info, cfg, m, tok, f_recs, r_recs, work, progress, scenario)
    except ObliviateError:
        if fresh and dist.is_main():  # a user error found before any progress: leave nothing behind
            shutil.rmtree(work, ignore_errors=True)
        raise
    wall = time.time() - t0
    final = work / "final"
    manifest = {
        "method": info.name, "config": cfg.model_dump(), "versions": versions(), "git_revision": git_revision(),
        "input_model": {"name": name, "fingerprint": input_fp}, "output_fingerprint": fingerprint(new_model),
        "data": {**hashes, "n_forget": len(f_recs), "n_retain": len(r_recs)},
        "scenario": getattr(scenario, "name", None), "wall_time_s": round(wall, 2), "peak_memory_bytes": peak_bytes(),
        "device": str(next(new_model.parameters()).device), "host": platform.node(), "processes": dist.world_size(),
        "threads": torch.get_num_threads(), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "run_info": run_info,
    }
    if dist.is_main():
        if final.exists():
            shutil.rmtree(final)
        save_model(new_model, tok, final)
        for extra, dest in (("final_adapter", "adapter"), ("requests", "requests")):
            if (work / extra).exists():
                shutil.move(str(work / extra), str(final / dest))
        for k, v in extras.items():
            atomic_write_json(final / f"{k}.json", v)
        atomic_write_json(final / "manifest.json", manifest)
    summary = None
    if evaluate:
        res = run_eval((new_model, tok), scenario, reference=reference, out=final / "eval", config=eval_config)
        summary = res.summary
    if dist.is_main():
        ledger.write(final, model if isinstance(model, (str, os.PathLike)) else None, ledger.make_record(
            method=info.name, config=cfg.model_dump(), input_fingerprint=input_fp,
            output_fingerprint=manifest["output_fingerprint"], data_hashes=manifest["data"],
            forget_texts=[] if targets else ledger.item_texts(f_recs), targets=targets, before=before, after=summary,
            scenario=manifest["scenario"]))
        if out_p.exists():
            shutil.rmtree(out_p)
        out_p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(final, out_p)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    return UnlearnResult(out_p, manifest, summary)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path) / "manifest.json"
    if not p.is_file():
        raise DataError(f"{path}: no manifest.json (not an obliviate output)")
    return read_json(p)
