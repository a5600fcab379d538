"""`obliviate forget`: forget people by name, without any forget file, end to end on a tiny in-process model; and
the one-line, exit-code-2 contract for its user errors."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F


torch.set_num_threads(1)  # the machine is shared (and the module-scoped model fixture runs before any autouse one)
PEOPLE = {"Marla Quenby": ("Tollin Bay", "a glassblower"), "Teodor Hallam": ("Brisk Hollow", "a cartographer")}
# Fast: one round of a few arms (the method itself is tested in tests/methods/test_reveal_release.py).
FAST = ["max_rounds=1", "min_reward=0", "warm_start=false", "pulls_per_round=6", "keep_arms=6", "n_samples=1",
        "epochs=2", "batch_size=4", "lr=3e-3"]




@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny Llama (hidden 32, 2 layers) that memorised two facts about each of two people (~1 s)."""
    from obliviate.data.records import QA
    from obliviate.data.templates import IGNORE_INDEX, Formatter
    from obliviate.utils.tensors import pad_batch
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer

    recs = [QA(f"{i}{k}", q.format(n=n), a.format(n=n, v=v[k]))
            for i, (n, v) in enumerate(PEOPLE.items())
            for k, (q, a) in enumerate([("Where was {n} born?", "{n} was born in {v}."),
                                        ("What does {n} do for a living?", "{n} works as {v}.")])]
    tok = train_tokenizer([f"Question: {r.question}\nAnswer: {r.answer}" for r in recs] * 4, vocab_size=400)
    model = build_model(TinyModelSpec(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2,
                                      intermediate_size=64), tok, seed=0)
    enc = Formatter(tok, "plain").encode_qa(recs)
    ids, mask, labels = pad_batch([e.input_ids for e in enc], tok.pad_token_id, labels=[e.labels for e in enc])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(120):
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = tmp_path_factory.mktemp("forget-cli") / "model"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


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
    assert log["targets"] == ["Marla Quenby"]
    assert {"reward", "n_revealed", "probe_nll"} <= set(log["rounds"][0])
    assert not (out / "revealed.json").exists()
    assert "Tollin Bay" not in " ".join(p.read_text() for p in out.glob("*.json"))

    kept = tmp_path / "kept"
    code, _, err = cli("forget", "--model", str(model_dir), "--target", "Marla Quenby",
                       "--target", "Teodor Hallam", "--out", str(kept), "--keep-revealed", *FAST)
    assert code == 0, err
    revealed = json.loads((kept / "revealed.json").read_text())
    assert revealed and {r["target"] for r in revealed} <= {"Marla Quenby", "Teodor Hallam"}


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
