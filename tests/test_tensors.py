"""The weights of saved model directories: read from every shard, compared, and the share that changed."""

import pytest
import torch
from safetensors.torch import save_file

from obliviate.runs.bench import changed_fraction
from obliviate.utils.tensors import max_weight_difference, saved_weights


def _save(d, shards):
    d.mkdir()
    for i, tensors in enumerate(shards):
        save_file(tensors, str(d / f"model-{i:05d}-of-{len(shards):05d}.safetensors"))
    return d


def test_saved_weights_reads_every_shard(tmp_path):
    d = _save(tmp_path / "m", [{"a": torch.zeros(2)}, {"b": torch.ones(3)}])
    w = saved_weights(d)
    assert sorted(w) == ["a", "b"] and w["b"].tolist() == [1.0, 1.0, 1.0]
    assert saved_weights(tmp_path) == {}


def test_max_weight_difference_by_hand(tmp_path):
    a = _save(tmp_path / "a", [{"w": torch.tensor([1.0, 2.0, 3.0]), "v": torch.tensor([[0.5]])}])
    b = _save(tmp_path / "b", [{"w": torch.tensor([1.0, 2.25, 2.0])}, {"v": torch.tensor([[0.0]])}])
    assert max_weight_difference(a, b) == 1.0          # |3 - 2|; 0.25 and 0.5 are smaller
    c = _save(tmp_path / "c", [{"w": torch.zeros(3)}])
    with pytest.raises(ValueError, match="different tensors"):
        max_weight_difference(a, c)


def test_changed_fraction_counts_changed_and_added_rows(tmp_path):
    before = _save(tmp_path / "before", [{"e": torch.zeros(2, 2), "n": torch.zeros(4)}])
    # one element of e changed, one row (2 elements) added to e, n unchanged: 3 of 10 elements
    e = torch.zeros(3, 2)
    e[0, 1] = 1.0
    after = _save(tmp_path / "after", [{"e": e, "n": torch.zeros(4)}])
    assert changed_fraction(before, after) == pytest.approx(3 / 10)
