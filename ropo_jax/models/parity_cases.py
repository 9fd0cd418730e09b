"""Tiny random Hugging Face configurations that exercise every architecture option, for parity
checks against transformers' PyTorch models (tests and ``scripts/model_parity.py``).

Needs ``torch`` and ``transformers`` (test requirements), imported lazily.
"""

from __future__ import annotations

import numpy as np

BASE = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2)
CASES: dict[str, tuple[str, dict]] = {
    "llama_gqa": ("llama", dict(num_attention_heads=4, num_key_value_heads=2)),
    "llama_mqa": ("llama", dict(num_attention_heads=4, num_key_value_heads=1)),
    "llama_mha_rope_theta": (
        "llama",
        dict(num_attention_heads=4, num_key_value_heads=4, rope_theta=500.0),
    ),
    "llama_tied": (
        "llama",
        dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True),
    ),
    "llama3_rope_scaling": (
        "llama",
        dict(
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=500000.0,
            rope_scaling={
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8,
            },
        ),
    ),
    "llama_explicit_head_dim": (
        "llama",
        dict(num_attention_heads=4, num_key_value_heads=2, head_dim=24),
    ),
    "mistral_sliding_window": (
        "mistral",
        dict(num_attention_heads=4, num_key_value_heads=2, sliding_window=4),
    ),
    "mistral_mqa_head_dim": (
        "mistral",
        dict(num_attention_heads=4, num_key_value_heads=1, head_dim=32, sliding_window=None),
    ),
}


def build_hf_model(directory: str, case: str, seed: int = 0):
    """Creates the case's random float32 HF model, saves it to ``directory``, returns it."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig

    family, kwargs = CASES[case]
    config_cls = {"llama": LlamaConfig, "mistral": MistralConfig}[family]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(
        config_cls(**BASE, **kwargs), attn_implementation="eager"
    ).eval()
    model.save_pretrained(directory)
    return model


def hf_logits(model, tokens_BT, mask_BT, positions_BT=None) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(
            torch.tensor(tokens_BT),
            attention_mask=torch.tensor(mask_BT),
            position_ids=None if positions_BT is None else torch.tensor(positions_BT),
        )
    return out.logits.float().numpy()


def padded_batch(seed: int = 0, batch: int = 3, length: int = 11):
    """Random tokens with two right-padded rows (mask 0 = padding)."""
    rng = np.random.default_rng(seed)
    tokens_BT = rng.integers(0, BASE["vocab_size"], size=(batch, length))
    mask_BT = np.ones((batch, length), np.int64)
    mask_BT[1, 7:] = 0
    mask_BT[2, 4:] = 0
    return tokens_BT, mask_BT
