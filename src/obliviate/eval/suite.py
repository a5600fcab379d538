"""The evaluation engine: per-item values from cached passes, then the named summary metrics (eval/specs.py).

`evaluate(model, scenario, reference=...)` computes every TOFU metric, extraction metrics and membership-inference
AUCs, and writes `eval.json` (per-item values keyed by stable ids), `summary.json` and `report.md` atomically.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from obliviate.config import Config
from obliviate.data.records import Split
from obliviate.data.refusals import is_refusal
from obliviate.data.scenarios import Scenario
from obliviate.data.templates import resolve_tokenize
from obliviate.errors import DataError
from obliviate.eval import metrics as M
from obliviate.eval import specs
from obliviate.eval.passes import PassCache, TokenStats
from obliviate.eval.runner import ModelRunner, PassProgress
from obliviate.eval.specs import Items, MetricSpec
from obliviate.utils import dist
from obliviate.utils.io import read_json

log = logging.getLogger(__name__)
EVAL_FORMAT = 1


Compat = Literal["none", "openunlearning"]


class EvalConfig(Config):
    """How the evaluation runs. Defaults follow TOFU (greedy, 200 new tokens) and METHODS.md (Min-K k=0.4, EL10).

    `compat=openunlearning` reproduces OpenUnlearning's numbers item for item, for comparison with published tables:
    joint tokenisation, the final label token (EOS) left out of exact memorisation, extraction strength, Min-K% and
    Min-K%++ (kept in probability, truth ratio and LOSS, as theirs), extraction strength's no-match case scored 1/n
    (their loop's leftover k = n − 1; the definition gives 0), the ZLib attack's text decoded from the labelled
    tokens, their 1e-10 in the denominators of the truth ratio and the normalised probability (it decides the value
    once P(answer) < ~1e-8). The default (`none`) keeps the definitions of METHODS.md."""

    template: Literal["auto", "plain", "chat"] = "auto"
    tokenize: Literal["auto", "separate", "joint"] = Field(
        "auto", description="prompt and answer tokenised separately or as one string (OpenUnlearning); auto: the "
                            "mode each model was trained with (recorded by obliviate build/unlearn), else joint")
    compat: Compat = Field("none", description="openunlearning: reproduce OpenUnlearning's per-item numbers "
                                               "(their tokenisation and conventions); none: obliviate's definitions")
    max_length: int = Field(512, ge=16)
    batch_size: int = Field(32, ge=1, description="teacher-forced pass batch size")
    gen_batch_size: int = Field(64, ge=1, description="generation batch size")
    max_new_tokens: int = Field(200, ge=1)
    el_n: int = Field(10, ge=1, description="n of the extraction likelihood EL_n")
    mink_k: float = Field(0.4, gt=0, le=1, description="share of lowest-probability tokens for Min-K%/Min-K%++")
    metrics: list[str] | None = Field(None, description="summary metrics to compute (default: all but the opt-in "
                                                         "ones; `obliviate ls metrics` lists them)")
    cache: bool = Field(True, description="cache model passes on disk by model fingerprint")
    cache_forget_generations: bool = Field(
        False, description="also keep the forget set's greedy generations in the pass cache: they decode to what the "
                           "model still says about the forget data, so by default they are recomputed, never stored")
    save_generations: bool = Field(False, description="store generated text in eval.json (it may be private)")

    @model_validator(mode="after")
    def _compat_tokenizes_jointly(self):
        if self.compat == "openunlearning" and self.tokenize == "separate":
            raise ValueError("compat=openunlearning tokenises prompt and answer jointly, as OpenUnlearning does; got "
                             "tokenize=separate (drop it, or set compat=none to score separately)")
        return self

    @property
    def openunlearning(self) -> bool:
        return self.compat == "openunlearning"

    def tokenize_for(self, model: Any) -> str:
        """The tokenisation `model` is scored with: joint under compat=openunlearning, else `resolve_tokenize`."""
        return "joint" if self.openunlearning else resolve_tokenize(self.tokenize, model)


# ------------------------------------------------------------------------------------------ per-item values


PRIVATE_SPLITS = ("forget",)  # whose generated text is the data being deleted: kept out of the disk cache


def _without_last(s: TokenStats) -> TokenStats:
    return TokenStats(*(None if x is None else x[:-1] for x in (s.logps, s.correct, s.mu, s.sigma)))


GENERATION_FIELDS = frozenset({"rougeL_recall", "refusal"})  # per-item values read from the greedy answers alone


def item_values(runner: ModelRunner, split: Split, cfg: EvalConfig, *, generate: bool, el: bool,
                mia: bool, stats: bool = True) -> dict[str, dict[str, Any]]:
    """Every per-item number of one split, read from the runner's cached passes (the forget set's generations stay
    in memory unless `cache_forget_generations`). Without `stats`, only the generation-based values (no
    teacher-forced pass: what a ROUGE-only evaluation of the split needs).

    Under compat=openunlearning: exact memorisation, extraction strength, Min-K% and Min-K%++ read the answer
    tokens without the final one (OpenUnlearning's `tokenwise_logprobs` / `tokenwise_vocab_logprobs`,
    src/evals/metrics/utils.py, drop the last labelled token, the EOS), an item left without tokens scoring as theirs
    (EM absent, ES and the attacks 0); extraction strength scores no match 1/n; the ZLib attack compresses the
    labelled tokens decoded (`extract_target_texts_from_processed_data`) instead of the answer text; the truth ratio
    and the normalised probability add their 1e-10 to the denominator."""
    st = runner.split_stats(split, vocab_stats=mia) if stats else None
    ou = cfg.openunlearning
    persist = cfg.cache_forget_generations or split.name not in PRIVATE_SPLITS
    gens = runner.generations(split, persist=persist) if generate else None
    conts = runner.el_continuations(split, cfg.el_n, persist=persist, settle=True) if el else None
    answers = runner.answer_ids(split) if el else None
    texts = runner.label_texts(split) if ou and mia else [r.answer for r in split.records]
    out: dict[str, dict[str, Any]] = {}
    for i, r in enumerate(split.records):
        v: dict[str, Any] = {}
        if st is not None:
            a = st["answer"][i]
            s = _without_last(a) if ou else a  # what EM, ES, Min-K% and Min-K%++ read
            n = len(s.logps)
            v.update(mean_nll=M.mean_nll(a.logps), prob=M.probability(a.logps),
                     exact_memorization=M.exact_memorization(s.correct) if n else float("nan"),
                     extraction_strength=M.extraction_strength(s.correct, no_match="1/n" if ou else "0"),
                     n_tokens=len(a.logps))
            if "pert" in st:
                eps = M.OPENUNLEARNING_EPS if ou else 0.0
                v["truth_ratio"] = M.truth_ratio(st["para"][i].logps, [p.logps for p in st["pert"][i]], eps)
                v["norm_prob"] = M.normalized_probability(a.logps, [p.logps for p in st["pert"][i]], eps)
        if gens is not None:
            v["rougeL_recall"] = M.rouge_l_recall(gens[i], r.answer)
            v["refusal"] = is_refusal(gens[i])
            if cfg.save_generations:
                v["generation"] = gens[i]
        if conts is not None and answers is not None:
            v["el"] = M.extraction_likelihood(conts[i], answers[i], cfg.el_n)
        if mia:  # (a split the attacks read always has its teacher-forced pass: never generation-only)
            v["mia_loss"] = M.mia_loss(a.logps)
            v["mia_zlib"] = M.mia_zlib(a.logps, texts[i])
            v["mia_mink"] = M.mia_min_k(s.logps, cfg.mink_k) if n or not ou else 0.0
            v["mia_minkpp"] = M.mia_min_k_plus_plus(s.logps, s.mu, s.sigma, cfg.mink_k) if n or not ou else 0.0
        out[r.id] = v
    return out


# ------------------------------------------------------------------------------------------ the engine


@dataclass
class EvalResult:
    """`summary` (metric -> value), per-item values, the meta written to eval.json, and the specs computed."""

    summary: dict[str, Any]
    items: Items
    meta: dict[str, Any]
    specs: Sequence[MetricSpec] = ()


def resolve_metrics(cfg: EvalConfig, scen: Scenario) -> list[MetricSpec]:
    """The metrics to compute (default: every metric of the scenario except the opt-in ones); an unknown name or
    one reading a split the scenario lacks is a ConfigError."""
    return specs.resolve(cfg.metrics, scen)


def compute_items(runner: ModelRunner, scen: Scenario, cfg: EvalConfig, needs: set[str],
                  splits: Collection[str] | None = None, generation_only: Collection[str] = ()) -> Items:
    """Per-item values of every split (or of `splits`; those in `generation_only` without a teacher-forced pass).
    Under torchrun / accelerate launch the items are sharded across the
    processes (item i goes to rank i mod world) and the per-item results gathered: every item is computed
    exactly as in a single process, so the results agree within float tolerance (batch composition differs)."""
    want_gen, want_el, want_mia = "generate" in needs, "el" in needs, "mia" in needs
    world, me = dist.world_size(), dist.rank()
    items: Items = {}
    for name, split in scen.eval_splits.items():
        if splits is not None and name not in splits:
            continue
        is_mia = name in ("forget", "holdout")
        shard = split if world == 1 else Split(split.name, split.records[me::world], split.source)
        part = item_values(runner, shard, cfg, generate=want_gen and name != "holdout",
                           el=want_el and (name == "forget" or "holdout_el" in needs), mia=want_mia and is_mia,
                           stats=name not in generation_only)
        merged: dict[str, dict[str, Any]] = {}
        for p in dist.all_gather_objects(part):
            merged.update(p)
        items[name] = {r.id: merged[r.id] for r in split.records}  # the split's own order
    return items


def summarize(items: Items, scen: Scenario, names: Sequence[str], reference: Items | None,
              reference_summary: dict[str, Any]) -> dict[str, Any]:
    return specs.summarize(items, specs.resolve(names, scen), reference, reference_summary)


@dataclass
class Reference:
    """The retain model's per-item values: from a saved evaluation or computed from a model. `problem`: why it
    cannot serve these items (a saved evaluation of other forget items); the metrics that need it are then absent,
    with that reason."""

    items: Items | None
    summary: dict[str, Any]
    source: str
    problem: str | None = None


def load_reference_eval(path: Path, scen: Scenario) -> Reference:
    """A saved evaluation (eval.json, and summary.json when present) as the reference. A file that is not an
    obliviate evaluation is a DataError; one computed on other forget items gives a Reference with a `problem`."""
    data = _read_eval_file(path / "eval.json")
    items = data.get("items")
    if not isinstance(items, dict) or not all(isinstance(v, dict) for v in items.values()):
        raise DataError(f"{path / 'eval.json'}: field 'items' is missing or not a mapping of split -> item id -> "
                        f"values; --reference needs an eval.json written by `obliviate eval`")
    summary = _read_eval_file(path / "summary.json") if (path / "summary.json").is_file() else {}
    digest = (data.get("scenario") or {}).get("forget_digest") if isinstance(data.get("scenario"), dict) else None
    if digest not in (None, scen.forget.digest):
        return Reference(None, {}, str(path), problem=f"the reference eval {path} was computed on other forget items; "
                         f"evaluate the retain model on these items (or pass the model itself as --reference)")
    return Reference(items, summary, str(path))


def _read_eval_file(path: Path) -> dict[str, Any]:
    try:
        data = read_json(path)
    except json.JSONDecodeError as e:
        raise DataError(f"{path} line {e.lineno}: malformed JSON ({e.msg}); --reference needs an evaluation written "
                        f"by `obliviate eval` (re-run it)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}; --reference needs an evaluation "
                        f"written by `obliviate eval`")
    return data


def reference_from_runner(runner: ModelRunner, scen: Scenario, cfg: EvalConfig) -> Reference:
    items = compute_items(runner, scen, cfg, {"mia"}, splits=("forget", "holdout"))
    summary = summarize(items, scen, ["mia_auc_mink"], None, {})
    return Reference(items, summary, runner.name)


def evaluate_runner(runner: ModelRunner, scen: Scenario, cfg: EvalConfig, reference: Reference | None = None) -> EvalResult:
    t0 = time.time()
    chosen = resolve_metrics(cfg, scen)
    needs = set().union(*(s.needs for s in chosen))
    splits, gen_only = None, set()
    if cfg.metrics is None:  # the full evaluation: every split, every per-item value (eval.json is complete)
        needs |= {"mia"}
    else:  # the metrics asked for: only the splits they read, and no teacher-forced pass where ROUGE is all
        splits = {sp for s in chosen for sp in s.splits}
        gen_only = {sp for sp in splits
                    if all(set(s.fields) <= GENERATION_FIELDS for s in chosen if sp in s.splits)}
    usable = reference if reference is not None and reference.items is not None else None
    items = compute_items(runner, scen, cfg, needs, splits, gen_only)
    summary = specs.summarize(items, chosen, usable.items if usable else None, usable.summary if usable else {})
    absent = absent_reasons(summary, chosen, items, reference)
    meta = {"format": EVAL_FORMAT, "model": {"name": runner.name, "fingerprint": runner.fingerprint},
            "reference": reference.source if reference else None, "config": cfg.model_dump(),
            "scenario": {"name": scen.name, "options": scen.options, "forget_digest": scen.forget.digest,
                         "splits": {k: v.digest for k, v in scen.eval_splits.items()}},
            "template": runner.fmt.kind, "tokenize": runner.fmt.tokenize, "compat": cfg.compat, "absent": absent,
            "wall_time_s": round(time.time() - t0, 2)}
    return EvalResult(summary, items, meta, chosen)


def absent_reasons(summary: dict[str, Any], chosen: Sequence[MetricSpec], items: Items,
                   reference: Reference | None) -> dict[str, str]:
    """Why each metric that has no value is absent (shown by the CLI and kept in eval.json's meta)."""
    out: dict[str, str] = {}
    for s in chosen:
        if summary.get(s.name) is not None:
            continue
        missing = [sp for sp in s.splits if sp not in items]
        if missing and all(sp in ("retain", "holdout") for sp in missing):
            out[s.name] = f"no {' and no '.join(missing)} set (eval --{missing[0]} FILE, or a scenario that has one)"
        elif missing:
            out[s.name] = f"no {', '.join(missing)} set in this scenario"
        elif "reference" in s.needs and reference is None:
            out[s.name] = "no --reference (a retain model that never saw the forget items, or its saved eval)"
        elif "reference" in s.needs and reference.problem:
            out[s.name] = reference.problem
        elif "truth_ratio" in s.fields and not any("truth_ratio" in v for sp in s.splits
                                                   for v in items.get(sp, {}).values()):
            out[s.name] = (f"the {'/'.join(s.splits)} records have no paraphrased_answer and perturbed_answer (the "
                           f"truth ratio needs them)")
        elif "reference" in s.needs and "mia_mink" in s.fields and reference is not None:  # privleak's two forms
            auc = reference.summary.get("mia_auc_mink")
            out[s.name] = (f"the reference ({reference.source}) has no Min-K% AUC (mia_auc_mink; OpenUnlearning's "
                           f"mia_min_k)" if auc is None else
                           f"the reference's Min-K% AUC is {auc}, where this formula divides by zero")
        elif "reference" in s.needs:
            out[s.name] = f"the reference ({reference.source if reference else '?'}) has no values for these items"
        else:
            out[s.name] = "no item had a value"
    return out


def make_runner(model, tokenizer, cfg: EvalConfig, name: str, progress: PassProgress | None = None,
                source: Any = None) -> ModelRunner:
    """The runner of one model; it tokenises as `cfg.tokenize_for(source)` (`source`: where the model comes from, a
    path or hub id; default the model itself, whose name_or_path is read)."""
    return ModelRunner(model, tokenizer, template=cfg.template, max_length=cfg.max_length, batch_size=cfg.batch_size,
                       gen_batch_size=cfg.gen_batch_size, max_new_tokens=cfg.max_new_tokens,
                       cache=PassCache(enabled=cfg.cache), name=name, progress=progress,
                       tokenize=cfg.tokenize_for(model if source is None else source))
