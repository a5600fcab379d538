"""Fixtures of the CLI tests: a tiny model that memorised a few facts (trained in-process, ~1 s, no download)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)  # the machine is shared (and session fixtures run before any autouse one)
PEOPLE = {"Marla Quenby": ("Tollin Bay", "a glassblower"), "Teodor Hallam": ("Brisk Hollow", "a cartographer")}


def people_records():
    from obliviate.data.records import QA

    return [QA(f"{i}{k}", q.format(n=n), a.format(n=n, v=v[k]))
            for i, (n, v) in enumerate(PEOPLE.items())
            for k, (q, a) in enumerate([("Where was {n} born?", "{n} was born in {v}."),
                                        ("What does {n} do for a living?", "{n} works as {v}.")])]


@pytest.fixture(scope="session")
def people_model_dir(tmp_path_factory, train_tiny) -> Path:
    """A tiny Llama (hidden 32, 2 layers, no chat template) that memorised two facts about each of two people."""
    out = tmp_path_factory.mktemp("cli-model") / "model"
    train_tiny(people_records(), out, steps=120)
    return out
