"""Where and how models load: float32 on cpu by default; OBLIVIATE_DTYPE / OBLIVIATE_DEVICE choose otherwise (the
GPU path), and a bad value is a one-line error naming the variable and the values it takes."""

from __future__ import annotations

import pytest
import torch

from obliviate.errors import ModelError
from obliviate.models.loading import default_device, default_dtype, load_model


def test_defaults_are_float32_on_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv("OBLIVIATE_DTYPE", raising=False)
    monkeypatch.delenv("OBLIVIATE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (default_dtype(), default_device()) == (torch.float32, "cpu")


def test_a_visible_gpu_is_this_ranks_own(monkeypatch):
    monkeypatch.delenv("OBLIVIATE_DEVICE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert default_device() == "cuda:1"


def test_dtype_from_the_environment_loads_the_weights_in_it(monkeypatch, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=1)).save_pretrained(tmp_path)
    monkeypatch.setenv("OBLIVIATE_DTYPE", "bfloat16")
    model = load_model(tmp_path)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


@pytest.mark.parametrize(("var", "value", "needles"), [
    ("OBLIVIATE_DTYPE", "fp8", ("OBLIVIATE_DTYPE='fp8'", "float32, bfloat16, float16")),
    ("OBLIVIATE_DEVICE", "gpu0", ("OBLIVIATE_DEVICE='gpu0'", "cpu, cuda or cuda:N")),
    ("OBLIVIATE_DEVICE", "cuda", ("no CUDA device", "unset it")),
])
def test_a_bad_value_is_one_line_naming_the_fix(monkeypatch, var, value, needles):
    monkeypatch.setenv(var, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelError) as e:
        default_dtype() if var == "OBLIVIATE_DTYPE" else default_device()
    assert all(n in str(e.value) for n in needles) and "\n" not in str(e.value)
