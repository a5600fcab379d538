"""Progress where stderr is not a terminal: rich would draw the bars only when they stop, so a long build in a log
file shows nothing; the CLI says each bar's state as a plain line instead, at most every LOG_EVERY_S seconds."""

from __future__ import annotations

import io
from types import SimpleNamespace

from rich.console import Console

from obliviate import cli


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=terminal, width=200), buf


def test_a_log_gets_a_line_per_bar_at_most_every_interval(monkeypatch):
    log, buf = _console(terminal=False)
    now = [0.0]
    monkeypatch.setattr(cli, "err", log)
    monkeypatch.setattr(cli, "time", SimpleNamespace(monotonic=lambda: now[0]))
    with cli.build_progress() as update:
        update("target", 1, 4, 2.5)  # t=0: starts the bar's clock, says nothing
        now[0] = 59.0
        update("target", 2, 4, 1.5)  # within a minute of the start: nothing
        update("retain", 1, 3, 3.0)  # another bar: its own clock
        now[0] = 61.0
        update("target", 3, 4, 1.25)  # a minute on: one line
        update("target", 4, 4, 1.0)  # just said: nothing
        now[0] = 120.0
        update("retain", 2, 3, 2.0)
    lines = [ln for ln in buf.getvalue().splitlines() if " elapsed, " in ln]
    assert [ln.split("  ")[0] for ln in lines] == ["target (loss 1.250): 3/4", "retain (loss 2.000): 2/3"]
    assert all(ln.endswith(" left") for ln in lines)


def test_a_terminal_gets_only_the_bars(monkeypatch):
    term, buf = _console(terminal=True)
    monkeypatch.setattr(cli, "err", term)
    monkeypatch.setattr(cli, "LOG_EVERY_S", -1.0)  # would say every update, were it a log
    with cli.eval_progress() as update:
        for done in range(1, 4):
            update("forget: scoring answers", done, 3)
    assert " elapsed, " not in buf.getvalue()


def test_unlearn_eval_passes_share_the_training_bar_and_leave_when_done(monkeypatch):
    """`unlearn --eval`: each evaluation pass is a bar beside the training's, removed when it ends; in a log its
    line is said like any bar's, also after another pass's bar was removed (bars are found by id, not position)."""
    from obliviate.methods.base import ProgressEvent

    log, buf = _console(terminal=False)
    now = [0.0]
    monkeypatch.setattr(cli, "err", log)
    monkeypatch.setattr(cli, "time", SimpleNamespace(monotonic=lambda: now[0]))
    with cli.train_progress() as (train, passes):
        train(ProgressEvent("step", step=1, total=4, epoch=1, epochs=1, terms={"ga": 1.0}))
        passes("model: scoring answers (3)", 1, 3)
        passes("model: scoring answers (3)", 3, 3)  # done: its bar goes
        passes("model: generating (2)", 1, 2)
        now[0] = 61.0
        passes("model: generating (2)", 1, 2)
        train(ProgressEvent("step", step=2, total=4, epoch=1, epochs=1, terms={"ga": 0.5}))
    lines = [ln.split("  ")[0] for ln in buf.getvalue().splitlines() if " elapsed, " in ln]
    assert lines == ["model: generating (2): 1/2", "unlearn, epoch 1/1 (ga 0.5): 2/4"]
