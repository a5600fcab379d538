"""UniErase — an unlearning token plus unlearning edits (Yu et al., arXiv 2505.15674; METHODS.md §3).

Stage I teaches a new special token [UNL] = `<unlearn_0>` to mean "refuse": only its embedding row (and its
output row, when untied) trains, so that `question ⊕ [UNL]` continues with a refusal ⊕ [UNL] ⊕ EOS. A robustness
stage then trains it on with Gaussian noise on each edit layer's down-projection, so it survives the edits.
Stage II edits the model (AlphaEdit, `obliviate.edit`) so that each forget question's next token is [UNL]: the
model answers the forget questions with [UNL] + refusal, and the null-space constraint keeps every other input's
outputs unchanged — the general text's and, [ours], the token's own continuation after [UNL]. Generation decodes
with skip_special_tokens, so the answer reads as the refusal."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from obliviate.config import Config
from obliviate.data.records import QA
from obliviate.data.refusals import attach_subjects, is_refusal, subject_of
from obliviate.data.templates import IGNORE_INDEX, Formatter
from obliviate.edit import EditConfig, EditPrompt, EditRequest, Editor, key_second_moments, locate
from obliviate.edit.anatomy import decoder_layers, down_proj
from obliviate.errors import ConfigError, DataError
from obliviate.eval.passes import answer_nll, generate_pass
from obliviate.methods.base import ApplyContext, ProceduralMethod, ProgressEvent, register_method
from obliviate.methods.data import idk_answer
from obliviate.models.loading import fingerprint
from obliviate.utils.tensors import model_device, pad_batch

log = logging.getLogger(__name__)

# [ours] Fixed context prefixes, written inside the template before the question (MEMIT samples ten-token
# continuations from the model instead; fixed strings keep runs deterministic and stay clean on tiny models).
CONTEXT_PREFIXES = ("", "Tell me. ", "I wonder. ", "Please answer. ", "A question: ")


class UniEraseConfig(Config):
    """UniErase (Yu et al. 2025). Defaults are the paper's and its code's (Llama-3.1-8B; `train_UNL.py` for
    Stage I, AlphaEdit's hyper-parameters for Stage II); the settings the built-in tiny models need are in
    `obliviate.bench.presets` (per scale), with the measurements behind them.

    Stage I (the unlearning token):
    - `token_schedule`: (epochs, lr) phases of Adam on the token's row(s) [paper: (5, 1e-3), (3, 1e-4)].
    - `robust_epochs`: robustness epochs per edit layer [paper: 2]; `robust_lr` (None = the last phase's lr, as
      the code's 1e-4).
    - `noise_clip`: the Gaussian noise (std = mean |W| of the down-projection) is clipped to ± noise_clip · std
      [code: clamp(noise, −std, std), i.e. 1].
    - `token_questions`: the questions that teach the token: the forget set [code] or forget + retain.
    - `token_formats`: "template" (the evaluation prompt) and/or "raw" (the bare question) [paper: raw + chat
      template].
    - `token_negatives` [ours; 0 = the paper]: retain items (question → true answer) added to Stage I; only the
      token's row trains on them, so its (tied) output row learns not to be emitted after ordinary answers.
    - `token_batch_size`: sequences per Adam step [code: 16].

    Stage II (the unlearning edit):
    - `layers`: decoder layers whose MLP down-projections are edited (None = the paper's band, 4–8 of 32, scaled
      to the model's depth: 0–1 of 4, 0 of 2).
    - `subject`: the person or key phrase of each request. "field": the record's `subject` (an error if missing);
      "name": the name found in the questions (per group the recurring one, else the longest); "auto": field,
      else name, else the question's last word.
    - `key_position`: where keys are read and δ is added. "subject_last" [paper] or "prompt_last" (MEMIT's
      "last" strategy). "auto" = subject_last on models with >= 8 decoder layers (a guess: only 2, 4 and the
      paper's 32 were seen), else prompt_last [ours]: on the 4-layer synthetic target no residual at the subject
      token (any of layers 0–2, ‖δ‖ up to 3‖h‖, 100 steps) made [UNL] the next token (NLL stayed 6–17 nats for
      most questions), since the first answer token of such a model is set by the question's wording, not by
      the subject. The position used is recorded in the manifest (`run_info`).
    - `context_prefixes`: prefixes written before the question; keys are averaged over them and δ must work under
      each (MEMIT's context templates; fixed strings here instead of model samples [ours], for determinism).
    - `shared_value`: "request" [paper; MEMIT's compute_z]: one residual δ per forget question; "subject" [ours]:
      the questions about one subject share one δ, optimised on all their prompts together (each question's value
      is its own h_L + δ). With subject-token keys the questions of one person have nearly the same keys, so the
      AlphaEdit update realises mostly what their residuals have in common: on the SmolLM2 tofu-mini target
      (layers 3–7, λ 1) it realises 97–98% of a residual shared by the 40 forget questions and 12–23% of a
      question's own (benchmarks/unierase_edit.py). Measured there with the question as asked (one prefix) and an
      untrained [UNL]: [UNL] became the greedy first answer token of 0.80 of the forget questions after the
      per-request edit and of all of them after the per-subject one, no retain question's in either, and the
      retain answers' NLL went 0.040 → 0.055 against → 0.041.
    - `value_target`: what the residual δ must make each forget prompt emit. "token" [paper]: [UNL] alone; the
      refusal after it is left to Stage I. "token_refusal" [ours]: [UNL] ⊕ the subject's refusal ⊕ [UNL] ⊕ EOS
      (Stage I's sequence, the first refusal phrasing for every question of a subject so that they can share a
      value), teacher-forced with δ in place. With subject-token keys δ sits at the name and every later position
      reads it, also those after [UNL], which Stage I trained without it: on the SmolLM2 tofu-mini target (one
      residual per person, ‖δ‖ ≤ 4‖h‖) one person's edited answers were refusals or hedges and the other's were
      empty strings or debris ("," "#"), since nothing asked δ to leave the continuation working. With this
      target the answers stayed text ([UNL] first for 0.975), but as hedges more than refusals (0.250 against
      0.225), the value was not reached in 25 steps (0.68–0.81 nats per token) and MU fell 0.252 → 0.195 (world
      facts 0.296 → 0.247), so the SMOLLM2 preset keeps "token".
    - `mode`: "batch" (all forget questions in one edit), "sequential" (`n_requests` equal requests one after
      another, the model saved after each when `save_each`), "precise" (the single forget item `precise_item`,
      an index or an id).
    - `probe_tokens`, `probe_retain`: sequential mode's per-request probe: greedy answers of this many tokens to
      the forget questions edited so far (refusal share), and the answer NLL of this many retain items.
    - `preserve_token_keys` [ours; False = the paper]: the keys the model reads from the first [UNL] on in the
      Stage I sequences join the preserved statistics, so the edit leaves the token's continuation (the refusal)
      as Stage I taught it. Without it the edit also fires at the [UNL] position and the edited model answers
      [UNL] [UNL] … (decoded: nothing); see `UniErase._token_moments`.
    - `edit`: the locate-then-edit settings (EditConfig): AlphaEdit's [code], which UniErase's code reuses.
    - `template`, `max_length`, `seed`: prompt format, token limit, seed of the token's initialisation, data
      order and noise."""

    token_schedule: list[tuple[int, float]] = [(5, 1e-3), (3, 1e-4)]
    robust_epochs: int = Field(2, ge=0)
    robust_lr: float | None = Field(None, gt=0)
    noise_clip: float = Field(1.0, gt=0)
    token_questions: Literal["forget", "forget_retain"] = "forget"
    token_formats: list[Literal["template", "raw"]] = ["template", "raw"]
    token_negatives: int = Field(0, ge=0)
    token_batch_size: int = Field(16, ge=1)
    layers: list[int] | None = None
    subject: Literal["auto", "field", "name"] = "auto"
    key_position: Literal["auto", "subject_last", "prompt_last"] = "subject_last"
    context_prefixes: list[str] = list(CONTEXT_PREFIXES)
    shared_value: Literal["request", "subject"] = "request"
    value_target: Literal["token", "token_refusal"] = "token"
    mode: Literal["batch", "sequential", "precise"] = "batch"
    n_requests: int = Field(10, ge=1)
    precise_item: int | str = 0
    save_each: bool = True
    probe_tokens: int = Field(32, ge=1)
    probe_retain: int = Field(32, ge=0)
    preserve_token_keys: bool = True
    edit: EditConfig = EditConfig()
    template: Literal["auto", "plain", "chat"] = "auto"
    max_length: int = Field(512, ge=16)
    seed: int = 0

    @model_validator(mode="after")
    def _check(self):
        problems = []
        if not self.token_schedule or any(e < 0 or lr <= 0 for e, lr in self.token_schedule):
            problems.append(f"token_schedule must be a non-empty list of (epochs >= 0, lr > 0), got {self.token_schedule}")
        if not self.token_formats:
            problems.append("token_formats is empty; give template and/or raw")
        if not self.context_prefixes or self.context_prefixes[0] != "":
            problems.append(f"context_prefixes must start with '' (the question as asked), got {self.context_prefixes}")
        if problems:
            raise ValueError("; ".join(problems))
        return self


# ---------------------------------------------------------------------------------------------- Stage I


def add_unlearn_token(model, tokenizer, seed: int = 0) -> int:
    """Add the first free `<unlearn_k>` as a special token; grow the embeddings WITHOUT mean initialisation
    (the paper's code) and draw the new row(s) from N(0, σ²), σ = the existing rows' std, so its norm matches an
    ordinary token's. Returns its id."""
    vocab = tokenizer.get_vocab()
    k = 0
    while f"<unlearn_{k}>" in vocab:
        k += 1
    name = f"<unlearn_{k}>"
    tokenizer.add_special_tokens({"additional_special_tokens": [name]}, replace_extra_special_tokens=False)
    tid = tokenizer.convert_tokens_to_ids(name)
    if tid >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in _token_matrices(model):
            std = float(w[:tid].float().std())
            w[tid] = (torch.randn(w.shape[1], generator=g) * std).to(w.dtype).to(w.device)
    return tid


def _token_matrices(model) -> list[torch.nn.Parameter]:
    """The input embedding and, when not tied to it, the output embedding."""
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    if out is None or out.weight is emb or out.weight.data_ptr() == emb.data_ptr():
        return [emb]
    return [emb, out.weight]


def refusal_continuation(fmt: Formatter, refusal: str, tid: int) -> list[int]:
    """What follows the first [UNL] in Stage I's sequences: `refusal ⊕ [UNL] ⊕ EOS`."""
    return fmt.answer_ids(refusal, eos=False) + [tid, fmt.eos_id]


def token_sequences(records: list[QA], fmt: Formatter, tid: int, formats: list[str]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) of `question ⊕ [UNL] ⊕ refusal ⊕ [UNL] ⊕ EOS`, labels masked up to and including the
    first [UNL] (the paper's format; the closing EOS is [ours], so generation stops after the refusal)."""
    out = []
    for i, r in enumerate(records):
        answer = refusal_continuation(fmt, idk_answer(r, i), tid)
        for f in formats:
            prompt = fmt.prompt_ids(r.question) if f == "template" else list(fmt.tok(r.question)["input_ids"])
            prompt = prompt + [tid]
            out.append((prompt + answer, [IGNORE_INDEX] * len(prompt) + answer))
    return out


class _RowTrainer:
    """Adam on the token's row(s) only.

    A dedicated loop instead of the shared engine: the engine's AdamW would keep moments for the whole V × d
    embedding matrix and decay every row of it. Here each row is its own small Parameter; after each backward
    its gradient is read from the matrix's gradient and the stepped row is written back, so no other weight can
    move."""

    def __init__(self, model, tid: int, pad_id: int) -> None:
        self.model, self.tid, self.pad_id = model, tid, pad_id
        self.mats = _token_matrices(model)
        self.rows = [torch.nn.Parameter(m.data[tid].clone()) for m in self.mats]

    def run(self, seqs, epochs: int, lr: float, batch_size: int, gen: torch.Generator, before_step=None,
            after_step=None, on_step=None) -> list[float]:
        opt = torch.optim.Adam(self.rows, lr=lr)
        dev = model_device(self.model)
        losses = []
        for _ in range(epochs):
            order = torch.randperm(len(seqs), generator=gen).tolist()
            total = 0.0
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                ids, mask, labels = pad_batch([seqs[i][0] for i in idx], self.pad_id, labels=[seqs[i][1] for i in idx])
                if before_step:
                    before_step()
                logits = self.model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits  # (B, T, V)
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten().to(dev),
                                       ignore_index=IGNORE_INDEX)
                loss.backward()
                if after_step:
                    after_step()
                for row, m in zip(self.rows, self.mats, strict=True):
                    row.grad = m.grad[self.tid].clone()
                    m.grad = None
                opt.step()
                opt.zero_grad(set_to_none=True)
                with torch.no_grad():
                    for row, m in zip(self.rows, self.mats, strict=True):
                        m.data[self.tid] = row.data
                total += float(loss.detach()) * len(idx)
                if on_step:
                    on_step(float(loss.detach()))
            losses.append(total / len(seqs))
        return losses


class _Noise:
    """Clipped Gaussian noise (std = mean |W|) on one down-projection before a step; the weight restored after."""

    def __init__(self, weight: torch.nn.Parameter, clip: float, gen: torch.Generator) -> None:
        self.w, self.clip, self.gen = weight, clip, gen
        self.scale = float(weight.detach().abs().mean())
        self.saved: torch.Tensor | None = None

    def add(self) -> None:
        self.saved = self.w.detach().clone()
        noise = torch.randn(self.w.shape, generator=self.gen).clamp_(-self.clip, self.clip) * self.scale
        with torch.no_grad():
            self.w.add_(noise.to(self.w.device, self.w.dtype))

    def restore(self) -> None:
        with torch.no_grad():
            self.w.copy_(self.saved)  # type: ignore[arg-type]
        self.saved = None


# ---------------------------------------------------------------------------------------------- Stage II


def default_layers(n_layers: int) -> list[int]:
    """The paper's band, layers 4–8 of Llama-3.1-8B's 32, scaled to `n_layers` (4 layers: 0–1; 2 layers: 0) and
    kept below the last layer, after which nothing could carry a subject-token edit to the answer position."""
    lo = int(n_layers * 4 / 32)
    hi = max(lo, min(int(n_layers * 8 / 32), n_layers - 2))
    return list(range(lo, hi + 1))


SUBJECT_KEYS_MIN_LAYERS = 8


def key_position_for(how: str, n_layers: int) -> str:
    """`auto`: the paper's subject keys on models with at least SUBJECT_KEYS_MIN_LAYERS decoder layers, else the
    prompt's last token (see UniEraseConfig.key_position for the measurement behind this)."""
    if how != "auto":
        return how
    return "subject_last" if n_layers >= SUBJECT_KEYS_MIN_LAYERS else "prompt_last"


def resolve_subjects(records: list[QA], how: str) -> list[str]:
    """The subject (name or key phrase) of each forget record: "field" = the record's `subject`; "name" = the
    name found in the questions (per group the recurring one, else the longest); "auto" = field, else name,
    else the question's last word."""
    if how == "field":
        missing = [r.id for r in records if not r.subject]
        if missing:
            raise DataError(f"unierase subject=field: {len(missing)} forget records have no 'subject' (e.g. "
                            f"{missing[0]}); add the field, or use subject=auto / name")
        return [r.subject for r in records]  # type: ignore[misc]
    named = attach_subjects([r.with_(subject=None) for r in records])  # recurring name per group, else longest
    out: list[str] = []
    for r, n in zip(records, named, strict=True):
        s = (r.subject if how == "auto" else None) or n.subject or subject_of(r.question)
        if s is None and how == "auto":
            words = r.question.rstrip(" ?.!").split()
            s = words[-1] if words else None
        if s is None:
            raise DataError(f"unierase subject={how}: no name found in forget question {r.id} ({r.question!r}); "
                            f"use subject=auto (falls back to the question's last word)")
        out.append(s)
    return out


def build_request(fmt: Formatter, record: QA, subject: str, tid: int, prefixes: list[str], kl_template: str,
                  key_position: str, value_target: str = "token") -> EditRequest:
    """prompt = the templated question (once per context prefix), target = [UNL] (`value_target` "token") or
    [UNL] ⊕ the subject's first refusal ⊕ [UNL] ⊕ EOS ("token_refusal"); the key is read at the subject's last
    token (`subject_last`; the prompt's last token when the subject is not in the question) or at the prompt's
    last token (`prompt_last`, MEMIT's "last" fact-token strategy)."""
    at_subject = key_position == "subject_last" and subject in record.question
    if key_position == "subject_last" and not at_subject:
        log.debug("subject %r not in question %s; keying on the prompt's last token", subject, record.id)
    prompts = []
    for pre in prefixes:
        q = pre + record.question
        if at_subject:
            text = fmt.prompt_text(q)
            prompts.append(locate(fmt.tok, text, subject, add_special_tokens=fmt.kind == "plain",
                                  start=text.rfind(q)))
        else:
            ids = fmt.prompt_ids(q)
            prompts.append(EditPrompt(tuple(ids), len(ids) - 1))
    # The KL term keeps what "{subject} is a" predicts while δ sits on the subject. With prompt_last keys δ sits
    # on the final token instead, where MEMIT's "last" strategy would add it to "is a"'s last token too; on the
    # synthetic target that doubled ‖δ‖ and the answers of retain questions that changed (80% vs 43%), so the
    # term is left out there [ours].
    kl = locate(fmt.tok, kl_template.format(subject), subject) if at_subject else None
    target = [tid]
    if value_target == "token_refusal":  # the same phrasing for every question of the subject: one shared value
        target += refusal_continuation(fmt, idk_answer(record.with_(subject=subject), 0), tid)
    return EditRequest(tuple(prompts), tuple(target), kl)


def value_groups(subjects: list[str], shared_value: str) -> list[list[int]] | None:
    """Indices of the requests that share one residual (`UniEraseConfig.shared_value`): by subject, or None (one
    each, the paper's)."""
    if shared_value == "request":
        return None
    by: dict[str, list[int]] = {}
    for i, s in enumerate(subjects):
        by.setdefault(s, []).append(i)
    return list(by.values())


@torch.no_grad()
def first_token_share(model, fmt: Formatter, tid: int, records: list[QA]) -> float:
    """Share of `records`' questions whose greedy first answer token is [UNL] (the edit's efficacy)."""
    prompts = [fmt.prompt_ids(r.question) for r in records]
    outs = generate_pass(model, prompts, fmt.tok.pad_token_id, fmt.eos_id, 1)
    return sum(bool(o) and o[0] == tid for o in outs) / max(1, len(outs))


# ---------------------------------------------------------------------------------------------- the method


@register_method("unierase", doc="An unlearning token [UNL] plus null-space edits mapping forget questions to it "
                                 "(Yu et al. 2025).")
class UniErase(ProceduralMethod):
    Config = UniEraseConfig

    def __init__(self, cfg: UniEraseConfig) -> None:
        super().__init__(cfg)
        self.cfg: UniEraseConfig = cfg
        self._progress_state: dict[str, Any] = {"step": 0, "total": 0, "progress": None}
        self._extras: dict[str, Any] = {}
        self._run_info: dict[str, Any] = {}

    def extras(self) -> dict[str, Any]:
        """`unierase` (token, layers, null-space sizes, parameter fractions, Stage I history, per-request edit
        statistics, wall times) and, in sequential mode, `sequential` (the per-request probe curve)."""
        return self._extras

    def run_info(self) -> dict[str, Any]:
        return self._run_info

    # -------------------------------------------------------------------------------------- orchestration

    def apply(self, ctx: ApplyContext):
        """Statistics of preserved keys → Stage I (the token) → Stage II (the edits, in one or more requests)."""
        cfg = self.cfg
        model, tok = ctx.model, ctx.tokenizer
        torch.manual_seed(cfg.seed)
        fmt = Formatter(tok, cfg.template, max_length=cfg.max_length, tokenize=ctx.tokenize)
        n_layers = len(decoder_layers(model))
        layers = sorted(set(cfg.layers)) if cfg.layers is not None else default_layers(n_layers)
        bad = [l for l in layers if not 0 <= l < n_layers]
        if bad or not layers:
            raise ConfigError(f"unierase layers={cfg.layers} out of range: the model has {n_layers} decoder layers "
                              f"(0..{n_layers - 1})")
        key_position = key_position_for(cfg.key_position, n_layers)
        forget = self._forget_items(ctx.forget)
        token_records = forget + (list(ctx.retain) if cfg.token_questions == "forget_retain" else [])
        self._progress_state = {"step": 0, "total": 0, "progress": ctx.progress}
        times: dict[str, float] = {}

        # Statistics of preserved keys, on the input model: the new token never occurs in preserved text.
        t = time.time()
        stats = key_second_moments(model, layers, self._preserved_ids(ctx, fmt), max_tokens=cfg.edit.cov_tokens,
                                   batch_size=cfg.edit.batch_size, pad_id=tok.pad_token_id, model_fp=fingerprint(model))
        times["stats"] = time.time() - t

        t = time.time()
        tid = add_unlearn_token(model, tok, cfg.seed)
        seqs = token_sequences(token_records, fmt, tid, list(cfg.token_formats))
        seqs += [(e.input_ids, e.labels) for e in fmt.encode_qa(list(ctx.retain)[:cfg.token_negatives])]
        steps = -(-len(seqs) // cfg.token_batch_size) * (sum(e for e, _ in cfg.token_schedule)
                                                          + cfg.robust_epochs * len(layers))
        self._progress_state["total"] = steps + len(forget)
        token_log = self._train_token(model, fmt, tid, seqs, forget, layers)
        times["token"] = time.time() - t

        t = time.time()
        if cfg.preserve_token_keys:  # the token's own continuation is preserved knowledge too (_token_moments)
            unl = self._token_moments(model, tid, [s for s in seqs if tid in s[0]], layers, tok.pad_token_id)
            stats = {l: stats[l] + unl[l] for l in layers}
        editor = Editor(model, layers, stats, cfg.edit, tok.pad_token_id)
        subjects = resolve_subjects(forget, cfg.subject)
        requests = [build_request(fmt, r, s, tid, cfg.context_prefixes, cfg.edit.kl_prompt, key_position,
                                  cfg.value_target) for r, s in zip(forget, subjects, strict=True)]
        chunks = self._chunks(len(requests))
        curve: list[dict[str, Any]] = []
        edit_log: list[dict[str, Any]] = []
        done: list[int] = []
        for c, idx in enumerate(chunks):
            groups = value_groups([subjects[i] for i in idx], cfg.shared_value)
            stats_c = editor.edit([requests[i] for i in idx], groups=groups,
                                  on_target=lambda _i, _n, res: self._tick("edit", target_nll=res.nll))
            edit_log += [{"id": forget[i].id, "subject": subjects[i], "request": c + 1, **e}
                         for i, e in zip(idx, stats_c, strict=True)]
            done += idx
            if cfg.mode == "sequential":
                curve.append({"request": c + 1, "n_edited": len(done),
                              **self.probe(model, fmt, [forget[i] for i in done], ctx.retain, tid)})
                log.info("unierase request %d/%d: %s", c + 1, len(chunks), curve[-1])
                if cfg.save_each:
                    curve[-1]["saved"] = str(self._save(ctx, model, tok, f"request_{c + 1:02d}"))
        times["edit"] = time.time() - t
        first_unl = first_token_share(model, fmt, tid, forget)
        log.info("unierase stage II: [UNL] is the greedy first answer token for %.0f%% of the forget questions",
                 100 * first_unl)

        n_total = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        n_edit = sum(down_proj(model, l).weight.numel() for l in layers)
        n_token = len(_token_matrices(model)) * model.get_input_embeddings().weight.shape[1]
        summary = {
            "token": tok.convert_ids_to_tokens(tid), "token_id": tid, "layers": layers, "key_position": key_position,
            "null_space_dims": editor.null_dims, "token_keys_preserved": cfg.preserve_token_keys,
            "d_k": down_proj(model, layers[0]).in_features,
            "edited_params": n_edit, "token_params": n_token, "total_params": n_total,
            "edited_fraction": n_edit / n_total, "modified_fraction": (n_edit + n_token) / n_total,
            "mode": cfg.mode, "n_requests": len(chunks), "wall_time_s": {k: round(v, 2) for k, v in times.items()},
            "shared_value": cfg.shared_value, "value_target": cfg.value_target, "forget_first_token_unl": first_unl,
            "stage1": token_log, "edits": edit_log,
        }
        log.info("unierase: edited %d down-projection weights in layers %s = %.2f%% of %d parameters (%.2f%% with "
                 "the token's row)", n_edit, layers, 100 * summary["edited_fraction"], n_total,
                 100 * summary["modified_fraction"])
        self._extras = {"unierase": summary, **({"sequential": curve} if curve else {})}
        self._run_info = {"unierase": {"layers": layers, "key_position": key_position, "token": summary["token"]}}
        return model

    def _tick(self, stage: str, **terms: float) -> None:
        """One unit of progress: a Stage I optimiser step ("token") or a Stage II target value ("edit")."""
        st = self._progress_state
        st["step"] += 1
        if st["progress"]:
            st["progress"](ProgressEvent("stage", stage=stage, step=st["step"], total=st["total"], terms=terms))

    # -------------------------------------------------------------------------------------- pieces

    def _forget_items(self, forget: list[QA]) -> list[QA]:
        cfg = self.cfg
        if cfg.mode != "precise":
            return list(forget)
        item = cfg.precise_item
        if isinstance(item, int):
            if not 0 <= item < len(forget):
                raise ConfigError(f"unierase precise_item={item} is out of range: the forget set has {len(forget)} "
                                  f"items (0..{len(forget) - 1}); give an index or an item id")
            return [forget[item]]
        hit = [r for r in forget if r.id == item]
        if not hit:
            raise ConfigError(f"unierase precise_item={item!r}: no forget item has this id (e.g. "
                              f"{', '.join(r.id for r in forget[:3])})")
        return hit

    def _chunks(self, n: int) -> list[list[int]]:
        if self.cfg.mode != "sequential":
            return [list(range(n))]
        k = min(self.cfg.n_requests, n)
        bounds = [round(i * n / k) for i in range(k + 1)]
        return [list(range(bounds[i], bounds[i + 1])) for i in range(k)]

    def _preserved_ids(self, ctx: ApplyContext, fmt: Formatter) -> list[list[int]]:
        """Token ids of the preserved (general) text: the scenario's retain training text (retain + general
        knowledge + refusals), else the retain set; prompt and answer together, as the model reads them."""
        scen = ctx.scenario
        records = list(scen.retain_train.records) if scen is not None else list(ctx.retain)
        if not records:
            raise DataError("unierase needs preserved text for its null-space statistics: pass a retain set "
                            "(--retain FILE) or a scenario (--scenario NAME)")
        return [e.input_ids for e in fmt.encode_qa(records)]

    def _train_token(self, model, fmt: Formatter, tid: int, seqs, forget: list[QA], layers: list[int]) -> dict[str, Any]:
        """Stage I: the token's schedule, then the robustness epochs per edit layer (noise on that layer's
        down-projection before each step, the weight restored after)."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(cfg.seed)
        was = model.training
        grads = {n: p.requires_grad for n, p in model.named_parameters()}
        model.eval()  # no dropout: the token learns against the deployed model
        model.requires_grad_(False)
        for m in _token_matrices(model):
            m.requires_grad_(True)  # gradients reach the matrix; _RowTrainer keeps only the token's row
        trainer = _RowTrainer(model, tid, fmt.tok.pad_token_id)
        on_step = lambda loss: self._tick("token", token_nll=loss)  # noqa: E731
        history: list[dict[str, Any]] = []
        try:
            for phase, (epochs, lr) in enumerate(cfg.token_schedule):
                for e, loss in enumerate(trainer.run(seqs, epochs, lr, cfg.token_batch_size, gen, on_step=on_step)):
                    history.append({"phase": str(phase + 1), "epoch": e + 1, "lr": lr, "nll": loss})
            robust_lr = cfg.robust_lr or cfg.token_schedule[-1][1]
            for layer in layers:
                noise = _Noise(down_proj(model, layer).weight, cfg.noise_clip, gen)
                losses = trainer.run(seqs, cfg.robust_epochs, robust_lr, cfg.token_batch_size, gen,
                                     before_step=noise.add, after_step=noise.restore, on_step=on_step)
                history += [{"phase": f"robust_layer{layer}", "epoch": e + 1, "lr": robust_lr, "nll": v}
                            for e, v in enumerate(losses)]
        finally:
            model.train(was)
            for n, p in model.named_parameters():
                p.requires_grad_(grads[n])
        efficacy = self._token_efficacy(model, fmt, tid, forget)
        log.info("unierase stage I: token NLL %.3f; greedy answer after `question + [UNL]` is a refusal for %.0f%% "
                 "of the forget questions", history[-1]["nll"] if history else float("nan"), 100 * efficacy)
        return {"history": history, "refusal_after_token": efficacy, "n_sequences": len(seqs)}

    def _token_moments(self, model, tid: int, seqs, layers: list[int], pad_id: int) -> dict[int, torch.Tensor]:
        """E[k kᵀ] of the keys the model reads from the first [UNL] on in the Stage I sequences (`question ⊕ [UNL]
        ⊕ refusal ⊕ [UNL] ⊕ EOS`), on the model after Stage I: the continuation the token was trained for.

        [ours] The paper's preserved statistics are general text only, in which [UNL] never occurs, so nothing
        keeps the update from changing what the down-projections write at the [UNL] position, and there the
        residual that makes the question's last token predict [UNL] makes [UNL] predict itself again. Measured on
        the slow test's 4-layer model (prompt_last keys, layers 0–1): the update moved the layer-1 output at [UNL]
        by 0.52 of its norm and every forget answer was [UNL] repeated; with the pre-edit weights at that one
        position only, the edited model refused. With these moments: 0.08, and all six refused (null space 101 →
        82 and 111 → 96 of 128 dimensions). They are added to the general moments, each averaged on its own, so
        the few Stage I positions are not diluted by the many general ones. (Adding their outer products to the
        sequential term K_p K_pᵀ instead also worked there, but on the 2-layer test model it outweighed the
        residual and half of the forget questions kept their answers.)"""
        cfg = self.cfg
        return key_second_moments(model, layers, [ids for ids, _ in seqs], max_tokens=cfg.edit.cov_tokens,
                                  batch_size=cfg.edit.batch_size, pad_id=pad_id, cache=False,
                                  starts=[ids.index(tid) for ids, _ in seqs])

    @torch.no_grad()
    def _token_efficacy(self, model, fmt: Formatter, tid: int, records: list[QA]) -> float:
        """Share of forget questions whose greedy continuation after `prompt ⊕ [UNL]` is a refusal."""
        prompts = [fmt.prompt_ids(r.question) + [tid] for r in records]
        outs = generate_pass(model, prompts, fmt.tok.pad_token_id, fmt.eos_id, self.cfg.probe_tokens)
        return sum(is_refusal(fmt.tok.decode(o, skip_special_tokens=True)) for o in outs) / max(1, len(outs))

    @torch.no_grad()
    def probe(self, model, fmt: Formatter, forget: list[QA], retain: list[QA], tid: int) -> dict[str, float]:
        """Cheap per-request metrics: refusal fraction of greedy answers to the forget questions edited so far,
        share of them whose first answer token is [UNL], and the mean answer NLL of up to `probe_retain` retain items."""
        cfg = self.cfg
        prompts = [fmt.prompt_ids(r.question) for r in forget]
        outs = generate_pass(model, prompts, fmt.tok.pad_token_id, fmt.eos_id, cfg.probe_tokens)
        res = {"forget_refusal": sum(is_refusal(fmt.tok.decode(o, skip_special_tokens=True)) for o in outs) / len(outs),
               "forget_first_token_unl": sum(bool(o) and o[0] == tid for o in outs) / len(outs)}
        items = retain[:cfg.probe_retain]
        if items:
            # token mean over the items' answer tokens (answer + EOS), as before the model-pass service
            res["retain_nll"] = float(answer_nll(model, fmt.encode_qa(items), "token_mean", pad_id=fmt.tok.pad_token_id,
                                                 batch_size=16))
        return res

    def _save(self, ctx: ApplyContext, model, tok, name: str) -> str:
        """Save the model after a sequential request: through the runner's `save_model` when it offers one, else
        under `<work_dir>/requests/<name>`."""
        if ctx.save_model is not None:
            ctx.save_model(model, name)
            return name
        path = Path(ctx.work_dir) / "requests" / name
        path.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(path, safe_serialization=True)
        tok.save_pretrained(path)
        return str(path)
