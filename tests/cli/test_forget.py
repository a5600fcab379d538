"""`obliviate forget`: forget people by name, without any forget file, end to end on a tiny in-process model; and
the one-line, exit-code-2 contract for its user errors."""

from __future__ import annotations

import json

import pytest

# Fast: one round of a few arms (the method itself is tested in tests/methods/test_reveal_release.py).
FAST = ["max_rounds=1", "min_reward=0", "warm_start=false", "pulls_per_round=6", "keep_arms=6", "n_samples=1",
        "epochs=2", "batch_size=4", "lr=3e-3"]




@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model_dir(people_model_dir):
    """The tiny model of conftest.py that memorised two facts about each of two people."""
    return people_model_dir


def test_forget_by_name_end_to_end(model_dir, tmp_path, cli):
    """The output holds the model, the manifest and the per-round log, and no revealed text unless asked."""
    out = tmp_path / "out"
    code, stdout, err = cli("forget", "--model", str(model_dir), "--target", "Marla Quenby",
                            "--out", str(out), *FAST)
    assert code == 0, err
    assert "output:" in stdout and "round 1" in err
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "reveal_release" and manifest["config"]["keep_revealed"] is False
    log = json.loads((out / "reveal_release.json").read_text())
    assert log["n_targets"] == 1 and "targets" not in log  # the names only with --keep-revealed
    assert {"reward", "n_revealed", "probe_nll"} <= set(log["rounds"][0])
    assert not (out / "revealed.json").exists()
    assert "Tollin Bay" not in " ".join(p.read_text() for p in out.glob("*.json"))

    kept = tmp_path / "kept"
    code, _, err = cli("forget", "--model", str(model_dir), "--target", "Marla Quenby",
                       "--target", "Teodor Hallam", "--out", str(kept), "--keep-revealed", *FAST,
                       "max_probe_increase=10")  # two targets' release costs more utility than the default budget
    assert code == 0, err
    assert json.loads((kept / "reveal_release.json").read_text())["targets"] == ["Marla Quenby", "Teodor Hallam"]
    revealed = json.loads((kept / "revealed.json").read_text())
    assert revealed and {r["target"] for r in revealed} <= {"Marla Quenby", "Teodor Hallam"}


def test_forget_retain_general_holds_the_models_own_general_answers(model_dir, tmp_path, cli):
    """`--retain general`: the retain set is the model's own answers to the 79 listed general-knowledge questions,
    less those naming the target (runs.rehearsal.named_retain, counted here on the same model)."""
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.runs.rehearsal import named_retain

    expected = named_retain(*load_model_and_tokenizer(str(model_dir)), "general", ["Marla Quenby"])
    assert 0 < len(expected) <= 79
    out = tmp_path / "out"
    code, _, err = cli("forget", "--model", str(model_dir), "--target", "Marla Quenby", "--retain", "general",
                       "--out", str(out), *FAST, "max_probe_increase=10")  # this model's 79 answers are noise
    assert code == 0, err
    assert json.loads((out / "manifest.json").read_text())["data"]["n_retain"] == len(expected)


@pytest.mark.parametrize(("extra", "needle"), [
    (["--target", "Marla Quenby", "--method", "npo"], "trains on the forget data itself"),
    (["--target", "Marla Quenby", "--method", "reveal_relase"], "did you mean"),
    (["--target", "Marla Quenby", "max_rounds=0"], "max_rounds"),
    (["--target", "Marla Quenby", "--eval"], "--scenario"),
])
def test_forget_user_errors_exit_2(model_dir, tmp_path, extra, needle, cli):
    code, _, err = cli("forget", "--model", str(model_dir), "--out", str(tmp_path / "o"), *extra)
    assert code == 2
    assert needle in err
    assert not (tmp_path / "o").exists()


def test_nothing_revealed_exits_3_writes_no_model_and_records_the_attempt(model_dir, tmp_path, cli):
    """A name the model knows nothing about: exit 3, no model, the attempt (hashed name, outcome nothing_changed)
    in OUT/ledger.jsonl, shown by `obliviate ledger`; a later run into the same OUT that does forget carries the
    attempt forward in its ledger."""
    from obliviate.runs import ledger

    out = tmp_path / "out"
    unknown = "Zorbin Quillfeather"
    code, stdout, err = cli("forget", "--model", str(model_dir), "--target", unknown, "--out", str(out),
                            "max_rounds=1", "warm_start=false", "pulls_per_round=6", "keep_arms=6", "n_samples=1")
    assert code == 3, err
    assert "nothing revealed" in err.splitlines()[-1] and "output:" not in stdout
    assert sorted(p.name for p in out.iterdir()) == ["ledger.jsonl"]
    (attempt,) = ledger.read(out)
    assert attempt["outcome"] == "nothing_changed" and attempt["output_model"] is None
    assert ledger.verify(attempt, targets=[unknown]) and unknown not in (out / "ledger.jsonl").read_text()
    code, stdout, _ = cli("ledger", str(out))
    assert code == 0 and "nothing" in stdout
    code, stdout, _ = cli("ledger", "--json", str(out))
    assert code == 0 and '"outcome": "nothing_changed"' in stdout

    code, _, err = cli("forget", "--model", str(model_dir), "--target", "Marla Quenby", "--out", str(out), *FAST)
    assert code == 0, err
    records = ledger.read(out)
    assert [r["outcome"] for r in records] == ["nothing_changed", "unlearned"]
    assert records[0]["request_id"] == attempt["request_id"]
