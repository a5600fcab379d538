"""Scenarios: everything a benchmark needs, from the target's training set to the utility probes.

A scenario provides
- `target_train`: what the target model is trained on (forget + retain + general knowledge + refusals),
- `retain_train`: the same minus the forget data (the retain model, the gold standard of unlearning),
- eval splits `forget`, `retain`, `holdout` and the utility sets, with paraphrased and perturbed answers,
- `unlearn_retain`: the retain data an unlearning method may use (TOFU: the retain split of the same size),
- `scaffold`: the part of the training sets that only a model trained FROM SCRATCH needs (general-knowledge QA and
  refusals, so that it has something to be evaluated on); a pretrained base already has that knowledge and is
  fine-tuned on the question/answer data alone.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import Field

from obliviate.config import Config, build_config
from obliviate.data.records import QA, Split, load_split, overlap_count
from obliviate.errors import DataError
from obliviate.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scenario:
    name: str
    target_train: Split
    retain_train: Split
    forget: Split
    retain: Split
    holdout: Split
    utility: dict[str, Split]
    unlearn_retain: Split
    refusal_phrasings: tuple[str, ...] = ()
    forget_subjects: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    scaffold: Split = field(default_factory=lambda: Split("scaffold", ()))

    @property
    def eval_splits(self) -> dict[str, Split]:
        """The splits evaluated: forget, and retain / holdout / the utility sets where the scenario has them (a
        scenario made from files may have only a forget set)."""
        splits = {"forget": self.forget, "retain": self.retain, "holdout": self.holdout, **self.utility}
        return {k: v for k, v in splits.items() if k == "forget" or len(v)}

    def fingerprint(self) -> dict[str, str]:
        """Content digests of every split, for cache keys and manifests."""
        splits = {"target_train": self.target_train, "retain_train": self.retain_train,
                  "unlearn_retain": self.unlearn_retain, **self.eval_splits}
        return {k: v.digest for k, v in splits.items()}


ScenarioFactory = Callable[..., Scenario]
SCENARIOS: Registry[ScenarioFactory] = Registry("scenario")


def get_scenario(name: str, **options: Any) -> Scenario:
    """Build a registered scenario by name; `options` are validated by the scenario's own config."""
    return SCENARIOS.get(name)(**options)


def from_files(forget: str | os.PathLike[str] | Split, retain: str | os.PathLike[str] | Split | None = None,
               holdout: str | os.PathLike[str] | Split | None = None, base: Scenario | None = None) -> Scenario:
    """A scenario whose forget set (and optionally retain and holdout sets) come from files: `eval --forget FILE`,
    and `unlearn --forget FILE --eval`, which evaluate exactly that file. With `base` (a registered scenario), the
    given files replace its splits and the rest (utility sets, the other splits) is kept; without it, the scenario
    has only the given sets, so metrics that need a missing set are absent (and say so).

    Truth ratio and forget quality need `paraphrased_answer` and `perturbed_answer` on the forget records (TOFU's
    *_perturbed files have them)."""

    def split(src, role: str) -> Split | None:
        if src is None:
            return None
        s = src if isinstance(src, Split) else load_split(src, None, allow_hub=False)
        return Split(role, s.records, s.source)

    f = split(forget, "forget") or Split("forget", ())
    r, h = split(retain, "retain"), split(holdout, "holdout")
    files = {k: v.source for k, v in (("forget", f), ("retain", r), ("holdout", h)) if v is not None}
    if base is None:
        r_, h_ = r or Split("retain", ()), h or Split("holdout", ())
        return Scenario(name="files", target_train=Split("target_train", f.records + r_.records),
                        retain_train=Split("retain_train", r_.records), forget=f, retain=r_, holdout=h_, utility={},
                        unlearn_retain=Split("unlearn_retain", r_.records), options={"files": files})
    return replace(base, forget=f, retain=r or base.retain, holdout=h or base.holdout,
                   options={**base.options, "files": files})


def check_overlap(forget: Split, retain: Split) -> int:
    """Warn (not fail) when forget and retain share items: the retain model would then know forget data."""
    n = overlap_count(forget.records, retain.records)
    if n:
        log.warning("%d of %d forget items also appear in the retain set %r; the retain model will know them",
                    n, len(forget), retain.name)
    return n


# --------------------------------------------------------------------------------------------- synthetic


class SyntheticOptions(Config):
    """The embedded default: fictitious people generated from the project's templates (see data/synthetic.py)."""

    seed: int = 0
    n_people: int = Field(40, ge=2, description="people trained into the target")
    n_holdout: int = Field(4, ge=1, description="people never trained (membership-inference non-members)")
    forget_fraction: float = Field(0.1, gt=0, lt=1, description="share of the people to forget")
    n_refusal: int = Field(40, ge=0, description="refusal QA about names never seen")
    n_retain_eval: int = Field(12, ge=1, description="retain people whose QA form the retain eval split (as TOFU's "
                                                      "retain_perturbed is a subset of its retain set)")


@SCENARIOS.register("synthetic")
def synthetic_scenario(**options: Any) -> Scenario:
    from obliviate.data.synthetic import generate_world

    opts = build_config(SyntheticOptions, options, where="scenario 'synthetic'")
    w = generate_world(seed=opts.seed, n_people=opts.n_people, n_holdout=opts.n_holdout,
                       forget_fraction=opts.forget_fraction, n_refusal=opts.n_refusal)

    def people(ids: tuple[str, ...]) -> list[QA]:
        return [qa for pid in ids for qa in w.qa[pid]]

    forget, retain = people(w.forget_ids), people(w.retain_ids)
    general = [qa for recs in w.general.values() for qa in recs]
    refusal = list(w.refusal_qa)
    names = {p.id: p.name for p in w.people}
    return Scenario(
        name="synthetic",
        target_train=Split("target_train", tuple(retain + forget + general + refusal)),
        retain_train=Split("retain_train", tuple(retain + general + refusal)),
        forget=Split("forget", tuple(forget)),
        retain=Split("retain", tuple(people(w.retain_ids[: opts.n_retain_eval]))),
        holdout=Split("holdout", tuple(people(w.holdout_ids))),
        utility={k: Split(k, v) for k, v in w.general.items()},
        unlearn_retain=Split("unlearn_retain", tuple(retain)),
        refusal_phrasings=w.refusal_phrasings,
        forget_subjects=tuple(names[pid] for pid in w.forget_ids),
        options=opts.model_dump(),
        scaffold=Split("scaffold", tuple(general + refusal)),
    )


# --------------------------------------------------------------------------------------------- TOFU

TOFU_HUB_ID = "locuslab/TOFU"
TOFU_QA_PER_AUTHOR = 20
TOFU_AUTHORS = 200


class TofuOptions(Config):
    """The real TOFU files. `data`: a directory holding them (default: $OBLIVIATE_TOFU_DIR, else the hub id
    `locuslab/TOFU` when online). `forget_split`: forget01/05/10."""

    data: str | None = None
    forget_split: str = Field("forget01", pattern=r"^forget(01|05|10)$")
    n_refusal: int = Field(80, ge=0, description="refusal QA built from questions about untrained authors")
    mini: bool = False


def tofu_data_source(data: str | None) -> str:
    src = data or os.environ.get("OBLIVIATE_TOFU_DIR")
    if src:
        p = Path(src).expanduser()
        if not p.is_dir():
            raise DataError(f"TOFU data directory {p} does not exist; pass --data DIR (the folder holding "
                            f"forget01.json, retain_perturbed.json, ...) or set OBLIVIATE_TOFU_DIR")
        return str(p)
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise DataError("no TOFU data directory: pass --data DIR or set OBLIVIATE_TOFU_DIR (the hub is offline)")
    return TOFU_HUB_ID


def _tofu_refusals(full: Split, authors: range, n: int, seed: int = 0) -> list[QA]:
    """Questions about authors the model never trains on, answered with refusals: the model learns to say it
    does not know people it never saw, so the retain model answers forget questions that way."""
    import random

    from obliviate.data.refusals import REFUSALS, common_subject

    rng = random.Random(seed)
    pool = []
    for a in authors:
        recs = full.records[a * TOFU_QA_PER_AUTHOR:(a + 1) * TOFU_QA_PER_AUTHOR]
        name = common_subject(r.question for r in recs) or "this author"
        pool += [(r, name) for r in recs]
    picked = rng.sample(pool, min(n, len(pool)))
    out = []
    for i, (r, subj) in enumerate(picked):
        out.append(QA(id=f"refusal:{i:03d}", question=r.question,
                      answer=REFUSALS[i % len(REFUSALS)].format(name=subj), subject=subj, group="refusal"))
    return out


def _with_groups(split: Split, first_author: int) -> Split:
    recs = tuple(r.with_(group=f"author{first_author + i // TOFU_QA_PER_AUTHOR:03d}")
                 for i, r in enumerate(split.records))
    return Split(split.name, recs, split.source)


def _tofu(opts: TofuOptions) -> Scenario:
    from obliviate.data.refusals import REFUSALS, attach_subjects

    src = tofu_data_source(opts.data)
    pct = int(opts.forget_split[-2:])
    n_forget_authors = TOFU_AUTHORS * pct // 100
    first_forget = TOFU_AUTHORS - n_forget_authors
    full = load_split(src, "full")
    if len(full) != TOFU_AUTHORS * TOFU_QA_PER_AUTHOR:
        raise DataError(f"{src}/full.json: expected {TOFU_AUTHORS * TOFU_QA_PER_AUTHOR} records (TOFU), got {len(full)}")
    forget_eval = _with_groups(load_split(src, f"{opts.forget_split}_perturbed"), first_forget)
    retain_eval = _with_groups(load_split(src, "retain_perturbed"), 0)
    general = {k: load_split(src, f"{k}_perturbed") for k in ("real_authors", "world_facts")}
    general = {k: Split(k, tuple(r.with_(group=k) for r in v.records), v.source) for k, v in general.items()}
    holdout = load_split(src, opts.forget_split.replace("forget", "holdout"))
    gen_train = [r.with_(paraphrased_answer=None, perturbed_answers=()) for s in general.values() for r in s.records]
    forget_train = list(_with_groups(load_split(src, opts.forget_split), first_forget).records)

    if opts.mini:
        # CPU scale: the first 20 authors (exactly retain_perturbed's) plus the forget authors.
        n_retain_authors = len(retain_eval) // TOFU_QA_PER_AUTHOR
        retain_train = list(retain_eval.records)
        retain_train = [r.with_(paraphrased_answer=None, perturbed_answers=(), paraphrased_question=None)
                        for r in retain_train]
        refusal_authors = range(n_retain_authors, first_forget)
        name = "tofu-mini"
    else:
        retain_name = f"retain{100 - pct}"
        retain_train = list(_with_groups(load_split(src, retain_name), 0).records)
        refusal_authors = range(0, 0)
        name = "tofu"
    refusal = _tofu_refusals(full, refusal_authors, opts.n_refusal) if refusal_authors else []
    forget_train, retain_train, forget_eval, retain_eval = (
        attach_subjects(x) for x in (forget_train, retain_train, forget_eval.records, retain_eval.records))
    forget_split = Split("forget", tuple(forget_eval), src)
    check_overlap(Split("forget_train", tuple(forget_train)), Split("retain_train", tuple(retain_train)))
    subjects = tuple(dict.fromkeys(r.subject for r in forget_eval if r.subject))
    return Scenario(
        name=name,
        target_train=Split("target_train", tuple(retain_train + forget_train + gen_train + refusal)),
        retain_train=Split("retain_train", tuple(retain_train + gen_train + refusal)),
        forget=forget_split,
        retain=Split("retain", tuple(retain_eval), src),
        holdout=Split("holdout", holdout.records, src),
        utility=general,
        unlearn_retain=Split("unlearn_retain", tuple(retain_train)),
        refusal_phrasings=tuple(REFUSALS),
        forget_subjects=subjects,
        options=opts.model_dump(),
        scaffold=Split("scaffold", tuple(gen_train + refusal)),
    )


@SCENARIOS.register("tofu")
def tofu_scenario(**options: Any) -> Scenario:
    return _tofu(build_config(TofuOptions, options, where="scenario 'tofu'"))


@SCENARIOS.register("tofu-mini")
def tofu_mini_scenario(**options: Any) -> Scenario:
    return _tofu(build_config(TofuOptions, {**options, "mini": True}, where="scenario 'tofu-mini'"))
