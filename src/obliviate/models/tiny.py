"""The offline tiny models: a byte-level BPE tokenizer trained locally and a Llama-architecture model built
from a config. Nothing is downloaded."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from pydantic import Field

from obliviate.config import Config

PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"


class TinyModelSpec(Config):
    """Llama architecture, about 5M parameters by default (hidden 256, 4 layers, 4k vocabulary: the LM head is a
    large share of a tiny model's compute, so the vocabulary stays small)."""

    vocab_size: int = Field(4096, ge=300)
    hidden_size: int = Field(256, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(688, ge=8)
    max_position: int = Field(512, ge=32)
    tie_embeddings: bool = True
    rope_theta: float = 10000.0


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """Byte-level BPE on the training texts, wrapped as a fast HF tokenizer with pad/bos/eos.

    A BOS token is prepended to every encoded text (post-processor) and skipped for answers, which are encoded
    with add_special_tokens=False; byte-level means any text, seen or unseen, can be encoded."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD, BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                   model_max_length=100_000)


def build_model(spec: TinyModelSpec, tokenizer, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads, num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_position, tie_word_embeddings=spec.tie_embeddings,
        rope_theta=spec.rope_theta, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
