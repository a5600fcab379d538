"""The model-pass service: `answer_nll` and its four reductions (numbers derived by hand), the batch form (a
differentiable training loss) against the sequence form (a probe), and greedy / sampled generation."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

from obliviate.data.templates import IGNORE_INDEX as X
from obliviate.data.templates import Encoded
from obliviate.eval import passes
from obliviate.eval.passes import answer_nll, generate_pass, logprob_pass, prefix_generate_pass, sample_pass
from obliviate.utils.tensors import pad_batch


class ThreeToOne(torch.nn.Module):
    """Vocabulary {0, 1}; at every position logits (log 3, 0): p(0) = 3/4, p(1) = 1/4, so the NLL of token 0 is
    log 4/3 and of token 1 is log 4, whatever came before."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask=None):
        logits = torch.zeros(*input_ids.shape, 2) + self.dummy
        logits[..., 0] = math.log(3)
        return SimpleNamespace(logits=logits)


def _enc(ids: list[int], prompt_len: int) -> Encoded:
    return Encoded(ids, [X] * prompt_len + ids[prompt_len:], prompt_len, False)


# Sequence A: prompt [1, 1], answer [0, 0]; B: prompt [0], answer [1]; C: prompt only (no answer token).
SEQS = [_enc([1, 1, 0, 0], 2), _enc([0, 1], 1), _enc([1, 0], 2)]
A, B = math.log(4 / 3), math.log(4)  # per-token NLLs of A's tokens and of B's token


@pytest.mark.parametrize("reduction, expected", [
    ("token_mean", (2 * A + B) / 3),  # every token weighs the same
    ("sequence_mean", (A + B) / 2),  # each sequence's mean, then the mean over sequences with answer tokens
    ("sum", 2 * A + B),
])
def test_reductions_by_hand(reduction, expected):
    got = answer_nll(ThreeToOne(), SEQS, reduction, batch_size=2)
    assert float(got) == pytest.approx(expected)
    ids, mask, lab = pad_batch([s.input_ids for s in SEQS], 0, labels=[s.labels for s in SEQS])
    batch = {"input_ids": ids, "attention_mask": mask, "labels": lab}
    assert float(answer_nll(ThreeToOne(), batch, reduction)) == pytest.approx(expected)


def test_reduction_none_is_per_sequence_mean_nan_without_answer():
    got = answer_nll(ThreeToOne(), SEQS, "none").tolist()
    assert got[:2] == pytest.approx([A, B]) and math.isnan(got[2])


def test_empty_and_unknown():
    assert math.isnan(float(answer_nll(ThreeToOne(), [], "sequence_mean")))
    with pytest.raises(ValueError, match="token_mean, sequence_mean, sum, none"):
        answer_nll(ThreeToOne(), SEQS, "mean")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def llama():
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, tie_word_embeddings=True)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def seqs():
    g = torch.Generator().manual_seed(1)
    out = []
    for n, p in [(9, 4), (5, 2), (12, 7), (6, 5), (3, 1)]:
        ids = torch.randint(3, 64, (n,), generator=g).tolist()
        out.append(_enc(ids, p))
    return out


def _one_by_one(model, seqs) -> list[float]:
    """Independent oracle: each sequence alone (no padding), full logits, torch's cross entropy."""
    with torch.no_grad():
        return [float(F.cross_entropy(model(input_ids=torch.tensor([s.input_ids])).logits[0, :-1].float(),
                                      torch.tensor(s.labels[1:]), ignore_index=X)) for s in seqs]


def test_sequence_form_matches_one_by_one_forward(llama, seqs):
    oracle = _one_by_one(llama, seqs)
    assert answer_nll(llama, seqs, "none", batch_size=2).tolist() == pytest.approx(oracle, rel=1e-5)
    assert float(answer_nll(llama, seqs, "sequence_mean")) == pytest.approx(sum(oracle) / len(oracle), rel=1e-5)
    n = [sum(t != X for t in s.labels[1:]) for s in seqs]
    token_mean = sum(v * k for v, k in zip(oracle, n)) / sum(n)
    assert float(answer_nll(llama, seqs, "token_mean", batch_size=3)) == pytest.approx(token_mean, rel=1e-5)
    # the teacher-forced pass agrees: -mean(log p) per sequence
    stats = logprob_pass(llama, seqs, pad_id=0)
    assert [-float(s.logps.mean()) for s in stats] == pytest.approx(oracle, rel=1e-5)


def test_batch_form_is_the_training_loss_and_keeps_the_mode(llama, seqs):
    """One batch: exactly the usual causal-LM loss on full logits, with gradients; the sequence form restores the
    model's train/eval mode."""
    ids, mask, lab = pad_batch([s.input_ids for s in seqs], 0, labels=[s.labels for s in seqs])
    llama.zero_grad()
    loss = answer_nll(llama, {"input_ids": ids, "attention_mask": mask, "labels": lab}, "token_mean")
    full = llama(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    ref = F.cross_entropy(full.reshape(-1, full.shape[-1]), lab[:, 1:].reshape(-1), ignore_index=X)
    assert float(loss) == pytest.approx(float(ref), rel=1e-6)
    loss.backward()
    assert llama.get_input_embeddings().weight.grad is not None
    llama.zero_grad()
    llama.train()
    try:
        answer_nll(llama, seqs, "sum")
        assert llama.training
    finally:
        llama.eval()


def test_generate_pass_matches_one_prompt_at_a_time(llama):
    prompts = [[5, 6, 7], [9], [10, 11, 12, 13, 14]]
    batched = generate_pass(llama, prompts, pad_id=0, eos_id=2, max_new_tokens=[6, 4, 6], batch_size=8)
    alone = [generate_pass(llama, [p], pad_id=0, eos_id=2, max_new_tokens=n)[0] for p, n in zip(prompts, [6, 4, 6])]
    assert batched == alone and all(len(x) <= n for x, n in zip(batched, [6, 4, 6]))
    hf = passes._generate_whole_batches(llama, prompts, 0, 2, [6, 4, 6], 8, None)  # transformers' generate
    assert batched == hf


def test_generate_pass_lets_finished_rows_leave_the_batch(llama):
    """Transformers' generate decodes a batch until its longest row ends; generate_pass drops each row as it ends
    (its EOS or its limit), with the same continuations: fewer rows go through the decode steps."""
    prompts, limits, _ = _prefix_case()
    limits = [2 if i % 3 else 12 for i in range(len(prompts))]  # most rows end early, a few run long
    rows: list[int] = []
    handle = llama.register_forward_pre_hook(
        lambda mod, args, kwargs: rows.append(kwargs["input_ids"].shape[0]) if kwargs["input_ids"].shape[1] == 1
        else None, with_kwargs=True)
    try:
        got = generate_pass(llama, prompts, pad_id=0, eos_id=1, max_new_tokens=limits, batch_size=64)
        decoded = sum(rows)
        rows.clear()
        want = passes._generate_whole_batches(llama, prompts, 0, 1, limits, 64, None)
    finally:
        handle.remove()
    assert got == want
    assert decoded < sum(rows) / 2, (decoded, sum(rows))


def _prefix_case():
    """Three hosts; every prefix of length >= 2 of each, with the limit EL_n gives it (the rest of the host)."""
    g = torch.Generator().manual_seed(2)
    hosts = [torch.randint(3, 64, (n,), generator=g).tolist() for n in (9, 6, 11)]
    prompts, limits, of = [], [], []
    for h in hosts:
        for k in range(2, len(h)):
            prompts.append(h[:k])
            limits.append(len(h) - k + 3)
            of.append(h)
    return prompts, limits, of


def test_prefix_generate_pass_matches_generate_pass(llama):
    """The shared-prefill decode gives generate_pass's greedy continuations exactly: small batches (a host's
    prefixes split across batches, small groups packed together), per-prompt limits, and an EOS that cuts some
    continuations short (EOS is a token the model does emit, so the cut is exercised)."""
    prompts, limits, hosts = _prefix_case()
    free = passes._generate_whole_batches(llama, prompts, 0, 1, limits, 4, None)  # transformers' generate
    eos = free[0][2]  # a token the model emits mid-continuation
    want = passes._generate_whole_batches(llama, prompts, 0, eos, limits, 4, None)
    assert any(len(w) < n for w, n in zip(want, limits))  # some continuation stopped at EOS
    ticks: list[tuple[int, int]] = []
    for bs in (4, 7, 64):
        got = prefix_generate_pass(llama, prompts, hosts, pad_id=0, eos_id=eos, max_new_tokens=limits,
                                   batch_size=bs, progress=lambda d, t: ticks.append((d, t)))
        assert got == want, bs
    assert ticks[-1] == (len(prompts), len(prompts))


def test_prefix_generate_pass_refuses_a_prompt_off_its_host(llama):
    with pytest.raises(ValueError, match="not a prefix"):
        prefix_generate_pass(llama, [[5, 6]], [[5, 7, 8]], pad_id=0, eos_id=2, max_new_tokens=[3])


def test_prefix_generate_pass_falls_back_for_sliding_window_attention(monkeypatch):
    """A sliding window counts cache slots, not positions, so a prefix cannot decode from a longer host's cache:
    such a model decodes through transformers' generate, with the same results (generate_pass too)."""
    from transformers import MistralConfig, MistralForCausalLM

    calls = []
    real = passes._generate_whole_batches
    monkeypatch.setattr(passes, "_generate_whole_batches", lambda *a, **k: calls.append(1) or real(*a, **k))

    cfg = MistralConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                        num_key_value_heads=2, sliding_window=4)
    torch.manual_seed(0)
    model = MistralForCausalLM(cfg).eval()
    prompts, limits, hosts = _prefix_case()
    want = real(model, prompts, 0, 1, limits, 8, None)
    assert prefix_generate_pass(model, prompts, hosts, pad_id=0, eos_id=1, max_new_tokens=limits,
                                batch_size=8) == want
    assert generate_pass(model, prompts, pad_id=0, eos_id=1, max_new_tokens=limits, batch_size=8) == want
    assert calls == [1, 1]


def test_shared_prompts_give_the_unshared_statistics(llama):
    """Sequences on the same prompt (an item's answer, paraphrase, perturbed answers) share one forward over it:
    every statistic equals the unshared pass (5e-5: float rounding), whatever the batching splits (a group larger than a batch,
    prompts of different lengths in one batch, a sequence with nothing to share)."""
    g = torch.Generator().manual_seed(3)
    seqs = []
    for p_len, answers in [(6, [3, 5, 2, 7]), (9, [4, 4]), (3, [6]), (6, [2, 8, 3])]:
        prompt = torch.randint(3, 64, (p_len,), generator=g).tolist()
        seqs += [_enc(prompt + torch.randint(3, 64, (a,), generator=g).tolist(), p_len) for a in answers]
    seqs.append(_enc(torch.randint(3, 64, (5,), generator=g).tolist(), 1))  # answer from position 1: unshared
    plain = logprob_pass(llama, seqs, pad_id=0, share_prompts=False, vocab_stats=True)
    for bs in (32, 3):
        shared = logprob_pass(llama, seqs, pad_id=0, batch_size=bs, vocab_stats=True)
        for a, b in zip(shared, plain, strict=True):
            for field in ("logps", "mu", "sigma"):
                assert getattr(a, field).tolist() == pytest.approx(getattr(b, field).tolist(), abs=5e-5)
            assert a.correct.tolist() == b.correct.tolist()


def test_passes_report_their_progress_per_batch(llama, seqs):
    """The eval progress bars' source: (done, total) after every batch, ending at the total; results unchanged."""
    ticks: list[tuple[int, int]] = []
    stats = logprob_pass(llama, seqs, pad_id=0, batch_size=2, progress=lambda d, t: ticks.append((d, t)))
    assert ticks == [(2, 5), (4, 5), (5, 5)]
    whole = logprob_pass(llama, seqs, pad_id=0)  # one batch: equal up to the batching's float rounding
    assert all(a.logps.tolist() == pytest.approx(b.logps.tolist(), abs=1e-5) for a, b in zip(stats, whole))
    ticks.clear()
    prompts = [[5, 6, 7], [9], [10, 11, 12, 13, 14]]
    out = generate_pass(llama, prompts, 0, 2, 4, batch_size=2, progress=lambda d, t: ticks.append((d, t)))
    assert ticks == [(2, 3), (3, 3)] and out == generate_pass(llama, prompts, 0, 2, 4, batch_size=2)


def test_sample_pass_shapes_and_seed(llama):
    prompts = [[5, 6, 7], [9, 10]]
    torch.manual_seed(3)
    a = sample_pass(llama, prompts, pad_id=0, eos_id=2, max_new_tokens=5, samples=3, batch_size=4)
    torch.manual_seed(3)
    b = sample_pass(llama, prompts, pad_id=0, eos_id=2, max_new_tokens=5, samples=3, batch_size=4)
    assert a == b and [len(x) for x in a] == [3, 3]
    assert all(len(s) <= 5 and 2 not in s for x in a for s in x)


# ---------------------------------------------------------------------------------------------- the cache


def test_runner_serves_cached_passes_only_for_the_same_weights(tmp_path, monkeypatch):
    """A second runner over the same weights reads the pass from disk (the model is not called); the same model
    with one embedding element changed is another fingerprint, so it is computed anew."""
    import copy

    from obliviate.eval import runner as R
    from obliviate.eval.passes import PassCache
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer

    texts = ["Question: Where was Ada born?\nAnswer: In Lisbon.", "Question: What does Bo do?\nAnswer: He bakes."]
    tok = train_tokenizer(texts * 4, vocab_size=300)
    model = build_model(TinyModelSpec(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64),
                        tok).eval()
    pairs = [("a", "Where was Ada born?", "In Lisbon."), ("b", "What does Bo do?", "He bakes.")]
    first = R.ModelRunner(model, tok, cache=PassCache(tmp_path)).logprobs(pairs)
    assert len(list(tmp_path.rglob("*.npz"))) == 1

    real = R.logprob_pass
    monkeypatch.setattr(R, "logprob_pass", lambda *a, **k: pytest.fail("the cached pass was recomputed"))
    again = R.ModelRunner(model, tok, cache=PassCache(tmp_path)).logprobs(pairs)
    assert all((x.logps == y.logps).all() for x, y in zip(first, again))
    assert all(x.mu is None for x in again)
    # Min-K%++'s moments are a pass of their own (costlier); a pass that has them serves one without them
    monkeypatch.setattr(R, "logprob_pass", real)
    full = R.ModelRunner(model, tok, cache=PassCache(tmp_path)).logprobs(pairs, vocab_stats=True)
    assert all(x.mu is not None and len(x.mu) == len(x.logps) for x in full)
    assert len(list(tmp_path.rglob("*.npz"))) == 2
    monkeypatch.setattr(R, "logprob_pass", lambda *a, **k: pytest.fail("the cached pass was recomputed"))
    for cached in (R.ModelRunner(model, tok, cache=PassCache(tmp_path)).logprobs(pairs, vocab_stats=True),
                   R.ModelRunner(model, tok, cache=PassCache(tmp_path)).logprobs(pairs)):
        assert all(x.mu is not None and (x.mu == y.mu).all() for x, y in zip(cached, full))
    for f in tmp_path.rglob("*.npz"):
        f.unlink()

    edited = copy.deepcopy(model)
    with torch.no_grad():
        edited.get_input_embeddings().weight[tok.convert_tokens_to_ids("<|eos|>"), 0] += 1.0
    monkeypatch.setattr(R, "logprob_pass", real)
    other = R.ModelRunner(edited, tok, cache=PassCache(tmp_path)).logprobs(pairs)
    assert len(list(tmp_path.rglob("*.npz"))) == 1
    assert any((x.logps != y.logps).any() for x, y in zip(first, other))


def test_token_stats_by_hand():
    """ThreeToOne at every position: p = (3/4, 1/4). Min-K%++'s moments of log p under p: μ = ¾ ln ¾ + ¼ ln ¼ =
    −0.562335; σ = √(p(1−p))·|ln(p₀/p₁)| = √(3/16)·ln 3 = 0.475714 (a two-point distribution). The argmax is token
    0, so A's answer [0, 0] is right at both positions and B's [1] wrong; log p per token ln ¾, ln ¾ / ln ¼."""
    stats = logprob_pass(ThreeToOne(), SEQS, pad_id=0, vocab_stats=True)
    mu, sigma = 0.75 * math.log(0.75) + 0.25 * math.log(0.25), math.sqrt(3 / 16) * math.log(3)
    assert mu == pytest.approx(-0.562335, abs=1e-6) and sigma == pytest.approx(0.475714, abs=1e-6)
    a, b, c = stats
    assert a.correct.tolist() == [True, True] and b.correct.tolist() == [False] and len(c.correct) == 0
    assert a.logps.tolist() == pytest.approx([-A, -A], abs=1e-6) and b.logps.tolist() == pytest.approx([-B], abs=1e-6)
    for s in (a, b):
        assert s.mu.tolist() == pytest.approx([mu] * len(s.mu), abs=1e-6)
        assert s.sigma.tolist() == pytest.approx([sigma] * len(s.sigma), abs=1e-5)
    # without `vocab_stats` the same log-probs and argmax checks, and no moments
    plain = logprob_pass(ThreeToOne(), SEQS, pad_id=0)
    for s, t in zip(stats, plain, strict=True):
        assert t.mu is None and t.sigma is None
        assert t.logps.tolist() == pytest.approx(s.logps.tolist(), abs=1e-6) and t.correct.tolist() == s.correct.tolist()


# ---------------------------------------------------------------------------------------------- compacted logits


def test_compact_answers_by_hand():
    # row 0: prompt of 2, answer [5, 6, 7] (predicted from positions 1, 2, 3); row 1: prompt 1, answer [8], padding
    labels = torch.tensor([[X, X, 5, 6, 7], [X, 8, X, X, X]])
    index, compact = passes.compact_answers(labels)
    assert index.tolist() == [[1, 2, 3, 0], [0, 0, 0, 0]]
    assert compact.tolist() == [[X, 5, 6, 7], [X, 8, X, X]]


def _losses(logits, labels, ref_logits):
    from obliviate.methods import losses as L

    return {
        "nll": L.nll_loss(logits, labels), "seq": L.sequence_logps(logits, labels)[0],
        "kl": L.kl_loss(ref_logits, logits, labels), "ce_to": L.cross_entropy_to(ref_logits, logits, labels),
        "ceu": L.ceu_loss(logits, labels, ignore_first=1), "wga": L.wga_loss(logits, labels, 0.5),
        "satimp": L.satimp_loss(logits, labels, 1.0, 1.0), "undial": L.undial_loss(ref_logits, logits, labels, 3.0),
        "margin": L.logit_margin_loss(logits, labels),
    }


def test_compact_logits_give_every_loss_and_gradient_of_the_full_logits(llama, seqs):
    """Every loss reads the compacted (logits, labels) as it reads the full ones: the same values and the same
    gradients, with the head run on the answer positions only (B·(A+1) rows, not B·T)."""
    ids, mask, lab = pad_batch([s.input_ids for s in seqs], 0, labels=[s.labels for s in seqs])
    torch.manual_seed(3)
    ref = LlamaForCausalLM(llama.config).eval()
    with torch.no_grad():
        full_ref = ref(input_ids=ids, attention_mask=mask).logits
        compact_ref, _ = passes.compact_logits(ref, ids, mask, lab)
    full = llama(input_ids=ids, attention_mask=mask).logits
    compact, clab = passes.compact_logits(llama, ids, mask, lab)
    longest = max(sum(t != X for t in s.labels[1:]) for s in seqs)
    assert compact.shape == (len(seqs), longest + 1, 64)
    want, got = _losses(full, lab, full_ref), _losses(compact, clab, compact_ref)
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-6), name
    grads = []
    for logits, labels in ((full, lab), (compact, clab)):
        llama.zero_grad()
        (_losses(logits, labels, full_ref if logits is full else compact_ref)["nll"]).backward(retain_graph=True)
        grads.append(llama.get_input_embeddings().weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)
    llama.zero_grad()


def test_compact_logits_select_from_full_logits_when_the_head_cannot_be_hooked(llama, seqs):
    """A model without a reachable output head (or whose head runs on other shapes) gives the same compacted
    logits, selected from its full logits."""
    ids, mask, lab = pad_batch([s.input_ids for s in seqs], 0, labels=[s.labels for s in seqs])

    class NoHead(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, **kw):
            return self.inner(**kw)

    with torch.no_grad():
        hooked = passes.compact_logits(llama, ids, mask, lab)
        selected = passes.compact_logits(NoHead(llama), ids, mask, lab)
    assert torch.equal(hooked[1], selected[1])
    assert torch.allclose(hooked[0], selected[0], atol=1e-6)


def test_answer_logits_of_a_peft_model_run_its_hooked_head(llama, seqs):
    """A peft model's head cannot be split off (split_head is None): its answer logits come from its own forward
    with the head hooked to the answer positions, and equal the plain model's (LoRA starts at zero)."""
    import copy

    from peft import LoraConfig, get_peft_model

    ids, mask, lab = pad_batch([s.input_ids for s in seqs], 0, labels=[s.labels for s in seqs])
    peft = get_peft_model(copy.deepcopy(llama), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert passes.split_head(peft) is None
    calls = []
    passes.output_head(peft).register_forward_hook(lambda m, a, out: calls.append(tuple(out.shape)))
    with torch.no_grad():
        got, want = passes.answer_logits(peft, ids, mask, lab), passes.answer_logits(llama, ids, mask, lab)
    longest = max(sum(t != X for t in s.labels[1:]) for s in seqs)
    assert calls == [(len(seqs), longest + 1, 64)]  # the head ran on the compacted positions only
    assert torch.equal(got[1], want[1]) and torch.equal(got[2], want[2])
    assert torch.allclose(got[0], want[0], atol=1e-5)
