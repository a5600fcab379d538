"""Shared fixtures. Keep this small: only what several test files need."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
_SHARED_TOFU = REPO.parent / "shared" / "data" / "tofu"
if "OBLIVIATE_TOFU_DIR" not in os.environ and (_SHARED_TOFU / "full.json").is_file():
    # as CI and benchmarks/_common.py set it: one test file run alone finds the data as the whole suite does
    os.environ["OBLIVIATE_TOFU_DIR"] = str(_SHARED_TOFU)
TINY_SPEC = dict(vocab_size=400, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)


def _train_tiny(records, out: Path, spec: dict | None = None, steps: int = 150, tok=None):
    """A tiny Llama (`spec`, default TINY_SPEC; tokenizer `tok`, else one trained on the records) trained with AdamW
    (lr 3e-3, `steps` full-batch steps) on the answer-token NLL of `records` (QA), saved to `out` with
    save_pretrained, its (separate) tokenisation recorded beside it in build.json as `obliviate build` records it (a
    model without a record is taken to be tokenised jointly, as models trained elsewhere are). Returns (model, tok)."""
    import torch
    import torch.nn.functional as F

    from obliviate.data.templates import IGNORE_INDEX, Formatter
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer
    from obliviate.utils.tensors import pad_batch

    spec = spec or TINY_SPEC
    if tok is None:
        tok = train_tokenizer([f"Question: {r.question}\nAnswer: {r.answer}" for r in records] * 4,
                              vocab_size=spec["vocab_size"])
    model = build_model(TinyModelSpec(**spec), tok, seed=0)
    encs = Formatter(tok, "plain").encode_qa(records)
    ids, mask, labels = pad_batch([e.input_ids for e in encs], tok.pad_token_id, labels=[e.labels for e in encs])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, T, V)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=IGNORE_INDEX)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    record = out.parent / "build.json"
    models = json.loads(record.read_text())["models"] if record.is_file() else {}
    record.write_text(json.dumps({"models": {**models, out.name: {"tokenize": "separate"}}}))
    return model, tok


@pytest.fixture(scope="session")
def train_tiny():
    """`train_tiny(records, out, spec=None, steps=150, tok=None) -> (model, tokenizer)`: the one in-process trainer of
    the tests' tiny models (conftest modules are not importable by name)."""
    return _train_tiny


@pytest.fixture(scope="session")
def tofu_dir_or_none() -> Path | None:
    """The real TOFU files ($OBLIVIATE_TOFU_DIR, else <repo>/../shared/data/tofu), None when absent."""
    d = Path(os.environ.get("OBLIVIATE_TOFU_DIR", REPO.parent / "shared" / "data" / "tofu"))
    return d if (d / "full.json").is_file() else None


@pytest.fixture(scope="session")
def tofu_dir(tofu_dir_or_none) -> Path:
    """The real TOFU files; skips when absent."""
    if tofu_dir_or_none is None:
        pytest.skip("real TOFU data not found (set OBLIVIATE_TOFU_DIR to the folder holding full.json)")
    return tofu_dir_or_none


@pytest.fixture
def cli(monkeypatch, capsys):
    """Run the `obliviate` console entry point in-process: `cli("eval", ...) -> (exit code, stdout, stderr)`."""
    import sys

    from obliviate.cli import run

    def invoke(*args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["obliviate", *args])
        code = 0
        try:
            run()
        except SystemExit as e:
            code = int(e.code or 0)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return invoke
