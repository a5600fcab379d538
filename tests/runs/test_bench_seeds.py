"""bench --seeds: every method trains under several seeds, each run keeps its own row, and the leaderboard adds each
method's spread across them (mean, sample standard deviation, range), numbers checked by hand."""

from __future__ import annotations

import math

import pytest

from obliviate.runs import bench as B
from obliviate.utils.io import read_json


def test_run_names_keep_the_first_run_and_count_on_from_the_config_seed():
    assert B.run_names("npo", {"lr": 1e-4}, 1) == [("npo", {"lr": 1e-4})]
    assert B.run_names("npo", {"lr": 1e-4, "seed": 5}, 3) == [
        ("npo", {"lr": 1e-4, "seed": 5}), ("npo.seed6", {"lr": 1e-4, "seed": 6}), ("npo.seed7", {"lr": 1e-4, "seed": 7})]


def test_across_seeds_by_hand():
    rows = [{"name": "target", "kind": "reference", "forget_quality": 0.9},
            {"name": "ga", "kind": "method", "method": "ga", "forget_quality": 0.1, "model_utility": 0.5,
             "privleak": None, "wall_time_s": 10.0},
            {"name": "ga.seed1", "kind": "method", "method": "ga", "forget_quality": 0.4, "model_utility": 0.7,
             "privleak": -20.0, "wall_time_s": 14.0},
            {"name": "ga.seed2", "kind": "method", "method": "ga", "error": "RuntimeError: boom"},
            {"name": "npo", "kind": "method", "method": "npo", "forget_quality": 0.3, "model_utility": float("nan")}]
    ga, npo = B.across_seeds(rows)
    assert (ga["method"], ga["runs"], ga["failed"]) == ("ga", 2, 1)
    fq = ga["metrics"]["forget_quality"]
    # mean (0.1 + 0.4) / 2 = 0.25; sample variance ((0.15)^2 + (0.15)^2) / (2 - 1) = 0.045
    assert fq["mean"] == pytest.approx(0.25) and fq["std"] == pytest.approx(math.sqrt(0.045))
    assert (fq["min"], fq["max"], fq["n"]) == (0.1, 0.4, 2)
    assert ga["metrics"]["privleak"] == {"mean": -20.0, "std": 0.0, "min": -20.0, "max": -20.0, "n": 1}
    assert ga["metrics"]["wall_time_s"]["mean"] == pytest.approx(12.0)
    assert "model_utility" not in npo["metrics"]  # NaN is not a value
    assert npo["metrics"]["forget_quality"]["std"] == 0.0


def test_a_benchmark_with_seeds_runs_each_and_reports_the_spread(fake_bench, tmp_path):
    board = B.bench("tofu-mini", ["ga", "npo"], tmp_path / "b", jobs=1, overrides={"npo": {"seed": 3}},
                    progress=lambda m: None, seeds=2)
    assert sorted(fake_bench) == [("ga", "ga", None), ("ga", "ga.seed1", 1), ("npo", "npo", 3),
                                  ("npo", "npo.seed4", 4)]
    names = [r["name"] for r in board["rows"]]
    assert names == ["target", "retain", "ga", "ga.seed1", "npo", "npo.seed4"]
    ga = {r["name"]: r["forget_quality"] for r in board["rows"] if r.get("method") == "ga"}
    assert ga == {"ga": pytest.approx(0.1), "ga.seed1": pytest.approx(0.2)}
    spread = {e["method"]: e for e in board["across_seeds"]}
    assert spread["ga"]["metrics"]["forget_quality"]["mean"] == pytest.approx(0.15)
    assert spread["npo"]["metrics"]["forget_quality"]["min"] == pytest.approx(0.4)
    assert spread["npo"]["metrics"]["forget_quality"]["max"] == pytest.approx(0.5)
    assert board["seeds"] == 2 and read_json(tmp_path / "b" / "leaderboard.json")["across_seeds"] == board["across_seeds"]
    md = (tmp_path / "b" / "leaderboard.md").read_text()
    assert "## Across 2 training seeds" in md
    assert "| ga | 2 | 0.1500 ± 0.0707 [0.1000, 0.2000] |" in md
    assert "id='seeds'" in (tmp_path / "b" / "report.html").read_text()

    # more seeds later: the runs already done are reused, only the new seed trains
    fake_bench.clear()
    board = B.bench("tofu-mini", ["ga"], tmp_path / "b", jobs=1, progress=lambda m: None, seeds=3)
    assert fake_bench == [("ga", "ga.seed2", 2)]
    assert board["across_seeds"][0]["runs"] == 3


def test_one_seed_writes_no_spread(fake_bench, tmp_path):
    board = B.bench("tofu-mini", ["ga"], tmp_path / "b", jobs=1, progress=lambda m: None)
    assert "across_seeds" not in board and "seeds" not in board
    assert "training seeds" not in (tmp_path / "b" / "leaderboard.md").read_text()


def test_the_command_line_prints_the_spread(fake_bench, tmp_path, cli):
    code, out, _ = cli("bench", "--scenario", "tofu-mini", "--methods", "ga", "--jobs", "1", "--seeds", "2",
                       "--out", str(tmp_path / "b"))
    assert code == 0
    assert "across 2 training seeds" in out and "ga.seed1" in out
    assert "0.1500 ±" in out and "[0.1000," in out  # the cell may wrap in a narrow terminal
