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

from obliviate.config import Config, build_config
from obliviate.data.records import QA, Split, check_records, load_split, overlap
from obliviate.data.scenarios import from_files
from obliviate.data.templates import Formatter, resolve_tokenize
from obliviate.errors import ConfigError, DataError, NothingToForget, ObliviateError
from obliviate.eval.runner import PassProgress
from obliviate.eval.suite import EvalConfig
from obliviate.methods.base import (METHODS, ApplyContext, GradientMethod, MethodInfo, ProceduralMethod, Progress,
                                    ProgressEvent, TrainConfig)
from obliviate.methods.engine import rank_seed, train
from obliviate.models.loading import fingerprint
from obliviate.runs import ledger
from obliviate.runs.common import git_revision, load_model, save_model, versions
from obliviate.runs.evaluate import evaluate as run_eval
from obliviate.utils import dist
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_write_json, claim_output, read_json
from obliviate.utils.memory import peak_bytes, reset_peak
from obliviate.utils.progress import resumed as resume_notice

log = logging.getLogger(__name__)


@dataclass
class UnlearnResult:
    out: Path
    manifest: dict[str, Any]
    summary: dict[str, Any] | None = None  # evaluation summary when evaluated
    absent: dict[str, str] | None = None  # why each metric without a value is absent, when evaluated


def resolve_method(name: str, overrides: dict[str, Any] | None = None) -> tuple[MethodInfo, Config]:
    info = METHODS.get(name)
    return info, info.make_config(overrides)


def load_forget_retain(forget: str | os.PathLike[str] | Sequence[QA] | None, retain: str | os.PathLike[str] | Sequence[QA] | None,
                       scenario=None, by_name: bool = False) -> tuple[list[QA], list[QA], dict[str, str]]:
    """Forget and retain records from files/records, or from a scenario; returns them and their data hashes.
    Records given in memory are checked as files are (non-empty question/answer, unique ids), except the target
    records of forgetting by name (`by_name`), which hold only a name."""
    hashes: dict[str, str] = {}

    def load(src, role: str) -> list[QA]:
        if src is None:
            return []
        if isinstance(src, (str, os.PathLike)):
            split = load_split(src, None, allow_hub=False)
            hashes[role] = f"sha256:{file_hash(src)}"
            return list(split.records)
        recs = list(src)
        if not (by_name and role == "forget"):
            check_records(recs, role)
        hashes[role] = f"records:{Split(role, tuple(recs)).digest}"
        return recs

    if scenario is not None and forget is None:
        f = [r.with_(paraphrased_answer=None, perturbed_answers=()) for r in scenario.forget.records]
        hashes["forget"] = f"scenario:{scenario.name}:{scenario.forget.digest}"
        r = list(load(retain, "retain")) if retain is not None else list(scenario.unlearn_retain.records)
        hashes.setdefault("retain", f"scenario:{scenario.name}:{scenario.unlearn_retain.digest}")
        return f, r, hashes
    return load(forget, "forget"), load(retain, "retain"), hashes


def validate_inputs(info: MethodInfo, cfg: Config, forget: list[QA], retain: list[QA],
                    allow_overlap: bool = False) -> None:
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
    both = overlap(forget, retain)
    if both and not allow_overlap:
        r, how = both[0]
        what = f"id {r.id!r}" if how == "id" else f"the question/answer of forget record {r.id!r}"
        raise DataError(f"{len(both)} of {len(forget)} forget records are also in the retain set (e.g. {what}): they "
                        f"would be pulled both ways; remove them from the retain set, or pass --allow-overlap")
    if both:
        log.warning("%d of %d forget records also appear in the retain set; they are pulled both ways "
                    "(--allow-overlap)", len(both), len(forget))


def eval_scenario(scenario, forget, retain, targets: Sequence[str]):
    """What `--eval` evaluates: the forget data that was unlearned, never another set silently. A forget file (or
    records) is evaluated itself, on top of the scenario's other sets when a scenario is given; forgetting by name
    (no forget records) evaluates the scenario."""
    if forget is None or targets:
        if scenario is None:
            raise ConfigError("--eval needs --scenario (the evaluation sets come from a scenario)")
        return scenario

    def split(src, role: str):
        if src is None or isinstance(src, (str, os.PathLike)):
            return src
        return Split(role, tuple(src))

    return from_files(split(forget, "forget"), split(retain, "retain"), base=scenario)


def work_dir_for(out: Path) -> Path:
    """A stable sibling of the output that holds checkpoints until the run completes (found again on resume)."""
    return out.parent / f".{out.name}.partial"


def run_method(info: MethodInfo, cfg: Config, model, tokenizer, forget: list[QA], retain: list[QA], work: Path,
               progress: Progress | None, scenario=None,
               tokenize: str = "separate") -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run one method; returns the final (merged) model, the extras to save beside it (histories, logs) and the
    method's run_info for the manifest. `tokenize` is the input model's tokenisation (a gradient method's config
    carries it; a procedural method receives it in its ApplyContext)."""
    method = info.create(cfg)
    if isinstance(method, ProceduralMethod):
        def keep(m, name: str) -> None:  # intermediate models (UniErase's sequential requests) go to out/requests
            if dist.is_main():
                save_model(m, tokenizer, work / "requests" / name)

        ctx = ApplyContext(model, tokenizer, forget, retain, work, progress, scenario, save_model=keep,
                           tokenize=tokenize)  # type: ignore[arg-type]
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
    return model, extras, {**method.run_info(), "parallelism": state.parallelism}


def unlearn(model: str | os.PathLike[str] | tuple[Any, Any], method: str, *, out: str | os.PathLike[str],
            forget=None, retain=None, scenario=None, config: dict[str, Any] | None = None, overwrite: bool = False,
            evaluate: bool = False, reference=None, progress: Progress | None = None,
            eval_config: dict[str, Any] | None = None, targets: Sequence[str] = (),
            allow_overlap: bool = False, fsdp: bool = False,
            eval_progress: PassProgress | None = None) -> UnlearnResult:
    """Unlearn `forget` from `model` with `method` and save the result to `out` (see module docstring).
    `progress` follows the training (or the procedure), `eval_progress` the evaluation's model passes.

    Everything that can be checked is checked before any work: the output location (writable, not a file, not
    inside the input model, not held by another run: it stays locked until the end), the config, the data
    (non-empty, unique ids, forget and retain disjoint unless `allow_overlap`). A run that changes no weight (the
    model revealed nothing about the named `targets`) raises NothingToForget and writes no model: the attempt is
    recorded in `out/ledger.jsonl` alone."""
    out_p = Path(out)
    attempts = ledger.attempts(out_p)  # an earlier "nothing revealed" attempt here: carried forward, not refused
    with claim_output(out_p, overwrite or bool(attempts), inputs=[model, reference], lock=dist.is_main()):
        info, cfg = resolve_method(method, config)
        if info.is_procedural and dist.world_size() > 1:
            raise ConfigError(f"{info.name} runs its own procedure (closed-form edits, rounds of generation) in one "
                              f"process and cannot split it across {dist.world_size()}: run it without torchrun / "
                              "accelerate launch")
        if fsdp and info.is_procedural:
            raise ConfigError(f"--fsdp shards gradient training; {info.name} runs its own procedure in one "
                              f"process: drop --fsdp")
        f_recs, r_recs, hashes = load_forget_retain(forget, retain, scenario, by_name=bool(targets))
        validate_inputs(info, cfg, f_recs, r_recs, allow_overlap)
        eval_scen = eval_scenario(scenario, forget, retain, targets) if evaluate else None
        if evaluate:
            build_config(EvalConfig, eval_config or {}, where="eval config")  # a typo fails now, not after training
        with dist.fsdp_env(fsdp):
            return _run(model, info, cfg, out_p, f_recs, r_recs, hashes, scenario, eval_scen, reference, progress,
                        eval_config, targets, attempts, eval_progress)


def _run(model, info: MethodInfo, cfg: Config, out_p: Path, f_recs: list[QA], r_recs: list[QA],
         hashes: dict[str, str], scenario, eval_scen, reference, progress: Progress | None,
         eval_config: dict[str, Any] | None, targets: Sequence[str], attempts: list[dict[str, Any]],
         eval_progress: PassProgress | None = None) -> UnlearnResult:
    work = work_dir_for(out_p)
    m, tok, name = load_model(model, "model")
    # The tokenisation the input model was trained with (tokenize=auto), or the one asked for: training uses it, the
    # manifest records it, so the output model is scored the same way later.
    asked = cfg.tokenize if isinstance(cfg, TrainConfig) else "auto"
    mode = resolve_tokenize(asked, model)
    if isinstance(cfg, TrainConfig):
        cfg = cfg.model_copy(update={"tokenize": mode})
        Formatter(tok, cfg.template, max_length=cfg.max_length, tokenize=mode)  # template=chat without one: fail now
    if asked != "auto" and eval_scen is not None:  # an explicit mode scores the evaluations too, unless told otherwise
        given = eval_config or {}
        if "tokenize" not in given and given.get("compat", "none") == "none":
            eval_config = {**given, "tokenize": mode}
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
    try:
        # metrics before, for the ledger (model passes are cached by fingerprint, so a benchmark pays for this once)
        before = (run_eval((m, tok), eval_scen, reference=reference, config=eval_config, progress=eval_progress).summary
                  if eval_scen is not None else None)
    except BaseException:
        if fresh and dist.is_main():
            shutil.rmtree(work, ignore_errors=True)
        raise
    resumed = _resume_point(work, cfg) if not fresh else None
    if resumed is not None:
        event = ProgressEvent("resume", epoch=resumed[0], epochs=resumed[1])
        _say(progress, event, resume_notice(event))
    clock = _Clock(work, carried=not fresh)
    reset_peak()
    try:
        new_model, extras, run_info = run_method(info, cfg, m, tok, f_recs, r_recs, work, clock.wrap(progress),
                                                 scenario, tokenize=mode)
    except ObliviateError:
        # a user error found before any progress leaves nothing behind; a diverged run keeps its last finite
        # epoch checkpoint (resumable, inspectable)
        if fresh and dist.is_main() and not (work / "checkpoint").exists():
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        clock.save()
    wall = clock.total()
    output_fp = fingerprint(new_model)
    record = ledger.make_record(
        method=info.name, config=cfg.model_dump(), input_fingerprint=input_fp, output_fingerprint=output_fp,
        data_hashes={**hashes, "n_forget": len(f_recs), "n_retain": len(r_recs)},
        forget_texts=[] if targets else ledger.item_texts(f_recs), targets=targets, before=before, after=None,
        scenario=getattr(scenario, "name", None))
    if output_fp == input_fp:
        _nothing_changed(model, out_p, work, info, record, targets, extras, attempts)
    final = work / "final"
    manifest = {
        "method": info.name, "config": cfg.model_dump(), "versions": versions(), "git_revision": git_revision(),
        "input_model": {"name": name, "fingerprint": input_fp}, "output_fingerprint": output_fp,
        "tokenize": mode,  # read back by data/templates.recorded_tokenize: the output is scored as it was trained
        "data": {**hashes, "n_forget": len(f_recs), "n_retain": len(r_recs)},
        "scenario": getattr(scenario, "name", None),
        "evaluated_on": {"scenario": eval_scen.name, "forget_digest": eval_scen.forget.digest} if eval_scen else None,
        "wall_time_s": round(wall, 2), "resumed_after_epoch": resumed[0] if resumed else None,
        "peak_memory_bytes": peak_bytes(), "device": str(next(new_model.parameters()).device),
        "host": platform.node(), "processes": dist.world_size(), "threads": torch.get_num_threads(),
        "parallelism": run_info.pop("parallelism", "single"), "peak_memory_bytes_per_rank": dist.all_gather_objects(peak_bytes()),
        "rank_seeds": _rank_seeds(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "run_info": run_info,
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
        if manifest["parallelism"] == "fsdp":  # the run's settings as an accelerate config file, to launch it again
            (final / "accelerate_fsdp.yaml").write_text(dist.fsdp_config_yaml(dist.world_size()))
        atomic_write_json(final / "manifest.json", manifest)
    summary = absent = None
    if eval_scen is not None:
        res = run_eval((new_model, tok), eval_scen, reference=reference, out=final / "eval", config=eval_config,
                       progress=eval_progress, label=str(out_p))  # (in memory it still bears the input's path)
        summary, absent = res.summary, res.meta.get("absent")
        record["metrics_after"] = ledger.key_metrics(summary)
    if dist.is_main():
        ledger.write(final, model if isinstance(model, (str, os.PathLike)) else None, record, attempts)
        if out_p.exists():
            shutil.rmtree(out_p)
        out_p.parent.mkdir(parents=True, exist_ok=True)
        os.replace(final, out_p)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    return UnlearnResult(out_p, manifest, summary, absent)


def _nothing_changed(model, out_p: Path, work: Path, info: MethodInfo, record: dict[str, Any], targets: Sequence[str],
                     extras: dict[str, Any], attempts: list[dict[str, Any]]) -> None:
    """The method changed no weight: no model is written (an identical copy would pass for an unlearned one); the
    attempt goes to `out/ledger.jsonl` alone, and NothingToForget (exit 3) says so."""
    record.update(output_model=None, outcome="nothing_changed")
    if dist.is_main():
        out_p.mkdir(parents=True, exist_ok=True)
        for f in out_p.iterdir():  # only an earlier attempt's ledger can be here (or --overwrite was given)
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        ledger.write(out_p, model if isinstance(model, (str, os.PathLike)) else None, record, attempts)
        shutil.rmtree(work, ignore_errors=True)
    dist.barrier()
    where = f"no weight changed and no model was written; the attempt is recorded in {out_p / ledger.LEDGER}"
    stop = next((v.get("stop") for v in extras.values() if isinstance(v, dict) and "stop" in v), None)
    if targets and stop == "utility":
        raise NothingToForget(f"nothing released: what the model revealed about the {len(targets)} target(s) could "
                              f"not be released within the utility budget, so {where} (raise max_probe_increase "
                              f"to allow it)")
    if targets and stop == "reward":
        raise NothingToForget(f"nothing revealed: the model's answers about the {len(targets)} target(s) were not "
                              f"confident and consistent enough to be knowledge (reward below min_reward), so {where}")
    if targets:
        raise NothingToForget(f"nothing revealed: the model revealed nothing about the {len(targets)} target(s), so "
                              f"{where}")
    raise NothingToForget(f"nothing changed: {info.name} left every weight as it was, so {where}")


def _rank_seeds(cfg: Config) -> list[int] | None:
    """The torch seed of each process (`rank_seed`; the config's seed in one process), None for a method without a
    seed."""
    seed = getattr(cfg, "seed", None)
    return None if seed is None else [rank_seed(seed, r) for r in range(dist.world_size())]


def _resume_point(work: Path, cfg: Config) -> tuple[int, int] | None:
    """(epochs done, epochs in all) of a checkpoint this run will resume from."""
    state = work / "checkpoint" / "train_state.json"
    if not state.is_file():
        return None
    try:
        done = int(read_json(state)["epoch"])
    except (ValueError, KeyError, TypeError):
        return None
    return done, int(getattr(cfg, "epochs", done))


def _say(progress: Progress | None, event: ProgressEvent, line: str) -> None:
    """A notice the user should see without -v: to the progress callback (the CLI prints it), else a warning."""
    if progress is not None:
        progress(event)
    else:
        log.warning(line)


class _Clock:
    """The run's wall time across interruptions: the elapsed seconds are kept in the work dir at every epoch and
    when the run stops (kill -9 loses only the part since the last epoch, which is redone and counted again)."""

    def __init__(self, work: Path, carried: bool) -> None:
        self.file = work / "elapsed_s"
        self.before = 0.0
        if carried and self.file.is_file():
            try:
                self.before = float(self.file.read_text())
            except ValueError:
                self.before = 0.0
        self.t0 = time.time()

    def total(self) -> float:
        return self.before + time.time() - self.t0

    def save(self) -> None:
        if dist.is_main() and self.file.parent.is_dir():
            self.file.write_text(f"{self.total():.3f}")

    def wrap(self, progress: Progress | None) -> Progress:
        def on_event(ev: ProgressEvent) -> None:
            if ev.kind == "epoch":
                self.save()
            if progress is not None:
                progress(ev)
        return on_event


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path) / "manifest.json"
    if not p.is_file():
        raise DataError(f"{path}: no manifest.json (not an obliviate output)")
    return read_json(p)
