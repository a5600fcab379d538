"""The `obliviate` command line: a thin layer over obliviate.api.

Exit codes: 0 done; 2 a user error (one line naming the problem and the fix; `--debug` shows the traceback);
3 nothing to forget (the model revealed nothing about the named targets: no model written, the attempt recorded);
4 a sweep found no trial that meets its constraints (best.json and report.html show the closest); 130 interrupted
(rerun the same command to resume); anything else is a bug worth reporting."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from obliviate.errors import ObliviateError
from obliviate.utils.progress import EVERY_S, clock, describe, resumed, step_label
from obliviate.utils.threads import apply_budget

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Machine unlearning for large language models: build, unlearn, evaluate, prove.")
err = Console(stderr=True)
con = Console()
_state = {"debug": False}

Overrides = Annotated[list[str] | None, typer.Argument(
    help="config overrides key=value of this command's config (unlearn: lr=1e-4 lora.r=8; build: train.epochs=5); "
         "an unknown key lists the known ones")]
# options that several commands share
DataDir = Annotated[str | None, typer.Option(help="TOFU data directory")]
Overwrite = Annotated[bool, typer.Option(help="replace an existing --out")]
EvalFlag = Annotated[bool, typer.Option("--eval", help="evaluate the result into OUT/eval")]
EvalReference = Annotated[str | None, typer.Option(help="retain model (or its saved eval) for --eval")]


@app.callback()
def main(debug: Annotated[bool, typer.Option("--debug", help="show tracebacks")] = False,
         verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False) -> None:
    _state["debug"] = debug
    from rich.logging import RichHandler

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s",
                        handlers=[RichHandler(console=err, show_path=False, show_time=False)], force=True)
    for noisy in ("transformers", "accelerate", "peft", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    apply_budget()  # OBLIVIATE_THREADS (checked here: a bad value is one line before any work)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


INTERRUPTED = "interrupted: rerun the same command to resume"


def run() -> None:
    """Console-script entry point: user errors -> one line, exit code 2; Ctrl-C -> one line, exit code 130.
    A rank of a multi-process run (torchrun / accelerate launch) leaves through `dist.leave` with the same code,
    its process group closed and the interpreter's teardown skipped (see there)."""
    from obliviate.utils import dist

    try:
        _run()
    except SystemExit as e:
        dist.leave(e.code)  # returns only in a process that holds no process group
        raise
    dist.leave(0)


def _run() -> None:
    """The command, its errors mapped to exit codes. Without standalone mode click RETURNS the exit code of an
    abort (130 on Ctrl-C) instead of exiting, so the return value is passed on (ignoring it made an interrupted run
    exit 0)."""
    try:
        rc = app(standalone_mode=False)
    except ObliviateError as e:
        if _state["debug"]:
            raise
        label = "[bold red]error:[/]" if e.exit_code == 2 else "[bold yellow]note:[/]"
        err.print(f"{label} {_message(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except OSError as e:  # the environment (disk full, a file vanished, permissions) rather than a bug
        if _state["debug"]:
            raise
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        err.print(f"[bold red]error:[/] {_message(f'{e.strerror or e}{where}')}; check the path, its permissions "
                  f"and free space (--debug shows where)", highlight=False, soft_wrap=True)
        sys.exit(2)
    except MemoryError:
        if _state["debug"]:
            raise
        err.print("[bold red]error:[/] out of memory; lower batch_size (or max_length / gen_batch_size)")
        sys.exit(2)
    except KeyboardInterrupt:
        err.print(INTERRUPTED)
        sys.exit(130)
    except Exception as e:
        exits, usage, aborts = _click_exceptions()
        if isinstance(e, exits):
            sys.exit(getattr(e, "exit_code", 0))
        if isinstance(e, usage):  # a missing or unknown option, a bad value: click's message on one line
            cmd = getattr(getattr(e, "ctx", None), "command_path", None) or "obliviate"
            if not e.format_message().strip():  # no arguments: the help was printed, nothing more to say
                sys.exit(getattr(e, "exit_code", 2) or 2)
            err.print(f"[bold red]error:[/] {_message(e.format_message())} (see {cmd} --help)", highlight=False,
                      soft_wrap=True)
            sys.exit(getattr(e, "exit_code", 2) or 2)
        if isinstance(e, aborts):
            err.print(INTERRUPTED)
            sys.exit(130)
        raise
    if isinstance(rc, int) and rc != 0:
        if rc == 130:
            err.print(INTERRUPTED)
        sys.exit(rc)


def _message(text: str) -> str:
    """Messages are one line; a multi-line one (from a library) is joined, so the contract holds for every error.
    Escaped: a message quoting `[...]` (a list value) must not be read as rich markup."""
    from rich.markup import escape

    return escape(" ".join(part.strip() for part in str(text).splitlines() if part.strip()))


def _click_exceptions() -> tuple[tuple[type, ...], tuple[type, ...], tuple[type, ...]]:
    """click's exception types, and typer's vendored copies of them (typer >= 0.29 raises its own and no longer
    depends on click, which is then present only if another package brought it)."""
    exits: list[type] = []
    usage: list[type] = []
    aborts: list[type] = []
    for module in ("click.exceptions", "typer._click.exceptions", "typer.exceptions"):
        try:
            exc = importlib.import_module(module)
        except ImportError:
            continue
        for bucket, name in ((exits, "Exit"), (usage, "ClickException"), (aborts, "Abort")):
            if hasattr(exc, name) and getattr(exc, name) not in bucket:
                bucket.append(getattr(exc, name))
    return tuple(exits), tuple(usage), tuple(aborts)


def _overrides(pairs: list[str] | None) -> dict:
    from obliviate.config import parse_overrides

    return parse_overrides(pairs or [])


LOG_EVERY_S = EVERY_S  # where stderr is not a terminal: one line per bar at most this often


class _LogLines:
    """Where stderr is not a terminal (a log file, a pipe), rich draws its bars once, when they stop: a long build
    or run would show nothing for an hour. There each bar's state is said as one plain line instead, at most every
    LOG_EVERY_S seconds per bar: its name, steps done of total, time elapsed and the estimate of what is left."""

    def __init__(self, bar: Progress) -> None:
        self.bar, self.on = bar, not bar.console.is_terminal
        self.last: dict[int, float] = {}

    def __call__(self, task_id: int, label: str) -> None:
        now = time.monotonic()
        if not self.on or now - self.last.setdefault(task_id, now) < LOG_EVERY_S:
            return
        self.last[task_id] = now
        t = next(t for t in self.bar.tasks if t.id == task_id)  # (ids stay, positions move when a task is removed)
        left = "?" if t.time_remaining is None else clock(t.time_remaining)
        self.bar.console.print(f"{label} {t.completed:.0f}/{t.total:.0f}  {clock(t.elapsed or 0.0)} elapsed, "
                               f"{left} left", highlight=False, soft_wrap=True)


@contextmanager
def build_progress():
    """Rich progress bars with the loss, one per model being trained."""
    with Progress(TextColumn("{task.description:>8}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("loss {task.fields[loss]:.3f}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err, transient=False) as bar:
        tasks: dict[str, int] = {}
        log = _LogLines(bar)

        def update(name: str, step: int, total: int, loss: float) -> None:
            if name not in tasks:
                tasks[name] = bar.add_task(name, total=total, loss=loss)
            bar.update(tasks[name], completed=step, loss=loss)
            log(tasks[name], f"{name} (loss {loss:.3f}):")

        with _bar_gone_on_error(bar):
            yield update


@contextmanager
def eval_progress():
    """One bar per model pass as it runs (scoring answers, generating), with its ETA; gone when the evaluation
    ends (the summary table follows)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as bar:
        tasks: dict[str, int] = {}
        log = _LogLines(bar)

        def update(desc: str, done: int, total: int) -> None:
            if desc not in tasks:
                tasks[desc] = bar.add_task(desc, total=total)
            bar.update(tasks[desc], completed=done, total=total)
            log(tasks[desc], f"{desc}:")

        yield update


@contextmanager
def _bar_gone_on_error(bar: Progress):
    """A run that fails (or is interrupted) ends with its one line only: the bar is not left on the screen."""
    try:
        yield
    except BaseException:
        bar.live.transient = True
        raise


@app.command()
def build(scenario: Annotated[str, typer.Argument(help="scenario name (obliviate ls scenarios)")],
          overrides: Overrides = None,
          out: Annotated[Path | None, typer.Option(help="directory for target/ and retain/ (default: the cache)")] = None,
          data: DataDir = None,
          base: Annotated[str, typer.Option(help="tiny (from scratch) | a base (obliviate ls bases) | hub id | "
                                                 "model directory | .gguf file")] = "tiny",
          overwrite: Overwrite = False) -> None:
    """Train the scenario's target and retain models (cached by config hash): from scratch, or by fine-tuning a
    pretrained base on the scenario's question/answer data."""
    from obliviate import api

    with build_progress() as progress:
        res = api.build(scenario, out, _overrides(overrides), overwrite, data, progress, base=base)
    note = "already built (cache hit)" if res.cached else f"built in {res.info.get('wall_time_s', '?')} s"
    con.print(f"{note}\ntarget: {res.target}\nretain: {res.retain}")


@app.command("eval")
def eval_cmd(model: Annotated[str, typer.Option(help="model directory or hub id")],
             out: Annotated[Path, typer.Option(help="output directory (eval.json, summary.json, report.md, and "
                                                   "OpenUnlearning's TOFU_EVAL.json, TOFU_SUMMARY.json)")],
             scenario: Annotated[str | None, typer.Option(help="scenario name (default: synthetic, unless --forget "
                                                               "is given)")] = None,
             forget: Annotated[Path | None, typer.Option(help="evaluate this forget set file (with --scenario: in "
                                                              "place of its forget split)")] = None,
             retain: Annotated[Path | None, typer.Option(help="with --forget: a retain set file")] = None,
             holdout: Annotated[Path | None, typer.Option(help="with --forget: a holdout (never trained) set file, "
                                                               "for membership inference")] = None,
             reference: Annotated[str | None, typer.Option(help="retain model, the directory of its saved eval, or "
                                                                "its TOFU_EVAL.json from OpenUnlearning (their "
                                                                "retain_logs_path files)")] = None,
             data: DataDir = None,
             overwrite: Overwrite = False,
             show_samples: Annotated[bool, typer.Option(help="store generated answers in eval.json (may be private)")] = False,
             compat: Annotated[str | None, typer.Option(help="openunlearning: reproduce OpenUnlearning's per-item "
                                                             "numbers (joint tokenisation, EOS left out of EM/ES/"
                                                             "Min-K, their ES loop), for published tables; none "
                                                             "(default): obliviate's definitions")] = None,
             tokenize: Annotated[str | None, typer.Option(help="separate | joint: how prompt and answer are "
                                                               "tokenised (default auto: as each model was trained, "
                                                               "from obliviate's record, else joint)")] = None,
             overrides: Overrides = None) -> None:
    """Evaluate a model: TOFU metrics, extraction and membership inference, on a scenario or on your own files."""
    from obliviate import api

    cfg = _overrides(overrides)
    if show_samples:
        cfg["save_generations"] = True
    for key, value in (("compat", compat), ("tokenize", tokenize)):  # checked with the rest of the config
        if value is not None:
            cfg[key] = value
    if scenario is None and forget is None:
        scenario = "synthetic"
    with eval_progress() as progress:
        res = api.evaluate(model, scenario, reference=reference, out=out, overwrite=overwrite, data=data,
                           config=cfg, scenario_options=cfg.pop("scenario_options", None), forget=forget,
                           retain=retain, holdout=holdout, progress=progress)
    mode = f" (compat {res.meta['compat']})" if res.meta.get("compat", "none") != "none" else ""
    print_summary(res.summary, f"{scenario or forget}: {model}{mode}", res.meta.get("absent"))
    con.print(f"written: {out} (OpenUnlearning's names: TOFU_SUMMARY.json)" if mode else f"written: {out}")


def print_summary(summary: dict, title: str, absent: dict | None = None) -> None:
    """The CLI's metrics, then one line per absent one saying why (no reference, no holdout set, ...)."""
    from rich.markup import escape

    from obliviate.eval.report import fmt_value
    from obliviate.eval.specs import summary_keys

    t = Table(title=title, show_header=True)
    t.add_column("metric")
    t.add_column("value", justify="right")
    keys = [k for k in summary_keys("cli") if k in summary]
    for k in keys:
        t.add_row(k, fmt_value(summary[k]))
    con.print(t)
    for k in keys:
        if summary[k] is None and k in (absent or {}):
            con.print(f"{k} absent: {escape(absent[k])}", highlight=False)


@contextmanager
def train_progress():
    """One progress bar over a method's steps (optimiser steps, or a procedure's stage units), showing where it is
    (round, epoch or stage) and every loss term; yields (training update, evaluation pass update): the evaluation
    of `--eval` (before and after) shows each model pass as a bar of its own, gone when the pass ends."""
    with Progress(TextColumn("{task.fields[where]}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[terms]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=err) as bar:
        task = None
        log = _LogLines(bar)

        def update(ev) -> None:  # ev: obliviate.methods.ProgressEvent
            nonlocal task
            if ev.kind == "resume":  # said without -v: a resumed run must not pass for a fresh one
                bar.console.print(resumed(ev))
                return
            said = describe(ev)
            if said is None:
                return  # epoch and round summaries: the bar already shows their steps
            where, terms = said
            if task is None:
                task = bar.add_task("unlearn", total=ev.total, where="", terms="")
            bar.update(task, total=ev.total, completed=ev.step, where=where, terms=terms)
            log(task, step_label(where, terms))

        passes: dict[str, int] = {}

        def update_pass(desc: str, done: int, total: int) -> None:
            if desc not in passes:
                passes[desc] = bar.add_task(desc, total=total, where=desc, terms="")
            bar.update(passes[desc], completed=done, total=total)
            log(passes[desc], f"{desc}:")
            if done >= total:
                bar.remove_task(passes.pop(desc))

        with _bar_gone_on_error(bar):
            yield update, update_pass


@app.command()
def unlearn(model: Annotated[str, typer.Option(help="model directory or hub id (never modified)")],
            method: Annotated[str, typer.Option(help="method name (obliviate ls methods)")],
            out: Annotated[Path, typer.Option(help="output directory (model + manifest.json)")],
            scenario: Annotated[str | None, typer.Option(help="take forget/retain data from this scenario")] = None,
            forget: Annotated[Path | None, typer.Option(help="forget set file (JSON lines / JSON array)")] = None,
            retain: Annotated[Path | None, typer.Option(help="retain set file (with --scenario: trained on in place of "
                                                                "its retain set; the evaluation stays the scenario's)")] = None,
            eval_: EvalFlag = False,
            reference: EvalReference = None,
            data: DataDir = None,
            overwrite: Overwrite = False,
            show_samples: Annotated[bool, typer.Option(help="with --eval, store generated answers (may be private)")] = False,
            allow_overlap: Annotated[bool, typer.Option(
                "--allow-overlap", help="accept forget records that are also in the retain set (same id, or same "
                                        "question and answer); they are then pulled both ways")] = False,
            fsdp: Annotated[bool, typer.Option(
                "--fsdp", help="under torchrun / accelerate launch, shard the model, its reference and the "
                               "optimiser state across the processes (accelerate's FSDP2); the equivalent accelerate "
                               "config is written to OUT/accelerate_fsdp.yaml")] = False,
            overrides: Overrides = None) -> None:
    """Unlearn a forget set from a model with one method; `key=value` pairs set the method's config. With --eval,
    the result is evaluated on the forget data that was unlearned (a --forget file itself)."""
    from obliviate import api

    cfg = _overrides(overrides)
    scen_opts = cfg.pop("scenario_options", None)
    eval_cfg = _eval_overrides(cfg, show_samples)
    with train_progress() as (progress, passes):
        res = api.unlearn(model, method, out=out, scenario=scenario, forget=forget, retain=retain, config=cfg,
                          overwrite=overwrite, evaluate=eval_, reference=reference, data=data,
                          scenario_options=scen_opts, progress=progress, allow_overlap=allow_overlap,
                          eval_config=eval_cfg, fsdp=fsdp, eval_progress=passes)
    if res.summary:
        print_summary(res.summary, f"{method}: {out}", res.absent)
    con.print(f"unlearned in {res.manifest['wall_time_s']} s\noutput: {res.out}")


def _eval_overrides(cfg: dict, show_samples: bool) -> dict | None:
    """`eval.key=value` overrides (e.g. eval.max_new_tokens=64) set the --eval evaluation's config."""
    from obliviate.errors import ConfigError

    ev = cfg.pop("eval", None) or {}
    if not isinstance(ev, dict):
        raise ConfigError(f"eval={ev!r}: set evaluation settings as eval.key=value (e.g. eval.max_new_tokens=64)")
    if show_samples:
        ev["save_generations"] = True
    return ev or None


@app.command()
def attack(model: Annotated[str, typer.Option(help="the (unlearned) model to attack")],
           attack_: Annotated[str, typer.Option("--attack", help="relearn | paraphrase | quantize | prefix")],
           scenario: Annotated[str, typer.Option(help="scenario whose forget set is attacked")] = "synthetic",
           target: Annotated[str | None, typer.Option(help="the original model, attacked too for comparison "
                                                          "(default: the input model named in MODEL's manifest)")] = None,
           control: Annotated[str | None, typer.Option(help="a model that never learned the forget set (the retain "
                                                           "model), attacked too: what the attack teaches from "
                                                           "nothing")] = None,
           out: Annotated[Path | None, typer.Option(help="write attack.json here")] = None,
           data: DataDir = None,
           overwrite: Overwrite = False,
           overrides: Overrides = None) -> None:
    """Try to bring the forgotten knowledge back; report forget ROUGE-L (and the answers' probability) before and
    after, and the recovery ratio."""
    from obliviate import api
    from obliviate.eval.report import fmt_value

    cfg = _overrides(overrides)
    scen_opts = cfg.pop("scenario_options", {})
    if target is None:
        target = api.input_model_of(model)
    scen = api.load_scenario(scenario, data, **scen_opts)
    with eval_progress() as progress:
        res = api.attack(model, scen, attack_, target=target, control=control, out=out, overwrite=overwrite,
                         config=cfg, progress=progress)
    t = Table(title=f"attack {attack_}: forget ROUGE-L recall (answer probability)")
    for c in ("model", "before", "after", "recovery", "prob before", "prob after"):
        t.add_column(c, justify="right" if c != "model" else "left")
    for label in ("unlearned", "target", "control"):
        if label in res:
            r = res[label]
            probs = [fmt_value(r[k]["prob"]) if "prob" in r[k] else "–" for k in ("before", "after")]
            t.add_row(label, fmt_value(r["before"]["rougeL"]), fmt_value(r["after"]["rougeL"]), fmt_value(r["recovery"]),
                      *probs)
    con.print(t)
    if out is not None:
        con.print(f"written: {out / 'attack.json'}")


@app.command()
def forget(model: Annotated[str, typer.Option(help="model directory or hub id (never modified)")],
           target: Annotated[list[str], typer.Option("--target", help="a name to forget (repeat for several)")],
           out: Annotated[Path, typer.Option(help="output directory (model, manifest.json, per-round log)")],
           method: Annotated[str, typer.Option(help="a self-generated-data method")] = "reveal_release",
           keep_revealed: Annotated[bool, typer.Option(
               "--keep-revealed", help="also save what the model revealed (it may be the private data being deleted)")] = False,
           retain: Annotated[Path | None, typer.Option(
               help="optional retain set to protect: a QA file, or general / facts (the model's own answers to "
                    "obliviate's 79 / 281 general-knowledge questions, none naming a target)")] = None,
           scenario: Annotated[str | None, typer.Option(help="scenario to evaluate on (with --eval)")] = None,
           eval_: EvalFlag = False,
           reference: EvalReference = None,
           data: DataDir = None,
           overwrite: Overwrite = False,
           overrides: Overrides = None) -> None:
    """Forget what a model knows about the named targets, without any forget data (Reveal-and-Release)."""
    from obliviate import api

    cfg = _overrides(overrides)
    scen_opts = cfg.pop("scenario_options", None)

    def progress(ev) -> None:  # ev: obliviate.methods.ProgressEvent
        if ev.kind == "round":  # one line per round; the per-step training events are not shown
            probe = ev.probe_nll
            err.print(f"round {ev.round}: reward {ev.reward:.3f}, revealed {ev.n_revealed}, "
                      f"released {bool(ev.released)}" + (f", probe NLL {probe:.3f}" if probe is not None else ""))

    eval_cfg = _eval_overrides(cfg, False)
    with eval_progress() as passes:  # the --eval evaluation's model passes
        res = api.forget(model, target, out=out, method=method, config=cfg, keep_revealed=keep_revealed,
                         retain=retain, scenario=scenario, evaluate=eval_, reference=reference, data=data,
                         scenario_options=scen_opts, overwrite=overwrite, progress=progress, eval_config=eval_cfg,
                         eval_progress=passes)
    if res.summary:
        print_summary(res.summary, f"forget {len(target)} target(s): {out}", res.absent)
    con.print(f"forgot {len(target)} target(s) in {res.manifest['wall_time_s']} s\noutput: {res.out}")


@app.command("ledger")
def ledger_cmd(model: Annotated[Path, typer.Argument(help="a model directory written by obliviate")],
               as_json: Annotated[bool, typer.Option("--json", help="print the raw records")] = False) -> None:
    """Print a model's deletion history (ledger.jsonl): requests, methods, hashes, metrics before/after."""
    import json

    from obliviate import api
    from obliviate.errors import DataError
    from obliviate.eval.report import fmt_value

    if not model.is_dir():
        raise DataError(f"{model}: no such directory; give a model directory written by obliviate unlearn/forget")
    records = api.ledger(model)
    if not records:
        con.print(f"{model}: no deletion ledger (the model was not produced by obliviate unlearn/forget)")
        return
    if as_json:
        for r in records:
            con.print_json(json.dumps(r))
        return
    t = Table(title=f"deletion ledger: {model}")
    for c in ("#", "time", "request", "method", "items", "targets", "FQ before→after", "forget ROUGE before→after"):
        t.add_column(c)
    def metrics(v) -> dict:
        return v if isinstance(v, dict) else {}

    def count(v) -> str:
        return str(len(v)) if isinstance(v, list) else "?"

    for i, r in enumerate(records, 1):
        b, a = metrics(r.get("metrics_before")), metrics(r.get("metrics_after"))
        method = str(r["method"]) + (" (nothing changed)" if r.get("outcome") == "nothing_changed" else "")
        t.add_row(str(i), str(r["time"]), str(r["request_id"])[:8], method, count(r["forget_item_hashes"]),
                  count(r["target_hashes"]), f"{fmt_value(b.get('forget_quality'))}→{fmt_value(a.get('forget_quality'))}",
                  f"{fmt_value(b.get('forget_rougeL_recall'))}→{fmt_value(a.get('forget_rougeL_recall'))}")
    con.print(t)


cache_app = typer.Typer(no_args_is_help=True, help="The on-disk cache ($OBLIVIATE_CACHE, default ~/.cache/obliviate).")
app.add_typer(cache_app, name="cache")


@cache_app.command("purge")
def cache_purge(model: Annotated[str | None, typer.Option(
        help="only what was computed from this model (found by its weight fingerprint); default: everything")] = None
                ) -> None:
    """Delete cached data: model passes, edit statistics, offline builds and converted bases, or one model's."""
    from obliviate import api
    from obliviate.utils.io import cache_root

    removed = api.purge_cache(model)
    if not removed:
        con.print(f"nothing cached{' for ' + model if model else ''} under {cache_root()}")
        return
    for r in removed:
        con.print(f"removed {r.path} ({r.bytes / 2**20:.1f} MiB)", highlight=False)


@app.command("ls")
def ls(what: Annotated[str, typer.Argument(help="scenarios | metrics | methods | bases")]) -> None:
    """List registered components with one line each (bases: also whether each is installed)."""
    from obliviate.registry import Registry

    kinds: Registry[str] = Registry("list")
    for plural, kind in (("scenarios", "scenario"), ("metrics", "metric"), ("methods", "method"), ("bases", "base")):
        kinds.add(plural, kind)
    kind = kinds.get(what)
    reg = _registry(kind)
    t = Table(show_header=False, box=None)
    for name, obj in reg.items():
        t.add_row(name, _one_line(obj), *([obj.status()] if kind == "base" else []))
    con.print(t)


def _registry(kind: str):
    if kind == "scenario":
        from obliviate.data.scenarios import SCENARIOS

        return SCENARIOS
    if kind == "metric":
        from obliviate.eval.specs import metric_specs

        return metric_specs(None)
    if kind == "base":
        from obliviate.models.bases import BASES

        return BASES
    from obliviate.methods import METHODS

    return METHODS


def _one_line(obj) -> str:
    doc = getattr(obj, "doc", None) or getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


@app.command()
def bench(scenario: Annotated[str, typer.Option(help="synthetic | tofu-mini | tofu")] = "synthetic",
          methods: Annotated[str | None, typer.Option(help="comma-separated method names (default: all)")] = None,
          out: Annotated[Path, typer.Option(help="output directory (report.html, leaderboard.md/json, runs/)")] = Path("runs/bench"),
          jobs: Annotated[int, typer.Option(help="methods run side by side (0 = auto: up to 2, one thread each)")] = 0,
          data: DataDir = None,
          attacks: Annotated[str | None, typer.Option(help="recovery attacks to add as columns (relearn,paraphrase,quantize,prefix)")] = None,
          paper_defaults: Annotated[bool, typer.Option(help="use the papers' hyperparameters, not the tiny-model presets")] = False,
          presets: Annotated[Path | None, typer.Option(help="a preset file (method -> config overrides, as `obliviate "
                                                            "sweep --export-preset` writes it) over the built-in presets")] = None,
          base: Annotated[str, typer.Option(help="tiny (from scratch) | a base the scenario's models are fine-tuned "
                                                 "from (obliviate ls bases), e.g. smollm2-135m")] = "tiny",
          retain: Annotated[str | None, typer.Option(help="the retain set every method trains on (default: the "
                                                         "scenario's): general = it plus the base's own answers to "
                                                         "general-knowledge questions (pretrained bases), or a QA "
                                                         "file; the evaluation stays the scenario's")] = None,
          seeds: Annotated[int, typer.Option(help="training seeds per method (its config's seed, + 1, ...): every "
                                                  "run's row, and each method's mean, spread and range across them")] = 1,
          overrides: Overrides = None) -> None:
    """Run every method on a scenario, evaluate each, and write a leaderboard and report.html."""
    from obliviate import api

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    per_method: dict = {}
    for k, v in _overrides(overrides).items():  # method.key=value, or build.key=value for the models' recipe
        if not isinstance(v, dict):
            from obliviate.errors import ConfigError

            raise ConfigError(f"bench override {k}={v!r} must name a method (METHOD.key=value, e.g. npo.lr=1e-4) or "
                              "the build recipe (build.key=value, e.g. build.train.epochs=3)")
        per_method[k] = v
    recipe = per_method.pop("build", None)
    board = api.bench(scenario, names, out, jobs, data, paper_defaults, per_method,
                      progress=lambda msg: err.print(f"[dim]{msg}[/]"),
                      attacks=[a.strip() for a in attacks.split(",")] if attacks else (), presets=presets, base=base,
                      build=recipe, retain=retain, seeds=seeds)
    _print_board(board)
    con.print(f"report: {(out / 'report.html').resolve()}")


def _print_board(board: dict) -> None:
    from obliviate.bench.report import EARLIER_NOTE, row_label
    from obliviate.eval.report import fmt_value

    retain = f", retain {board['retain']}" if board.get("retain") else ""
    t = Table(title=f"obliviate bench: {board['scenario']} on {board.get('base', 'tiny')}{retain}")
    cols = ("forget_quality", "model_utility", "forget_rougeL_recall", "privleak", "wall_time_s")
    t.add_column("method")
    for c in cols:
        t.add_column(c, justify="right")
    for r in board["rows"]:
        t.add_row(row_label(r), *(fmt_value(r.get(c)) for c in cols) if not r.get("error") else ["failed"] + [""] * 4)
    con.print(t)
    if any(r.get("earlier") for r in board["rows"]):
        con.print(EARLIER_NOTE, markup=False)
    if board.get("across_seeds"):
        from obliviate.bench.report import runs_text, spread_text

        t = Table(title=f"across {board['seeds']} training seeds: mean ± std [lowest, highest]")
        t.add_column("method")
        t.add_column("runs", justify="right")
        for c in cols:
            t.add_column(c, justify="right")
        for e in board["across_seeds"]:
            t.add_row(e["method"], runs_text(e),
                      *(spread_text(e["metrics"].get(c)) for c in cols))
        con.print(t)


@app.command()
def demo(out: Annotated[Path, typer.Option(help="where the demo writes its results")] = Path("runs/demo")) -> None:
    """The main job: `obliviate bench` on the embedded scenario with every method; prints the report's path."""
    bench(scenario="synthetic", methods=None, out=out, jobs=0, data=None, attacks=None, paper_defaults=False,
          presets=None, base="tiny", seeds=1, overrides=None)


@app.command()
def sweep(method: Annotated[str, typer.Option(help="method name (obliviate ls methods)")],
          out: Annotated[Path, typer.Option(help="output directory (best.json, trials.jsonl, report.html, trials/, "
                                                 "study.db)")],
          scenario: Annotated[str | None, typer.Option(help="scenario: its target and retain models are built (or "
                                                            "reused) and its forget/retain sets unlearned")] = None,
          base: Annotated[str, typer.Option(help="tiny (from scratch) | a base the scenario's models are fine-tuned "
                                                 "from (obliviate ls bases)")] = "tiny",
          model: Annotated[str | None, typer.Option(help="sweep on this target model instead of building one (with "
                                                         "--reference)")] = None,
          reference: EvalReference = None,
          forget: Annotated[Path | None, typer.Option(help="with --model: the forget set file")] = None,
          retain: Annotated[str | None, typer.Option(help="the retain set file (with --scenario: trained on in place of "
                                                         "its retain set), or general (the scenario's plus the --base's "
                                                         "own answers to general-knowledge questions)")] = None,
          trials: Annotated[int, typer.Option(help="trials of the study in all (every worker's); a rerun continues "
                                                   "up to it")] = 20,
          space: Annotated[str, typer.Option(help="'default' (the method's declared space) or a YAML space file "
                                                  "(KEY: {log|uniform|int: [LOW, HIGH]} or {choice: [...]})")] = "default",
          objective: Annotated[str, typer.Option(help="max|min METRIC [s.t. METRIC >=|<= NUMBER|NUMBER*target|"
                                                      "NUMBER*retain [and ...]]")] =
          "max forget_quality s.t. model_utility >= 0.95*target",
          storage: Annotated[str | None, typer.Option(help="Optuna RDB storage shared by workers: sqlite:///FILE.db "
                                                           "(one machine), postgresql://... or mysql://... (many); "
                                                           "default OUT/study.db")] = None,
          study: Annotated[str | None, typer.Option(help="study name in the storage (default METHOD-SCENARIO)")] = None,
          seed: Annotated[int, typer.Option(help="the sampler's seed (recorded)")] = 0,
          sampler: Annotated[str, typer.Option(help="tpe | random | grid (every combination of the space "
                                                    "file's choices once)")] = "tpe",
          prune: Annotated[bool, typer.Option(help="after their first epochs, stop trials doing worse than "
                                                   "the median of the finished trials that met the "
                                                   "constraints")] = True,
          export_preset: Annotated[Path | None, typer.Option(help="add the best config to this preset file (YAML) "
                                                                 "for bench --presets")] = None,
          data: DataDir = None,
          overrides: Overrides = None) -> None:
    """Search a method's hyperparameters for the best objective under constraints (Optuna); each trial is an
    unlearn run with --eval. key=value pairs fix config keys in every trial (scenario_options.*, eval.* too)."""
    from obliviate import api

    cfg = _overrides(overrides)
    scen_opts = cfg.pop("scenario_options", None)
    eval_cfg = _eval_overrides(cfg, False)
    res = api.sweep(method, out=out, scenario=scenario, base=base, model=model, reference=reference, forget=forget,
                    retain=retain, trials=trials, space=space, objective=objective, storage=storage, study=study,
                    seed=seed, sampler=sampler, prune=prune, config=cfg, scenario_options=scen_opts, data=data,
                    eval_config=eval_cfg, export_preset=export_preset,
                    progress=lambda msg: err.print(f"[dim]{_message(msg)}[/]", highlight=False, soft_wrap=True))
    _print_best(res)


def _print_best(res) -> None:
    from obliviate.eval.report import fmt_value

    best = res.best
    t = Table(title=f"sweep {res.study}: best of {sum(res.counts.values())} trials (trial {best['number']})")
    t.add_column("")
    t.add_column("value", justify="right")
    for k, v in best["params"].items():
        t.add_row(k, fmt_value(v))
    for k, v in (best.get("summary") or {}).items():
        t.add_row(k, fmt_value(v))
    con.print(t)
    con.print(f"trials: {', '.join(f'{n} {s}' for s, n in sorted(res.counts.items()))}; this run ran {res.ran}\n"
              f"best: {res.out / 'best.json'}\nreport: {(res.out / 'report.html').resolve()}", soft_wrap=True)
