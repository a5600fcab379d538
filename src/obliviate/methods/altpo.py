"""AltPO — alternate preference optimisation (Mekala et al., COLING 2025, "Alternate Preference Optimization for
Unlearning Factual Knowledge in Large Language Models", arXiv 2409.13474; official code
github.com/molereddy/Alternate-Preference-Optimization).

The model itself writes plausible ALTERNATIVE answers to each forget question before training (offline: no other
model, no network); DPO then prefers each alternative over the true answer, with a retain NLL term. The
alternatives are cached in the run's work directory (a resumed run reuses them) and saved beside the model."""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Literal

import torch
from pydantic import Field

from obliviate.eval.passes import generate_pass, sample_pass
from obliviate.methods.base import TRAIN_SPACE, GradientMethod, LossOutput, Space, TrainConfig, register_method
from obliviate.methods.common import num, retain_term, seq_denom, seq_logps
from obliviate.methods.losses import altpo_loss
from obliviate.utils.tensors import model_device, pad_batch

log = logging.getLogger(__name__)

# The paper's generation instruction (official code prompts.py, INST_QAS_INSTR, used for Llama-2-chat), asked as a
# user turn whose answer starts with "Alternate Answer:", as the official template's assistant turn does.
INSTRUCTION = ("Question: {question}\nAnswer: {answer}\nNow write another version of the answer with some alternate "
               "plausible facts that change answer details.")
ANSWER_PREFIX = "Alternate Answer:"
CACHE_FILE = "altpo_alternatives.json"


class AltPOConfig(TrainConfig):
    """`−(2/β)·E_(q,a)∈D_f (1/K) Σ_k log σ(β·[log π_θ(ã_k|q)/π₀(ã_k|q) − log π_θ(a|q)/π₀(a|q)]) + α·NLL(D_r)`:
    DPO with each of K self-generated alternatives ã_k preferred over the true answer a (sequence-sum
    log-probs; the 2/β scale is OpenUnlearning's DPO trainer, which its AltPO recipe uses).

    - `beta` β (0.1) [official code `dpo` loss, `beta: # 0.1` in config/unlearn_llama2.yaml; OpenUnlearning's
      AltPO README searches 0.05–0.5].
    - `retain_weight` α (1) on the retain NLL [official config `retain_wt: 1`, `retain_type: NLL`].
    - `n_alternatives` K (5): alternatives per forget question [the official repository's released alternatives,
      paper_models/*/alt5_seed_*.json, hold five per question, each a separate DPO pair; here the K pairs of an
      item share its optimiser step, their losses averaged].
    - `lr` (5e-5), `epochs` (10), weight decay 0.01 [official config/unlearn_llama2.yaml, Llama-2-7B; its batch is
      5 × 7 accumulation = 35, ours 32].
    - `alternatives`: how the model writes them.
      instruct [paper]: the paper's instruction ("Now write another version of the answer with some alternate
      plausible facts that change answer details.") given the question and answer, `n_alternatives` samples at
      `temperature` (1.0) and `top_p` (0.95) [ours: the official sampling settings are not restated here];
      divert [ours, for models that follow no instructions, e.g. the tiny QA models]: teacher-force the true
      answer, find the answer position where the model's strongest OTHER token is most probable (where it hesitates
      between facts; word starts only, where the tokenizer marks them), force its most probable other tokens there,
      one per alternative, and let the model continue greedily — "X was born in Tollin Bay." becomes "X was born
      in Dunmarrow."; of 2K such continuations, those that restore the replaced true text are used last;
      auto (default): instruct for chat models, divert otherwise. An instruct sample that is empty or repeats the
      true answer is replaced by a divert alternative (run_info records how many).
    - `max_new_tokens` (None = the answer's length + 32): the length limit of a generated alternative."""

    lr: float = Field(5e-5, gt=0)
    beta: float = Field(0.1, gt=0)
    retain_weight: float = Field(1.0, ge=0)
    n_alternatives: int = Field(5, ge=1)
    alternatives: Literal["auto", "instruct", "divert"] = "auto"
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)


@register_method("altpo", doc="AltPO: DPO preferring self-generated alternative answers over the true one + retain.")
class AltPO(GradientMethod):
    Config = AltPOConfig
    search_space = {**TRAIN_SPACE, "beta": Space.log(0.02, 1.0), "retain_weight": Space.log(0.1, 10.0)}
    reference = "logps"
    ref_views = ("forget",)  # the alternatives' reference log-probs are computed in setup(), once they exist

    def __init__(self, cfg: AltPOConfig) -> None:
        super().__init__(cfg)
        self.alt_views = tuple(f"alt{k}" for k in range(cfg.n_alternatives))
        self.views = ("forget", *self.alt_views, "retain")
        self.alternatives: list[list[str]] = []
        self.mode = ""
        self.fallbacks = 0
        self._ref_alt: torch.Tensor | None = None  # (K, n_forget) sequence-sum log-probs under θ₀

    def aligned_views(self, forget: list, retain: list) -> dict[str, list]:
        """Placeholders aligned with the forget set: the views are built before the model is handed to the method,
        so setup() replaces their encodings with the generated alternatives."""
        return {v: list(forget) for v in self.alt_views}

    def setup(self, model, ref, views) -> None:
        cfg: AltPOConfig = self.cfg  # type: ignore[assignment]
        ctx = self.ctx
        assert ctx is not None
        fmt, forget = ctx.formatter, ctx.forget
        self.mode = cfg.alternatives if cfg.alternatives != "auto" else ("instruct" if fmt.kind == "chat" else "divert")
        cached = self._load_cache(forget)
        if cached is None:
            dev = model_device(model)
            devices = [dev.index or 0] if dev.type == "cuda" else []
            with torch.random.fork_rng(devices=devices):  # sampling must not shift the training run's random stream
                torch.manual_seed(cfg.seed)
                self.alternatives = self._generate(model, fmt, forget)
            self._save_cache(forget)
        else:
            self.alternatives = cached
        for k, name in enumerate(self.alt_views):
            views.encoded[name] = fmt.encode_many([(r.id, r.question, alts[k])
                                                   for r, alts in zip(forget, self.alternatives, strict=True)])
        self._ref_alt = torch.stack([_sequence_logps_of(model, views, name, max(1, cfg.batch_size // cfg.grad_accum))
                                     for name in self.alt_views])

    # ----------------------------------------------------------------------------------------- generation

    def _generate(self, model, fmt, forget) -> list[list[str]]:
        cfg: AltPOConfig = self.cfg  # type: ignore[assignment]
        k = cfg.n_alternatives
        divert = divert_alternatives(model, fmt, forget, k, cfg.max_new_tokens)
        if self.mode == "divert":
            return divert
        sampled = instruct_alternatives(model, fmt, forget, k, cfg.temperature, cfg.top_p, cfg.max_new_tokens)
        out = []
        for r, samples, backup in zip(forget, sampled, divert, strict=True):
            good = [s for s in dict.fromkeys(samples) if s and s != r.answer.strip()]
            self.fallbacks += k - min(k, len(good))
            out.append((good + backup)[:k])
        if self.fallbacks:
            log.warning("altpo: %d of %d sampled alternatives were empty or repeated the answer; used divert ones",
                        self.fallbacks, k * len(forget))
        return out

    def _cache_path(self):
        wd = self.ctx.work_dir if self.ctx else None
        return None if wd is None else os.path.join(str(wd), CACHE_FILE)

    def _load_cache(self, forget) -> list[list[str]] | None:
        path = self._cache_path()
        if path is None or not os.path.isfile(path):
            return None
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        k = self.cfg.n_alternatives  # type: ignore[attr-defined]
        same = (data.get("ids") == [r.id for r in forget] and data.get("mode") == self.mode
                and all(len(a) == k for a in data.get("alternatives", [])))
        if not same:
            return None
        self.fallbacks = int(data.get("fallbacks", 0))
        return data["alternatives"]

    def _save_cache(self, forget) -> None:
        path = self._cache_path()
        if path is None:
            return
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"mode": self.mode, "fallbacks": self.fallbacks, "ids": [r.id for r in forget],
                       "alternatives": self.alternatives}, fh, ensure_ascii=False)
        os.replace(tmp, path)

    # ----------------------------------------------------------------------------------------- loss

    def loss(self, batch, model, ref) -> LossOutput:
        cfg: AltPOConfig = self.cfg  # type: ignore[assignment]
        assert self._ref_alt is not None, "setup() generates the alternatives first"
        f = batch["forget"]
        rejected, _ = seq_logps(model, f)
        chosen = torch.stack([seq_logps(model, batch[v])[0] for v in self.alt_views])  # (K, B)
        dev = chosen.device
        pref = altpo_loss(chosen, rejected, self._ref_alt[:, f["index"].cpu()].to(dev),
                          ref.logps("forget", f["index"]).to(dev), cfg.beta, seq_denom(f))
        keep, terms = retain_term("gd", model, ref, batch["retain"])
        return LossOutput(pref + cfg.retain_weight * keep, {"altpo": num(pref), **terms})

    def run_info(self) -> dict[str, Any]:
        return {"altpo": {"alternatives": self.mode, "fallbacks": self.fallbacks}} if self.mode else {}

    def extras(self) -> dict[str, Any]:
        """Saved next to the model: every forget item's generated alternatives."""
        ids = [r.id for r in self.ctx.forget] if self.ctx else []
        return {"altpo": {"alternatives": self.mode, "fallbacks": self.fallbacks,
                          "by_item": dict(zip(ids, self.alternatives, strict=False))}}


# ---------------------------------------------------------------------------------------------- generation


def _sequence_logps_of(model, views, name: str, batch_size: int) -> torch.Tensor:
    """Sequence-sum answer log-probs of every item of one view under `model` (n,); its train/eval mode kept."""
    from obliviate.methods.engine import precompute_logps

    was = model.training
    try:
        return precompute_logps(model, views, [name], batch_size, model_device(model))[name]
    finally:
        model.train(was)


@torch.no_grad()
def divert_alternatives(model, fmt, records, k: int, max_new_tokens: int | None = None,
                        batch_size: int = 16) -> list[list[str]]:
    """K alternatives per record written by the model itself: at the answer position where its most probable
    token other than the true one (and other than EOS or a special token) is most probable, force each of its K
    most probable such tokens and continue greedily from there (see AltPOConfig.alternatives). Where the tokenizer
    marks word starts, only word-initial positions and tokens are considered, so a whole word is replaced; of the
    2K most probable such tokens, continuations that restore the replaced true text are used last."""
    tok = fmt.tok
    banned = torch.tensor(sorted({fmt.eos_id, *(getattr(tok, "all_special_ids", None) or [])}), dtype=torch.long)
    dev = model_device(model)
    was = model.training
    model.eval()
    encs = fmt.encode_qa(list(records))
    prompts: list[list[int]] = []
    heads: list[list[int]] = []  # the answer prefix + forced token of each continuation
    limits: list[int] = []
    spans: list[tuple[int, int, str, str]] = []  # per record: first candidate, count, replaced true tail, fallback
    starts: torch.Tensor | None = None  # (V,) tokens that begin a word
    for s in range(0, len(encs), batch_size):
        chunk = encs[s:s + batch_size]
        ids, mask, _ = pad_batch([e.input_ids for e in chunk], tok.pad_token_id)
        logits = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # (B, T, V)
        for row, e in enumerate(chunk):
            answer = e.input_ids[e.prompt_len:]
            n = len(answer) - (1 if answer and answer[-1] == fmt.eos_id else 0)  # never divert at the EOS
            if n <= 0:  # nothing to replace: the "alternative" is the answer itself (a zero-gradient DPO pair)
                spans.append((len(prompts), 0, "", tok.decode(answer, skip_special_tokens=True).strip()))
                continue
            # (n, V): position prompt_len − 1 + j predicts answer[j]
            cand = torch.log_softmax(logits[row, e.prompt_len - 1: e.prompt_len - 1 + n].float(), -1).cpu()
            if starts is None:
                starts = _word_starts(tok, cand.shape[-1])
            cand[:, banned[banned < cand.shape[-1]]] = float("-inf")
            cand[torch.arange(n), torch.tensor(answer[:n])] = float("-inf")
            at_word = starts[torch.tensor(answer[:n])]
            if at_word.any() and starts.sum() > 2 * k:  # swap whole words, not pieces ("Toll|in" -> "Toll|ering")
                cand[~at_word] = float("-inf")
                cand[:, ~starts] = float("-inf")
            j = int(cand.max(-1).values.argmax())
            vals, toks = cand[j].topk(min(2 * k, cand.shape[-1]))
            toks = toks[torch.isfinite(vals)].tolist() or toks[:1].tolist()
            tail = tok.decode(answer[j:n], skip_special_tokens=True).strip()
            spans.append((len(prompts), len(toks), tail, ""))
            for v in toks:
                head = answer[:j] + [v]
                prompts.append(e.input_ids[:e.prompt_len] + head)
                heads.append(head)
                limits.append(max_new_tokens or (len(answer) - j + 32))
    conts = generate_pass(model, prompts, tok.pad_token_id, fmt.eos_id, limits, batch_size=batch_size * k) \
        if prompts else []
    model.train(was)
    texts = [tok.decode(h + c, skip_special_tokens=True).strip() for h, c in zip(heads, conts, strict=True)]
    out = []
    for first, count, tail, fallback in spans:
        # up to 2K candidates in the model's order; those whose continuation restores the replaced true text
        # ("born in in Tollin Bay.") go last, and the first K are kept (repeating when fewer exist)
        cands = texts[first:first + count] or [fallback]
        ranked = [c for c in cands if not (tail and tail in c)] + [c for c in cands if tail and tail in c]
        out.append([ranked[i % len(ranked)] for i in range(k)])
    return out


def _word_starts(tok, vocab: int) -> torch.Tensor:
    """(V,) bool: tokens that begin a word (byte-level BPE "Ġ…", SentencePiece "▁…", or a leading space)."""
    pieces = tok.convert_ids_to_tokens(list(range(min(vocab, len(tok)))))
    out = torch.zeros(vocab, dtype=torch.bool)
    for i, p in enumerate(pieces):
        out[i] = bool(p) and (p[0] in "Ġ▁ ")
    return out


@torch.no_grad()
def instruct_alternatives(model, fmt, records, k: int, temperature: float, top_p: float,
                          max_new_tokens: int | None = None, batch_size: int = 32) -> list[list[str]]:
    """K sampled answers per record to the paper's instruction (question, true answer, "write another version
    ... with alternate plausible facts"), with the answer prefix "Alternate Answer:" stripped."""
    tok = fmt.tok
    prefix = list(tok(ANSWER_PREFIX, add_special_tokens=False)["input_ids"])
    prompts = [fmt.prompt_ids(INSTRUCTION.format(question=r.question, answer=r.answer)) + prefix for r in records]
    limit = max_new_tokens or (max(len(fmt.answer_ids(r.answer)) for r in records) + 32)
    was = model.training
    outs = sample_pass(model, prompts, tok.pad_token_id, fmt.eos_id, limit, k, temperature=temperature, top_p=top_p,
                       batch_size=batch_size)
    model.train(was)
    return [[_clean(tok.decode(t, skip_special_tokens=True)) for t in o] for o in outs]


def _clean(text: str) -> str:
    text = text.strip()
    if text.lower().startswith(ANSWER_PREFIX.lower()):
        text = text[len(ANSWER_PREFIX):]
    return text.strip()
