"""The model fingerprint is exact (every element of every tensor counts) and depends on the weights and the
architecture only (not on where the model was saved, nor on the library version that wrote it)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from obliviate.models.loading import architecture_config, fingerprint


def _llama(vocab: int = 50_000, tie: bool = True, **kw) -> LlamaForCausalLM:
    """A 1-layer Llama whose embedding (vocab × 32) is the bulk of its weights, like a real model's."""
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=tie, **kw)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return _llama()


def test_one_element_of_one_row_of_a_large_embedding_changes_it(model):
    """A sampled hash (every k-th element) misses most rows of a large matrix; this one reads them all. Each
    single-element change, in a row a stride would skip, in the last row, or in the last element, is seen."""
    fp = fingerprint(model)
    emb = model.get_input_embeddings().weight
    for row, col in [(12_345, 7), (emb.shape[0] - 1, 0), (emb.shape[0] - 1, emb.shape[1] - 1)]:
        m = copy.deepcopy(model)
        with torch.no_grad():
            m.get_input_embeddings().weight[row, col] += 1e-3
        assert fingerprint(m) != fp, (row, col)


def test_changing_a_small_tensor_or_the_dtype_changes_it(model):
    fp = fingerprint(model)
    m = copy.deepcopy(model)
    with torch.no_grad():
        m.model.norm.weight[0] = 1.5
    assert fingerprint(m) != fp
    assert fingerprint(copy.deepcopy(model).to(torch.bfloat16)) != fp


def test_same_weights_in_two_directories_fingerprint_alike(model, tmp_path):
    """Saved to two directories and loaded back: the same fingerprint, also the in-memory model's, although the
    configs differ in `_name_or_path` (and the saved one records `architectures`, `dtype`, the library version)."""
    for d in ("a", "b"):
        model.save_pretrained(tmp_path / d)
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b").eval()
    assert a.config._name_or_path != b.config._name_or_path
    assert fingerprint(a) == fingerprint(b) == fingerprint(model)


def test_architecture_counts(model):
    """The same tensors under another architecture setting are another model."""
    other = _llama(rope_theta=500_000.0)
    assert all(torch.equal(x, y) for x, y in zip(model.state_dict().values(), other.state_dict().values()))
    assert fingerprint(other) != fingerprint(model)
    cfg = architecture_config(model)
    assert cfg["num_hidden_layers"] == 1 and cfg["class"] == "LlamaForCausalLM"
    assert not {"_name_or_path", "transformers_version", "architectures", "dtype", "use_cache"} & cfg.keys()


def test_tied_weights_are_hashed_once_but_still_count():
    """With tied embeddings lm_head aliases the embedding: hashed once, and a change through either name shows."""
    m = _llama(vocab=1000)
    assert m.lm_head.weight.data_ptr() == m.get_input_embeddings().weight.data_ptr()
    fp = fingerprint(m)
    with torch.no_grad():
        m.lm_head.weight[3, 3] += 1.0
    assert fingerprint(m) != fp


def test_independent_of_thread_count_and_stable(model):
    assert fingerprint(model, threads=1) == fingerprint(model, threads=4) == fingerprint(model)
    assert len(fingerprint(model)) == 16 and len(fingerprint(model, length=40)) == 40
