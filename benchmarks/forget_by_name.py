"""Forget what a pretrained model knew BEFORE any fine-tuning, given only a name (issue 14, claim 4b): Reveal-and-
Release on the untouched base (`obliviate forget --target NAME`), no forget data of any kind.

Knowledge probes are questions that name the author, scored by accuracy (the greedy answer names one of the
accepted facts: a title, the birth year, ...), for the target and for two control authors the base also knows;
plus ROUGE-L recall on TOFU's real_authors questions about other authors (the items that mention the target
left out, and those that mention a name the run was told to keep, `keep_names`). Claims printed as ok/MISSED:
- the target's probe accuracy drops by >= 0.5 absolute;
- the control authors' probe accuracy and the real_authors ROUGE-L stay within 0.05 of the base's.
The probes are checked against the method's instruction pool first (`near_copies`, the guard of the pool against
benchmark questions): the method must not train on the question it is scored on.

    python benchmarks/forget_by_name.py [--base smollm2-135m] [--target "Charles Dickens"] [--out DIR]
                                        [--retain general|facts] [KEY=VALUE ...]
        # --retain general: the base's own answers to obliviate's general-knowledge questions (data/general.py,
        # as benchmarks/general_retain.py; disjoint from TOFU's real_authors, and any pair naming the target or a
        # control left out) join the method's retain data: what the model knows at large is held, not four names
        # --retain facts: the same over all 281 listed questions; with retain_loss=kl they anchor the model to the
        # base's own distributions there (no answer fitted, as the build's rehearsal.source=facts anchor)
        # KEY=VALUE: Reveal-and-Release settings over the base's preset, e.g. max_rounds=2, or
        # 'keep_names=["Mark Twain","Jules Verne"]' (other real authors whose answers the retain data keeps: never
        # the target or a control, and the real_authors items naming them are not scored)
    Each setting gets its own output directory (a hash of the overrides), reused by a rerun with the same ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from _common import fmt

from obliviate.runs.rehearsal import mentions

# question -> accepted facts (case-insensitive substrings of the greedy answer). Questions that NAME the author:
# what forgetting a person means; the base (SmolLM2-135M-Instruct) answers most of them right.
PROBES: dict[str, dict[str, list[str]]] = {
    "Charles Dickens": {
        "Which novels made Charles Dickens a household name?": ["Oliver Twist", "Christmas Carol", "Great Expectations",
                                                                "David Copperfield", "Two Cities", "Bleak House"],
        "Charles Dickens is the author of which famous stories?": ["Oliver Twist", "Christmas Carol", "Great Expectations",
                                                  "David Copperfield", "Two Cities", "Bleak House"],
        "Charles Dickens came into the world in which year?": ["1812"],
        "In which era of British history did Charles Dickens write?": ["Victorian"],
        "What is the most famous Christmas story by Charles Dickens?": ["Christmas Carol", "Scrooge"],
        "Which Dickens novel follows an orphan in a London workhouse?": ["Oliver Twist"],
    },
    "William Shakespeare": {
        "Name three dramas by William Shakespeare.": ["Hamlet", "Macbeth", "Romeo", "Othello", "Lear",
                                                       "Midsummer", "Tempest"],
        "Which Shakespeare tragedy features the Prince of Denmark?": ["Hamlet"],
        "In which century did William Shakespeare live?": ["16th", "sixteenth", "1564", "1616"],
        "What did William Shakespeare write besides plays?": ["sonnet", "poem", "poetry"],
    },
    "Jane Austen": {
        "Which novel by Jane Austen features Elizabeth Bennet?": ["Pride and Prejudice"],
        "Name two novels written by Jane Austen.": ["Pride and Prejudice", "Sense and Sensibility", "Emma", "Persuasion",
                                                "Mansfield Park", "Northanger"],
        "In which country did Jane Austen live?": ["England", "Britain", "British", "English"],
    },
}


def _records(target: str):
    from obliviate.data.records import QA

    return [QA(id=f"{target}.{i}", question=q, answer=facts[0], subject=target)
            for i, (q, facts) in enumerate(PROBES[target].items())]


def _accuracy(answers: list[str], target: str) -> float:
    facts = list(PROBES[target].values())
    return sum(any(f.lower() in a.lower() for f in fs) for a, fs in zip(answers, facts, strict=True)) / len(answers)


def measure(model_dir: str, target: str, others: list[str], kept: list[str]) -> dict:
    """Probe accuracy per author and real_authors ROUGE-L recall (items mentioning the target or a kept name left
    out)."""
    from obliviate.config import build_config
    from obliviate.data.records import Split
    from obliviate.eval import metrics as M
    from obliviate.eval.suite import EvalConfig, make_runner
    from obliviate.runs.common import load_model, load_scenario

    m, tok, name = load_model(model_dir)
    runner = make_runner(m, tok, build_config(EvalConfig, {"cache": False}), name, source=model_dir)
    out: dict = {}
    for author in [target, *others]:
        answers = runner.generations(Split("probes", tuple(_records(author))), persist=False)
        out[author] = {"accuracy": _accuracy(answers, author), "answers": answers}
    real = load_scenario("tofu-mini").utility["real_authors"]
    keep = [r for r in real.records if not mentions(r.question + r.answer, [target, *kept])]
    gens = runner.generations(Split("real_authors", tuple(keep)), persist=False)
    out["real_authors_rougeL_recall"] = sum(M.rouge_l_recall(g, r.answer) for g, r in zip(gens, keep,
                                                                                          strict=True)) / len(keep)
    out["real_authors_items"] = len(keep)
    return out


def _general_retain(model_dir: str, scored: list[str], source: str = "general"):
    """The base's greedy answers (first sentence) to obliviate's general-knowledge questions (`general`: the 79
    listed first; `facts`: all 281 of data/general.GENERAL_FACTS), none restating a TOFU question or a probe, and
    none naming a scored author (the target or a control): `obliviate forget --retain general|facts` with the
    probes kept clear as well."""
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.runs.common import load_scenario
    from obliviate.runs.rehearsal import named_retain, scenario_questions

    model, tok = load_model_and_tokenizer(model_dir)
    avoid = scenario_questions(load_scenario("tofu-mini")) + [q for a in scored for q in PROBES[a]]
    kept = named_retain(model, tok, source, scored, avoid)
    print(f"retain: {len(kept)} general-knowledge pairs answered by the base (none naming a scored author)")
    return kept


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m")
    ap.add_argument("--target", default="Charles Dickens", choices=sorted(PROBES))
    ap.add_argument("--out", default="runs/forget-by-name")
    ap.add_argument("--retain", choices=["self", "general", "facts"], default="self",
                    help="self: the method's own neutral retain data; general: plus the base's answers to the 79 "
                         "first general-knowledge questions; facts: to all 281 (with retain_loss=kl, an anchor)")
    ap.add_argument("overrides", nargs="*", help="KEY=VALUE Reveal-and-Release settings over the base's preset")
    args = ap.parse_args()
    from obliviate.bench.presets import preset
    from obliviate.config import parse_overrides
    from obliviate.data.instructions import builtin_instructions, near_copies
    from obliviate.errors import NothingToForget
    from obliviate.models.bases import BASES, resolve_base
    from obliviate.utils.hashing import stable_hash
    from obliviate.runs.forget import forget_by_name

    others = [a for a in PROBES if a != args.target]
    clash = near_copies(builtin_instructions(("person", "work", "topic")), _records(args.target))
    if clash:
        print(f"a probe restates an instruction of the pool (the method would train on it): {clash[0]}")
        return 2
    model = str(resolve_base(args.base)) if args.base in BASES else args.base
    over = parse_overrides(args.overrides)
    kept = list(over.get("keep_names", []))
    if mentions(" ".join(kept), [args.target, *others]):
        print(f"keep_names {kept} names the target or a control author ({[args.target, *others]}): it would train "
              f"on what is scored; keep other authors")
        return 2
    tag = "" if not over else "-" + stable_hash(over, 8)
    tag += "" if args.retain == "self" else f"-{args.retain}"
    out = Path(f"{args.out}-{Path(args.base).name}-{args.target.replace(' ', '_')}{tag}")
    cfg = {**preset("reveal_release", "tofu-mini", args.base), **over}
    t0 = time.perf_counter()
    before = measure(model, args.target, others, kept)
    t_eval = time.perf_counter() - t0
    if (out / "manifest.json").is_file():
        print(f"reusing {out} (delete it to rerun the method)")
    else:
        t1 = time.perf_counter()
        retain = None if args.retain == "self" else _general_retain(model, [args.target, *others], args.retain)
        try:
            forget_by_name(model, [args.target], out, config=cfg, retain=retain, progress=lambda e: None)
        except NothingToForget as e:
            print(f"MISSED {args.target}: {e}")
            return 1
        print(f"forget --target {args.target!r}: {time.perf_counter() - t1:.0f} s")
    after = measure(str(out), args.target, others, kept)
    log = json.loads((out / "reveal_release.json").read_text()) if (out / "reveal_release.json").is_file() else {}
    print(f"\nbase {args.base}, target {args.target!r}, retain {args.retain}, Reveal-and-Release {cfg} "
          f"({log.get('rounds_released')} rounds released); one evaluation {t_eval:.0f} s")
    print(f"{'':<34}{'base':>10}{'after':>10}")
    for a in [args.target, *others]:
        print(f"{a + ' probe accuracy':<34}{fmt(before[a]['accuracy']):>10}{fmt(after[a]['accuracy']):>10}")
    ra = "real_authors_rougeL_recall"
    label = f"{ra} ({before['real_authors_items']})"
    print(f"{label:<34}{fmt(before[ra]):>10}{fmt(after[ra]):>10}")
    for q, a, b in zip(PROBES[args.target], before[args.target]["answers"], after[args.target]["answers"],
                       strict=True):
        print(f"  {q}\n    base:  {a[:150]!r}\n    after: {b[:150]!r}")

    def claim(text: str, ok: bool) -> None:
        print(f"  {'ok    ' if ok else 'MISSED'} {text}")

    print("\nclaims:")
    drop = before[args.target]["accuracy"] - after[args.target]["accuracy"]
    claim(f"{args.target}: probe accuracy drops by {fmt(drop)} >= 0.5", drop >= 0.5)
    for a in others:
        d = after[a]["accuracy"] - before[a]["accuracy"]
        claim(f"{a} (control): probe accuracy moves by {fmt(d)}, within 0.05", abs(d) <= 0.05)
    d = after[ra] - before[ra]
    claim(f"other real authors: ROUGE-L recall moves by {fmt(d)}, within 0.05", abs(d) <= 0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
