"""A retain file that covers general knowledge too: the scenario's retain set (the retain authors' QA) plus
obliviate's general-knowledge questions (data/general.py) answered greedily by the base (first sentence), the same
pairs as the build's `rehearsal.source=general` (none restates a question of the scenario). Methods with a KL
retain term (npo_kl, ga_kl) then hold the model to its own distributions on those answers as well; the README's
real-instrument npo_kl rows were run on it:

    python benchmarks/general_retain.py [--base smollm2-135m] [--scenario tofu-mini] --out runs/retain-plus-general.jsonl
    obliviate bench --scenario tofu-mini --base smollm2-135m --retain general ...   # the same set, made by bench
    obliviate sweep --method npo_kl --scenario tofu-mini --base smollm2-135m --retain runs/retain-plus-general.jsonl ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common  # noqa: F401  (offline, TOFU data beside the checkout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m", help="the base that answers (obliviate ls bases)")
    ap.add_argument("--scenario", default="tofu-mini")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    from obliviate.data.records import write_records
    from obliviate.models.bases import resolve_base
    from obliviate.models.loading import load_model_and_tokenizer
    from obliviate.runs.common import load_scenario
    from obliviate.runs.rehearsal import general_retain

    scen = load_scenario(a.scenario)
    records = general_retain(scen, *load_model_and_tokenizer(resolve_base(a.base)))
    write_records(a.out, records)
    n = len(scen.unlearn_retain.records)
    print(f"{a.out}: {n} retain QA + {len(records) - n} general pairs")


if __name__ == "__main__":
    main()
