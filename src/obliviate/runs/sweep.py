"""`obliviate sweep`: a constrained hyperparameter search over one method, on Optuna.

Each trial is an ordinary `unlearn` run with evaluation (manifest, resume, cached model passes) into
`OUT/trials/<number>/`, against the retain model's saved evaluation; the study lives in an Optuna RDB storage (by
default `OUT/study.db`, a sqlite file), so a rerun of the same command continues it, and any number of workers
started anywhere with the same `--storage URL --study NAME` share it (PostgreSQL / MySQL for many machines).

Layout of OUT:
    eval/retain, eval/target   the reference evaluations (the retain model's is every trial's reference; the
                               target's gives `NUMBER*target` bounds), computed once
    trials/<n>/                each trial's unlearned model, manifest.json, eval/
    study.db                   the default storage
    trials.jsonl               one line per trial of the study (every worker's): params, state, metrics,
                               constraint violations, worker
    best.json                  the best feasible trial: params, full config, summary (or, when none is
                               feasible, the closest ones and why)
    report.html                objective vs trial, the FQ–MU cloud with the feasible region shaded, parameter
                               importances, the trials table

Sampling: TPE (seeded; the seed of each worker is recorded), with Optuna's constraints (each trial's violations,
`Trial.set_constraint`) so that it learns the feasible region; the first trial is the starting config (the scale
preset, or the defaults) when it lies in the space, so the best is never worse than where the search started.
Pruning: a median rule on a per-epoch stand-in for the objective (runs/objective.py, `progress_signal`), measured
against the finished trials that met the constraints (runs/pruning.py: against all of them, over-forgetting trials
set the median and every moderate trial was pruned), after `PRUNE_AFTER` epochs and `PRUNE_STARTUP` such trials;
a pruned trial's partial output is removed.

Interruptions: Ctrl-C marks the running trial failed (Optuna) and keeps its checkpoint; kill -9 leaves it RUNNING.
Either way the next run of the same command (same OUT) fails this worker's stale trials, re-runs them from their
last epoch checkpoint, and continues the study up to `--trials`. Trials of a worker that died elsewhere are failed
by Optuna's heartbeat after `GRACE_S` seconds."""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from obliviate.bench.presets import preset
from obliviate.bench.sweep_report import write_sweep_report
from obliviate.config import build_config, deep_merge, load_yaml
from obliviate.errors import ConfigError, NoFeasibleTrial, ObliviateError
from obliviate.eval.specs import metric_specs
from obliviate.eval.suite import EvalConfig
from obliviate.methods.base import METHODS, MethodInfo, ProgressEvent, Space
from obliviate.registry import Registry
from obliviate.runs.build import build as build_models
from obliviate.runs.common import load_scenario
from obliviate.runs.evaluate import evaluate_reference
from obliviate.runs.rehearsal import GENERAL_RETAIN, check_retain, general_retain_file
from obliviate.runs.objective import Objective, parse_objective, progress_signal
from obliviate.runs.space import describe, nest, resolve_space, start_params, suggest
from obliviate.runs.unlearn import eval_scenario, unlearn, work_dir_for
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_write_json, atomic_write_text, claim_output, lock_path, read_json
from obliviate.utils.progress import LineProgress, resumed
from obliviate.utils import dist

log = logging.getLogger(__name__)

DEFAULT_OBJECTIVE = "max forget_quality s.t. model_utility >= 0.95*target"
REPORTED = ("forget_quality", "model_utility", "forget_rougeL_recall")  # kept for every trial, beside the objective's
SAMPLERS: Registry[str] = Registry("sampler")
SAMPLERS.add("tpe", "tree-structured Parzen estimator (Optuna's default; learns the constraints)")
SAMPLERS.add("random", "uniform random sampling (a baseline)")
SAMPLERS.add("grid", "every combination of the space's choices once (every searched key a {choice: [...]}; "
                     "trials beyond the grid's size are not run)")
PRUNE_AFTER = 3  # epochs a trial always runs before it can be pruned
PRUNE_STARTUP = 3  # finished trials that met the constraints before anything is pruned
HEARTBEAT_S, GRACE_S = 60, 300  # a RUNNING trial without a heartbeat for GRACE_S seconds is failed (worker died)
WAIT_POLL_S = 5.0
IMPORTANCE_MIN = 5  # complete trials before parameter importances are computed (fewer: noise)


@dataclass
class SweepResult:
    out: Path
    study: str
    storage: str  # the URL with any password hidden
    best: dict[str, Any] | None  # best.json's "best" (None when no trial is feasible)
    counts: dict[str, int]  # trials of the study by state
    ran: int  # trials this call ran
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------ the storage


def open_storage(url: str):
    """An Optuna RDB storage with heartbeats, or a ConfigError (exit 2) saying why it cannot be reached."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        shown = parsed.render_as_string(hide_password=True)
    except Exception:  # sqlalchemy.exc.ArgumentError and friends: not a URL at all
        raise ConfigError(f"--storage {url!r}: not a database URL; give sqlite:///FILE.db (one machine), or "
                          f"postgresql://USER@HOST/DB / mysql+pymysql://USER@HOST/DB (many)") from None
    backend = parsed.get_backend_name()
    connect: dict[str, Any] = {"timeout": 60} if backend == "sqlite" else {"connect_timeout": 10}
    if backend == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise ConfigError(f"--storage {shown}: cannot reach the storage: folder {folder} does not exist (a sqlite "
                              f"file's folder must exist); create it or fix the path")
    try:
        storage = _rdb(url, connect)
    except ImportError as e:
        raise ConfigError(f"--storage {shown}: the {backend} database driver is not installed"
                          f"{f' ({e.name})' if e.name else ''}; "
                          f"install it (PostgreSQL: pip install psycopg2-binary; MySQL: pip install pymysql and use "
                          f"mysql+pymysql://)") from None
    except Exception as e:  # OperationalError (no server, refused, bad credentials), ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if parsed.password:
            first = first.replace(str(parsed.password), "***")
        raise ConfigError(f"--storage {shown}: cannot reach the storage ({type(e).__name__}: {first[:200]}); check "
                          f"the URL, that the database server runs and is reachable from here, and the "
                          f"credentials") from None
    return storage, shown


def _rdb(url: str, connect: dict[str, Any], attempts: int = 5):
    """RDBStorage, retried when workers started together race to create its tables (one wins, the others see
    "UNIQUE constraint failed" / "already exists" once, then find the tables made)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    for i in range(attempts):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect},
                                                  heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S)
        except (IntegrityError, OperationalError) as e:
            racing = isinstance(e, IntegrityError) or "already exists" in str(e) or "locked" in str(e)
            if not racing or i == attempts - 1:
                raise
            time.sleep(0.5 * (i + 1))
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------ the plan


@dataclass
class _Plan:
    """Everything a trial needs, resolved and checked before any work."""

    info: MethodInfo
    objective: Objective
    space: dict[str, Space]
    start: dict[str, Any]  # the starting overrides: preset/defaults + the space file's and the command line's fixed
    start_from: str
    notes: list[str]
    scen: Any
    eval_scen: Any
    forget: Any
    retain: Any
    eval_config: dict[str, Any]  # the references' evaluation settings
    trial_eval: dict[str, Any]  # the trials' (only the metrics the sweep reads, unless metrics= was given)
    reported: list[str]
    retain_given: Any = None  # --retain as given (a file, or "general", which `retain` holds resolved to a file)


def plan(method: str, *, scenario, base: str, model, forget, retain, space, objective: str,
         config: Mapping[str, Any] | None, scenario_options: Mapping[str, Any] | None, data: str | None,
         eval_config: Mapping[str, Any] | None) -> _Plan:
    info = METHODS.get(method)
    obj = parse_objective(objective)
    if model is not None and base != "tiny":
        raise ConfigError("--base builds the target and retain models, --model gives the target: use one of them")
    if scenario is None and forget is None:
        raise ConfigError("give the data: --scenario NAME (its forget and retain sets), or --forget FILE [--retain "
                          "FILE] with --model")
    if model is None and scenario is None:
        raise ConfigError("--forget without --scenario needs --model (the target) and --reference (the retain "
                          "model): there is nothing to build the models from")
    if retain is not None and str(retain) == GENERAL_RETAIN and model is not None:
        raise ConfigError("--retain general is answered by the --base that builds the models; with --model give "
                          "a retain file (benchmarks/general_retain.py writes one)")
    retain = check_retain(retain, base)  # "general", an absolute path, or None; a bad file fails now
    scen = load_scenario(scenario, data, **dict(scenario_options or {})) if scenario is not None else None
    eval_scen = eval_scenario(scen, forget, None if retain == GENERAL_RETAIN else retain, ())
    obj.check(eval_scen)
    start = preset(method, scenario, base) if model is None else {}  # a built target: its base's scale preset
    start_from = (f"the {base} scale preset (bench/presets.py)" if start else "the method's defaults (its paper's)")
    resolved, start, notes = resolve_space(info, space, start, dict(config or {}))
    ev = dict(eval_config or {})
    build_config(EvalConfig, ev, where="eval config")  # a typo fails now
    known = metric_specs(eval_scen)
    reported = [m for m in dict.fromkeys([*obj.metrics(), *REPORTED]) if m in known]
    trial_eval = ev if "metrics" in ev else {**ev, "metrics": reported}
    return _Plan(info, obj, resolved, start, start_from, notes, scen, eval_scen, forget, retain,
                 {k: v for k, v in ev.items() if k != "metrics"}, trial_eval, reported, retain)


# ------------------------------------------------------------------------------------------------ the sweep


def sweep(method: str, *, out: str | os.PathLike[str], scenario: str | None = None, base: str = "tiny",
          model: str | os.PathLike[str] | None = None, reference: str | os.PathLike[str] | None = None,
          forget=None, retain=None, trials: int = 20, space: str | os.PathLike[str] = "default",
          objective: str = DEFAULT_OBJECTIVE, storage: str | None = None, study: str | None = None, seed: int = 0,
          sampler: str = "tpe", prune: bool = True, pruner: Any = None, config: Mapping[str, Any] | None = None,
          scenario_options: Mapping[str, Any] | None = None, data: str | None = None,
          eval_config: Mapping[str, Any] | None = None, export_preset: str | os.PathLike[str] | None = None,
          wait: bool = True, progress: Callable[[str], None] | None = None) -> SweepResult:
    """Search `method`'s hyperparameters for the best `objective` (see runs/objective.py) within `trials` trials in
    all (every worker's together); write OUT/best.json, trials.jsonl, report.html, and with `export_preset` the
    best config as a preset file (`bench --presets FILE`). Raises NoFeasibleTrial (exit 4) when no trial meets the
    constraints. `pruner` replaces the default median pruner (an Optuna pruner; tests)."""
    dist.require_single_process("sweep (its workers are separate `obliviate sweep` processes sharing --storage)")
    say = progress or (lambda msg: log.info(msg))
    if trials < 1:
        raise ConfigError(f"--trials {trials}: give the number of trials of the study (at least 1)")
    SAMPLERS.get(sampler)
    p = plan(method, scenario=scenario, base=base, model=model, forget=forget, retain=retain, space=space,
             objective=objective, config=config, scenario_options=scenario_options, data=data,
             eval_config=eval_config)
    if sampler == "grid":
        trials = min(trials, _grid_size(p.space))
    preset_file = _check_preset_file(export_preset) if export_preset is not None else None
    opened = open_storage(storage) if storage is not None else None  # unreachable: fail before any work
    name = study or f"{method}-{scenario or 'files'}"
    with claim_output(out, reuse=True, inputs=[model, reference]) as out_p:
        out_p.mkdir(parents=True, exist_ok=True)
        if opened is None:
            opened = open_storage(f"sqlite:///{(out_p / 'study.db').resolve()}")
        for n in p.notes:
            say(n)
        return _sweep(p, out_p, name, opened, trials, seed, sampler, prune, pruner, base, scenario, model,
                      reference, scenario_options, data, preset_file, wait, say)


def _check_preset_file(path: str | os.PathLike[str]) -> Path:
    f = Path(path)
    if f.is_dir():
        raise ConfigError(f"--export-preset {f}: is a directory; give a YAML file (a new one, or a preset file to add "
                          f"this method to)")
    if f.exists():
        _read_presets(f)  # an existing file must be a preset file: it is added to, not replaced
    return f


def _sweep(p: _Plan, out_p: Path, name: str, opened, trials: int, seed: int, sampler_name: str, prune: bool,
           pruner, base: str, scenario, model, reference, scenario_options, data, preset_file: Path | None, wait: bool,
           say: Callable[[str], None]) -> SweepResult:
    import optuna

    from obliviate.runs.pruning import FeasibleMedianPruner

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # the sweep says what happens, one line per trial
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage, shown = opened
    target, ref = _models(p, out_p, base, scenario, model, reference, scenario_options, data, say)
    if p.retain == GENERAL_RETAIN:
        p = replace(p, retain=general_retain_file(out_p, p.scen, base, say))
    ref_eval, summaries = _references(p, out_p, target, ref, say)
    thresholds = [c.threshold(summaries) for c in p.objective.constraints]
    fingerprint = (read_json(out_p / "eval" / "target" / "eval.json").get("model") or {}).get("fingerprint")
    identity = {"method": p.info.name, "objective": str(p.objective), "space": describe(p.space), "start": p.start,
                "target": fingerprint, "data": p.eval_scen.forget.digest,
                "retain_hash": file_hash(p.retain) if p.retain else None}  # another retain set: another study
    study, created = _open_study(storage, name, p.objective.direction, identity, thresholds, seed, shown)
    thresholds = list(study.user_attrs.get("thresholds", thresholds))  # the creator's, so every worker agrees
    worker = f"{socket.gethostname()}:{out_p.resolve()}"
    worker_seed = seed if created else int(stable_hash([seed, worker, len(study.trials)])[:8], 16)
    study.sampler = _sampler(sampler_name, worker_seed, p.space)
    study.pruner = pruner if pruner is not None else (
        FeasibleMedianPruner(n_startup_trials=PRUNE_STARTUP, n_warmup_steps=PRUNE_AFTER) if prune
        else optuna.pruners.NopPruner())
    if created and sampler_name != "grid":  # (a grid runs its own points only)
        first = start_params(p.space, p.info.make_config(p.start))
        if first is not None:
            study.enqueue_trial(first, user_attrs={"start": True})
    _recover(study, worker, say)
    pruning = prune or pruner is not None
    signal = progress_signal(p.objective, p.eval_scen, _reference_gap(ref_eval)) if pruning else None
    if signal is None and pruning:
        say(f"no per-epoch stand-in for {p.objective.metric}: trials are not pruned")
    run = _trial_runner(p, out_p, target, ref_eval, thresholds, worker, worker_seed, signal, say)
    ran = 0
    while _budget_used(study) < trials:
        optuna.storages.fail_stale_trials(study)
        study.optimize(run, n_trials=1, catch=(ObliviateError,))
        ran += 1
        last = max((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("worker") == worker),
                   key=lambda t: t.number, default=None)
        if last is not None:
            say(_trial_line(last, p.objective, thresholds))
        _write_trials(out_p, study, p, thresholds)
    if wait:
        _wait_for_others(study, say)
    _discard_orphans(out_p, study)
    return _finish(p, out_p, study, name, shown, thresholds, summaries, worker_seed, ran, preset_file, say)


def _models(p: _Plan, out_p: Path, base: str, scenario, model, reference, scenario_options, data,
            say: Callable[[str], None]) -> tuple[Any, Any]:
    if model is not None:
        return model, reference
    opts = dict(scenario_options or {})
    if data:
        opts["data"] = data
    overrides: dict[str, Any] = {}
    if opts:
        overrides["scenario_options"] = opts
    if base != "tiny":
        overrides["base"] = base
    say(f"building (or reusing) the {scenario} target and retain models" + (f" on {base}" if base != "tiny" else ""))
    built = build_models(scenario, overrides=overrides or None)
    return built.target, built.retain


def _references(p: _Plan, out_p: Path, target, ref, say: Callable[[str], None]
                ) -> tuple[Path | None, dict[str, dict[str, Any]]]:
    """The retain model's evaluation (every trial's reference) and the target's, computed once (reused when the
    same models, data and settings were evaluated here before)."""
    summaries: dict[str, dict[str, Any]] = {}
    ref_eval: Path | None = None
    if ref is not None:
        rp = Path(ref)
        if (rp / "eval.json").is_file():  # a saved evaluation of the retain model
            ref_eval = rp
            summaries["retain"] = read_json(rp / "summary.json") if (rp / "summary.json").is_file() else {}
        else:
            ref_eval = out_p / "eval" / "retain"
            summaries["retain"] = evaluate_reference(ref, p.eval_scen, ref_eval, ref, p.eval_config, "retain", say)
    summaries["target"] = evaluate_reference(target, p.eval_scen, out_p / "eval" / "target", ref_eval,
                                             p.eval_config, "target", say)
    absent = read_json(out_p / "eval" / "target" / "eval.json").get("absent") or {}
    for m in p.objective.metrics():
        if summaries["target"].get(m) is None:
            why = absent.get(m, "it could not be computed on these sets")
            raise ConfigError(f"objective metric {m} is absent for the target model ({why}), so no trial could be "
                              f"judged by it; choose another metric or give what it needs")
    return ref_eval, summaries


def _reference_gap(ref_eval: Path | None) -> float | None:
    """The retain model's forget answer NLL above its retain answer NLL (token means), from its saved evaluation:
    the cap of the pruning stand-in (how far forgetting can usefully go)."""
    if ref_eval is None or not (ref_eval / "eval.json").is_file():
        return None
    items = read_json(ref_eval / "eval.json").get("items") or {}

    def token_mean(split: str) -> float | None:
        vals = [(v["mean_nll"], v.get("n_tokens", 1)) for v in (items.get(split) or {}).values()
                if isinstance(v.get("mean_nll"), (int, float)) and math.isfinite(v["mean_nll"])]
        total = sum(n for _, n in vals)
        return sum(x * n for x, n in vals) / total if total else None

    f, r = token_mean("forget"), token_mean("retain")
    if f is None:
        return None
    return f - r if r is not None else f


def _open_study(storage, name: str, direction: str, identity: dict[str, Any], thresholds: list[float], seed: int,
                shown: str):
    """Create the study (this worker then records what it is) or join it (after checking it sweeps the same thing:
    a study of another method, objective, space or target model is refused)."""
    import optuna

    try:
        study = optuna.create_study(storage=storage, study_name=name, direction=direction)
        study.set_user_attr("identity", identity)
        study.set_user_attr("thresholds", thresholds)
        study.set_user_attr("seed", seed)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        pass
    study = optuna.load_study(study_name=name, storage=storage)
    deadline = time.time() + 30  # its creator records the identity right after creating it
    while "identity" not in study.user_attrs and time.time() < deadline:
        time.sleep(0.5)
    theirs = study.user_attrs.get("identity")
    if theirs is None:
        raise ConfigError(f"--study {name} in {shown} was not created by obliviate sweep; choose another --study")
    differ = [k for k in identity if _jsonable(theirs.get(k)) != _jsonable(identity[k])]
    if differ:
        what = "; ".join(f"{k}: the study has {theirs.get(k)!r}, this command {identity[k]!r}" for k in differ)
        raise ConfigError(f"--study {name} in {shown} sweeps something else ({what}); use the same settings to join "
                          f"it, or another --study")
    return study, False


def _jsonable(v: Any) -> Any:
    import json

    return json.loads(json.dumps(v, default=str))


def _grid(space: Mapping[str, Space]) -> dict[str, list[Any]]:
    """The grid sampler's points per key: every searched key must be a choice (a grid of a continuous range is the
    user's to choose)."""
    ranged = [k for k, sp in space.items() if sp.kind != "choice"]
    if ranged:
        raise ConfigError(f"--sampler grid needs every searched key as {{choice: [...]}} in the space file; "
                          f"{', '.join(ranged)} {'is a range' if len(ranged) == 1 else 'are ranges'} (list the values "
                          f"to try, e.g. lr: {{choice: [1.0e-4, 3.0e-4]}})")
    return {k: list(sp.choices) for k, sp in space.items()}


def _grid_size(space: Mapping[str, Space]) -> int:
    return math.prod(len(v) for v in _grid(space).values())


def _sampler(name: str, seed: int, space: Mapping[str, Space]):
    """TPE learns the feasible region from each trial's constraint values (`Trial.set_constraint`); the grid
    runs every combination once, spread over the workers (Optuna's GridSampler)."""
    import optuna

    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "grid":
        return optuna.samplers.GridSampler(_grid(space), seed=seed)
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)


def _interrupted(t) -> bool:
    """A failed trial that ended without a result or an error of its own: Ctrl-C, kill -9 (failed on the rerun),
    a dead worker (failed by the heartbeat)."""
    return t.state.name == "FAIL" and not t.user_attrs.get("error")


def _budget_used(study) -> int:
    """Trials that count toward --trials: running ones and those that ended with a result or an error; an
    interrupted trial does not count (it runs again)."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state != TrialState.WAITING and not _interrupted(t))


def _recover(study, worker: str, say: Callable[[str], None]) -> None:
    """This worker's trials that an interruption left behind run again, from their last epoch checkpoint: a
    RUNNING one (killed: we hold OUT's lock, so no live process of ours runs it) is failed first. (Another worker's
    interrupted trials do not count toward --trials, so the study replaces them.)"""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    resumed = {t.user_attrs.get("resumes") for t in trials}
    for t in trials:
        if t.user_attrs.get("worker") != worker or t.number in resumed:
            continue
        if t.state == TrialState.RUNNING:
            try:
                study.tell(t.number, state=TrialState.FAIL)
            except UpdateFinishedTrialError:
                continue
        elif not _interrupted(t):
            continue
        study.enqueue_trial(t.params, user_attrs={"resumes": t.number})
        say(f"trial {t.number} was interrupted: it runs again, from its last epoch checkpoint")


def _trial_runner(p: _Plan, out_p: Path, target, ref_eval: Path | None, thresholds: list[float], worker: str,
                  worker_seed: int, signal, say: Callable[[str], None]):
    import optuna

    cons = p.objective.constraints

    def run(trial) -> float:
        params = {k: suggest(trial, k, sp) for k, sp in p.space.items()}
        trial.set_user_attr("worker", worker)
        trial.set_user_attr("sampler_seed", worker_seed)
        t_out = out_p / "trials" / str(trial.number)
        _take_over(out_p, trial.user_attrs.get("resumes"), t_out)
        say(f"trial {trial.number}: " + ", ".join(f"{k}={_short(v)}" for k, v in params.items()))

        def on_event(ev: ProgressEvent) -> None:
            if ev.kind == "resume":
                say(f"trial {trial.number}: {resumed(ev)}")
            if ev.kind != "epoch" or ev.epoch is None:
                return
            curves = ", ".join(f"{k.removesuffix('_eval').replace('_', ' ')} {v:.3g}" for k, v in ev.terms.items()
                               if k.endswith("_nll_eval"))
            say(f"trial {trial.number}: epoch {ev.epoch}/{ev.epochs}" + (f", {curves}" if curves else ""))
            if signal is None:
                return
            v = signal(ev.terms)
            if v is None:
                return
            trial.report(v, ev.epoch)
            if trial.should_prune():
                trial.set_user_attr("pruned_at_epoch", ev.epoch)
                raise optuna.TrialPruned(f"pruned after epoch {ev.epoch}")

        try:
            res = unlearn(target, p.info.name, out=t_out, scenario=p.scen, forget=p.forget, retain=p.retain,
                          config=deep_merge(p.start, nest(params)), overwrite=True, evaluate=True,
                          reference=ref_eval, eval_config=p.trial_eval, progress=on_event,
                          eval_progress=LineProgress(f"trial {trial.number}").passes)  # a line a minute per pass
        except optuna.TrialPruned:
            _discard(t_out)
            raise
        except KeyboardInterrupt:  # Optuna marks it failed; the checkpoint stays for the rerun
            trial.set_user_attr("interrupted", True)
            raise
        except BaseException as e:  # diverged, nothing changed (the sweep goes on), or a bug (it stops)
            trial.set_user_attr("error", f"{type(e).__name__}: {e}")
            _discard(t_out)
            raise
        summary = {k: (res.summary or {}).get(k) for k in p.reported}
        trial.set_user_attr("summary", summary)
        trial.set_user_attr("wall_time_s", res.manifest.get("wall_time_s"))
        for c, th in zip(cons, thresholds, strict=True):
            trial.set_constraint(str(c), c.violation(summary.get(c.metric), th))
        value = summary.get(p.objective.metric)
        if value is None or math.isnan(value):
            why = (res.absent or {}).get(p.objective.metric, "not computed")
            trial.set_user_attr("error", f"{p.objective.metric} absent: {why}")
            raise ConfigError(f"{p.objective.metric} absent: {why}")
        return float(value)

    return run


def _short(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, float) else repr(v) if isinstance(v, str) else str(v)


def _take_over(out_p: Path, old: int | None, t_out: Path) -> None:
    """A re-run of an interrupted trial resumes from its checkpoint: its work directory moves to the new number."""
    if old is None:
        return
    src = work_dir_for(out_p / "trials" / str(old))
    dst = work_dir_for(t_out)
    if src.is_dir() and not dst.exists():
        t_out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)


def _discard(t_out: Path) -> None:
    """A pruned or failed trial leaves nothing behind (a diverged run's checkpoint included)."""
    shutil.rmtree(t_out, ignore_errors=True)
    shutil.rmtree(work_dir_for(t_out), ignore_errors=True)
    lock_path(t_out).unlink(missing_ok=True)


def _discard_orphans(out_p: Path, study) -> None:
    """Checkpoints of interrupted trials whose re-run has finished (here, or from scratch on another worker)."""
    from optuna.trial import TrialState

    rerun = {t.user_attrs.get("resumes") for t in study.get_trials(deepcopy=False)
             if t.state not in (TrialState.RUNNING, TrialState.WAITING)}
    for d in (out_p / "trials").glob(".*.partial"):
        n = d.name[1:-len(".partial")]
        if n.isdigit() and int(n) in rerun:
            shutil.rmtree(d, ignore_errors=True)


def _wait_for_others(study, say: Callable[[str], None]) -> None:
    """Every worker reports the same best: wait for trials still running elsewhere (a dead worker's are failed by
    the heartbeat after GRACE_S seconds)."""
    import optuna
    from optuna.trial import TrialState

    told = False
    while True:
        optuna.storages.fail_stale_trials(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if not running:
            return
        if not told:
            say(f"waiting for {len(running)} trial(s) running on other workers")
            told = True
        time.sleep(WAIT_POLL_S)


# ------------------------------------------------------------------------------------------------ outputs


def _feasible(t, thresholds: Sequence[float]) -> bool | None:
    """Whether a complete trial meets every constraint (None when it recorded none although there are some)."""
    vals = t.constraints
    if not vals:
        return None if thresholds else (t.value is not None)
    return all(v <= 0 for v in vals.values())


def _record(t, p: _Plan, thresholds: Sequence[float]) -> dict[str, Any]:
    return {
        "number": t.number, "state": t.state.name.lower(), "params": t.params,
        "value": t.value if t.state.name == "COMPLETE" else None,  # a pruned trial's is the stand-in's
        "feasible": _feasible(t, thresholds) if t.state.name == "COMPLETE" else None,
        "constraints": dict(t.constraints) or None,  # violations: <= 0 met
        "summary": t.user_attrs.get("summary"), "wall_time_s": t.user_attrs.get("wall_time_s"),
        "worker": t.user_attrs.get("worker"), "sampler_seed": t.user_attrs.get("sampler_seed"),
        "start": bool(t.user_attrs.get("start")), "resumes": t.user_attrs.get("resumes"),
        "pruned_at_epoch": t.user_attrs.get("pruned_at_epoch"), "error": t.user_attrs.get("error"),
        "interrupted": _interrupted(t),
        "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
        "started": t.datetime_start.isoformat() if t.datetime_start else None,
        "duration_s": round(t.duration.total_seconds(), 1) if t.duration else None,
    }


def _write_trials(out_p: Path, study, p: _Plan, thresholds: Sequence[float]) -> list[dict[str, Any]]:
    import json

    recs = [_record(t, p, thresholds) for t in study.get_trials(deepcopy=False)]
    atomic_write_text(out_p / "trials.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in recs))
    return recs


def best_of(recs: Sequence[dict[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The best feasible complete trial. Ties, common because forget quality is a KS p-value over a few dozen items
    and takes few distinct values: the trial with the most room on its tightest constraint (the higher model
    utility under "s.t. model_utility >= ..."), then the earlier trial."""
    best = None
    for r in recs:
        if r["state"] == "complete" and r["feasible"] and r["value"] is not None:
            if (best is None or objective.better(r["value"], best["value"])
                    or (r["value"] == best["value"] and _tightest(r) < _tightest(best))):
                best = r
    return best


def _tightest(r: dict[str, Any]) -> float:
    """A trial's largest constraint violation (≤ 0 when feasible: minus the room left on its tightest constraint)."""
    return max((r.get("constraints") or {}).values(), default=0.0)


def closest_of(recs: Sequence[dict[str, Any]], n: int = 3) -> list[dict[str, Any]]:
    """The complete trials that miss the constraints by the least (sum of the positive violations)."""
    done = [r for r in recs if r["state"] == "complete" and r["constraints"]]
    return sorted(done, key=lambda r: (sum(max(0.0, v) for v in r["constraints"].values()), r["number"]))[:n]


def _trial_line(t, objective: Objective, thresholds: Sequence[float]) -> str:
    state = t.state.name.lower()
    if state == "pruned":
        return f"trial {t.number}: pruned after epoch {t.user_attrs.get('pruned_at_epoch', '?')}"
    if state == "fail":
        return f"trial {t.number}: failed ({t.user_attrs.get('error') or 'interrupted'})"
    summary = t.user_attrs.get("summary") or {}
    shown = ", ".join(f"{k} {_short(v) if v is not None else '—'}" for k, v in summary.items())
    feas = _feasible(t, thresholds)
    return f"trial {t.number}: {shown}" + ("" if not objective.constraints else
                                           " (feasible)" if feas else " (misses the constraints)")


def _finish(p: _Plan, out_p: Path, study, name: str, shown: str, thresholds: list[float],
            summaries: dict[str, dict[str, Any]], worker_seed: int, ran: int, preset_file: Path | None,
            say: Callable[[str], None]) -> SweepResult:
    recs = _write_trials(out_p, study, p, thresholds)
    counts: dict[str, int] = {}
    for r in recs:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    best = best_of(recs, p.objective)
    cons = {str(c): th for c, th in zip(p.objective.constraints, thresholds, strict=True)}
    refs = {role: {k: s.get(k) for k in p.reported} for role, s in summaries.items()}
    doc: dict[str, Any] = {
        "study": name, "storage": shown, "method": p.info.name, "objective": str(p.objective),
        "direction": p.objective.direction, "constraints": cons, "references": refs,
        "space": describe(p.space), "start": p.start, "start_from": p.start_from,
        "sampler": {"seed": study.user_attrs.get("seed"), "this_worker_seed": worker_seed}, "trials": counts,
        "retain": None if p.retain_given is None else str(p.retain_given),
        "feasible": best is not None,
    }
    if best is not None:
        overrides = deep_merge(p.start, nest(best["params"]))
        doc["best"] = {**best, "overrides": overrides,
                       "config": p.info.make_config(overrides).model_dump(mode="json")}
    else:
        doc["best"] = None
        doc["closest"] = closest_of(recs)
    atomic_write_json(out_p / "best.json", doc)
    write_sweep_report(out_p, {**doc, "records": recs, "importances": _importances(study),
                               "reported": p.reported, "metric": p.objective.metric})
    if best is None:
        raise NoFeasibleTrial(_no_best_message(recs, p.objective, cons, out_p))
    if preset_file is not None:
        given = p.retain_given
        trained_on = f"; trained on --retain {given}: give bench the same" if given is not None else ""
        write_preset(preset_file, p.info.name, doc["best"]["overrides"],
                     f"study {name}: trial {best['number']} of {sum(counts.values())}, {p.objective.metric} "
                     f"{_short(best['value'])} ({p.objective}){trained_on}")
        say(f"preset written: {preset_file}")
    return SweepResult(out_p, name, shown, doc["best"], counts, ran, p.notes)


def _no_best_message(recs: Sequence[dict[str, Any]], objective: Objective, cons: Mapping[str, float],
                     out_p: Path) -> str:
    done = [r for r in recs if r["state"] == "complete"]
    if not done:
        errors = sorted({r["error"] for r in recs if r.get("error")})
        why = f" (e.g. {errors[0]})" if errors else ""
        return (f"no trial finished ({len(recs)} pruned or failed{why}), so there is no best config; see "
                f"{out_p / 'trials.jsonl'}")
    near = closest_of(recs, 1)
    want = " and ".join(f"{c} (= {_short(th)})" for c, th in cons.items())
    reached = ""
    if near:
        s = near[0]["summary"] or {}
        reached = (f"; the closest, trial {near[0]['number']}, reached "
                   + ", ".join(f"{m} {_short(s.get(m))}" for m in objective.metrics() if s.get(m) is not None))
    return (f"no feasible trial: none of {len(done)} finished trials met {want}{reached}; widen the space, run more "
            f"trials or relax the constraint (best.json and report.html show the closest)")


def _importances(study) -> dict[str, float] | None:
    """Optuna's parameter importances (fANOVA) over the complete trials; None when there are too few to mean
    anything."""
    import optuna
    from optuna.trial import TrialState

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(done) < IMPORTANCE_MIN or len({tuple(sorted(t.params.items())) for t in done}) < 2:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return {k: float(v) for k, v in optuna.importance.get_param_importances(study).items()}
    except (RuntimeError, ValueError, ZeroDivisionError):
        return None


# ------------------------------------------------------------------------------------------------ presets


def _read_presets(path: Path) -> dict[str, dict[str, Any]]:
    data = load_yaml(path)
    bad = [k for k, v in data.items() if not isinstance(v, dict)]
    if bad:
        raise ConfigError(f"{path}: not a preset file: {bad[0]!r} maps to {data[bad[0]]!r}; a preset file maps method "
                          f"names to their config overrides ({{npo: {{lr: 1e-4}}}})")
    return data


def read_presets(path: str | os.PathLike[str], methods: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """A preset file (`bench --presets FILE`): method name -> config overrides; every name must be a method, and
    every entry of `methods` (all when None) a valid config of it."""
    data = _read_presets(Path(path))
    for name, values in data.items():
        info = METHODS.get(name)  # did you mean ...
        if methods is None or name in methods:
            info.make_config(values)
    return data


_PROVENANCE = re.compile(r"^# (\S+): (.*)$")
_TRAINED_ON = re.compile(r"trained on --retain (.+?): give bench the same")


def _provenance(path: str | os.PathLike[str]) -> dict[str, str]:
    """method -> its provenance line in a preset file (write_preset)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return {m.group(1): m.group(2) for m in map(_PROVENANCE.match, lines) if m}


def preset_retains(path: str | os.PathLike[str]) -> dict[str, str]:
    """method -> the `--retain` its preset was found with, from a preset file's provenance lines."""
    return {k: f.group(1) for k, note in _provenance(path).items() if (f := _TRAINED_ON.search(note))}


def write_preset(path: Path, method: str, overrides: Mapping[str, Any], provenance: str) -> None:
    """Add (or replace) `method`'s entry of a preset file, keeping the other methods and their provenance lines."""
    import yaml

    data = _read_presets(path) if path.exists() else {}
    notes = {k: v for k, v in _provenance(path).items() if k in data} if path.exists() else {}
    data[method] = _jsonable(dict(overrides))
    notes[method] = provenance
    lines = ["# obliviate presets, found by `obliviate sweep --export-preset` (use: obliviate bench --presets FILE).",
             "# Each method's config overrides; its sweep's best.json has the trial's full record."]
    lines += [f"# {m}: {notes[m]}" for m in data if m in notes]
    atomic_write_text(path, "\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False))
