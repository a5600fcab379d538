"""One spec per summary metric: what it reads, what must be computed for it, which way is better, where it is shown.

A summary metric is a function of a `MetricContext` (the per-item values of every split, and the reference
model's) and never calls the model. Its `MetricSpec` says which passes must run (`needs`), which splits and
per-item fields it reads (enforced: reading anything undeclared raises), which direction is better, one line of
doc, and on which surfaces it is shown and at which position. Every list of metric names elsewhere (the CLI
summary, report.md, the benchmark rows and table columns, the deletion ledger) is `summary_keys(surface)`.

The per-split metrics of the utility sets (`{split}_prob`, `{split}_rougeL_recall`, `{split}_truth_ratio`) exist
only for the sets a scenario declares: `metric_specs(scenario)` builds them, nothing is registered globally.
Without a scenario the family is listed once under the placeholder split `<utility>`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np

from obliviate.errors import ConfigError, RegistryError
from obliviate.eval import metrics as M

if TYPE_CHECKING:
    from obliviate.data.scenarios import Scenario

Items = dict[str, dict[str, dict[str, Any]]]  # split -> item id -> field -> value

Direction = Literal["higher", "lower", "closer_to_0", "closer_to_reference", "informational"]
DIRECTIONS: tuple[str, ...] = get_args(Direction)
# Passes a metric can need beyond the teacher-forced one (always run): greedy generation, EL_n continuations on
# forget, the same on holdout (costly, opt-in), the MIA scores, and a reference (retain) model's results.
PASSES = frozenset({"generate", "el", "holdout_el", "mia", "reference"})
SURFACES: dict[str, str] = {
    "cli": "the summary table printed by `obliviate eval` and `obliviate unlearn`",
    "report": "report.md of an evaluation (then every other computed metric, sorted)",
    "leaderboard": "the metrics kept in each benchmark row (leaderboard.json)",
    "columns": "the metric columns of the benchmark's leaderboard.md and report.html",
    "ledger": "the metrics kept before and after each deletion request",
}
UTILITY = "<utility>"  # the placeholder split of the utility-set family when no scenario is given
# OpenUnlearning's short names of TOFU's utility sets (its metric keys start with them); other splits keep theirs.
OPENUNLEARNING_SPLITS = {"real_authors": "ra", "world_facts": "wf"}
FAMILY = ("prob", "rougeL_recall", "truth_ratio")  # the per-split metrics: f"{split}_{suffix}"


# ------------------------------------------------------------------------------------------------ context


def _isnan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


@dataclass(frozen=True)
class MetricContext:
    """What a summary metric reads: per-item values (NaN values skipped), the reference model's per-item values
    and summary. `reads` is the (splits, fields) the metric declared; reading anything else raises, so a spec's
    declaration is always the truth."""

    items: Items
    reference: Items | None = None
    reference_summary: Mapping[str, Any] = field(default_factory=dict)
    reads: tuple[frozenset[str], frozenset[str]] | None = None

    def for_spec(self, spec: MetricSpec) -> MetricContext:
        return replace(self, reads=(frozenset(spec.splits), frozenset(spec.fields)))

    def _check(self, split: str, key: str) -> None:
        if self.reads is not None and (split not in self.reads[0] or key not in self.reads[1]):
            raise LookupError(f"a metric read field {key!r} of split {split!r} without declaring it (declared "
                              f"splits {sorted(self.reads[0])}, fields {sorted(self.reads[1])})")

    def values(self, split: str, key: str) -> list[float]:
        self._check(split, key)
        if split not in self.items:
            raise KeyError(f"split {split!r} was not evaluated (evaluated: {', '.join(self.items)})")
        return [v[key] for v in self.items[split].values() if key in v and not _isnan(v[key])]

    def mean(self, split: str, key: str) -> float | None:
        vals = self.values(split, key)
        return float(np.mean(vals)) if vals else None

    def paired(self, split: str, key: str) -> tuple[list[float], list[float]] | None:
        """`key` of the model and of the reference on the items of `split` both have, in item order; None when
        there is no reference or it lacks the split."""
        self._check(split, key)
        if self.reference is None or split not in self.reference:
            return None
        ref = self.reference[split]
        ids = [i for i, v in self.items[split].items() if key in v and i in ref and key in ref[i]]
        return [self.items[split][i][key] for i in ids], [ref[i][key] for i in ids]


# ------------------------------------------------------------------------------------------------ the spec


@dataclass(frozen=True, eq=False)
class MetricSpec:
    """One summary metric.

    `fn` reads a MetricContext (never the model) and returns the value, or None when it cannot be computed
    (no reference model, an empty split). `shown` maps each surface it appears on (see SURFACES) to its
    position there. `label` is the short column header of the benchmark table; `opt_in` metrics are computed
    only when asked for by name. `openunlearning` is the key OpenUnlearning's TOFU evaluator gives the same metric
    in its TOFU_EVAL.json / TOFU_SUMMARY.json (eval/openunlearning.py writes and reads those files); None where it
    has no counterpart."""

    name: str
    fn: Callable[[MetricContext], float | None]
    doc: str
    direction: Direction
    splits: tuple[str, ...]
    fields: tuple[str, ...]
    needs: frozenset[str] = frozenset()
    shown: Mapping[str, int] = field(default_factory=dict)
    label: str | None = None
    opt_in: bool = False
    openunlearning: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if self.direction not in DIRECTIONS:
            problems.append(f"direction {self.direction!r} is not one of {DIRECTIONS}")
        if not set(self.needs) <= PASSES:
            problems.append(f"needs {sorted(set(self.needs) - PASSES)} are not passes ({sorted(PASSES)})")
        if not set(self.shown) <= set(SURFACES):
            problems.append(f"shown on {sorted(set(self.shown) - set(SURFACES))}, not surfaces ({list(SURFACES)})")
        if "columns" in self.shown and not self.label:
            problems.append("shown in the benchmark columns without a label")
        if not self.splits or not self.fields:
            problems.append("declares no split or no field it reads")
        if problems:
            raise ValueError(f"metric spec {self.name!r}: " + "; ".join(problems))

    @property
    def higher_is_better(self) -> bool | None:
        return {"higher": True, "lower": False}.get(self.direction)

    @property
    def header(self) -> str:
        """The benchmark table's column header: the label and the better direction (↑, ↓, →0)."""
        mark = {"higher": " ↑", "lower": " ↓", "closer_to_0": " (→0)"}.get(self.direction, "")
        return f"{self.label or self.name}{mark}"


def _at(**positions: int) -> dict[str, int]:
    """Where a metric is shown: surface=position."""
    return positions


# ------------------------------------------------------------------------------------------------ the metrics


def _split_family(split: str, role: Literal["forget", "retain", "utility"],
                  shown: Mapping[str, dict[str, int]] | None = None) -> list[MetricSpec]:
    """`{split}_prob`, `{split}_rougeL_recall`, `{split}_truth_ratio` (TOFU's per-split numbers). Forget and retain
    use the plain probability; the utility sets the probability normalised over the wrong answers. The forget
    truth-ratio score is mean min(TR, 1/TR) (1 = cannot tell true from false), the others mean max(0, 1 − TR)."""
    shown = shown or {}
    utility = role == "utility"
    prob_key = "norm_prob" if utility else "prob"
    tr_agg = M.truth_ratio_closer_to_one if role == "forget" else M.truth_ratio_true_better
    better: Direction = "lower" if role == "forget" else "higher"
    where = "each utility set the scenario declares" if split == UTILITY else split
    ou = OPENUNLEARNING_SPLITS.get(split, split)  # OpenUnlearning's names: forget_Q_A_Prob, ra_Q_A_ROUGE, ...
    ou_tr = "forget_truth_ratio" if role == "forget" else f"{ou}_Truth_Ratio"
    prob_doc = (f"normalised probability P(a)/(P(a)+Σ P(wrong)) on {where}" if utility
                else f"mean TOFU probability on {where}")

    def tr_score(c: MetricContext) -> float | None:
        vals = c.values(split, "truth_ratio")
        return tr_agg(vals) if vals else None

    return [
        MetricSpec(f"{split}_prob", lambda c: c.mean(split, prob_key), prob_doc, better, (split,), (prob_key,),
                   shown=shown.get("prob", {}), openunlearning=f"{ou}_Q_A_Prob" + ("_normalised" if utility else "")),
        MetricSpec(f"{split}_rougeL_recall", lambda c: c.mean(split, "rougeL_recall"),
                   f"mean ROUGE-L recall of greedy answers on {where}", better, (split,), ("rougeL_recall",),
                   frozenset({"generate"}), shown=shown.get("rougeL_recall", {}), label=f"{split} ROUGE-L",
                   openunlearning=f"{ou}_Q_A_ROUGE"),
        MetricSpec(f"{split}_truth_ratio", tr_score,
                   f"truth-ratio score on {where}: mean " + ("min(TR, 1/TR)" if role == "forget" else "max(0, 1 − TR)"),
                   "higher", (split,), ("truth_ratio",), shown=shown.get("truth_ratio", {}), openunlearning=ou_tr),
    ]


def _forget_quality(c: MetricContext) -> float | None:
    """None (absent, with the reason in the evaluation's meta) without a reference, or when the model or the
    reference has no truth ratios for the forget items (records without perturbed answers)."""
    pair = c.paired("forget", "truth_ratio")
    if pair is None or not pair[0]:
        return None
    return M.forget_quality(*pair)


def _model_utility(utility: Sequence[str]) -> Callable[[MetricContext], float | None]:
    def fn(c: MetricContext) -> float | None:
        parts: list[float | None] = [c.mean("retain", "prob"), c.mean("retain", "rougeL_recall"),
                                     M.truth_ratio_true_better(c.values("retain", "truth_ratio"))]
        for u in utility:
            parts += [c.mean(u, "norm_prob"), c.mean(u, "rougeL_recall"),
                      M.truth_ratio_true_better(c.values(u, "truth_ratio"))]
        if any(p is None for p in parts):
            return None
        return M.harmonic_mean([float(p) for p in parts])  # type: ignore[arg-type]
    return fn


def _auc(key: str) -> Callable[[MetricContext], float | None]:
    def fn(c: MetricContext) -> float | None:
        m, h = c.values("forget", key), c.values("holdout", key)
        return M.auc(m, h) if m and h else None
    return fn


def _mia_auc_ref(c: MetricContext) -> float | None:
    scores = {}
    for s in ("forget", "holdout"):
        pair = c.paired(s, "mean_nll")
        if not pair or not pair[0]:
            return None
        scores[s] = [M.mia_reference(ours, ref) for ours, ref in zip(*pair, strict=True)]
    return M.auc(scores["forget"], scores["holdout"])


def _privleak(formula: Callable[[float, float], float]) -> Callable[[MetricContext], float | None]:
    """`formula(AUC_model, AUC_retain)` on the Min-K% attack's AUCs (the retain model's from its summary)."""
    def fn(c: MetricContext) -> float | None:
        ours = _auc("mia_mink")(c)
        ref = c.reference_summary.get("mia_auc_mink")
        return formula(ours, ref) if ours is not None and ref is not None else None
    return fn


# The four score attacks: (name, per-item score, column label, position in cli/report, leaderboard, columns,
# OpenUnlearning's name).
_MIA = (("loss", "mia_loss", "AUC loss", 17, 9, 5, "mia_loss"), ("zlib", "mia_zlib", "AUC zlib", 18, 10, 6, "mia_zlib"),
        ("mink", "mia_mink", "AUC Min-K", 19, 11, 7, "mia_min_k"),
        ("minkpp", "mia_minkpp", "AUC Min-K++", 20, 12, 8, "mia_min_k_plus_plus"))


def metric_specs(scenario: Scenario | None = None) -> dict[str, MetricSpec]:
    """Every summary metric of `scenario`, by name, in computation order (the order of summary.json). Without a
    scenario the utility-set family is listed once under the placeholder split `<utility>` (for listings only)."""
    utility = tuple(scenario.utility) if scenario is not None else (UTILITY,)
    specs = [
        *_split_family("forget", "forget", {"rougeL_recall": _at(cli=3, report=3, leaderboard=3, columns=3, ledger=3),
                                            "prob": _at(cli=4, report=4, leaderboard=4, ledger=4),
                                            "truth_ratio": _at(cli=5, report=5, leaderboard=5)}),
        *_split_family("retain", "retain", {"rougeL_recall": _at(cli=6, report=6, leaderboard=6),
                                            "prob": _at(cli=7, report=7), "truth_ratio": _at(cli=8, report=8)}),
        MetricSpec("forget_quality", _forget_quality,
                   "KS-test p-value of per-item forget truth ratios against the retain (reference) model's",
                   "higher", ("forget",), ("truth_ratio",), frozenset({"reference"}),
                   _at(cli=1, report=1, leaderboard=1, columns=1, ledger=1), label="FQ",
                   openunlearning="forget_quality"),
        MetricSpec("model_utility", _model_utility(utility),
                   "harmonic mean of probability, ROUGE-L recall and truth-ratio score on retain and each utility set",
                   "higher", ("retain", *utility), ("prob", "norm_prob", "rougeL_recall", "truth_ratio"),
                   frozenset({"generate"}), _at(cli=2, report=2, leaderboard=2, columns=2, ledger=2), label="MU",
                   openunlearning="model_utility"),
        MetricSpec("extraction_strength", lambda c: c.mean("forget", "extraction_strength"),
                   "mean extraction strength on forget", "lower", ("forget",), ("extraction_strength",),
                   shown=_at(cli=9, report=9, leaderboard=13), openunlearning="extraction_strength"),
        MetricSpec("exact_memorization", lambda c: c.mean("forget", "exact_memorization"),
                   "mean exact memorisation on forget", "lower", ("forget",), ("exact_memorization",),
                   shown=_at(cli=10, report=10), openunlearning="exact_memorization"),
        MetricSpec("ma", lambda c: c.mean("forget", "exact_memorization"),
                   "memorisation accuracy on forget (answer tokens given the question)", "lower", ("forget",),
                   ("exact_memorization",), shown=_at(cli=12, report=12)),
        MetricSpec("el10", lambda c: c.mean("forget", "el"), "extraction likelihood EL_n on forget", "lower",
                   ("forget",), ("el",), frozenset({"el"}), _at(cli=11, report=11, leaderboard=14)),
        MetricSpec("holdout_ma", lambda c: c.mean("holdout", "exact_memorization"),
                   "memorisation accuracy on holdout (KUMPR threshold)", "informational", ("holdout",),
                   ("exact_memorization",), shown=_at(cli=14, report=14)),
        # Opt-in: EL_n on the holdout set decodes from every answer prefix of items the model never saw (no prefix
        # sharing is possible there), which costs more than the rest of an evaluation.
        MetricSpec("holdout_el10", lambda c: c.mean("holdout", "el"),
                   "EL_n on holdout (KUMPR threshold; opt-in: costly)", "informational", ("holdout",), ("el",),
                   frozenset({"el", "holdout_el"}), _at(cli=13, report=13), opt_in=True),
        MetricSpec("forget_refusal_rate", lambda c: c.mean("forget", "refusal"),
                   "share of forget answers that are refusals", "informational", ("forget",), ("refusal",),
                   frozenset({"generate"}), _at(cli=15, report=15, leaderboard=7, columns=9, ledger=6),
                   label="refusals"),
        *(MetricSpec(f"mia_auc_{name}", _auc(key), f"AUC of the {name} attack, forget (members) vs holdout",
                     "closer_to_reference", ("forget", "holdout"), (key,), frozenset({"mia"}),
                     _at(cli=cli, report=cli, leaderboard=board, columns=col), label=label, openunlearning=ou)
          for name, key, label, cli, board, col, ou in _MIA),
        MetricSpec("mia_auc_ref", _mia_auc_ref,
                   "AUC of the reference attack −(L̄_θ − L̄_ref), reference = the retain model "
                   "(0.5 = indistinguishable)",
                   "closer_to_reference", ("forget", "holdout"), ("mean_nll",), frozenset({"mia", "reference"}),
                   _at(cli=21, report=21)),
        MetricSpec("privleak", _privleak(M.privleak),
                   "((1 − AUC) − (1 − AUC_retain))/(1 − AUC_retain) × 100 with the Min-K% attack, the field's sign "
                   "(MUSE, OpenUnlearning): 0 ideal, −100 a memorising model, < 0 under-unlearned",
                   "closer_to_0", ("forget", "holdout"), ("mia_mink",), frozenset({"mia", "reference"}),
                   _at(cli=16, report=16, leaderboard=8, columns=4, ledger=5), label="privleak",
                   openunlearning="privleak"),
        MetricSpec("privleak_auc_relative", _privleak(M.privleak_auc_relative),
                   "(AUC − AUC_retain)/AUC_retain × 100 with the Min-K% attack: 0 ideal, > 0 under-unlearned "
                   "(opposite in sign to privleak)",
                   "closer_to_0", ("forget", "holdout"), ("mia_mink",), frozenset({"mia", "reference"})),
        *(s for u in utility for s in _split_family(u, "utility")),
    ]
    out: dict[str, MetricSpec] = {}
    for s in specs:
        if s.name in out:
            raise ConfigError(f"scenario {getattr(scenario, 'name', None)!r}: two metrics are named {s.name!r} "
                              f"(a utility split's name collides with another metric); rename the split")
        out[s.name] = s
    return out


# ------------------------------------------------------------------------------------------------ lookups


def _close(name: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def family_split(name: str) -> str | None:
    """The split a per-split metric name reads (`real_authors_prob` → `real_authors`), else None."""
    for suffix in FAMILY:
        if name.endswith("_" + suffix) and len(name) > len(suffix) + 1:
            return name[: -len(suffix) - 1]
    return None


def metric_spec(name: str, scenario: Scenario | None = None) -> MetricSpec:
    """The spec of one metric (direction, doc, label, ...), with "did you mean" for an unknown name."""
    specs = metric_specs(scenario)
    if name not in specs:
        raise RegistryError(f"unknown metric {name!r}{_close(name, list(specs))} (`obliviate ls metrics` lists them)")
    return specs[name]


def summary_keys(where: str, scenario: Scenario | None = None) -> list[str]:
    """The metrics shown on a surface (see SURFACES), in display order."""
    if where not in SURFACES:
        raise ValueError(f"unknown surface {where!r}{_close(where, list(SURFACES))} (surfaces: {', '.join(SURFACES)})")
    shown = [s for s in metric_specs(scenario).values() if where in s.shown]
    return [s.name for s in sorted(shown, key=lambda s: s.shown[where])]


def resolve(names: Sequence[str] | None, scenario: Scenario) -> list[MetricSpec]:
    """The specs to compute: every metric of the scenario except the opt-in ones when `names` is None, else the
    named ones. Every problem is reported at once: an unknown name (with "did you mean"), a per-split metric of a
    split the scenario does not have (naming the split and the scenario's splits)."""
    specs = metric_specs(scenario)
    if names is None:  # a scenario made from files may lack retain/holdout: their metrics are absent, not errors
        return [s for s in specs.values() if not s.opt_in]
    if not names:
        raise ConfigError("metrics: empty list; omit it to compute every metric")
    problems = []
    for n in names:
        if n in specs:
            continue
        split = family_split(n)
        if split is not None and split not in scenario.eval_splits:
            problems.append(f"{n!r} reads split {split!r}, which scenario {scenario.name!r} does not have "
                            f"(its splits: {', '.join(scenario.eval_splits)})")
        else:
            problems.append(f"unknown metric {n!r}{_close(n, list(specs))}")
    if problems:
        raise ConfigError("metrics: " + "; ".join(problems) + " (`obliviate ls metrics` lists the metrics)")
    return [specs[n] for n in names]


def summarize(items: Items, specs: Sequence[MetricSpec], reference: Items | None = None,
              reference_summary: Mapping[str, Any] | None = None) -> dict[str, float | None]:
    """The named last step: each spec's value from the per-item values (None where it cannot be computed)."""
    ctx = MetricContext(items, reference, reference_summary or {})
    out: dict[str, float | None] = {}
    for s in specs:
        if not set(s.splits) <= set(items):  # a split this scenario does not have (a forget file alone)
            out[s.name] = None
            continue
        val = s.fn(ctx.for_spec(s))
        out[s.name] = None if val is None or _isnan(val) else float(val)
    return out
