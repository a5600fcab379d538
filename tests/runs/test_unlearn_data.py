"""What an unlearning run trains on: a scenario's forget and retain sets, or a retain file in place of the
scenario's retain set (forget and evaluation still the scenario's), recorded by the file's hash."""

from __future__ import annotations

import json

from obliviate.runs.common import load_scenario
from obliviate.runs.unlearn import eval_scenario, load_forget_retain


def test_a_retain_file_replaces_the_scenarios_retain_set(tmp_path):
    scen = load_scenario("synthetic")
    f = tmp_path / "retain.jsonl"
    rows = [{"id": f"g{i}", "question": f"What is {i} plus one?", "answer": f"It is {i + 1}."} for i in range(3)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))

    forget, retain, hashes = load_forget_retain(None, f, scen)
    assert [r.id for r in retain] == ["g0", "g1", "g2"]
    assert [r.id for r in forget] == [r.id for r in scen.forget.records]
    assert hashes["retain"].startswith("sha256:") and hashes["forget"].startswith("scenario:")
    assert eval_scenario(scen, None, f, ()) is scen  # evaluation stays the scenario's

    _, default, plain = load_forget_retain(None, None, scen)
    assert [r.id for r in default] == [r.id for r in scen.unlearn_retain.records]
    assert plain["retain"].startswith("scenario:")
