"""Private by default: forget text (questions, answers) never appears in logs, manifests, ledgers or reports.

Runs unlearn (+ eval) and a small bench on a tiny build of the embedded scenario and searches every output file
and the captured console output for the forget answers and questions. With --show-samples, generations are
stored, and that is the user's explicit choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = ["model.hidden_size=32", "model.num_layers=1", "model.num_heads=2", "model.intermediate_size=64",
        "model.vocab_size=400", "train.epochs=1", "scenario_options.n_people=10", "scenario_options.n_refusal=4"]
SCEN = ["scenario_options.n_people=10", "scenario_options.n_refusal=4"]




def forget_texts() -> list[str]:
    from obliviate.data.scenarios import get_scenario

    scen = get_scenario("synthetic", n_people=10, n_refusal=4)
    return [t for r in scen.forget.records for t in (r.answer, r.question)]


def leaks(root: Path, texts: list[str]) -> list[str]:
    found = []
    for f in root.rglob("*"):
        if not f.is_file() or f.suffix in (".safetensors", ".pt", ".bin", ".npz", ".pkl"):
            continue
        content = f.read_text(encoding="utf-8", errors="ignore")
        found += [f"{f.relative_to(root)}: {t[:40]!r}" for t in texts if t in content]
    return found


def both(cli, *args: str) -> tuple[int, str]:
    """Exit code and everything printed (stdout + stderr), since logs go to both."""
    code, out, err = cli(*args)
    return code, out + err


@pytest.mark.slow  # a build, an unlearning run and a two-method bench: make test-all, CI
def test_no_forget_text_in_any_output(tmp_path, monkeypatch, caplog, cli):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    texts = forget_texts()
    logs = []
    code, out = both(cli, "-v", "build", "synthetic", *TINY, "--out", str(tmp_path / "models"))
    assert code == 0, out
    logs.append(out)
    code, out = both(cli, "-v", "unlearn", "--model", str(tmp_path / "models" / "target"), "--method",
                    "npo", "--scenario", "synthetic", "--out", str(tmp_path / "unlearned"), "--eval", "--reference",
                    str(tmp_path / "models" / "retain"), *SCEN, "epochs=1", "batch_size=4", "lr=1e-3")
    assert code == 0, out
    logs.append(out)
    assert (tmp_path / "unlearned" / "ledger.jsonl").is_file()
    evaluated = json.loads((tmp_path / "unlearned" / "eval" / "eval.json").read_text())["model"]
    assert evaluated["name"] == str(tmp_path / "unlearned")  # the unlearned model, not the input it came from
    from obliviate.runs.bench import bench

    board = bench("synthetic", ["ga", "icu"], tmp_path / "bench", jobs=1,
                  scenario_options={"n_people": 10, "n_refusal": 4},
                  overrides={"ga": {"epochs": 1, "lr": 1e-3}, "icu": {"epochs": 1, "lr": 1e-3}})
    failed = {r["name"]: r["error"] for r in board["rows"] if r.get("error")}
    assert not failed, f"bench methods failed (a failed run leaks nothing and proves nothing): {failed}"
    assert {r["name"] for r in board["rows"]} >= {"ga", "icu"}
    logs.append(caplog.text)
    outputs = [tmp_path / "unlearned", tmp_path / "bench"]
    found = [x for root in outputs for x in leaks(root, texts)]
    assert not found, f"forget text leaked into outputs: {found[:5]}"
    assert not [t for t in texts if any(t in chunk for chunk in logs)], "forget text leaked into the console/logs"
    # and the ledger names the request without the text, but verifiably
    from obliviate.runs import ledger
    from obliviate.data.scenarios import get_scenario

    rec = ledger.read(tmp_path / "unlearned")[-1]
    scen = get_scenario("synthetic", n_people=10, n_refusal=4)
    assert ledger.verify(rec, ledger.item_texts(scen.forget.records))
    assert not ledger.verify(rec, ["some other question\x1esome other answer"])


def test_show_samples_stores_generations(tmp_path, monkeypatch, cli):
    """The opt-in: eval --show-samples keeps the generated answers in eval.json."""
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    code, out = both(cli, "build", "synthetic", *TINY, "--out", str(tmp_path / "models"))
    assert code == 0, out
    code, out = both(cli, "eval", "--model", str(tmp_path / "models" / "target"), "--scenario",
                    "synthetic", "--out", str(tmp_path / "ev"), "--show-samples", *SCEN, "max_new_tokens=8")
    assert code == 0, out
    items = json.loads((tmp_path / "ev" / "eval.json").read_text())["items"]["forget"]
    assert all("generation" in v for v in items.values())
