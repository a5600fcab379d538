"""report.md of an evaluation: the metrics of the "report" surface in their order, then every other one sorted."""

from __future__ import annotations

from obliviate.eval.report import fmt_value, summary_markdown


def test_summary_markdown_order_and_format():
    summary = {"world_facts_prob": 0.5, "mia_auc_ref": 0.5, "famous_works_prob": 0.25, "forget_quality": 1e-5,
               "model_utility": None, "privleak": 12.0}
    md = summary_markdown(summary, "Evaluation")
    assert md == ("# Evaluation\n\n| metric | value |\n|---|---|\n"
                  "| forget_quality | 1.000e-05 |\n| model_utility | – |\n| privleak | 12.0000 |\n"
                  "| mia_auc_ref | 0.5000 |\n| famous_works_prob | 0.2500 |\n| world_facts_prob | 0.5000 |\n")


def test_fmt_value():
    assert [fmt_value(v) for v in (None, 0.0, 0.5, 2e4, 3)] == ["–", "0.0000", "0.5000", "2.000e+04", "3"]
