"""Fixtures of the CLI tests: a tiny model that memorised a few facts (trained in-process, ~1 s, no download)."""

from __future__ import annotations

import json

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

torch.set_num_threads(1)  # the machine is shared (and session fixtures run before any autouse one)
PEOPLE = {"Marla Quenby": ("Tollin Bay", "a glassblower"), "Teodor Hallam": ("Brisk Hollow", "a cartographer")}


def people_records():
    from obliviate.data.records import QA

    return [QA(f"{i}{k}", q.format(n=n), a.format(n=n, v=v[k]))
            for i, (n, v) in enumerate(PEOPLE.items())
            for k, (q, a) in enumerate([("Where was {n} born?", "{n} was born in {v}."),
                                        ("What does {n} do for a living?", "{n} works as {v}.")])]


@pytest.fixture(scope="session")
def people_model_dir(tmp_path_factory) -> Path:
    """A tiny Llama (hidden 32, 2 layers, no chat template) that memorised two facts about each of two people."""
    from obliviate.data.templates import IGNORE_INDEX, Formatter
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer
    from obliviate.utils.tensors import pad_batch

    recs = people_records()
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
    out = tmp_path_factory.mktemp("cli-model") / "model"
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    # trained on separately tokenised prompt/answer, recorded as `obliviate build` does (unrecorded = joint)
    (out.parent / "build.json").write_text(json.dumps({"models": {out.name: {"tokenize": "separate"}}}))
    return out
