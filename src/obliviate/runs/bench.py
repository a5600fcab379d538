"""Run every chosen method on one scenario, evaluate each the same way, write the leaderboard and report.

Layout of the output directory:
    models → the target/retain build (in the cache), eval/target, eval/retain (the reference evaluation),
    runs/<method>/ (the unlearned model, manifest.json, history, eval/), runs/<method>.error.json on failure,
    runs/<method>.seed<S>/ for the further training seeds of `seeds` > 1,
    retain-general.jsonl (with retain="general"), leaderboard.json, leaderboard.md, report.html.
A method that fails is recorded with its error and the run goes on; a rerun skips finished methods (same config).
The directory is the benchmark: its leaderboard lists this invocation's runs, then every run an earlier invocation
left there (finished or failed) that this one did not name, marked as such."""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import shutil
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obliviate.bench.presets import COST, has_scale, preset
from obliviate.bench.report import write_report
from obliviate.errors import ConfigError
from obliviate.eval.specs import summary_keys
from obliviate.methods import METHODS
from obliviate.runs.attacks import ATTACKS, attack_rows
from obliviate.runs.build import build as build_models
from obliviate.runs.build import build_config_for
from obliviate.runs.common import load_scenario
from obliviate.runs.evaluate import evaluate_reference
from obliviate.runs.rehearsal import GENERAL_RETAIN, check_retain, general_retain_file
from obliviate.runs.sweep import preset_retains, read_presets
from obliviate.runs.unlearn import unlearn
from obliviate.utils.hashing import file_hash, stable_hash
from obliviate.utils.io import atomic_write_json, claim_output, read_json
from obliviate.utils.progress import LineProgress
from obliviate.utils.threads import per_job, thread_budget
from obliviate.utils import dist

log = logging.getLogger(__name__)

ROW_KEYS = tuple(summary_keys("leaderboard"))  # the metrics each leaderboard row carries (eval/specs.py)
ERROR_SUFFIX = ".error.json"  # runs/<run>.error.json: a run that failed


@dataclass
class Job:
    method: str
    config: dict[str, Any]
    target: str
    reference_eval: str
    scenario: str
    scenario_options: dict[str, Any]
    out: str
    threads: int
    retain: str | None = None  # a retain file trained on in place of the scenario's retain set
    name: str = ""  # the run's name (its directory under runs/): the method's, or METHOD.seedS for a further seed

    def __post_init__(self) -> None:
        self.name = self.name or self.method


def run_names(method: str, config: dict[str, Any], seeds: int) -> list[tuple[str, dict[str, Any]]]:
    """The runs of one method under `seeds` training seeds: (name, config) pairs. The first is the method's own run
    (its name and config unchanged, so a benchmark rerun with more seeds reuses it); the others train with the
    config's seed + 1, + 2, ... under METHOD.seedS."""
    first = int(config.get("seed", 0))
    return [(method, config)] + [(f"{method}.seed{first + k}", {**config, "seed": first + k}) for k in range(1, seeds)]


def _job_key(job: Job) -> str:
    data = [job.method, job.config, job.scenario, job.scenario_options, job.target]
    return stable_hash(data + ([file_hash(job.retain)] if job.retain else []))


def run_job(job: Job) -> dict[str, Any]:
    """Unlearn + evaluate one method (in a worker process); never raises: failures come back as a row."""
    import torch

    torch.set_num_threads(job.threads)
    out = Path(job.out)
    err_file = out.with_name(out.name + ERROR_SUFFIX)
    t0 = time.time()
    try:
        scen = load_scenario(job.scenario, **job.scenario_options)
        said = LineProgress(job.name)  # a worker draws no bars: a line per minute says where it is
        unlearn(job.target, job.method, out=out, scenario=scen, retain=job.retain, config=job.config, overwrite=True,
                evaluate=True, reference=job.reference_eval, progress=said.train, eval_progress=said.passes)
        atomic_write_json(out / "bench.json", {"key": _job_key(job)})
        err_file.unlink(missing_ok=True)
        return {"run": job.name, "ok": True, "seconds": round(time.time() - t0, 1)}
    except BaseException as e:  # recorded, and the benchmark goes on
        if isinstance(e, KeyboardInterrupt):
            raise
        atomic_write_json(err_file, {"method": job.method, "error": f"{type(e).__name__}: {e}",
                                     "traceback": traceback.format_exc(), "config": job.config})
        return {"run": job.name, "ok": False, "error": f"{type(e).__name__}: {e}"}


def finished(job: Job) -> bool:
    out = Path(job.out)
    return ((out / "eval" / "summary.json").is_file() and (out / "bench.json").is_file()
            and read_json(out / "bench.json").get("key") == _job_key(job))


def changed_fraction(before: str | Path | Mapping[str, Any], after: str | Path) -> float:
    """Share of parameter elements that differ between two saved models (added rows count as changed); `before`
    may be a model's weights already read (`saved_weights`), to compare many models against one."""
    from obliviate.utils.tensors import saved_weights

    a = before if isinstance(before, Mapping) else saved_weights(before)
    b = saved_weights(after)
    total = changed = 0
    for k, t in b.items():
        total += t.numel()
        if k not in a:
            changed += t.numel()
            continue
        s = a[k]
        rows = min(s.shape[0], t.shape[0]) if s.ndim and t.ndim else None
        if rows is not None and s.shape[1:] == t.shape[1:]:
            changed += int((s[:rows] != t[:rows]).sum()) + (t.shape[0] - rows) * int(t[0].numel())
        else:
            changed += t.numel()
    return changed / max(total, 1)


def bench(scenario: str = "synthetic", methods: Sequence[str] | None = None, out: str | os.PathLike[str] = "runs/bench",
          jobs: int = 0, data: str | None = None, paper_defaults: bool = False, overrides: dict[str, dict] | None = None,
          scenario_options: dict[str, Any] | None = None, progress: Callable[[str], None] | None = None,
          attacks: Sequence[str] = (), presets: str | os.PathLike[str] | None = None,
          base: str = "tiny", build: dict[str, Any] | None = None,
          retain: str | os.PathLike[str] | None = None, seeds: int = 1) -> dict[str, Any]:
    """Build or reuse the models (`base`: tiny, or a pretrained base fine-tuned on the scenario, as `build`), run
    every method (default: all registered), evaluate, write the report. Methods start from the base's scale
    presets (bench/presets.py; a base without one runs the methods' own defaults, as `paper_defaults`).
    `presets`: a preset file (YAML, method -> config overrides, as `obliviate sweep --export-preset` writes it)
    whose entries override bench/presets.py's for the methods it names. `build`: overrides of the models' build
    recipe (runs/build.py BuildConfig, e.g. {"rehearsal": {"source": "general"}}), recorded in the leaderboard.
    `retain`: what every method trains on as its retain set: None, the scenario's; "general", the scenario's plus
    the base's own answers to obliviate's general-knowledge questions (runs/rehearsal.general_retain; a pretrained
    base only), written to OUT/retain-general.jsonl once; or a file. The evaluation stays the scenario's."""
    dist.require_single_process("bench")
    say = progress or (lambda msg: log.info(msg))
    names = list(methods) if methods else METHODS.names()
    for n in names:
        METHODS.get(n)  # unknown names fail before any work, with "did you mean"
    for a in attacks:
        ATTACKS.get(a)
    if jobs < 0:
        raise ConfigError(f"--jobs {jobs}: give 0 (auto) or the number of methods to run side by side")
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give the number of training seeds per method (1 or more)")
    unknown = sorted(set(overrides or {}) - set(names))
    if unknown:
        raise ConfigError(f"overrides for {', '.join(unknown)}, which this benchmark does not run (methods: "
                          f"{', '.join(names)}); write METHOD.key=value for a method in --methods")
    file_presets = read_presets(presets, names) if presets is not None else {}
    for n in names:  # every method's config is valid before any work (a typo would otherwise fail one row late)
        METHODS.get(n).make_config(method_config(n, scenario, paper_defaults, file_presets, overrides, base))
    scen_opts = dict(scenario_options or {})
    if data:
        scen_opts["data"] = data
    # the models' build: the given recipe, the scenario's options and the base (a typo fails now, before any work)
    build_over = {**(build or {}), **({"scenario_options": scen_opts} if scen_opts else {}),
                  **({"base": base} if base != "tiny" else {})}
    build_config_for(scenario, build_over)
    retain_label = check_retain(retain, base)
    if presets is not None:
        _warn_retain_mismatch(presets, names, retain_label, say)
    with claim_output(out, reuse=True) as out_p:  # an existing benchmark directory is resumed into
        out_p.mkdir(parents=True, exist_ok=True)
        return _bench(scenario, names, out_p, jobs, paper_defaults, overrides, scen_opts, say, attacks,
                      file_presets, str(presets) if presets is not None else None, base, build_over, retain_label,
                      seeds)


def _warn_retain_mismatch(presets: str | os.PathLike[str], names: Sequence[str], retain: str | None,
                          say: Callable[[str], None]) -> None:
    """A preset found on one retain set, run on another, does not give the preset's numbers: say so (not an error:
    the comparison may be the point)."""
    for n, tuned_on in preset_retains(presets).items():
        if n in names and (tuned_on if tuned_on == GENERAL_RETAIN else str(Path(tuned_on).resolve())) != retain:
            say(f"warning: {presets}: {n}'s preset was found with --retain {tuned_on}; this benchmark trains on "
                f"{'--retain ' + retain if retain else 'the scenario retain set'} (give --retain {tuned_on} for the "
                f"preset's numbers)")


def method_config(name: str, scenario: str, paper_defaults: bool, file_presets: dict[str, dict],
                  overrides: dict[str, dict] | None, base: str = "tiny") -> dict[str, Any]:
    """A method's overrides in a benchmark: the base's scale preset (none with paper_defaults), then the preset
    file's entry, then the command line's METHOD.key=value."""
    cfg = {} if paper_defaults else preset(name, scenario, base)
    return {**cfg, **file_presets.get(name, {}), **(overrides or {}).get(name, {})}


def _bench(scenario: str, names: list[str], out_p: Path, jobs: int, paper_defaults: bool,
           overrides: dict[str, dict] | None, scen_opts: dict[str, Any], say: Callable[[str], None],
           attacks: Sequence[str], file_presets: dict[str, dict], presets: str | None, base: str,
           build_over: dict[str, Any], retain: str | None = None, seeds: int = 1) -> dict[str, Any]:
    say(f"building (or reusing) the {scenario} target and retain models on base {base}")
    if not paper_defaults and not has_scale(base):
        say(f"no scale presets for base {base} (bench/presets.py): the methods run their own (the papers') defaults")
    built = build_models(scenario, overrides=build_over or None)
    _same_models(out_p, built.info.get("key"))
    scen = load_scenario(scenario, **scen_opts)
    evals: dict[str, dict[str, Any]] = {}
    for role, model in (("retain", built.retain), ("target", built.target)):
        ref = out_p / "eval" / "retain" if role == "target" else built.retain
        evals[role] = evaluate_reference(model, scen, out_p / "eval" / role, ref, None, role, say)
    retain_file = general_retain_file(out_p, scen, base, say) if retain == GENERAL_RETAIN else retain
    n_jobs = jobs or max(1, min(2, thread_budget()))
    threads = per_job(n_jobs)  # OBLIVIATE_THREADS, when set, is the whole bench's budget
    todo = []
    runs: list[tuple[str, str]] = []  # (method, run name), in the leaderboard's order
    for n in names:
        cfg = method_config(n, scenario, paper_defaults, file_presets, overrides, base)
        for run, run_cfg in run_names(n, cfg, seeds):
            runs.append((n, run))
            job = Job(n, run_cfg, str(built.target), str(out_p / "eval" / "retain"), scenario, scen_opts,
                      str(out_p / "runs" / run), threads, retain_file, run)
            if finished(job):
                say(f"{run}: already done, skipped")
            else:
                todo.append(job)
    todo.sort(key=lambda j: -COST.get(j.method, 1.0))
    t0 = time.time()
    if todo:
        say(f"running {len(todo)} method run(s), {n_jobs} at a time, {threads} thread(s) each")
        if n_jobs == 1:
            results = [run_job(j) for j in todo]
        else:
            with mp.get_context("spawn").Pool(n_jobs, maxtasksperchild=1) as pool:
                results = []
                for r in pool.imap_unordered(run_job, todo):
                    say(f"{r['run']}: {'done in ' + str(r['seconds']) + ' s' if r['ok'] else 'FAILED: ' + r['error']}")
                    results.append(r)
    earlier = earlier_runs(out_p, runs)
    if earlier:
        say(f"the leaderboard also lists {len(earlier)} run(s) of earlier invocations into {out_p}: "
            + ", ".join(n for _, n in earlier))
    rows = collect_rows(out_p, runs, built.target, evals, earlier)
    if attacks:
        attack_rows(rows, out_p, scen, list(attacks), built.target, say, retain=built.retain)
    recipe = {k: v for k, v in build_over.items() if k not in ("base", "scenario_options")}
    board = {"scenario": scenario, "scenario_options": scen_opts, "base": base, "build": recipe, "retain": retain,
             "models": str(built.target.parent),
             "paper_defaults": paper_defaults, "presets": presets, "rows": rows, "wall_time_s": round(time.time() - t0, 1)}
    if seeds > 1:
        board.update(seeds=seeds, across_seeds=across_seeds(rows))
    atomic_write_json(out_p / "leaderboard.json", board)
    write_report(out_p, board)
    return board


def _same_models(out: Path, key: str | None) -> None:
    """A benchmark directory is resumed only into runs of the same models: its first run records their build key
    (models.json), and a later run on other models (another base or recipe) is refused before any work."""
    f = out / "models.json"
    if not f.is_file():
        atomic_write_json(f, {"build_key": key})
    elif (had := read_json(f).get("build_key")) != key:
        raise ConfigError(f"{out} holds a benchmark of other models (build {had}; these are build {key}: another "
                          "base or build recipe); give another --out, or delete it to start afresh")


def earlier_runs(out: Path, runs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The runs an earlier invocation left in the directory (finished: its bench.json and evaluation; or failed: its
    error file) that `runs` (this invocation's (method, run name) pairs) does not name, by name."""
    mine = {n for _, n in runs}
    found: dict[str, str] = {}
    for p in sorted((out / "runs").iterdir()) if (out / "runs").is_dir() else ():
        if p.is_dir() and (p / "bench.json").is_file() and (p / "eval" / "summary.json").is_file():
            found[p.name] = read_json(p / "manifest.json").get("method", p.name)
        elif p.is_file() and p.name.endswith(ERROR_SUFFIX) and (n := p.name.removesuffix(ERROR_SUFFIX)) not in found:
            found[n] = read_json(p).get("method", n)
    return [(method, n) for n, method in sorted(found.items()) if n not in mine]


def collect_rows(out: Path, runs: Sequence[str | tuple[str, str]], target: Path, evals: dict[str, dict],
                 earlier: Sequence[tuple[str, str]] = ()) -> list[dict[str, Any]]:
    """The leaderboard's rows: the target and retain models, then each run (a method's name, or (method, run name)
    for one of several seeds) that finished or failed, then the `earlier` invocations' runs (marked `earlier`)."""
    rows = [{"name": "target", "kind": "reference", **{k: evals["target"].get(k) for k in ROW_KEYS}},
            {"name": "retain", "kind": "reference", **{k: evals["retain"].get(k) for k in ROW_KEYS}}]
    base: dict[str, Any] | None = None  # the target's weights, read once for every row's params_changed
    for entry in [*runs, *earlier]:
        method, n = (entry, entry) if isinstance(entry, str) else entry
        old = {"earlier": True} if entry in earlier else {}
        run = out / "runs" / n
        err = run.with_name(n + ERROR_SUFFIX)
        if (run / "eval" / "summary.json").is_file():
            s = read_json(run / "eval" / "summary.json")
            man = read_json(run / "manifest.json")
            if base is None:
                from obliviate.utils.tensors import saved_weights

                base = saved_weights(target)
            rows.append({"name": n, "kind": "method", "method": method, **old, **{k: s.get(k) for k in ROW_KEYS},
                         "wall_time_s": man.get("wall_time_s"), "peak_memory_mb": round(man["peak_memory_bytes"] / 2**20, 1),
                         "params_changed": round(changed_fraction(base, run), 6), "config": man.get("config")})
        elif err.is_file():
            rows.append({"name": n, "kind": "method", "method": method, **old, "error": read_json(err)["error"]})
    return rows


SPREAD_KEYS = (*ROW_KEYS, "wall_time_s")


def across_seeds(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each method's spread over its seeds' rows (failed runs left out, and counted): per metric the mean, the
    sample standard deviation (0 for one run) and the range, over the runs that report it."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows if r.get("kind") == "method"):
        mine = [r for r in rows if r.get("method") == method]
        ok = [r for r in mine if not r.get("error")]
        entry: dict[str, Any] = {"method": method, "runs": len(ok), "failed": len(mine) - len(ok), "metrics": {}}
        for k in SPREAD_KEYS:
            vals = [float(r[k]) for r in ok if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
            if vals:
                mean = sum(vals) / len(vals)
                std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
                entry["metrics"][k] = {"mean": mean, "std": std, "min": min(vals), "max": max(vals), "n": len(vals)}
        out.append(entry)
    return out


def clean(out: str | os.PathLike[str]) -> None:
    shutil.rmtree(out, ignore_errors=True)
