"""A sweep's objective: one summary metric to maximise or minimise, subject to constraints on others.

    objective  := ("max" | "min") METRIC [ ("s.t." | "st" | "subject to") constraint ("and" constraint)* ]
    constraint := METRIC (">=" | "<=") bound
    bound      := NUMBER | NUMBER "*" ("target" | "retain") | "target" | "retain"

`0.95*target` is 0.95 × the metric's value on the target model (before unlearning), `retain` the same on the
retain model (never trained on the forget set); a bare NUMBER is absolute. `≥` / `≤` are accepted for >= / <=.
Metric names are the summary metrics of `eval/specs.py` (`obliviate ls metrics`), checked against the scenario.

    max forget_quality s.t. model_utility >= 0.95*target
    min forget_rougeL_recall s.t. model_utility >= 0.9*retain and privleak >= -20

A constraint's violation follows Optuna's convention: ≤ 0 is feasible, the positive part says by how much it is
missed (in the metric's units)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from obliviate.errors import ConfigError
from obliviate.eval.specs import metric_spec

GRAMMAR = ("max|min METRIC [s.t. METRIC >=|<= NUMBER|NUMBER*target|NUMBER*retain [and ...]], e.g. "
           "\"max forget_quality s.t. model_utility >= 0.95*target\"")
Refs = Mapping[str, Mapping[str, Any]]  # "target" / "retain" -> that model's evaluation summary


@dataclass(frozen=True)
class Bound:
    factor: float
    of: Literal["target", "retain"] | None = None  # None: absolute

    def __str__(self) -> str:
        if self.of is None:
            return f"{self.factor:g}"
        return self.of if self.factor == 1 else f"{self.factor:g}*{self.of}"


@dataclass(frozen=True)
class Constraint:
    metric: str
    op: Literal[">=", "<="]
    bound: Bound

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound}"

    def threshold(self, refs: Refs) -> float:
        """The bound as a number: relative bounds read the target's or retain model's summary."""
        if self.bound.of is None:
            return self.bound.factor
        ref = refs.get(self.bound.of, {}).get(self.metric)
        if not isinstance(ref, (int, float)) or math.isnan(ref):
            raise ConfigError(f"constraint {self}: {self.metric} of the {self.bound.of} model is absent, so the bound "
                              f"cannot be computed; give an absolute bound (e.g. {self.metric} {self.op} 0.8)")
        return self.bound.factor * float(ref)

    def violation(self, value: float | None, threshold: float) -> float:
        """How far `value` misses the threshold (≤ 0: met); an absent value misses it infinitely."""
        if value is None or math.isnan(value):
            return math.inf
        return threshold - value if self.op == ">=" else value - threshold


@dataclass(frozen=True)
class Objective:
    sense: Literal["max", "min"]
    metric: str
    constraints: tuple[Constraint, ...] = ()

    def __str__(self) -> str:
        head = f"{self.sense} {self.metric}"
        return head + (" s.t. " + " and ".join(map(str, self.constraints)) if self.constraints else "")

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        return "maximize" if self.sense == "max" else "minimize"

    def metrics(self) -> list[str]:
        """The objective's metric, then every constrained one (each once)."""
        return list(dict.fromkeys([self.metric, *(c.metric for c in self.constraints)]))

    def better(self, a: float, b: float) -> bool:
        return a > b if self.sense == "max" else a < b

    def check(self, scenario=None) -> None:
        """Every metric name is a summary metric of `scenario` (RegistryError with "did you mean" otherwise)."""
        for name in self.metrics():
            metric_spec(name, scenario)


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_METRIC = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_objective(text: str) -> Objective:
    """Parse `text` (see the module docstring); a ConfigError names the token that does not fit and the grammar."""
    return _Parser(text).objective()


class _Parser:
    """Recursive descent over whitespace-separated tokens (operators are split off first)."""

    def __init__(self, text: str) -> None:
        self.text = text
        src = text.replace("≥", ">=").replace("≤", "<=")
        tokens = re.sub(r"(>=|<=|=>|=<|==|\*|>|<|=)", r" \1 ", src).split()
        self.tokens: list[str] = []
        for t in tokens:  # "subject to" is one keyword
            if t.lower() == "to" and self.tokens and self.tokens[-1].lower() == "subject":
                self.tokens[-1] = "s.t."
            else:
                self.tokens.append(t)
        self.pos = 0

    def fail(self, expected: str) -> ConfigError:
        tok = self.tokens[self.pos] if self.pos < len(self.tokens) else None
        got = repr(tok) if tok is not None else "the end"
        hint = "; use >= or <=" if tok in (">", "<", "=", "==", "=>", "=<") else ""
        return ConfigError(f"--objective {self.text!r}: expected {expected}, got {got}{hint} (grammar: {GRAMMAR})")

    def peek(self) -> str | None:
        return self.tokens[self.pos].lower() if self.pos < len(self.tokens) else None

    def take(self) -> str:
        self.pos += 1
        return self.tokens[self.pos - 1]

    def metric(self, what: str) -> str:
        if self.peek() is None or not _METRIC.match(self.tokens[self.pos]) or self.peek() in _KEYWORDS:
            raise self.fail(what)
        return self.take()

    def objective(self) -> Objective:
        if self.peek() not in ("max", "min"):
            raise self.fail("'max' or 'min'")
        sense = self.take().lower()
        metric = self.metric("a metric name")
        constraints: list[Constraint] = []
        if self.peek() is not None:
            if self.peek() not in ("s.t.", "st"):
                raise self.fail("'s.t.' and a constraint")
            self.take()
            constraints.append(self.constraint())
            while self.peek() is not None:
                if self.peek() != "and":
                    raise self.fail("'and' or the end")
                self.take()
                constraints.append(self.constraint())
        return Objective(sense, metric, tuple(constraints))  # type: ignore[arg-type]

    def constraint(self) -> Constraint:
        metric = self.metric("a constrained metric name")
        if self.peek() not in (">=", "<="):
            raise self.fail("'>=' or '<='")
        op = self.take()
        if self.peek() in ("target", "retain"):
            return Constraint(metric, op, Bound(1.0, self.take().lower()))  # type: ignore[arg-type]
        if self.peek() is None or not _NUMBER.match(self.tokens[self.pos]):
            raise self.fail("a number, NUMBER*target or NUMBER*retain")
        factor = float(self.take())
        if self.peek() != "*":
            return Constraint(metric, op, Bound(factor))  # type: ignore[arg-type]
        self.take()
        if self.peek() not in ("target", "retain"):
            raise self.fail("'target' or 'retain' after '*'")
        return Constraint(metric, op, Bound(factor, self.take().lower()))  # type: ignore[arg-type]


_KEYWORDS = ("max", "min", "s.t.", "st", "and", "target", "retain")


# ------------------------------------------------------------------------------------------------ pruning signal


def progress_signal(objective: Objective, scenario=None, reference_gap: float | None = None
                    ) -> Callable[[Mapping[str, float]], float | None] | None:
    """What a running trial reports after each epoch, for pruning: a cheap stand-in for the objective, read from
    the engine's per-epoch curves (`forget_nll_eval`, `retain_nll_eval`: answer NLL on the forget and retain
    sets), oriented so that the study's direction applies to it. None when the objective has no stand-in (the
    trials then run to the end).

    - An objective that asks for more forgetting (a forget-set metric, pushed the way its spec calls better: max
      forget_quality, min forget_rougeL_recall, ...): the forget NLL above the retain NLL (forget NLL alone
      without a retain set), capped at the retain model's own gap (`reference_gap`): trials that forget
      selectively rank high; over-forgetting earns nothing beyond the cap, so it cannot pull the median up and
      prune the good, moderate trials (it is the constraints' job to reject it).
    - An objective that asks for more utility (a retain / utility-set metric pushed its better way): minus the
      retain NLL."""
    spec = metric_spec(objective.metric, scenario)
    better = spec.higher_is_better
    if better is None:
        return None
    along = (objective.sense == "max") == better  # the objective pushes the metric the way its spec calls better
    sign = 1.0 if objective.sense == "max" else -1.0
    forget_side = set(spec.splits) <= {"forget", "holdout"}
    if not along:
        return None

    def forgetting(terms: Mapping[str, float]) -> float | None:
        f, r = terms.get("forget_nll_eval"), terms.get("retain_nll_eval")
        if f is None or not math.isfinite(f):
            return None
        gap = f - r if r is not None and math.isfinite(r) else f
        if reference_gap is not None:
            gap = min(gap, reference_gap)
        return sign * gap

    def utility(terms: Mapping[str, float]) -> float | None:
        r = terms.get("retain_nll_eval")
        return -sign * r if r is not None and math.isfinite(r) else None

    return forgetting if forget_side else utility
