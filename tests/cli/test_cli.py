"""End-to-end CLI tests on the embedded scenario (a deliberately tiny build so the test stays fast), and the
one-line, exit-code-2 contract for user errors."""

from __future__ import annotations

import json
import sys

import pytest


TINY_BUILD = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
              "model.vocab_size=400", "train.epochs=1", "scenario_options.n_people=10", "scenario_options.n_refusal=4"]
EVAL_OPTS = ["scenario_options.n_people=10", "scenario_options.n_refusal=4", "max_new_tokens=8"]
SUMMARY_KEYS = {"forget_quality", "model_utility", "forget_rougeL_recall", "forget_prob", "forget_truth_ratio",
                "retain_rougeL_recall", "extraction_strength", "exact_memorization", "el10", "ma", "privleak",
                "mia_auc_loss", "mia_auc_zlib", "mia_auc_mink", "mia_auc_minkpp"}




@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_build_then_eval_end_to_end(tmp_path, cli):
    """build writes target/ and retain/ (a second build is a cache no-op); eval writes the three files with the
    required summary keys, and forget quality is computed against the retain model."""
    models = tmp_path / "models"
    code, out, err = cli("build", "synthetic", *TINY_BUILD, "--out", str(models))
    assert code == 0, err
    assert (models / "target" / "model.safetensors").is_file() and (models / "retain" / "config.json").is_file()
    code, out, _ = cli("build", "synthetic", *TINY_BUILD, "--out", str(models))
    assert code == 0 and "already built" in out

    ev = tmp_path / "eval"
    code, out, err = cli("eval", "--model", str(models / "target"), "--scenario", "synthetic",
                         "--reference", str(models / "retain"), "--out", str(ev), *EVAL_OPTS)
    assert code == 0, err
    summary = json.loads((ev / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["forget_quality"] is not None and 0 <= summary["forget_quality"] <= 1
    items = json.loads((ev / "eval.json").read_text())["items"]
    assert len(items["forget"]) == 10 and all("truth_ratio" in v for v in items["forget"].values())
    assert (ev / "report.md").read_text().startswith("# Evaluation")
    # the reference against itself: identical truth-ratio samples, KS p-value exactly 1; and the saved evaluation
    # directory works as a reference, giving the target the same forget quality as the model did
    ev_ret = tmp_path / "eval-retain"
    code, _, err = cli("eval", "--model", str(models / "retain"), "--scenario", "synthetic", "--reference",
                       str(models / "retain"), "--out", str(ev_ret), *EVAL_OPTS)
    assert code == 0, err
    assert json.loads((ev_ret / "summary.json").read_text())["forget_quality"] == pytest.approx(1.0)
    ev2 = tmp_path / "eval-saved-reference"
    code, _, err = cli("eval", "--model", str(models / "target"), "--scenario", "synthetic", "--reference",
                       str(ev_ret), "--out", str(ev2), *EVAL_OPTS)
    assert code == 0, err
    assert json.loads((ev2 / "summary.json").read_text())["forget_quality"] == pytest.approx(
        summary["forget_quality"])

    att = tmp_path / "attack"
    code, out, err = cli("attack", "--model", str(models / "retain"), "--target", str(models / "target"),
                         "--control", str(models / "retain"), "--attack", "quantize", "--out", str(att), *EVAL_OPTS,
                         "bits=[4]")
    assert code == 0, err
    res = json.loads((att / "attack.json").read_text())
    assert set(res["unlearned"]["per_bits"]) == {"4"} and "recovery" in res["target"]
    assert res["control"] == res["unlearned"]  # the same model as its own control: the same numbers
    assert res["control"]["after"]["prob"] != res["target"]["after"]["prob"]
    assert "recovery" in out and "control" in out and "prob after" in out


@pytest.mark.parametrize(("args", "needle"), [
    (["build", "synthetix"], "did you mean 'synthetic'"),
    (["build", "synthetic", "train.epochz=3"], "unknown key 'train.epochz'"),
    (["build", "synthetic", "train.lr=-1"], "train.lr"),
    (["eval", "--model", "/nonexistent/model", "--out", "x"], "no such model directory"),
    (["ls", "methodz"], "did you mean 'methods'"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, monkeypatch, args, needle, cli):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(*args)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir()), "a failed command must not write anything"


def test_existing_output_refused_without_overwrite(tmp_path, cli):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    code, _, err = cli("eval", "--model", str(tmp_path), "--out", str(tmp_path / "out"))
    assert code == 2 and "--overwrite" in err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_debug_shows_traceback(monkeypatch):
    from obliviate.cli import run
    from obliviate.errors import RegistryError

    monkeypatch.setattr(sys, "argv", ["obliviate", "--debug", "build", "synthetix"])
    with pytest.raises(RegistryError):
        run()


def test_usage_errors_are_recognised_without_click(monkeypatch):
    """typer >= 0.29 vendors click and no longer depends on it: the CLI's error handling must not import click
    (present here only because another package brings it). With click hidden, typer's own exception types are
    still recognised."""
    import sys

    from obliviate import cli as cli_module

    for name in ("click", "click.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)  # `import click` now raises ImportError
    exits, usage, aborts = cli_module._click_exceptions()
    try:
        from typer._click import exceptions as vendored
    except ImportError:  # an older typer raises click's own types, and needs click
        pytest.skip("this typer does not vendor click")
    import typer

    assert vendored.ClickException in usage and typer.Exit in exits and typer.Abort in aborts
