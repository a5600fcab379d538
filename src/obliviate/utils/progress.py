"""Progress said as plain lines, for processes that cannot draw bars (bench's workers, several at a time on one
screen or in one log), and the wording the CLI's bars share with them."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

EVERY_S = 60.0  # one line per task at most this often


def clock(seconds: float) -> str:
    """h:mm:ss."""
    m, s = divmod(int(seconds), 60)
    return f"{m // 60}:{m % 60:02d}:{s:02d}"


def describe(ev: Any) -> tuple[str, str] | None:
    """(where, loss terms) of a training or procedure step (a methods.ProgressEvent), e.g. ("round 2/4 epoch 1/3",
    "npo 0.61  retain_kl 0.02"); None for events a bar does not show (epoch and round summaries, resume)."""
    if ev.kind not in ("step", "stage") or ev.step is None or ev.total is None:
        return None
    where = f"stage {ev.stage}" if ev.kind == "stage" else f"epoch {ev.epoch}/{ev.epochs}"
    if ev.round is not None:
        where = f"round {ev.round}/{ev.rounds} {where}"
    return where, "  ".join(f"{k} {v:.3g}" for k, v in ev.terms.items())


def step_label(where: str, terms: str) -> str:
    """What a training line calls its step: `unlearn, epoch 2/5 (npo 0.61  retain_kl 0.02):`."""
    return f"unlearn, {where} ({terms}):" if terms else f"unlearn, {where}:"


def resumed(ev: Any) -> str:
    """The notice of a resumed run (a ProgressEvent of kind "resume"): it must not pass for a fresh one."""
    return f"resuming after epoch {ev.epoch} of {ev.epochs}"


class LineProgress:
    """One job's progress as plain lines: `train` takes a method's ProgressEvents, `passes` an evaluation's
    (description, done, total). Each task (the training; each model pass) says `JOB: what done/total  h:mm:ss
    elapsed, h:mm:ss left` at most every `every` seconds, the estimate from its own rate since its first report;
    a resumed run says so at once."""

    def __init__(self, job: str, every: float | None = None, write: Callable[[str], Any] | None = None,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.job, self.every, self.now = job, EVERY_S if every is None else every, now
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))
        self.first: dict[str, tuple[float, int]] = {}  # task -> (time, done) of its first report
        self.said: dict[str, float] = {}

    def _report(self, task: str, label: str, done: int, total: int) -> None:
        t = self.now()
        t0, d0 = self.first.setdefault(task, (t, done))
        if t - self.said.get(task, t0) < self.every:
            return
        self.said[task] = t
        left = "?" if done <= d0 else clock((total - done) * (t - t0) / (done - d0))
        self.write(f"{self.job}: {label} {done}/{total}  {clock(t - t0)} elapsed, {left} left")

    def train(self, ev: Any) -> None:
        if ev.kind == "resume":
            self.write(f"{self.job}: {resumed(ev)}")
            return
        said = describe(ev)
        if said is not None:
            self._report("train", step_label(*said), ev.step, ev.total)

    def passes(self, desc: str, done: int, total: int) -> None:
        self._report(f"pass {desc}", f"eval, {desc}:", done, total)
        if done >= total:  # the same description may run again (the evaluation before and after unlearning)
            self.first.pop(f"pass {desc}", None)
            self.said.pop(f"pass {desc}", None)
