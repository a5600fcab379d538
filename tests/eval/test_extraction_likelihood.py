"""EL_n's shortcuts change its cost, never its values: the continuations the runner returns (reusing a prefix's
continuation where the model's next token is right, and decoding the other prefixes from one shared prefill per
answer) equal the straightforward computation, every prefix decoded on its own, on a model that does not know the
answers (every prefix decoded) and on one that memorised some (most prefixes reused)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from obliviate.eval import metrics as M
from obliviate.eval import suite

N = 10


@pytest.fixture(scope="module")
def memorised(scenario, tiny_models):
    """The untrained seed-0 model, fine-tuned until it reproduces three forget answers (the rest it does not know)."""
    from obliviate.data.templates import Formatter
    from obliviate.utils.tensors import pad_batch

    model, _, tok = tiny_models
    model = copy.deepcopy(model).train()
    enc = Formatter(tok, "auto").encode_qa(list(scenario.forget.records[:3]))
    ids, mask, labels = pad_batch([e.input_ids for e in enc], tok.pad_token_id, labels=[e.labels for e in enc])
    torch.manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.0)
    for _ in range(150):
        logits = model(input_ids=ids, attention_mask=mask).logits
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                               ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), tok


def _decoded(runner, split, **kw):
    """The continuations of `split` and how many prompts were actually decoded."""
    seen = []
    real = runner.generate_ids

    def spy(prompts, *a, **k):
        seen.append(len(prompts))
        return real(prompts, *a, **k)

    runner.generate_ids = spy
    return runner.el_continuations(split, N, **kw), sum(seen)


@pytest.mark.parametrize("which", ["untrained", "memorised"])
def test_el_equals_the_straightforward_computation(which, scenario, tiny_models, memorised):
    """Reuse + shared prefill return exactly the straightforward continuations; settling (as the evaluation runs
    it) cuts some of them short, never changing EL_n: each settled continuation is a prefix of the full one."""
    model, tok = (tiny_models[0], tiny_models[2]) if which == "untrained" else memorised
    cfg = suite.EvalConfig(cache=False)
    split = scenario.forget
    plain, n_plain = _decoded(suite.make_runner(model, tok, cfg, "plain"), split, reuse=False, share_prefill=False)
    fast_runner = suite.make_runner(model, tok, cfg, "fast")
    fast, n_fast = _decoded(fast_runner, split)
    settled, _ = _decoded(fast_runner, split, settle=True)
    assert fast == plain
    answers = fast_runner.answer_ids(split)

    def el(conts):
        return [M.extraction_likelihood(c, a, N) for c, a in zip(conts, answers, strict=True)]

    assert el(fast) == el(plain) == el(settled)
    pairs = [(s, f) for item_s, item_f in zip(settled, plain, strict=True) for s, f in zip(item_s, item_f, strict=True)]
    assert all(f[:len(s)] == s for s, f in pairs)
    assert n_plain == sum(max(0, len(a) - N) for a in answers)  # one decode per prefix
    if which == "memorised":  # the reuse shortcut is exercised: the memorised answers' prefixes are not decoded
        assert max(el(fast)[:3]) > 0.5 and n_fast < n_plain - 10
    else:  # nearly every prefix decoded, and settling cut some
        assert n_fast > 0.9 * n_plain and sum(len(s) < len(f) for s, f in pairs) > 10
