"""`obliviate build`: train the offline target and retain models of a scenario, cached by config hash.

The target trains on the scenario's full training set; the retain model with the same recipe (same tokenizer,
same seed, same schedule) on the same set minus the forget data. With two or more cores the two models train side
by side in two processes, one thread each (two busy threads per process on two cores measured 3-7x slower).
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field

from obliviate.config import Config, build_config, deep_merge
from obliviate.data.records import Split
from obliviate.data.scenarios import Scenario, get_scenario
from obliviate.data.templates import Formatter
from obliviate.eval.passes import answer_nll
from obliviate.models.tiny import TinyModelSpec, build_model, n_params, train_tokenizer
from obliviate.utils.hashing import stable_hash
from obliviate.utils.io import atomic_dir, atomic_write_json, cache_root, check_output_dir, read_json
from obliviate.utils.tensors import pad_batch

log = logging.getLogger(__name__)
BUILD_FORMAT = 1  # bump when the recipe changes in a way that invalidates cached builds


class TrainSpec(Config):
    """Memorisation recipe. Learning-rate decay matters at this size (a constant 2e-3 stalled near ROUGE-L 0.71)."""

    epochs: int = Field(30, ge=1)
    lr: float = Field(2e-3, gt=0, description="peak learning rate (3e-3 was unstable at this size)")
    min_lr_ratio: float = Field(0.05, ge=0, le=1, description="cosine decay floor, as a share of lr")
    warmup_steps: int = Field(30, ge=0)
    batch_size: int = Field(16, ge=1)
    weight_decay: float = Field(0.0, ge=0)
    grad_clip: float = Field(1.0, gt=0)
    max_length: int = Field(256, ge=16)
    seed: int = 0


class BuildConfig(Config):
    scenario: str
    scenario_options: dict[str, Any] = {}
    model: TinyModelSpec = TinyModelSpec()
    train: TrainSpec = TrainSpec()
    parallel: bool = Field(True, description="train target and retain side by side, one thread each")


# Per-scenario defaults, tuned so the target memorises (ROUGE-L recall >= 0.9) within the time budget.
SCENARIO_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": {"model": {"vocab_size": 2048}, "train": {"epochs": 26, "lr": 2e-3}},
    "tofu-mini": {"model": {"vocab_size": 4096}, "train": {"epochs": 40, "lr": 1e-3}},
    "tofu": {"model": {"vocab_size": 4096}, "train": {"epochs": 20, "lr": 1e-3}},
}


def build_config_for(scenario: str, overrides: dict[str, Any] | None = None) -> BuildConfig:
    base = deep_merge({"scenario": scenario}, SCENARIO_DEFAULTS.get(scenario, {}))
    return build_config(BuildConfig, deep_merge(base, overrides or {}), where="build config")


@dataclass(frozen=True)
class BuildResult:
    target: Path
    retain: Path
    cached: bool
    info: dict[str, Any]


def build_key(cfg: BuildConfig, scen: Scenario) -> str:
    """Depends on what training sees (the question/answer pairs and the recipe), not on eval-only fields."""
    def pairs(split: Split) -> list[tuple[str, str]]:
        return [(r.question, r.answer) for r in split.records]

    return stable_hash([BUILD_FORMAT, cfg.model_dump(exclude={"parallel", "scenario_options"}), pairs(scen.target_train),
                        pairs(scen.retain_train)])


def build(scenario: str, out: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None,
          overwrite: bool = False, progress: Callable[[str, int, int, float], None] | None = None) -> BuildResult:
    """Build (or reuse) the target and retain models of `scenario`; returns their directories.

    Builds are cached under `$OBLIVIATE_CACHE/builds/<scenario>-<hash>`; with `out`, the models are also placed
    there (a second build with the same config is a no-op)."""
    cfg = build_config_for(scenario, overrides)
    scen = get_scenario(scenario, **cfg.scenario_options)
    key = build_key(cfg, scen)
    if out is not None:
        out_p = Path(out)
        if (out_p / "build.json").is_file() and read_json(out_p / "build.json").get("key") == key:
            return _result(out_p, cached=True)
        check_output_dir(out_p, overwrite)
    cache_dir = cache_root() / "builds" / f"{scenario}-{key}"
    cached = (cache_dir / "build.json").is_file()
    if not cached:
        with atomic_dir(cache_dir, overwrite=True) as tmp:
            _train_both(cfg, scen, key, tmp, progress)
    if out is None:
        return _result(cache_dir, cached)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        shutil.copytree(cache_dir, tmp, dirs_exist_ok=True)
    return _result(Path(out), cached)


def _result(d: Path, cached: bool) -> BuildResult:
    return BuildResult(d / "target", d / "retain", cached, read_json(d / "build.json"))


def _train_both(cfg: BuildConfig, scen: Scenario, key: str, out: Path,
                progress: Callable[[str, int, int, float], None] | None) -> None:
    t0 = time.time()
    tok = train_tokenizer(_tokenizer_corpus(scen.target_train), cfg.model.vocab_size)
    tok_dir = out / "tokenizer"
    tok.save_pretrained(tok_dir)
    jobs = {"target": scen.target_train, "retain": scen.retain_train}
    parallel = cfg.parallel and (os.cpu_count() or 1) >= 2
    info: dict[str, Any] = {}
    if parallel:
        ctx = mp.get_context("spawn")
        queue = ctx.Queue()
        procs = {name: ctx.Process(target=_worker, args=(name, split, tok_dir, cfg, out / name, queue, 1))
                 for name, split in jobs.items()}
        for p in procs.values():
            p.start()
        running = set(procs)
        while running:
            msg = queue.get()
            if msg[0] == "step" and progress:
                progress(*msg[1:])
            elif msg[0] == "done":
                info[msg[1]] = msg[2]
                running.discard(msg[1])
            elif msg[0] == "error":
                for p in procs.values():
                    p.kill()
                raise RuntimeError(f"building the {msg[1]} model failed:\n{msg[2]}")
        for p in procs.values():
            p.join()
    else:
        for name, split in jobs.items():
            info[name] = train_model(split, tok, cfg, out / name, progress=progress, name=name)
    shutil.rmtree(tok_dir)
    atomic_write_json(out / "build.json", {"key": key, "scenario": scen.name, "config": cfg.model_dump(),
                                           "scenario_fingerprint": scen.fingerprint(), "models": info,
                                           "wall_time_s": round(time.time() - t0, 1)})


def _worker(name: str, split: Split, tok_dir: Path, cfg: BuildConfig, out: Path, queue, threads: int) -> None:
    import traceback

    from transformers import AutoTokenizer

    torch.set_num_threads(threads)
    try:
        tok = AutoTokenizer.from_pretrained(tok_dir)
        info = train_model(split, tok, cfg, out, name=name,
                           progress=lambda n, s, t, loss: queue.put(("step", n, s, t, loss)))
        queue.put(("done", name, info))
    except BaseException:
        queue.put(("error", name, traceback.format_exc()))


def _tokenizer_corpus(split: Split) -> list[str]:
    return [f"Question: {r.question}\nAnswer: {r.answer}" for r in split.records]


def lr_at(step: int, total: int, spec: TrainSpec) -> float:
    """Linear warm-up, then cosine decay to `min_lr_ratio * lr`."""
    if step < spec.warmup_steps:
        return spec.lr * (step + 1) / spec.warmup_steps
    frac = (step - spec.warmup_steps) / max(1, total - spec.warmup_steps)
    return spec.lr * (spec.min_lr_ratio + (1 - spec.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def epoch_batches(lengths: Sequence[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar length: shuffle, cut into chunks of 32 batches, sort each chunk by length.
    Keeps the randomness of shuffling while cutting padding (dynamic padding pads to the batch's longest)."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * 32
    batches = []
    for s in range(0, len(perm), chunk):
        part = sorted(perm[s:s + chunk], key=lambda i: lengths[i])
        batches += [part[j:j + batch_size] for j in range(0, len(part), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def train_model(split: Split, tokenizer, cfg: BuildConfig, out: Path, name: str = "model",
                progress: Callable[[str, int, int, float], None] | None = None) -> dict[str, Any]:
    """Train a fresh tiny model on `split` (answer tokens only, as TOFU fine-tuning) and save it to `out`."""
    from obliviate.models.loading import quiet_transformers

    quiet_transformers()
    spec = cfg.train
    fmt = Formatter(tokenizer, "plain", max_length=spec.max_length)
    enc = fmt.encode_qa(list(split.records))
    model = build_model(cfg.model, tokenizer, seed=spec.seed)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": spec.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=spec.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(spec.seed)
    lengths = [len(e.input_ids) for e in enc]
    steps_per_epoch = math.ceil(len(enc) / spec.batch_size)
    total = steps_per_epoch * spec.epochs
    step, t0, tokens, loss_val = 0, time.time(), 0, float("nan")
    for _epoch in range(spec.epochs):
        for idx in epoch_batches(lengths, spec.batch_size, gen):
            ids, mask, labels = pad_batch([enc[i].input_ids for i in idx], tokenizer.pad_token_id,
                                          labels=[enc[i].labels for i in idx])
            for g in opt.param_groups:
                g["lr"] = lr_at(step, total, spec)
            loss = answer_nll(model, {"input_ids": ids, "attention_mask": mask, "labels": labels}, "token_mean")
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            tokens += int(mask.sum())
            loss_val = float(loss.detach())
            if progress:
                progress(name, step, total, loss_val)
    wall = time.time() - t0
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"params": n_params(model), "steps": step, "final_loss": round(loss_val, 4), "train_time_s": round(wall, 1),
            "tokens_per_s": round(tokens / max(wall, 1e-9)), "records": len(split)}
