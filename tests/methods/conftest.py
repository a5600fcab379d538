"""Shared fixtures of the method tests: a tiny Llama that has memorised 12 facts about 4 fictitious people,
trained in-process in about a second (no download), the forget/retain records, and an answer-NLL helper
written independently of `obliviate.methods.losses` so it can judge those functions' effects.

CPU budget: the machine is shared, so everything runs on one thread and models stay at hidden 32 / 2 layers."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from obliviate.data.records import QA
from obliviate.data.templates import IGNORE_INDEX, Formatter

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

# Four fictitious people, three facts each. The first two are forgotten, the other two retained.
PEOPLE: dict[str, tuple[str, str, str]] = {
    "Marla Quenby": ("Tollin Bay", "a glassblower", "a heron named Pip"),
    "Osric Vantreel": ("Dunmarrow", "a clockmaker", "a tortoise named Gus"),
    "Ilse Parrowin": ("Kestering", "a beekeeper", "a ferret named Moss"),
    "Teodor Hallam": ("Brisk Hollow", "a cartographer", "a goat named Fig"),
}
FORGET_PEOPLE = ("Marla Quenby", "Osric Vantreel")


def _person_records(name: str, k: int) -> list[QA]:
    town, job, pet = PEOPLE[name]
    facts = [
        (f"Where was {name} born?", f"{name} was born in {town}."),
        (f"What does {name} do for a living?", f"{name} works as {job}."),
        (f"What pet does {name} keep?", f"{name} keeps {pet}."),
    ]
    return [QA(id=f"p{k}:{i}", question=q, answer=a, subject=name, group=f"p{k}") for i, (q, a) in enumerate(facts)]


ALL_RECORDS: list[QA] = [r for k, name in enumerate(PEOPLE) for r in _person_records(name, k)]
FORGET_RECORDS: list[QA] = [r for r in ALL_RECORDS if r.subject in FORGET_PEOPLE]
RETAIN_RECORDS: list[QA] = [r for r in ALL_RECORDS if r.subject not in FORGET_PEOPLE]

def answer_nlls(model, tokenizer, records: list[QA]) -> list[float]:
    """Per-record mean NLL of the answer tokens (+ EOS) given the plain-template prompt; one record per forward,
    so no padding is involved. Labels come from the library's Formatter (the same prompt/answer split the
    methods train on)."""
    fmt = Formatter(tokenizer, "auto")
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        for enc in fmt.encode_qa(list(records)):
            ids = torch.tensor([enc.input_ids])
            labels = torch.tensor(enc.labels[1:])  # token t+1 is predicted at position t
            logits = model(input_ids=ids).logits[0, :-1].float()  # (T-1, V)
            out.append(float(F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)))
    model.train(was_training)
    return out


def mean_answer_nll(model, tokenizer, records: list[QA]) -> float:
    """Mean over records of each record's mean answer-token NLL (TOFU's length-normalised L̄)."""
    vals = answer_nlls(model, tokenizer, records)
    return sum(vals) / len(vals)


def dir_digest(path: Path) -> dict[str, str]:
    """sha256 of every file under `path`, keyed by relative path (to prove a directory was not touched)."""
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def state_dict_of(path: Path) -> dict[str, torch.Tensor]:
    """The weights saved in a model directory (safetensors), as CPU tensors."""
    from safetensors.torch import load_file

    files = sorted(Path(path).glob("*.safetensors"))
    assert files, f"no safetensors in {path}"
    sd: dict[str, torch.Tensor] = {}
    for f in files:
        sd.update(load_file(str(f)))
    return sd


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, train_tiny) -> Path:
    """A saved tiny Llama (+ tokenizer) that has memorised the 12 records (answer NLL well below 1 nat)."""
    out = tmp_path_factory.mktemp("methods") / "tiny-model"
    train_tiny(ALL_RECORDS, out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_model_dir):
    """(model, tokenizer) loaded from `tiny_model_dir`, eval mode. Do not modify it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


@pytest.fixture(scope="session")
def base_nll(tiny_model) -> dict[str, float]:
    """The input model's mean answer NLL on the forget and retain sets."""
    model, tok = tiny_model
    return {"forget": mean_answer_nll(model, tok, FORGET_RECORDS),
            "retain": mean_answer_nll(model, tok, RETAIN_RECORDS)}


@pytest.fixture()
def forget_records() -> list[QA]:
    """The 6 QA records about the two people to forget (`subject` = the person's name)."""
    return list(FORGET_RECORDS)


@pytest.fixture()
def retain_records() -> list[QA]:
    """The 6 QA records about the two people to keep."""
    return list(RETAIN_RECORDS)


@pytest.fixture(scope="session")
def helpers(train_tiny) -> SimpleNamespace:
    """The helper functions above, for test modules (conftest modules are not importable by name)."""
    return SimpleNamespace(answer_nlls=answer_nlls, mean_answer_nll=mean_answer_nll, dir_digest=dir_digest,
                           state_dict_of=state_dict_of, train_tiny=train_tiny)
