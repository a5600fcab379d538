"""The one training loop of every gradient method, built on accelerate so `accelerate launch` / `torchrun` run
it in several processes unchanged: seeded, AdamW, linear warm-up then linear decay, gradient accumulation, a
progress callback with each loss term, a checkpoint per epoch and resume after interruption."""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from obliviate.data.records import QA
from obliviate.data.templates import Formatter
from obliviate.errors import ConfigError, ResourceError
from obliviate.methods.base import Batch, GradientMethod, TrainConfig
from obliviate.methods.data import Views, epoch_plan
from obliviate.methods.losses import sequence_logps

log = logging.getLogger(__name__)
Progress = Callable[[dict[str, Any]], None]


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

    @torch.no_grad()
    def forward(self, batch_view: dict[str, torch.Tensor], **kwargs):
        kw = {"input_ids": batch_view["input_ids"], "attention_mask": batch_view["attention_mask"], **kwargs}
        if self._lora is not None:
            with self._lora.disable_adapter():
                return self._lora(**kw)
        if self._model is None:
            raise RuntimeError("this method declared reference='logps' but asked for reference logits")
        return self._model(**kw)

    def logits(self, batch_view: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward(batch_view).logits


@torch.no_grad()
def precompute_logps(model, views: Views, names: Sequence[str], batch_size: int, device) -> dict[str, torch.Tensor]:
    """Reference sequence-sum log-probs of every item of the given views (NPO, DPO need nothing else of θ₀)."""
    model.eval()
    out = {}
    for v in names:
        vals = torch.zeros(len(views.encoded[v]))
        for s in range(0, len(vals), batch_size):
            b = views.collate(v, range(s, min(s + batch_size, len(vals))))
            logits = model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device)).logits
            vals[s:s + len(b["index"])] = sequence_logps(logits, b["labels"].to(device))[0].cpu()
        out[v] = vals
    return out


def lr_lambda(warmup: int, total: int) -> Callable[[int], float]:
    """Linear warm-up over `warmup` optimiser steps, then linear decay to 0 at `total`."""
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return f


@dataclass
class TrainState:
    epoch: int = 0  # epochs completed
    step: int = 0  # optimiser steps taken
    history: list[dict[str, float]] = field(default_factory=list)  # per-epoch mean of each loss term


def apply_lora(model, cfg: TrainConfig):
    from peft import LoraConfig, get_peft_model

    assert cfg.lora is not None
    names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    missing = [t for t in cfg.lora.targets if t not in names]
    if missing:
        raise ConfigError(f"lora.targets {missing} are not linear modules of this model (it has: {', '.join(sorted(names))})")
    lc = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                    target_modules=list(cfg.lora.targets), bias="none", task_type="CAUSAL_LM")
    return get_peft_model(model, lc)


def train(method: GradientMethod, model, tokenizer, forget: Sequence[QA], retain: Sequence[QA], work_dir: Path,
          progress: Progress | None = None, accelerator=None) -> tuple[Any, TrainState]:
    """Run the method's loss through the shared loop; returns the trained (unwrapped, LoRA still attached) model.

    Checkpoints go to `work_dir/checkpoint` after every epoch; if one exists, training resumes from it."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    cfg: TrainConfig = method.cfg  # type: ignore[assignment]
    acc = accelerator or Accelerator(cpu=not torch.cuda.is_available())
    set_seed(cfg.seed)
    if cfg.batch_size % cfg.grad_accum:
        raise ConfigError(f"batch_size={cfg.batch_size} must be a multiple of grad_accum={cfg.grad_accum}")
    micro = cfg.batch_size // cfg.grad_accum
    fmt = Formatter(tokenizer, cfg.template, max_length=cfg.max_length)
    views = Views.build(method.views, forget, retain, fmt)

    # The reference: cached log-probs from the input model (before any update), or a frozen model.
    device = acc.device
    model.to(device)
    ref_logps = precompute_logps(model, views, method.ref_views, micro, device) if method.ref_views else None
    ref_model = None
    if method.reference == "model" and cfg.lora is None:
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    if cfg.lora is not None:
        model = apply_lora(model, cfg)
    ref = Reference(ref_model, ref_logps, lora_base=model if (cfg.lora is not None and method.reference == "model") else None)
    method.setup(model, ref, views)

    params = method.trainable(model) or [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    n_forget = len(views.encoded[method.views[0]])
    world, rank = acc.num_processes, acc.process_index
    micro_batches = math.ceil(n_forget / micro)
    per_rank = math.ceil(micro_batches / world)
    steps_per_epoch = math.ceil(per_rank / cfg.grad_accum)
    total = steps_per_epoch * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(round(cfg.warmup_epochs * steps_per_epoch), total))
    model, opt = acc.prepare(model, opt)
    acc.register_for_checkpointing(sched)

    state = TrainState()
    ckpt = work_dir / "checkpoint"
    if (ckpt / "train_state.json").is_file():
        acc.load_state(str(ckpt))
        state = TrainState(**json.loads((ckpt / "train_state.json").read_text()))
        log.info("resuming after epoch %d (step %d)", state.epoch, state.step)

    n_retain = len(views.encoded.get("retain", []))
    for epoch in range(state.epoch, cfg.epochs):
        model.train()
        plan = epoch_plan(n_forget, n_retain, micro, cfg.seed, epoch, method.views)
        mine = [plan[(rank + world * i) % len(plan)] for i in range(per_rank)]  # equal counts on every rank
        sums: dict[str, float] = {}
        for s in range(0, len(mine), cfg.grad_accum):
            group = mine[s:s + cfg.grad_accum]
            terms_acc: dict[str, float] = {}
            for j, step_idx in enumerate(group):
                batch: Batch = {v: {k: t.to(device) for k, t in views.collate(v, idx).items()}
                                for v, idx in step_idx.items()}
                sync = j == len(group) - 1
                with _maybe_no_sync(acc, model, sync):
                    out = _guard_oom(lambda: method.loss(batch, model, ref), cfg)
                    if not torch.isfinite(out.loss):
                        raise FloatingPointError(f"{type(method).__name__}: non-finite loss at epoch {epoch + 1}")
                    acc.backward(out.loss / len(group))
                for k, v in {"loss": float(out.loss), **out.terms}.items():
                    terms_acc[k] = terms_acc.get(k, 0.0) + v / len(group)
            if cfg.grad_clip:
                acc.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            state.step += 1
            for k, v in terms_acc.items():
                sums[k] = sums.get(k, 0.0) + v
            if progress:
                progress({"epoch": epoch + 1, "epochs": cfg.epochs, "step": state.step, "total": total,
                          "lr": sched.get_last_lr()[0], **terms_acc})
        n_steps = max(1, math.ceil(len(mine) / cfg.grad_accum))
        state.history.append({"epoch": epoch + 1, **{k: v / n_steps for k, v in sums.items()}})
        state.epoch = epoch + 1
        _save_checkpoint(acc, ckpt, state)
        if method.after_epoch(acc.unwrap_model(model), epoch + 1, state.history[-1]):
            break
    return acc.unwrap_model(model), state


def _maybe_no_sync(acc, model, sync: bool):
    import contextlib

    return contextlib.nullcontext() if sync or acc.num_processes == 1 else acc.no_sync(model)


def _save_checkpoint(acc, ckpt: Path, state: TrainState) -> None:
    """Write the checkpoint beside the old one and swap, so an interruption mid-save keeps the previous epoch."""
    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if acc.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    acc.wait_for_everyone()
    acc.save_state(str(tmp))
    if acc.is_main_process:
        (tmp / "train_state.json").write_text(json.dumps(state.__dict__))
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
