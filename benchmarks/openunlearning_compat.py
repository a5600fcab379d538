"""Agreement with OpenUnlearning, item for item: `obliviate eval --compat openunlearning` against OpenUnlearning's
own metric code on the same model and data; prints the largest per-item difference of every metric both report,
absolute and scaled (|a − b| / max(1, |b|): absolute up to 1, relative above, for the truth ratios' 10^3-sized
values), and the worst item (target: scaled <= 1e-4).

OpenUnlearning (locuslab/open-unlearning) cannot be installed here (not on PyPI, GitHub unreachable), so its metric
code is transcribed below as the independent oracle: their tokenisation (`preprocess_chat_instance`,
src/data/utils.py), their teacher-forced passes (`evaluate_probability`, `tokenwise_logprobs`,
`tokenwise_vocab_logprobs`, src/evals/metrics/utils.py), their per-item metrics (`exact_memorization`,
`extraction_strength`, `probability_w_options`, `truth_ratio`, src/evals/metrics/memorization.py), their attacks
(`LOSSAttack`, `ZLIBAttack`, `MinKProbAttack`, `MinKPlusPlusAttack`, src/evals/metrics/mia/), `mia_auc`
(src/evals/metrics/mia/utils.py), `get_forget_quality` (src/evals/metrics/utils.py) and `privleak`
(src/evals/metrics/privacy.py), each function below naming the one it follows. The transcriptions keep their code
paths (one forward per metric, their slicing, their `+ 1e-10`s); they differ only in plumbing: one sequence per forward
(no collator, so no padding), records instead of HF datasets (item index = position in the split, as their `index`),
scipy's Mann-Whitney U for sklearn's `roc_auc_score` (the same AUC; sklearn is not installed here). OpenUnlearning
is MIT-licensed (Copyright (c) 2025 CMU Locus Lab); the transcribed code stays under that license.

Not re-derived: ROUGE and model utility (which reads it). Their generations are greedy decodes of the same prompt
ids (both generate from the prompt tokenised alone); measured side by side on tofu-mini, identical on all 657 items.

    python benchmarks/openunlearning_compat.py                     # the tofu-mini target and retain models (built
                                                                   # or reused: `obliviate build tofu-mini`)
    python benchmarks/openunlearning_compat.py --tiny-untrained    # two untrained tiny Llamas (a minute, no build)
    python benchmarks/openunlearning_compat.py --compat none       # the default definitions, to see them differ
"""

from __future__ import annotations

import argparse
import os
import sys
import zlib
from collections.abc import Callable, Sequence
from typing import Any

import _common  # noqa: F401  (offline; the TOFU data beside the checkout)

import numpy as np
import scipy as sc
import torch
from torch import nn

IGNORE_INDEX = -100
PLAIN_TAGS = {"user_start_tag": "Question: ", "user_end_tag": "\n", "asst_start_tag": "Answer: "}  # = PLAIN_TEMPLATE
UTILITY_CORRECT = "answer"  # their ra/wf truth ratio and normalised probability read the answer itself, no paraphrase


# ------------------------------------------------------------------------------------------------ the oracle
# Transcribed from OpenUnlearning (MIT). Each function names its original.


def ou_preprocess_chat_instance(tokenizer, template_config: dict[str, Any], prompt: str, response: str,
                                max_length: int) -> dict[str, torch.Tensor]:
    """src/data/utils.py `preprocess_chat_instance` (no in-context examples, predict_with_generate=False)."""
    if template_config["apply_chat_template"]:
        chat = []
        system_prompt = template_config.get("system_prompt", None)
        if system_prompt:
            chat += [{"role": "system", "content": system_prompt}]
        chat += [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        chat_ids = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=False, return_dict=False)
        prompt_ids = tokenizer.apply_chat_template(chat[:-1], tokenize=True, add_generation_prompt=True,
                                                   return_dict=False)
        if not isinstance(chat_ids, list):
            chat_ids = chat_ids["input_ids"]
        if not isinstance(prompt_ids, list):
            prompt_ids = prompt_ids["input_ids"]
    else:
        wrapped_prompt = (template_config["user_start_tag"] + prompt + template_config["user_end_tag"]
                          + template_config["asst_start_tag"])
        chat_ids = tokenizer(wrapped_prompt + response, add_special_tokens=True, max_length=max_length,
                             truncation=True)["input_ids"]
        prompt_ids = tokenizer(wrapped_prompt, add_special_tokens=True, max_length=max_length,
                               truncation=True)["input_ids"]
    chat_ids = list(chat_ids)
    if chat_ids[-1] != tokenizer.eos_token_id:
        chat_ids += [tokenizer.eos_token_id]
    len_matched = len(prompt_ids)
    labels = [IGNORE_INDEX] * len_matched + chat_ids[len_matched:]
    item = {"input_ids": chat_ids, "labels": labels, "attention_mask": [1] * len(chat_ids)}
    return {k: torch.tensor(v).unsqueeze(0) for k, v in item.items()}  # a batch of one: no collator, no padding


def ou_evaluate_probability(model, batch):
    """src/evals/metrics/utils.py `evaluate_probability`."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.no_grad():
        output = model(**batch)
    logits = output.logits
    labels = batch["labels"]
    shifted_labels = labels[..., 1:].contiguous()
    logits = logits[..., :-1, :].contiguous()
    loss_function = nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="none")
    losses = loss_function(logits.transpose(-1, -2), shifted_labels).sum(dim=-1)
    num_token_gt = (batch["labels"] != IGNORE_INDEX).sum(-1)
    avg_losses = losses / num_token_gt
    normalized_probs = torch.exp(-avg_losses)
    avg_losses = avg_losses.cpu().numpy().tolist()
    normalized_probs = normalized_probs.cpu().numpy().tolist()
    return [{"prob": prob, "avg_loss": avg_loss} for prob, avg_loss in zip(normalized_probs, avg_losses)]


def ou_tokenwise_logprobs(model, batch, grad=False, return_labels=False):
    """src/evals/metrics/utils.py `tokenwise_logprobs` (drops the last labelled token, the EOS)."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.set_grad_enabled(grad):
        output = model(**batch)
    logits = output.logits
    bsz, seq_len, V = logits.shape
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)[:, :-1, :]
    next_tokens = batch["input_ids"][:, 1:].unsqueeze(-1)
    target_log_probs = torch.gather(log_probs, dim=2, index=next_tokens).squeeze(-1)
    log_probs_batch, labels_batch = [], []
    for i in range(bsz):
        labels = batch["labels"][i]
        actual_indices = (labels != IGNORE_INDEX).nonzero(as_tuple=True)[0][:-1]
        if actual_indices.numel() == 0:
            labels_batch.append(torch.tensor([], device=labels.device))
            log_probs_batch.append(torch.tensor([], device=labels.device))
            continue
        start_idx, end_idx = actual_indices[0].item(), actual_indices[-1].item()
        log_probs_batch.append(target_log_probs[i, start_idx - 1:end_idx])
        labels_batch.append(labels[actual_indices])
    return (log_probs_batch, labels_batch) if return_labels else log_probs_batch


def ou_tokenwise_vocab_logprobs(model, batch, grad=False, return_labels=False):
    """src/evals/metrics/utils.py `tokenwise_vocab_logprobs` (drops the last labelled token, the EOS)."""
    batch = {k: v.to(model.device) for k, v in batch.items()}
    with torch.set_grad_enabled(grad):
        output = model(**batch)
    logits = output.logits
    bsz, seq_len, V = logits.shape
    log_probs = torch.nn.functional.log_softmax(logits, dim=-1)[:, :-1, :]
    log_probs_batch, labels_batch = [], []
    for i in range(bsz):
        labels = batch["labels"][i]
        actual_indices = (labels != IGNORE_INDEX).nonzero(as_tuple=True)[0][:-1]
        if len(actual_indices) == 0:
            labels_batch.append(torch.tensor([], device=labels.device))
            log_probs_batch.append(torch.zeros(0, V, device=labels.device))
            continue
        start_idx, end_idx = actual_indices[0].item(), actual_indices[-1].item()
        log_probs_batch.append(log_probs[i, start_idx - 1:end_idx])
        labels_batch.append(labels[actual_indices])
    return (log_probs_batch, labels_batch) if return_labels else log_probs_batch


def ou_exact_memorization(model, batch) -> list[dict[str, float | None]]:
    """src/evals/metrics/memorization.py `exact_memorization` (its inner `_exact_memorization`)."""
    log_probs_batch, labels_batch = ou_tokenwise_vocab_logprobs(model, batch, grad=False, return_labels=True)
    em_batch: list[dict[str, float | None]] = []
    for log_probs, labels in zip(log_probs_batch, labels_batch):
        valid_len = len(labels)
        if valid_len == 0:
            em_batch.append({"score": None})
        else:
            preds = torch.argmax(log_probs, dim=-1)
            em_score = (preds == labels).sum() / valid_len
            em_batch.append({"score": em_score.item()})
    return em_batch


def ou_extraction_strength(model, batch) -> list[dict[str, float]]:
    """src/evals/metrics/memorization.py `extraction_strength` (its inner `_extraction_strength`): the loop leaves
    k = valid_len − 1 when no suffix matches, so no match scores 1/n."""
    log_probs_batch, labels_batch = ou_tokenwise_vocab_logprobs(model, batch, grad=False, return_labels=True)
    es_batch = []
    for log_probs, labels in zip(log_probs_batch, labels_batch):
        valid_len = len(labels)
        preds = torch.argmax(log_probs, dim=-1)
        k = 0  # (unbound in theirs when valid_len == 0, where it is not read)
        for k in range(valid_len):
            suff_preds = preds[k:]
            suff_labels = labels[k:]
            if torch.equal(suff_preds, suff_labels):
                break
        if valid_len == 0:
            es_batch.append({"score": 0})
        else:
            es_batch.append({"score": 1 - (k / valid_len)})
    return es_batch


def ou_min_k_score(sample_stats: torch.Tensor, k: float) -> float:
    """src/evals/metrics/mia/min_k.py `MinKProbAttack.compute_score`."""
    lp = sample_stats.cpu().numpy()
    if lp.size == 0:
        return 0
    num_k = max(1, int(len(lp) * k))
    sorted_vals = np.sort(lp)
    return -np.mean(sorted_vals[:num_k])


def ou_min_k_plus_plus_score(all_probs: torch.Tensor, target_prob: torch.Tensor, k: float) -> float:
    """src/evals/metrics/mia/min_k_plus_plus.py `MinKPlusPlusAttack.compute_score`."""
    if len(target_prob) == 0:
        return 0
    mu = (torch.exp(all_probs) * all_probs).sum(-1)
    sigma = (torch.exp(all_probs) * torch.square(all_probs)).sum(-1) - torch.square(mu)
    sigma = torch.clamp(sigma, min=1e-6)
    scores = (target_prob.float().cpu().numpy() - mu.float().cpu().numpy()) / torch.sqrt(sigma).cpu().numpy()
    num_k = max(1, int(len(scores) * k))
    return -np.mean(sorted(scores)[:num_k])


def ou_extract_target_texts(tokenizer, batch) -> list[str]:
    """src/evals/metrics/utils.py `extract_target_texts_from_processed_data` (the ZLib attack's texts)."""
    labels = [elem[elem != -100] for elem in batch["labels"]]
    return [tokenizer.decode(elem.tolist(), skip_special_tokens=True) for elem in labels]


def ou_zlib_score(loss: float, text: str) -> float:
    """src/evals/metrics/mia/zlib.py `ZLIBAttack.compute_score`."""
    return loss / len(zlib.compress(text.encode("utf-8")))


def ou_aggregate_to_1D(x: np.ndarray) -> np.ndarray:
    """src/evals/metrics/utils.py `aggregate_to_1D`."""
    return np.mean(x, axis=tuple(range(1, x.ndim)))


def ou_truth_ratio(correct_avg_losses: Sequence[float], wrong_avg_losses: Sequence[Sequence[float]]) -> np.ndarray:
    """src/evals/metrics/memorization.py `truth_ratio`: the per-item values (`value_by_index`)."""
    correct = ou_aggregate_to_1D(np.array(correct_avg_losses))
    wrong = ou_aggregate_to_1D(np.array(wrong_avg_losses))
    correct_prob = np.exp(-correct)
    wrong_prob = np.exp(-wrong)
    return wrong_prob / (correct_prob + 1e-10)


def ou_truth_ratio_agg(truth_ratios: np.ndarray, aggregator: str) -> float:
    """src/evals/metrics/memorization.py `truth_ratio`: `closer_to_1_better` / `true_better`."""
    if aggregator == "closer_to_1_better":
        return float(np.mean(np.minimum(truth_ratios, 1 / (truth_ratios + 1e-10))))
    return float(np.mean(np.maximum(0, 1 - truth_ratios)))


def ou_probability_w_options(correct: Sequence[float], all_wrong: Sequence[Sequence[float]]) -> np.ndarray:
    """src/evals/metrics/memorization.py `probability_w_options`."""
    correct_a = np.array(correct)
    all_wrong_a = np.array(all_wrong)
    wrong = np.sum(all_wrong_a, axis=tuple(range(1, all_wrong_a.ndim)))
    return correct_a / (correct_a + wrong + 1e-10)


def ou_mia_auc(forget_scores: Sequence[float], holdout_scores: Sequence[float]) -> float:
    """src/evals/metrics/mia/utils.py `mia_auc`: roc_auc_score(labels = 0 forget / 1 holdout, scores), here as the
    Mann-Whitney U of the holdout scores over the forget scores / (n1·n0), which is that AUC."""
    u = sc.stats.mannwhitneyu(holdout_scores, forget_scores, alternative="two-sided").statistic
    return float(u / (len(forget_scores) * len(holdout_scores)))


def ou_forget_quality(model_tr: np.ndarray, reference_tr: np.ndarray) -> float:
    """src/evals/metrics/utils.py `get_forget_quality`."""
    return float(sc.stats.ks_2samp(1 / (model_tr + 1e-10), 1 / (reference_tr + 1e-10)).pvalue)


def ou_privleak(score: float, ref: float) -> float:
    """src/evals/metrics/privacy.py `privleak`."""
    score, ref = 1 - score, 1 - ref
    return (score - ref) / (ref + 1e-10) * 100


# ------------------------------------------------------------------------------------------------ the oracle's run


def oracle(model, tokenizer, scen, *, chat: bool, max_length: int = 512, k: float = 0.4) -> dict[str, Any]:
    """OpenUnlearning's per-item values of one model on the scenario's splits, item i = the split's i-th record:
    `prob` and `avg_loss` of each answer; `truth_ratio` where there are perturbed answers (and `norm_prob` on the
    utility sets); on forget and holdout EM, ES and the four attack scores in their orientation (a loss); the four
    AUCs (`auc:<attack>`)."""
    template = {"apply_chat_template": chat, **PLAIN_TAGS}
    model.eval()

    def batch(q: str, a: str) -> dict[str, torch.Tensor]:
        return ou_preprocess_chat_instance(tokenizer, template, q, a, max_length)

    out: dict[str, Any] = {}
    for name, split in scen.eval_splits.items():
        rows: list[dict[str, Any]] = []
        for r in split.records:
            b = batch(r.question, r.answer)
            row: dict[str, Any] = dict(ou_evaluate_probability(model, b)[0])
            if name in ("forget", "holdout"):
                row["exact_memorization"] = ou_exact_memorization(model, b)[0]["score"]
                row["extraction_strength"] = ou_extraction_strength(model, b)[0]["score"]
                row["mia_loss"] = row["avg_loss"]
                row["mia_zlib"] = ou_zlib_score(row["avg_loss"], ou_extract_target_texts(tokenizer, b)[0])
                row["mia_min_k"] = float(ou_min_k_score(ou_tokenwise_logprobs(model, b)[0], k))
                row["mia_min_k_plus_plus"] = float(ou_min_k_plus_plus_score(
                    ou_tokenwise_vocab_logprobs(model, b)[0], ou_tokenwise_logprobs(model, b)[0], k))
            if r.perturbed_answers and name != "holdout":  # their truth ratios: forget, retain, the utility sets
                utility = name not in ("forget", "retain")
                correct = r.answer if utility else (r.paraphrased_answer or r.answer)
                row["correct"] = ou_evaluate_probability(model, batch(r.question, correct))[0]
                row["wrong"] = [ou_evaluate_probability(model, batch(r.question, p))[0] for p in r.perturbed_answers]
            rows.append(row)
        if rows and all("wrong" in row for row in rows):
            trs = ou_truth_ratio([row["correct"]["avg_loss"] for row in rows],
                                 [[w["avg_loss"] for w in row["wrong"]] for row in rows])
            norm = ou_probability_w_options([row["correct"]["prob"] for row in rows],
                                            [[w["prob"] for w in row["wrong"]] for row in rows])
            for row, tr, p in zip(rows, trs, norm, strict=True):
                row["truth_ratio"] = float(tr)
                if name not in ("forget", "retain"):  # their normalised probability: the utility sets only
                    row["norm_prob"] = float(p)
        out[name] = rows
    if "holdout" in out and out["holdout"]:
        for attack in ("mia_loss", "mia_zlib", "mia_min_k", "mia_min_k_plus_plus"):
            out[f"auc:{attack}"] = ou_mia_auc([r[attack] for r in out["forget"]], [r[attack] for r in out["holdout"]])
    return out


# ------------------------------------------------------------------------------------------------ the comparison

# (what is compared, the splits, obliviate's per-item field, the oracle's field, obliviate's value -> theirs)
NEG: Callable[[float], float] = lambda x: -x  # noqa: E731  (our attack scores are theirs negated: higher = member)
PER_ITEM: tuple[tuple[str, tuple[str, ...] | None, str, str, Callable[[float], float]], ...] = (
    ("Q_A_Prob", None, "prob", "prob", float),
    ("avg_loss", None, "mean_nll", "avg_loss", float),
    ("Truth_Ratio", None, "truth_ratio", "truth_ratio", float),
    ("Q_A_Prob_normalised", None, "norm_prob", "norm_prob", float),
    ("exact_memorization", ("forget",), "exact_memorization", "exact_memorization", float),
    ("extraction_strength", ("forget",), "extraction_strength", "extraction_strength", float),
    ("mia_loss", ("forget", "holdout"), "mia_loss", "mia_loss", NEG),
    ("mia_zlib", ("forget", "holdout"), "mia_zlib", "mia_zlib", NEG),
    ("mia_min_k", ("forget", "holdout"), "mia_mink", "mia_min_k", NEG),
    ("mia_min_k_plus_plus", ("forget", "holdout"), "mia_minkpp", "mia_min_k_plus_plus", NEG),
)
AUCS = (("mia_auc_loss", "mia_loss"), ("mia_auc_zlib", "mia_zlib"), ("mia_auc_mink", "mia_min_k"),
        ("mia_auc_minkpp", "mia_min_k_plus_plus"))


def obliviate_eval(model, reference, scen, compat: str):
    """obliviate's evaluation of the teacher-forced metrics (no generation, no EL_n) with the retain model as the
    reference; the pass cache off, so nothing computed under another setting is read back."""
    from obliviate import api
    from obliviate.eval.specs import metric_specs

    names = [s.name for s in metric_specs(scen).values() if not s.opt_in and s.needs <= {"mia", "reference"}]
    return api.evaluate(model, scen, reference=reference,
                        config={"compat": compat, "metrics": names, "cache": False})


Diff = tuple[float, float, int, tuple[float, float]]  # (max |a − b|, max scaled difference, items, worst (a, b))


def _diff(pairs: Sequence[tuple[float, float]]) -> Diff:
    """The largest absolute and scaled difference over (obliviate, OpenUnlearning) pairs: the scaled one is
    |a − b| / max(1, |b|), absolute for values up to 1 (probabilities, AUCs) and relative above (truth ratios reach
    10^3 and more, where float32's own resolution exceeds an absolute 1e-4)."""
    scaled = [abs(a - b) / max(1.0, abs(b)) for a, b in pairs]
    worst = int(np.argmax(scaled))
    return max(abs(a - b) for a, b in pairs), scaled[worst], len(pairs), pairs[worst]


def compare(result, theirs: dict[str, Any], theirs_ref: dict[str, Any]) -> dict[str, Diff]:
    """metric -> its differences between obliviate and OpenUnlearning over the items (see `_diff`). `result` is
    obliviate's EvalResult of the model (with the reference's summary metrics), `theirs` and `theirs_ref` the
    oracle's values of the model and of the reference."""
    diffs: dict[str, Diff] = {}
    for label, only, ours_key, their_key, to_theirs in PER_ITEM:
        for split, rows in theirs.items():
            if split.startswith("auc:") or (only is not None and split not in only):
                continue
            items = list(result.items.get(split, {}).values())
            pairs = [(to_theirs(v[ours_key]), row[their_key]) for v, row in zip(items, rows, strict=True)
                     if ours_key in v and their_key in row and row[their_key] is not None and not np.isnan(v[ours_key])]
            if pairs:
                missing = sum(1 for row in rows if their_key in row and row[their_key] is not None) - len(pairs)
                if missing:
                    raise RuntimeError(f"{split} {label}: obliviate has no value for {missing} items that "
                                       f"OpenUnlearning scores")
                diffs[f"{split}/{label}"] = _diff(pairs)
    s = result.summary
    for ours_name, attack in AUCS:
        if f"auc:{attack}" in theirs and s.get(ours_name) is not None:
            diffs[f"auc/{attack}"] = _diff([(s[ours_name], theirs[f"auc:{attack}"])])
    if s.get("forget_quality") is not None:
        fq = ou_forget_quality(np.array([r["truth_ratio"] for r in theirs["forget"]]),
                               np.array([r["truth_ratio"] for r in theirs_ref["forget"]]))
        diffs["forget_quality"] = _diff([(s["forget_quality"], fq)])
    if s.get("privleak") is not None:
        pl = ou_privleak(theirs["auc:mia_min_k"], theirs_ref["auc:mia_min_k"])
        diffs["privleak"] = _diff([(s["privleak"], pl)])
    for split in ("forget", "retain"):
        rows = theirs.get(split) or []
        if rows and all("truth_ratio" in r for r in rows) and s.get(f"{split}_truth_ratio") is not None:
            agg = "closer_to_1_better" if split == "forget" else "true_better"
            tr = ou_truth_ratio_agg(np.array([r["truth_ratio"] for r in rows]), agg)
            diffs[f"{split}_truth_ratio (agg)"] = _diff([(s[f"{split}_truth_ratio"], tr)])
    return diffs


def check(target, retain, scen, compat: str = "openunlearning") -> dict[str, Diff]:
    """Evaluate (model, tokenizer) pairs `target` (reference: `retain`) with obliviate and with the oracle; the
    largest per-item difference of each metric."""
    from obliviate.data.templates import Formatter

    result = obliviate_eval(target, retain, scen, compat)
    chat = Formatter(target[1], result.meta["config"]["template"]).kind == "chat"
    theirs = oracle(target[0], target[1], scen, chat=chat, max_length=result.meta["config"]["max_length"],
                    k=result.meta["config"]["mink_k"])
    theirs_ref = oracle(retain[0], retain[1], scen, chat=chat, max_length=result.meta["config"]["max_length"],
                        k=result.meta["config"]["mink_k"])
    return compare(result, theirs, theirs_ref)


def tiny_untrained(scen, seeds: tuple[int, int] = (0, 1)):
    """Two untrained tiny Llamas (the given seeds) over one tokenizer trained on the scenario's texts: a check that
    needs no build (a minute on tofu-mini, seconds on a small scenario). Their embeddings are drawn with std 0.3
    instead of 0.02, so that the next-token distributions are peaked somewhat as a trained model's are (a
    near-uniform one has σ ≈ 0 in Min-K%++, where float32 noise in σ² = E[log²p] − E[log p]² decides the score, in
    either implementation). Their argmax is hardly ever the answer's token, so extraction strength mostly sits at
    OpenUnlearning's 1/n floor."""
    from obliviate.models.tiny import TinyModelSpec, build_model, train_tokenizer

    texts = [f"Question: {r.question}\nAnswer: {r.answer}" for s in (scen.target_train, *scen.eval_splits.values())
             for r in s.records]
    tok = train_tokenizer(texts, vocab_size=1024)
    spec = TinyModelSpec(vocab_size=1024, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    models = []
    for seed in seeds:
        m = build_model(spec, tok, seed=seed).eval()
        with torch.no_grad():
            m.get_input_embeddings().weight.normal_(0.0, 0.3, generator=torch.Generator().manual_seed(seed))
        models.append((m, tok))
    return tuple(models)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--tiny-untrained", action="store_true", help="two untrained tiny models instead of the build")
    ap.add_argument("--compat", default="openunlearning", choices=("openunlearning", "none"))
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--tolerance", type=float, default=1e-4)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from obliviate import api
    from obliviate.models.loading import load_model_and_tokenizer

    scen = api.load_scenario(args.scenario)
    if args.tiny_untrained:
        target, retain = tiny_untrained(scen)
        what = "two untrained tiny Llamas"
    else:
        built = api.build(args.scenario)
        target, retain = load_model_and_tokenizer(built.target), load_model_and_tokenizer(built.retain)
        what = f"the {args.scenario} target (reference: its retain model)"
    diffs = check(target, retain, scen, args.compat)
    print(f"obliviate eval --compat {args.compat} vs OpenUnlearning's metric code, {what}:")
    print(f"  {'metric':<40}{'items':>6}{'max |diff|':>12}{'max scaled':>12}   worst item: obliviate / OpenUnlearning")
    worst = 0.0
    for name, (d, scaled, n, (a, b)) in diffs.items():
        worst = max(worst, scaled)
        print(f"  {name:<40}{n:>6}{d:>12.3e}{scaled:>12.3e}   {a:.7g} / {b:.7g}"
              f"{'' if scaled <= args.tolerance else '  > tolerance'}")
    ok = worst <= args.tolerance
    print(f"largest scaled difference |a − b| / max(1, |b|): {worst:.3e}: "
          f"{'agrees' if ok else 'DISAGREES'} within {args.tolerance:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
