"""Locate-then-edit on a real (tiny, randomly initialised) Llama: an edit makes its prompt emit the new target,
preserved keys keep their outputs, sequential edits keep earlier ones, statistics are cached per model and layer,
and subjects are located at their last token. No tokenizer is needed except for `locate`."""

from __future__ import annotations

import copy

import pytest
import torch

from obliviate.edit import EditConfig, EditPrompt, EditRequest, Editor, key_second_moments, locate
from obliviate.edit.anatomy import down_proj
from obliviate.edit.stats import stats_dir
from obliviate.models.loading import fingerprint

torch.set_num_threads(1)
VOCAB, PAD = 64, 0


@pytest.fixture(scope="module")
def model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, pad_token_id=PAD,
                      attn_implementation="eager", initializer_range=0.2)  # activations of a trained model's scale
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def preserved_seqs() -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (12,), generator=g).tolist() for _ in range(40)]


@pytest.fixture(scope="module")
def moments(model, preserved_seqs):
    return key_second_moments(model, [0], preserved_seqs, pad_id=PAD, cache=False)


def _threshold(moment: torch.Tensor) -> float:
    """The median eigenvalue: half of the key space is 'preserved', half is free for edits."""
    return float(torch.linalg.eigvalsh(moment).median())


def _next_token(model, ids) -> tuple[int, torch.Tensor]:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0, -1]
    return int(logits.argmax()), logits


def _request(ids: list[int], target: int, subject_pos: int | None = None) -> EditRequest:
    return EditRequest((EditPrompt(tuple(ids), len(ids) - 1 if subject_pos is None else subject_pos),), (target,))


def _cfg(moment) -> EditConfig:
    return EditConfig(v_lr=0.5, v_steps=60, clamp_norm_factor=4.0, l2=1e-3, nullspace_threshold=_threshold(moment),
                      kl_factor=0.0)


def test_an_edit_makes_the_prompt_emit_the_new_target(model, moments):
    """Prompt p (key at its last token) ends with argmax token a; after the edit it ends with target t ≠ a, the
    least likely token before."""
    m = copy.deepcopy(model)
    prompt = [5, 17, 9, 33, 41, 8, 22, 60]
    before, logits = _next_token(m, prompt)
    target = int(logits.argmin())
    stats = Editor(m, [0], moments, _cfg(moments[0]), PAD).edit([_request(prompt, target)])
    assert stats[0]["target_nll"] < 0.5
    after, _ = _next_token(m, prompt)
    assert before != target and after == target


def test_keys_in_the_preserved_subspace_keep_their_outputs(model, moments, preserved_seqs):
    """Down-projection outputs of keys in the span of the preserved statistics' large-eigenvalue directions are
    unchanged to float32 precision; the model's outputs on the preserved text move far less than on the edited
    prompt."""
    m = copy.deepcopy(model)
    w0 = down_proj(m, 0).weight.detach().clone()
    cfg = _cfg(moments[0])
    prompt = [7, 7, 30, 12, 50, 3, 44]
    _, logits0 = _next_token(m, prompt)
    Editor(m, [0], moments, cfg, PAD).edit([_request(prompt, int(logits0.argmin()))])
    evals, evecs = torch.linalg.eigh(moments[0])
    k0 = (evecs[:, evals >= cfg.nullspace_threshold] @ torch.randn(int((evals >= cfg.nullspace_threshold).sum()), 5,
                                                                    dtype=torch.float64)).float()  # (d_k, 5)
    w1 = down_proj(m, 0).weight.detach()
    assert not torch.equal(w0, w1)
    assert torch.allclose(w1 @ k0, w0 @ k0, atol=1e-5 * float((w0 @ k0).abs().max()))

    _, logits1 = _next_token(m, prompt)
    prompt_change = float((logits1 - logits0).abs().max())
    ids = torch.tensor(preserved_seqs[:8])
    with torch.no_grad():
        drift = float((m(input_ids=ids).logits - model(input_ids=ids).logits).abs().mean())
    assert drift < 0.05 * prompt_change


def test_sequential_edits_keep_the_earlier_ones(model, moments):
    """Two requests edited one after the other: the first still emits its target after the second."""
    m = copy.deepcopy(model)
    ed = Editor(m, [0], moments, _cfg(moments[0]), PAD)
    a, b = [11, 4, 29, 38, 15, 6], [11, 4, 29, 38, 15, 9]  # related prompts: B's update would disturb A
    ta = int(_next_token(m, a)[1].argmin())
    tb = int(_next_token(m, b)[1].argsort()[1])
    ed.edit([_request(a, ta)])
    assert _next_token(m, a)[0] == ta
    ed.edit([_request(b, tb)])
    assert _next_token(m, b)[0] == tb
    assert _next_token(m, a)[0] == ta
    assert float(torch.trace(ed.preserved[0])) > 0


def test_the_edit_reaches_a_mid_prompt_subject(model, moments):
    """δ at a subject token in the middle of the prompt (layer 0) reaches the answer position through the next
    layer's attention: the prompt then emits the target."""
    m = copy.deepcopy(model)
    prompt = [5, 17, 9, 33, 41, 8, 22, 60]
    target = int(_next_token(m, prompt)[1].argsort()[-2])  # the runner-up
    Editor(m, [0], moments, _cfg(moments[0]), PAD).edit([_request(prompt, target, subject_pos=4)])
    assert _next_token(m, prompt)[0] == target


def test_statistics_are_cached_by_model_fingerprint_and_layer(model, preserved_seqs, monkeypatch, tmp_path):
    """The first call writes one file per layer under <cache>/edit_stats/<fingerprint>/; the second reads them
    (same values); another sample budget is another entry."""
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path))
    fp = fingerprint(model)
    first = key_second_moments(model, [0, 1], preserved_seqs, pad_id=PAD, model_fp=fp)
    files = sorted(p.name for p in (stats_dir() / fp).iterdir())
    assert len(files) == 2 and files[0].startswith("layer0-") and files[1].startswith("layer1-")
    (stats_dir() / fp / files[0]).write_bytes(b"")  # a corrupt entry is recomputed, not trusted
    again = key_second_moments(model, [0, 1], preserved_seqs, pad_id=PAD, model_fp=fp)
    assert all(torch.allclose(first[l], again[l]) for l in (0, 1))
    key_second_moments(model, [0], preserved_seqs, pad_id=PAD, model_fp=fp, max_tokens=100)
    assert len(list((stats_dir() / fp).iterdir())) == 3
    assert first[0].shape == (64, 64) and torch.allclose(first[0], first[0].T)


def test_statistics_ignore_padding(model, preserved_seqs):
    """Padding positions never enter E[k kᵀ]: batching sequences of different lengths gives the per-sequence
    average."""
    seqs = [preserved_seqs[0][:5], preserved_seqs[1]]
    batched = key_second_moments(model, [0], seqs, pad_id=PAD, cache=False, batch_size=2)[0]
    one = [key_second_moments(model, [0], [s], pad_id=PAD, cache=False)[0] for s in seqs]
    expected = (one[0] * 5 + one[1] * 12) / 17
    assert torch.allclose(batched, expected, rtol=1e-4, atol=1e-6)  # float32 keys: batching reorders sums


def test_statistics_from_a_start_position_count_only_the_later_keys(model, preserved_seqs):
    """`starts`: positions before a sequence's start are read as context but not counted. By hand: E[k kᵀ] over
    positions 4..11 of the first sequence and 9..11 of the second = the 11 outer products of the keys captured
    on the full sequences (causal attention: the earlier positions only shape the later keys), divided by 11."""
    from obliviate.edit.anatomy import capture_keys

    seqs = preserved_seqs[:2]
    got = key_second_moments(model, [0], seqs, pad_id=PAD, cache=False, starts=[4, 9])[0]
    with torch.no_grad(), capture_keys(model, [0]) as store:
        keys = []
        for s, start in zip(seqs, (4, 9), strict=True):
            model(input_ids=torch.tensor([s]))
            keys.append(store[0][0, start:].double())  # (T - start, d_k)
    k = torch.cat(keys)  # (11, d_k)
    assert torch.allclose(got, k.T @ k / 11, rtol=1e-4, atol=1e-6)


def test_locate_finds_the_subjects_last_token():
    """With offsets (fast tokenizer) and with the slow fallback, the position is the subject's last token — also
    when the subject is followed by a possessive."""
    from obliviate.models.tiny import train_tokenizer

    texts = ["Question: Where was Marla Quenby born?\nAnswer: Marla Quenby's town."] * 8
    tok = train_tokenizer(texts, vocab_size=300)
    text = "Question: Where was Marla Quenby born?\nAnswer: "
    p = locate(tok, text, "Marla Quenby")
    toks = tok.convert_ids_to_tokens(list(p.ids))
    assert "".join(toks[: p.subject_pos + 1]).replace("Ġ", " ").endswith("Marla Quenby")
    assert p.ids == tuple(tok(text)["input_ids"])
    poss = locate(tok, "Marla Quenby's pet", "Marla Quenby")
    assert tok.decode(list(poss.ids[: poss.subject_pos + 1]), skip_special_tokens=True).endswith("Quenby")

    class Slow:  # a tokenizer without offsets
        def __call__(self, text, add_special_tokens=True, return_offsets_mapping=False):
            if return_offsets_mapping:
                raise NotImplementedError
            return tok(text, add_special_tokens=add_special_tokens)

    assert locate(Slow(), text, "Marla Quenby") == p
    with pytest.raises(ValueError, match="does not occur"):
        locate(tok, text, "Osric Vantreel")


def test_the_target_nll_reads_the_target_positions_of_every_prompt(model):
    """compute_target's NLL before any step (v_steps=1 records it at δ = 0) equals the mean over prompts of the
    per-token mean target NLL computed from full logits by hand: two prompts of different lengths (padding), a
    two-token target, and a KL prompt in the same batch (it must not shift the rows)."""
    from obliviate.edit import compute_target

    target = (13, 27)
    prompts = ([5, 17, 9, 33], [8, 2, 40, 41, 42, 6, 19])
    kl = EditPrompt((5, 17, 3, 4), 1)
    req = EditRequest(tuple(EditPrompt(tuple(p), 1) for p in prompts), target, kl)
    res = compute_target(model, req, 0, EditConfig(v_steps=1, kl_factor=0.5), PAD)
    by_hand = []
    with torch.no_grad():
        for p in prompts:
            logp = torch.log_softmax(model(input_ids=torch.tensor([p + list(target)])).logits[0].float(), -1)
            by_hand.append(-(logp[len(p) - 1, target[0]] + logp[len(p), target[1]]) / 2)
    assert res.nll == pytest.approx(float(torch.stack(by_hand).mean()), rel=1e-5)


def test_requests_in_a_group_share_one_residual(model, moments):
    """Three prompts that differ in their first token only (so their keys at the last token nearly agree) and one
    target: with groups=[[0, 1, 2]] one δ is optimised on all three prompts, every request reports it, and each
    prompt then emits the target."""
    m = copy.deepcopy(model)
    prompts = [[5, 17, 9, 33, 41], [6, 17, 9, 33, 41], [7, 17, 9, 33, 41]]
    target = int(_next_token(m, prompts[0])[1].argsort()[-3])
    reqs = [_request(p, target) for p in prompts]
    stats = Editor(m, [0], moments, _cfg(moments[0]), PAD).edit(reqs, groups=[[0, 1, 2]])
    assert len({(s["delta_norm"], s["target_nll"]) for s in stats}) == 1
    assert [_next_token(m, p)[0] for p in prompts] == [target] * 3


def test_groups_must_cover_each_request_once_and_share_a_target(model, moments):
    from obliviate.edit.editor import merge_requests

    ed = Editor(copy.deepcopy(model), [0], moments, _cfg(moments[0]), PAD)
    reqs = [_request([5, 6, 7], 9), _request([5, 6, 8], 9)]
    with pytest.raises(ValueError, match="each of the 2 requests once"):
        ed.edit(reqs, groups=[[0]])
    with pytest.raises(ValueError, match="share their target"):
        merge_requests([_request([5, 6, 7], 9), _request([5, 6, 8], 10)])
