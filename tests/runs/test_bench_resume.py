"""A benchmark directory is the benchmark: an invocation that names some methods still lists every run an earlier
invocation left there (finished or failed), marked as earlier, in leaderboard.json/.md, report.html and the
command's table."""

from __future__ import annotations

from obliviate.bench.report import EARLIER_NOTE
from obliviate.runs import bench as B
from obliviate.utils.io import read_json


def _names(board):
    return [(r["name"], bool(r.get("earlier")), bool(r.get("error"))) for r in board["rows"]]


def test_a_later_invocation_lists_the_earlier_runs_after_its_own(fake_bench, tmp_path):
    out = tmp_path / "b"
    fake_bench.fail.add("rmu")
    B.bench("tofu-mini", ["npo", "rmu", "ga"], out, jobs=1, progress=lambda m: None)
    fake_bench.clear()
    said = []
    board = B.bench("tofu-mini", ["simnpo"], out, jobs=1, progress=said.append)
    assert fake_bench == [("simnpo", "simnpo", None)]  # the earlier runs are listed, not rerun
    assert _names(board) == [("target", False, False), ("retain", False, False), ("simnpo", False, False),
                             ("ga", True, False), ("npo", True, False), ("rmu", True, True)]
    ga = next(r for r in board["rows"] if r["name"] == "ga")
    assert ga["method"] == "ga" and ga["config"] == B.method_config("ga", "tofu-mini", False, {}, None)
    assert ga["forget_quality"] == 0.1 and ga["wall_time_s"] == 10.0
    assert "rmu broke" in next(r for r in board["rows"] if r["name"] == "rmu")["error"]
    assert any("3 run(s) of earlier invocations" in m and "ga, npo, rmu" in m for m in said)
    assert read_json(out / "leaderboard.json")["rows"] == board["rows"]
    md = (out / "leaderboard.md").read_text()
    assert "| simnpo | " in md and "| ga † | " in md and "| rmu † | failed: RuntimeError: rmu broke" in md
    assert EARLIER_NOTE in md
    html = (out / "report.html").read_text()
    assert "<td>ga †</td>" in html and "<td>simnpo</td>" in html and "from an earlier" in html


def test_naming_an_earlier_run_again_makes_it_this_invocations(fake_bench, tmp_path):
    out = tmp_path / "b"
    B.bench("tofu-mini", ["npo", "ga"], out, jobs=1, progress=lambda m: None)
    fake_bench.clear()
    board = B.bench("tofu-mini", ["ga"], out, jobs=1, progress=lambda m: None)
    assert fake_bench == []  # finished with the same config: skipped
    assert _names(board)[2:] == [("ga", False, False), ("npo", True, False)]
    # a failed run that a later invocation reruns successfully is no longer listed as failed
    fake_bench.fail.add("rmu")
    B.bench("tofu-mini", ["rmu"], out, jobs=1, progress=lambda m: None)
    fake_bench.fail.clear()
    board = B.bench("tofu-mini", ["rmu"], out, jobs=1, progress=lambda m: None)
    assert _names(board)[2:] == [("rmu", False, False), ("ga", True, False), ("npo", True, False)]


def test_one_invocation_alone_marks_nothing(fake_bench, tmp_path):
    board = B.bench("tofu-mini", ["ga", "npo"], tmp_path / "b", jobs=1, progress=lambda m: None)
    assert not any(r.get("earlier") for r in board["rows"])
    assert EARLIER_NOTE not in (tmp_path / "b" / "leaderboard.md").read_text()
    assert "from an earlier" not in (tmp_path / "b" / "report.html").read_text()


def test_the_command_line_marks_the_earlier_runs(fake_bench, tmp_path, cli):
    out = str(tmp_path / "b")
    assert cli("bench", "--scenario", "tofu-mini", "--methods", "ga", "--jobs", "1", "--out", out)[0] == 0
    code, text, _ = cli("bench", "--scenario", "tofu-mini", "--methods", "npo", "--jobs", "1", "--out", out)
    assert code == 0
    assert "ga †" in text and "from an earlier `obliviate bench` invocation" in " ".join(text.split())
