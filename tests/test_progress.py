"""Progress as plain lines (utils/progress.py): what bench's worker processes say, a line per task per interval."""

from __future__ import annotations

from obliviate.methods.base import ProgressEvent
from obliviate.utils.progress import LineProgress, clock, describe


def _line_progress(every: float = 60.0):
    now, lines = [0.0], []
    return LineProgress("npo", every=every, write=lines.append, now=lambda: now[0]), now, lines


def test_clock_and_what_a_step_is_called():
    assert clock(0) == "0:00:00" and clock(3725.9) == "1:02:05"
    step = ProgressEvent("step", step=3, total=10, epoch=1, epochs=5, terms={"npo": 0.6123, "retain_kl": 0.02})
    assert describe(step) == ("epoch 1/5", "npo 0.612  retain_kl 0.02")
    assert describe(ProgressEvent("stage", step=1, total=4, stage="edit", round=2, rounds=3)) == ("round 2/3 stage edit", "")
    assert describe(ProgressEvent("epoch", epoch=1, epochs=5)) is None


def test_a_line_per_task_per_interval_with_its_own_estimate():
    """The first report starts a task's clock and says nothing; a line at most every interval after it; what is
    left is the task's own rate since its first report: 3 steps in 60 s, 6 to go = 120 s."""
    p, now, lines = _line_progress()
    p.train(ProgressEvent("step", step=1, total=10, epoch=1, epochs=2, terms={"npo": 0.5}))
    now[0] = 59.0
    p.train(ProgressEvent("step", step=3, total=10, epoch=1, epochs=2, terms={"npo": 0.5}))
    p.passes("model: scoring answers (280)", 32, 280)  # another task, its own clock
    assert lines == []
    now[0] = 60.0
    p.train(ProgressEvent("step", step=4, total=10, epoch=1, epochs=2, terms={"npo": 0.4}))
    p.train(ProgressEvent("step", step=5, total=10, epoch=1, epochs=2, terms={"npo": 0.4}))  # just said: nothing
    assert lines == ["npo: unlearn, epoch 1/2 (npo 0.4): 4/10  0:01:00 elapsed, 0:02:00 left"]
    now[0] = 119.0
    p.passes("model: scoring answers (280)", 96, 280)
    assert lines[-1] == "npo: eval, model: scoring answers (280): 96/280  0:01:00 elapsed, 0:02:52 left"


def test_a_pass_that_runs_again_starts_its_clock_again_and_a_resume_is_said_at_once():
    p, now, lines = _line_progress(every=10.0)
    p.passes("model: generating (40)", 20, 40)
    now[0] = 100.0
    p.passes("model: generating (40)", 40, 40)  # done: said, and forgotten
    now[0] = 200.0
    p.passes("model: generating (40)", 10, 40)  # the evaluation after unlearning: a new clock, nothing yet
    assert lines == ["npo: eval, model: generating (40): 40/40  0:01:40 elapsed, 0:00:00 left"]
    p.train(ProgressEvent("resume", epoch=2, epochs=5))
    assert lines[-1] == "npo: resuming after epoch 2 of 5"
