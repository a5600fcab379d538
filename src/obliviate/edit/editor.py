"""Locate-then-edit, MEMIT/AlphaEdit style, for Llama-style MLPs.

An edit request says: after `prompt`, emit `target`; the knowledge lives at the subject's last token. For a batch
of requests and a band of layers l₁ < … < L:

1. target value (MEMIT `compute_z`): optimise a residual δ added to layer L's MLP output at the subject's last
   token, so the model emits the target after every context variant of the prompt. Loss = mean target NLL
   + kl_factor · KL(p_δ ‖ p₀) of the next-token distribution at the subject's last token of "{subject} is a"
   (the subject keeps its meaning; direction and position as in MEMIT's and AlphaEdit's `compute_z`)
   + v_weight_decay · ‖δ‖ / ‖h_L‖²; after each step ‖δ‖ is clamped to clamp_norm_factor · ‖h_L‖. z = h_L + δ.
2. for each layer l in order (MEMIT's spread): keys K (d_k, n) = the down-projection input at the subject's last
   token, averaged over the context variants; residual R = (z − h_L(current weights)) / (layers left); update
   W_l += Δ with Δ the AlphaEdit solution (algebra.py), which leaves keys of preserved text unchanged.
3. sequential editing: after a batch, its keys (on the edited model) join K_p K_pᵀ, so later batches keep it.

References: Meng et al., MEMIT (ICLR 2023, arXiv 2210.07229); Fang et al., AlphaEdit (ICLR 2025, arXiv 2410.02355).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field

from obliviate.config import Config
from obliviate.edit.algebra import alphaedit_update, null_space_projector
from obliviate.edit.anatomy import add_at_positions, capture_keys, capture_layer_output, down_proj
from obliviate.eval.passes import answer_logits
from obliviate.utils.tensors import IGNORE_INDEX, model_device, pad_batch

log = logging.getLogger(__name__)


class EditConfig(Config):
    """AlphaEdit's settings for Llama-3-8B, which UniErase's code reuses: every default below is the value of the
    official `hparams/AlphaEdit/Llama3-8B.json` (Fang et al. 2025) unless marked otherwise. They are tuned to an
    8B model's residual scale; the built-in tiny models need others (obliviate.bench.presets).

    - `v_lr` (`v_lr` 0.1), `v_steps` (`v_num_grad_steps` 25): Adam step size and steps of the target-value
      optimisation.
    - `v_weight_decay` (`v_weight_decay` 0.5): weight of ‖δ‖ / ‖h_L‖².
    - `clamp_norm_factor` (`clamp_norm_factor` 0.75): ‖δ‖ ≤ factor · ‖h_L‖.
    - `kl_factor` (`kl_factor` 0.0625): weight of the KL term on `kl_prompt` ("{subject} is a", MEMIT's).
    - `v_stop_loss`: stop optimising δ once the loss is below this (5e-2, MEMIT's `compute_z`).
    - `l2` λ (`L2` 10): the update's ridge term.
    - `nullspace_threshold` (`nullspace_threshold` 2e-2): eigenvalues of E[k kᵀ] below it span the null space
      the update lives in.
    - `cov_tokens`: token positions of preserved text the statistics are collected on (`mom2_n_samples`
      100,000, which counts samples there).
    - `batch_size` [ours]: sequences per forward pass when collecting keys."""

    v_lr: float = Field(0.1, gt=0)
    v_steps: int = Field(25, ge=1)
    v_weight_decay: float = Field(0.5, ge=0)
    clamp_norm_factor: float = Field(0.75, gt=0)
    kl_factor: float = Field(0.0625, ge=0)
    kl_prompt: str = "{} is a"
    v_stop_loss: float = Field(5e-2, ge=0)
    l2: float = Field(10.0, gt=0)
    nullspace_threshold: float = Field(2e-2, ge=0)
    cov_tokens: int = Field(100_000, ge=1)
    batch_size: int = Field(16, ge=1)


@dataclass(frozen=True)
class EditPrompt:
    """Token ids of one prompt and the position of the subject's last token in them."""

    ids: tuple[int, ...]
    subject_pos: int


@dataclass(frozen=True)
class EditRequest:
    """`prompts[0]` is the request's own prompt; all of them (it and its context variants) are read for the key
    and must emit `target`. `kl_prompt` ("{subject} is a") keeps the subject's meaning; None leaves it out."""

    prompts: tuple[EditPrompt, ...]
    target: tuple[int, ...]
    kl_prompt: EditPrompt | None = None


def locate(tokenizer, text: str, subject: str, *, add_special_tokens: bool = True, start: int = 0) -> EditPrompt:
    """Tokenise `text` and find the last token of the first occurrence of `subject` at or after character `start`.

    Uses the fast tokenizer's character offsets (robust to BPE merges across the subject's end); a slow tokenizer
    falls back to counting the tokens of the text up to the subject's end (MEMIT's method)."""
    at = text.find(subject, start)
    if not subject or at < 0:
        raise ValueError(f"subject {subject!r} does not occur in the prompt {text!r}")
    end = at + len(subject)
    try:
        enc = tokenizer(text, add_special_tokens=add_special_tokens, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        pos = max(i for i, (s, e) in enumerate(offsets) if e > s and s < end)
        ids = enc["input_ids"]
    except (NotImplementedError, ValueError, KeyError):
        ids = tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"]
        pos = len(tokenizer(text[:end], add_special_tokens=add_special_tokens)["input_ids"]) - 1
    return EditPrompt(tuple(ids), pos)


@dataclass
class TargetResult:
    delta: torch.Tensor  # (d,) the residual: layer L's output at the subject's last token should be h_L + δ
    delta_norm: float
    nll: float  # target NLL at the end of the optimisation (mean over prompts)
    steps: int


def _batch(seqs: Sequence[Sequence[int]], pad_id: int, dev) -> tuple[torch.Tensor, torch.Tensor]:
    ids, mask, _ = pad_batch([list(s) for s in seqs], pad_id)  # right padding: real positions keep their index
    return ids.to(dev), mask.to(dev)


def compute_target(model, req: EditRequest, layer: int, cfg: EditConfig, pad_id: int) -> TargetResult:
    """Step 1 (MEMIT `compute_z`): the residual δ whose value z = h_L + δ makes every prompt of `req` emit its
    target."""
    dev = model_device(model)
    tgt = list(req.target)
    rows = [list(p.ids) + tgt for p in req.prompts]  # teacher-forced target
    subj = [p.subject_pos for p in req.prompts]
    # Logits are needed only where the target is predicted (position t predicts token t+1: target token j is read
    # at len(prompt) − 1 + j) and, for the KL term, at the subject of "{subject} is a": they are marked as
    # "answer" labels so that the head runs on those positions only (answer_logits; P·T + 1 rows, not P·S).
    labels = [[IGNORE_INDEX] * len(p.ids) + tgt for p in req.prompts]
    if req.kl_prompt is not None:
        rows.append(list(req.kl_prompt.ids))
        subj.append(req.kl_prompt.subject_pos)
        kl_labels = [IGNORE_INDEX] * len(req.kl_prompt.ids)
        if req.kl_prompt.subject_pos + 1 >= len(kl_labels):
            raise ValueError("the KL prompt must continue after its subject (e.g. '{} is a')")
        kl_labels[req.kl_prompt.subject_pos + 1] = 0  # any id: marks the position whose distribution is kept
        labels.append(kl_labels)
    ids, mask = _batch(rows, pad_id, dev)
    lab, _ = _batch(labels, IGNORE_INDEX, dev)
    n_rw = len(req.prompts)
    n_tgt = n_rw * len(tgt)
    tgt_t = torch.tensor(tgt, device=dev).expand(n_rw, -1)  # (P, T)
    r_idx, c_idx = torch.arange(len(rows), device=dev), torch.tensor(subj, device=dev)

    with torch.no_grad(), capture_layer_output(model, layer) as out:
        logits, _, _ = answer_logits(model, ids, mask, lab)  # (P·T [+1], V), row by row
        h0 = out["h"][0, subj[0]].detach().clone()  # (d,) layer-L output at the request's own subject token
        # MEMIT/AlphaEdit read the KL distribution where δ is added: the subject's last token of "{subject} is a"
        kl_init = F.log_softmax(logits[n_tgt].float(), -1) if req.kl_prompt is not None else None
    delta = torch.zeros_like(h0, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=cfg.v_lr)
    max_norm = cfg.clamp_norm_factor * h0.norm()
    nll_val, step = float("nan"), 0
    for step in range(1, cfg.v_steps + 1):
        with add_at_positions(model, layer, delta, r_idx, c_idx):
            logits, _, _ = answer_logits(model, ids, mask, lab)
        logp = F.log_softmax(logits[:n_tgt].float(), -1).view(n_rw, len(tgt), -1)  # (P, T, V)
        tok_logp = logp.gather(-1, tgt_t[..., None])[..., 0]  # (P, T)
        nll = -tok_logp.mean(1).mean()
        loss = nll + cfg.v_weight_decay * delta.norm() / h0.norm() ** 2
        if kl_init is not None and cfg.kl_factor > 0:
            cur = F.log_softmax(logits[n_tgt].float(), -1)
            # KL(p_δ ‖ p₀): compute_z's kl_div(kl_distr_init, kl_log_probs), i.e. the current distribution is
            # the target argument (F.kl_div(input, target) = Σ target · (log target − input))
            loss = loss + cfg.kl_factor * F.kl_div(kl_init, cur, log_target=True, reduction="sum")
        nll_val = float(nll.detach())
        if float(loss.detach()) < cfg.v_stop_loss:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # MEMIT: project δ back onto the ball of radius clamp_norm_factor · ‖h_L‖
            if delta.norm() > max_norm:
                delta.mul_(max_norm / delta.norm())
    delta = delta.detach()
    return TargetResult(delta, float(delta.norm()), nll_val, step)


def merge_requests(requests: Sequence[EditRequest]) -> EditRequest:
    """One request whose prompts are all of `requests`' prompts (same target; the first one's KL prompt): a
    residual optimised for it serves each of them (`Editor.edit(groups=...)`)."""
    targets = {r.target for r in requests}
    if len(targets) != 1:
        raise ValueError(f"requests share a value only when they share their target, got {len(targets)} targets")
    return EditRequest(tuple(p for r in requests for p in r.prompts), requests[0].target, requests[0].kl_prompt)


class Editor:
    """Edits a model's down-projections in `layers` with the AlphaEdit update, keeping the keys of every earlier
    edit (sequential editing). `second_moments[l]` = E[k kᵀ] of preserved text at layer l (stats.py)."""

    def __init__(self, model, layers: Sequence[int], second_moments: dict[int, torch.Tensor], cfg: EditConfig,
                 pad_id: int) -> None:
        self.model, self.layers, self.cfg, self.pad_id = model, sorted(layers), cfg, pad_id
        if not self.layers:
            raise ValueError("no edit layers")
        dev = model_device(model)
        self.projectors = {l: null_space_projector(second_moments[l], cfg.nullspace_threshold).to(dev)
                           for l in self.layers}
        self.preserved = {l: torch.zeros_like(self.projectors[l]) for l in self.layers}  # K_p K_pᵀ
        self.null_dims = {l: round(float(torch.trace(p))) for l, p in self.projectors.items()}
        log.info("null-space dimensions per edit layer: %s (of d_k=%d)", self.null_dims,
                 down_proj(model, self.layers[0]).in_features)

    @torch.no_grad()
    def keys(self, requests: Sequence[EditRequest], layer: int) -> torch.Tensor:
        """K (d_k, n): the down-projection input at each request's subject token, averaged over its prompts."""
        flat = [(i, p) for i, r in enumerate(requests) for p in r.prompts]
        dev = model_device(self.model)
        d_k = down_proj(self.model, layer).in_features
        sums = torch.zeros(len(requests), d_k, dtype=torch.float64, device=dev)
        bs = self.cfg.batch_size
        with capture_keys(self.model, [layer]) as store:
            for s in range(0, len(flat), bs):
                chunk = flat[s:s + bs]
                ids, mask = _batch([p.ids for _, p in chunk], self.pad_id, dev)
                self.model(input_ids=ids, attention_mask=mask)
                k = store[layer][torch.arange(len(chunk), device=dev), [p.subject_pos for _, p in chunk]]  # (b, d_k)
                sums.index_add_(0, torch.tensor([i for i, _ in chunk], device=dev), k.double())
        counts = torch.tensor([len(r.prompts) for r in requests], dtype=torch.float64, device=dev)
        return (sums / counts[:, None]).T

    @torch.no_grad()
    def layer_values(self, requests: Sequence[EditRequest], layer: int) -> torch.Tensor:
        """(n, d): the output of decoder layer `layer` at each request's own prompt's subject token."""
        dev = model_device(self.model)
        out = []
        bs = self.cfg.batch_size
        with capture_layer_output(self.model, layer) as store:
            for s in range(0, len(requests), bs):
                chunk = [r.prompts[0] for r in requests[s:s + bs]]
                ids, mask = _batch([p.ids for p in chunk], self.pad_id, dev)
                self.model(input_ids=ids, attention_mask=mask)
                out.append(store["h"][torch.arange(len(chunk), device=dev), [p.subject_pos for p in chunk]])
        return torch.cat(out).double()

    def edit(self, requests: Sequence[EditRequest],
             on_target: Callable[[int, int, TargetResult], None] | None = None,
             groups: Sequence[Sequence[int]] | None = None) -> list[dict[str, Any]]:
        """Apply one batch of requests; returns per-request statistics of the target-value step. `on_target(i, n,
        result)` is called after the i-th of n target values (1-based) is computed.

        `groups` (indices into `requests`, each request in one group; None = each its own): the requests of a group
        share one residual δ, optimised on all their prompts at once (`merge_requests`), and each request's value
        is its own h_L + δ [ours]. Requests about one subject have nearly the same keys, so the update can only
        realise what their residuals have in common; independent residuals that differ are mostly averaged away
        (see UniEraseConfig.shared_value)."""
        model, cfg = self.model, self.cfg
        was_training = model.training
        grads = {n: p.requires_grad for n, p in model.named_parameters()}
        model.eval().requires_grad_(False)
        try:
            z_layer = self.layers[-1]
            groups = [[i] for i in range(len(requests))] if groups is None else [list(g) for g in groups]
            if sorted(i for g in groups for i in g) != list(range(len(requests))):
                raise ValueError(f"groups must hold each of the {len(requests)} requests once, got {groups}")
            solved: list[TargetResult] = []
            for g in groups:
                req = requests[g[0]] if len(g) == 1 else merge_requests([requests[i] for i in g])
                solved.append(compute_target(model, req, z_layer, cfg, self.pad_id))
                if on_target:
                    on_target(len(solved), len(groups), solved[-1])
            by_request = {i: t for g, t in zip(groups, solved, strict=True) for i in g}
            targets = [by_request[i] for i in range(len(requests))]
            values = self.layer_values(requests, z_layer)  # (n, d): h_L before any update
            zs = values + torch.stack([t.delta for t in targets]).double()  # (n, d): each request's h_L + δ
            for i, layer in enumerate(self.layers):
                if i:
                    values = self.layer_values(requests, z_layer)  # after the updates of the layers below
                k = self.keys(requests, layer)  # (d_k, n)
                resid = (zs - values).T / (len(self.layers) - i)  # (d, n)
                delta = alphaedit_update(resid, k, self.projectors[layer], self.preserved[layer], cfg.l2)
                w = down_proj(model, layer).weight
                w.add_(delta.to(w.dtype))
            for layer in self.layers:  # this batch's keys, on the edited model, are preserved from now on
                k = self.keys(requests, layer)
                self.preserved[layer] += k @ k.T
        finally:
            model.train(was_training)
            for n, p in model.named_parameters():
                p.requires_grad_(grads[n])
        return [{"target_nll": t.nll, "delta_norm": t.delta_norm, "steps": t.steps} for t in targets]
