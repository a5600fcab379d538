"""The one training loop of every gradient method, built on accelerate so `accelerate launch` / `torchrun` run
it in several processes unchanged: seeded, AdamW, linear warm-up then linear decay, gradient accumulation, a
progress callback with each loss term, a checkpoint per epoch and resume after interruption.

Under several processes (DDP through accelerate) a run is the single-process run, split: `batch_size` is the global
effective batch and every optimiser step of the single-process plan runs once, each rank taking its contiguous share
of every micro-batch (so retain samples differ across ranks) with the denominators of the whole step (the global
token and sequence counts); the loss is scaled by the world size against DDP's gradient average, so the summed
gradient, and with it the final weights, equal one process's up to float rounding. The logged terms are summed over
the ranks (`GradientMethod.constant_terms` averaged); each rank draws its own torch random stream (`rank_seed`).

Under FSDP (`--fsdp`, or an accelerate FSDP config) the same plan runs with the model, its gradients, its AdamW
state and a frozen reference copy sharded by accelerate's FSDP2 (`utils/dist.accelerator`); gradients are
reduce-scattered every micro-batch, the clip norm is the global one, and the trained weights are gathered into a
plain copy of the model at the end (`gather_full`)."""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from obliviate.data.records import QA
from obliviate.data.templates import Formatter, resolve_tokenize
from obliviate.eval.passes import compact_logits
from obliviate.errors import ConfigError, DivergedError, ResourceError
from obliviate.methods.base import Batch, GradientMethod, Progress, ProgressEvent, TrainConfig, TrainContext
from obliviate.methods.data import Views, epoch_plan, rank_share, split_step
from obliviate.methods.losses import sequence_logps
from obliviate.utils.tensors import base_of

log = logging.getLogger(__name__)


class Reference:
    """The frozen reference model θ₀ as a method sees it.

    - `logps(view, index)`: sequence-sum log-probs of fixed data, computed ONCE before training and cached;
    - `logits(batch_view)` / `hidden(...)`: on-the-fly passes of a frozen copy (or, under LoRA, of the base model
      with the adapters disabled, which costs no extra memory)."""

    def __init__(self, model=None, logps: dict[str, torch.Tensor] | None = None, lora_base=None) -> None:
        self._model = model
        self._lora = lora_base
        self._logps = logps or {}

    def logps(self, view: str, index: torch.Tensor) -> torch.Tensor:
        return self._logps[view][index.cpu()]

    @contextmanager
    def _active(self):
        """The module a reference pass runs through, with LoRA adapters disabled for the pass."""
        if self._lora is not None:
            with self._lora.disable_adapter():
                yield self._lora
            return
        if self._model is None:
            raise RuntimeError("this method declared reference='logps' but asked for a reference pass")
        yield self._model

    @torch.no_grad()
    def forward(self, batch_view: dict[str, torch.Tensor], **kwargs):
        with self._active() as model:
            return model(input_ids=batch_view["input_ids"], attention_mask=batch_view["attention_mask"], **kwargs)

    @torch.no_grad()
    def logits(self, batch_view: dict[str, torch.Tensor]) -> torch.Tensor:
        """θ₀'s logits where the view's answers are predicted, laid out as `common.logits_of` lays out the
        trained model's ((B, A+1, V), read with the same compacted labels)."""
        with self._active() as model:
            return compact_logits(model, batch_view["input_ids"], batch_view["attention_mask"],
                                  batch_view["labels"])[0]

    @property
    def module(self):
        """The module a reference forward runs through (for hooks): the frozen copy, or the LoRA model."""
        return self._lora if self._lora is not None else self._model


@torch.no_grad()
def precompute_logps(model, views: Views, names: Sequence[str], batch_size: int, device) -> dict[str, torch.Tensor]:
    """Reference sequence-sum log-probs of every item of the given views (NPO, DPO need nothing else of θ₀)."""
    model.eval()
    out = {}
    for v in names:
        vals = torch.zeros(len(views.encoded[v]))
        for s in range(0, len(vals), batch_size):
            b = views.collate(v, range(s, min(s + batch_size, len(vals))))
            logits, labels = compact_logits(model, b["input_ids"].to(device), b["attention_mask"].to(device),
                                            b["labels"].to(device))
            vals[s:s + len(b["index"])] = sequence_logps(logits, labels)[0].cpu()
        out[v] = vals
    return out


def lr_lambda(warmup: int, total: int, schedule: str = "linear", min_ratio: float = 0.0) -> Callable[[int], float]:
    """Linear warm-up over `warmup` optimiser steps, then linear decay to 0 at `total` ("linear"), or cosine
    decay from 1 to `min_ratio` at `total` ("cosine")."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule == "cosine":
            frac = min(1.0, (step - warmup) / max(1, total - warmup))
            return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * frac))
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch mean of each loss term
    parallelism: str = "single"  # how this run trained: "single", "ddp" or "fsdp" (set by `train`, not resumed)


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    assert cfg.lora is not None
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in cfg.lora.targets if t not in names]
    if missing:
        raise ConfigError(f"lora.targets {missing} are not linear modules of this model (it has: {', '.join(sorted(names))})")
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=list(cfg.lora.targets), bias="none", task_type="CAUSAL_LM")
    with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`: not ours to fix
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, lc)


def train(method: GradientMethod, model, tokenizer, forget: Sequence[QA], retain: Sequence[QA], work_dir: Path,
          progress: Progress | None = None, accelerator=None, scenario=None) -> tuple[Any, TrainState]:
    """Run the method's loss through the shared loop; returns the trained (unwrapped, LoRA still attached) model.

    Checkpoints go to `work_dir/checkpoint` after every epoch; if one exists, training resumes from it."""
    from accelerate.utils import set_seed

    from obliviate.utils import dist

    cfg: TrainConfig = method.cfg  # type: ignore[assignment]
    acc = accelerator or dist.accelerator()
    fsdp = dist.is_fsdp(acc)
    set_seed(cfg.seed)
    micro = max(1, cfg.batch_size // cfg.grad_accum)
    # tokenize=auto: the mode recorded with the model it was loaded from (unlearn resolves it before, from the path)
    fmt = Formatter(tokenizer, cfg.template, max_length=cfg.max_length, tokenize=resolve_tokenize(cfg.tokenize, model))
    device = acc.device
    method.ctx = TrainContext(tokenizer, fmt, list(forget), list(retain), scenario, work_dir, device)
    views = Views.build(method.views, forget, retain, fmt, aligned=method.aligned_views(list(forget), list(retain)))

    # The reference: cached log-probs from the input model (before any update), or a frozen model.
    model.to(device)
    ref_logps = precompute_logps(model, views, method.ref_views, micro, device) if method.ref_views else None
    ref_model = None
    if method.reference == "model" and cfg.lora is None:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    if cfg.lora is not None:
        model = apply_lora(model, cfg)
    if cfg.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    skeleton = None
    if fsdp:  # sharded: the reference too, and a weightless copy of the model to gather the result into at the end
        skeleton = meta_skeleton(model)
        if ref_model is not None:
            from accelerate.utils.fsdp_utils import fsdp2_prepare_model

            ref_model = fsdp2_prepare_model(acc, ref_model)
    ref = Reference(ref_model, ref_logps, lora_base=model if (cfg.lora is not None and method.reference == "model") else None)
    method.setup(model, ref, views)

    params = method.trainable(model) or [p for p in model.parameters() if p.requires_grad]
    opt = _adamw(params, cfg)
    n_forget = len(views.encoded[method.views[0]])
    world, rank = acc.num_processes, acc.process_index
    steps_per_epoch = math.ceil(n_forget / cfg.batch_size)  # global steps: every rank runs its share of each
    total = steps_per_epoch * cfg.epochs
    warmup = cfg.warmup_steps if cfg.warmup_steps is not None else round(cfg.warmup_epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(warmup, total, cfg.schedule, cfg.min_lr_ratio))
    model, opt = acc.prepare(model, opt)
    if fsdp:  # accelerate swapped the optimiser's parameters for their shards (DTensors); the whole ones go
        params = [p for group in opt.param_groups for p in group["params"]]
    acc.register_for_checkpointing(sched)
    if world > 1:  # each rank its own random stream (dropout); the data plan is drawn from cfg.seed on every rank
        torch.manual_seed(rank_seed(cfg.seed, rank))

    state = TrainState()
    ckpt = work_dir / "checkpoint"
    if (ckpt / "train_state.json").is_file():
        acc.load_state(str(ckpt))
        saved = json.loads((ckpt / "train_state.json").read_text())
        method.load_state_dict(saved.pop("method", {}))
        state = TrainState(**saved)
        log.info("resuming after epoch %d (step %d)", state.epoch, state.step)

    state.parallelism = "fsdp" if fsdp else "ddp" if world > 1 else "single"
    n_retain = len(views.encoded.get("retain", []))
    lengths = [len(e.input_ids) for e in views.encoded[method.views[0]]] if cfg.batching == "length_grouped" else None
    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        active = method.active_forget()
        if active is not None and not active:
            break
        plan = epoch_plan(n_forget, n_retain, cfg.batch_size, cfg.seed, epoch, method.views, active, lengths,
                          method.retain_batch())
        sums: dict[str, float] = {}
        for step_idx in plan:
            group = split_step(step_idx, cfg.grad_accum)
            k = len(group)
            # the step's denominators, so k averaged micro-batch losses equal the full-batch loss exactly (and, under
            # several processes, the ranks' shares of each micro-batch sum to it)
            denoms = {v: (method.answer_tokens(views, v, idx) / k, len(idx) / k) for v, idx in step_idx.items()}
            terms_acc: dict[str, float] = {}
            for j, micro_idx in enumerate(group):
                share, weight = micro_idx, 1.0
                if world > 1:  # this rank's share; DDP averages the ranks' gradients, so each share counts W times
                    share, weight = rank_share(micro_idx, rank, world), float(world)
                    if not next(iter(share.values())):  # fewer items than ranks: a stand-in item that weighs 0
                        share, weight = {v: idx[:1] for v, idx in micro_idx.items()}, 0.0
                batch: Batch = {}
                for v, idx in share.items():
                    if not idx:  # a view smaller than the step's micro-batches (a smaller retain batch): absent
                        continue
                    b = {key: t.to(device) for key, t in views.collate(v, idx).items()}
                    b["tok_denom"] = torch.tensor(denoms[v][0], device=device)
                    b["seq_denom"] = torch.tensor(denoms[v][1], device=device)
                    batch[v] = b
                # FSDP reduce-scatters every micro-batch: skipping it would hold whole (unsharded) gradients
                with _maybe_no_sync(acc, model, j == k - 1 or fsdp):
                    out = _guard_oom(lambda: method.loss(batch, model, ref), cfg)
                    if not torch.isfinite(out.loss):
                        raise _diverged("loss", epoch + 1, state, cfg, work_dir)
                    acc.backward(out.loss * weight / k)
                for key, v in {"loss": float(out.loss.detach()), **out.terms}.items():
                    part = 1.0 if key in method.constant_terms else weight / world  # a share (0 for a stand-in)
                    terms_acc[key] = terms_acc.get(key, 0.0) + part * v / k
            if world > 1:
                terms_acc = _reduce_terms(terms_acc, method.constant_terms)
            if cfg.grad_clip:
                _clip_grad_norm(acc, params, cfg.grad_clip, fsdp)
            try:
                opt.step()
            except RuntimeError as e:  # an lr beyond float32 ("cannot be converted ... without overflow")
                if "overflow" not in str(e):
                    raise
                raise _diverged("update", epoch + 1, state, cfg, work_dir) from e
            # the loss of this step was finite, but an update of inf/nan (a huge lr, an exploding gradient) shows
            # only in the weights: checked after every step, so a non-finite model is never checkpointed or saved
            if not _all_finite(params, vote=fsdp):
                raise _diverged("weights", epoch + 1, state, cfg, work_dir)
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            for key, v in terms_acc.items():
                sums[key] = sums.get(key, 0.0) + v
            if progress:
                progress(ProgressEvent("step", step=state.step, total=total, epoch=epoch + 1, epochs=cfg.epochs,
                                       lr=sched.get_last_lr()[0], terms=terms_acc))
        n_steps = max(1, len(plan))
        record = {"epoch": epoch + 1, **{k: v / n_steps for k, v in sums.items()}}
        record.update(track_nll(acc.unwrap_model(model), views, micro))
        stop = method.after_epoch(acc.unwrap_model(model), epoch + 1, record)
        if world > 1:  # a method's own state (ICU's active set, PDU's dual variable) is rank 0's on every rank, so
            stop = _sync_method_state(method, stop)  # the next epoch's plan is the same everywhere
        state.history.append(record)
        state.epoch = epoch + 1
        if cfg.checkpoint:
            _save_checkpoint(acc, ckpt, state, method.state_dict())
        if progress:  # after the checkpoint: a consumer that stops the run here loses nothing
            progress(ProgressEvent("epoch", step=state.step, total=total, epoch=epoch + 1, epochs=cfg.epochs,
                                   terms={k: float(v) for k, v in record.items()
                                          if k != "epoch" and isinstance(v, (int, float))}))
        if stop:
            break
    if fsdp:
        opt.optimizer.state.clear()  # the shards' optimiser state goes before the full weights are gathered
        return gather_full(model, skeleton, device), state
    return acc.unwrap_model(model), state


def _adamw(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (no decay on norms and biases)."""
    return torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
                              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                             lr=cfg.lr, betas=cfg.adam_betas)


def _clip_grad_norm(acc, params: Sequence[torch.Tensor], max_norm: float, fsdp: bool) -> None:
    """Clip the gradients' global norm. Under FSDP each rank holds gradient shards (DTensors): the norm is reduced
    over the ranks (torch's DTensor-aware functions; accelerate's own path needs the list in the model's order,
    and ours is grouped by weight decay)."""
    if not fsdp:
        acc.clip_grad_norm_(params, max_norm)
        return
    from torch.distributed.tensor import DTensor
    from torch.nn.utils import clip_grads_with_norm_, get_total_norm

    norm = get_total_norm([p.grad for p in params if p.grad is not None])
    clip_grads_with_norm_(params, max_norm, norm.full_tensor() if isinstance(norm, DTensor) else norm)


def enable_gradient_checkpointing(model) -> None:
    """Activation checkpointing (recompute each decoder layer's activations in backward). Under LoRA the frozen
    embeddings' output must require grad, or the checkpointed layers see no input needing a gradient and the
    adapters silently stay at zero (peft's `enable_input_require_grads`)."""
    inner = base_of(model)
    if not getattr(inner, "supports_gradient_checkpointing", False):
        raise ConfigError(f"gradient_checkpointing=true: {type(inner).__name__} does not support activation "
                          f"checkpointing; set gradient_checkpointing=false")
    kw = {"use_reentrant": False}
    if hasattr(inner, "activation_checkpointing_enable"):  # transformers >= 5 (the old name is deprecated there)
        inner.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
    else:
        inner.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()


def meta_skeleton(model):
    """A copy of `model` whose parameters are on the meta device (no memory; tied parameters stay tied); buffers
    are copied. FSDP training shards `model` in place; `gather_full` fills this copy with the trained weights."""
    memo: dict[int, Any] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        memo.setdefault(id(p), torch.nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad))
    return copy.deepcopy(model, memo)


def gather_full(sharded, skeleton, device):
    """The FSDP-trained weights gathered, tensor by tensor, into a plain (unsharded) copy on `device` on every
    rank: what saving, merging LoRA and evaluation take, as after single-process training."""
    from torch.distributed.tensor import DTensor

    full = {k: (v.full_tensor() if isinstance(v, DTensor) else v).detach().to(device)
            for k, v in sharded.state_dict().items()}  # the same order on every rank: the gathers pair up
    skeleton.load_state_dict(full, assign=True)
    inner = base_of(skeleton)
    if hasattr(inner, "tie_weights"):
        inner.tie_weights()  # assign replaced tied parameters one by one
    return skeleton


def _all_finite(params: Sequence[torch.Tensor], vote: bool) -> bool:
    """Every parameter finite. With `vote` (FSDP: each rank holds different shards) every rank's answer counts, so
    all ranks decide alike; under DDP every rank holds the same weights and its own answer is everyone's."""
    from obliviate.utils import dist

    local = all(bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in params)
    return all(dist.all_gather_objects(local)) if vote else local


def _sync_method_state(method: GradientMethod, stop: bool) -> bool:
    """Rank 0's method state and stop decision on every rank (the ranks hold the same weights, so they agree unless
    a decision is random or at a float tie; this makes agreement certain rather than likely)."""
    from obliviate.utils import dist

    state, stop = dist.broadcast_object((method.state_dict(), stop))
    method.load_state_dict(state)
    return bool(stop)


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of `rank` under several processes (recorded in the manifest)."""
    return seed + rank


def _reduce_terms(terms: dict[str, float], constant: Sequence[str]) -> dict[str, float]:
    """The step's logged terms over every rank: the shares summed, the `constant` terms averaged."""
    from obliviate.utils import dist

    every = dist.all_gather_objects(terms)
    return {key: (sum(t[key] for t in every) / (len(every) if key in constant else 1)) for key in terms}


def _diverged(what: str, epoch: int, state: TrainState, cfg: TrainConfig, work_dir: Path) -> DivergedError:
    """One line: where training diverged, the setting to change, and what is kept (the last epoch's checkpoint,
    all finite: it was checked before it was written)."""
    kept = (f"; the last finite checkpoint (epoch {state.epoch}) is kept in {work_dir / 'checkpoint'}"
            if state.epoch else "")
    clip = "" if cfg.grad_clip else " or set grad_clip=1.0"
    return DivergedError(f"diverged at epoch {epoch} step {state.step + 1}: the {what} became non-finite; lower lr "
                         f"(now {cfg.lr:.0e}){clip}{kept}")


def _maybe_no_sync(acc, model, sync: bool):
    import contextlib

    return contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)


def track_nll(model, views: Views, batch_size: int, cap: int = 64) -> dict[str, float]:
    """Answer NLL on (up to `cap` items of) the forget and retain views, token mean (every answer token of the
    items weighs the same): cheap per-epoch curves."""
    from obliviate.eval.passes import answer_nll

    return {f"{v}_nll_eval": float(answer_nll(model, views.encoded[v][:cap], "token_mean", pad_id=views.pad_id,
                                              batch_size=batch_size))
            for v in ("forget", "retain") if views.encoded.get(v)}


def _save_checkpoint(acc, ckpt: Path, state: TrainState, method_state: dict[str, Any]) -> None:
    """Write the checkpoint beside the old one and swap, so an interruption mid-save keeps the previous epoch."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    quiet = logging.getLogger("accelerate.utils.other")  # "Removed shared tensor" for tied embeddings: expected
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        acc.save_state(str(tmp))
    finally:
        quiet.setLevel(level)
    acc.wait_for_everyone()  # save_state does not wait: every rank's random-state file must be in before the swap
    if acc.is_main_process:
        (tmp / "train_state.json").write_text(json.dumps({**state.__dict__, "method": method_state}))
        if ckpt.exists():
            shutil.rmtree(ckpt)
        tmp.rename(ckpt)
    acc.wait_for_everyone()


def _guard_oom(fn, cfg: TrainConfig):
    try:
        return fn()
    except (torch.cuda.OutOfMemoryError, MemoryError) as e:
        raise ResourceError(f"out of memory at batch_size={cfg.batch_size} (micro-batch "
                            f"{cfg.batch_size // cfg.grad_accum}); lower batch_size, raise grad_accum, lower "
                            f"max_length={cfg.max_length}, or use LoRA (lora.r=8)") from e
    except RuntimeError as e:
        if "out of memory" in str(e).lower() or "can't allocate memory" in str(e).lower():
            raise ResourceError(f"out of memory at batch_size={cfg.batch_size}; lower batch_size, raise grad_accum "
                                f"or lower max_length={cfg.max_length}") from e
        raise
