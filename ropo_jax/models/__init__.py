"""Flax NNX Llama and Mistral with Hugging Face checkpoint import/export and KV-cache decoding.

Public contract (README.md "Public API"; docs/models.md): ``load_hf(path, *, dtype) -> (ModelConfig,
params)``, ``save_hf(config, params, path)``, ``forward(config, params, tokens_BT, *, positions_BT,
segment_ids_BT) -> logits_BTV`` (float32).
"""

from ropo_jax.models.config import (
    PRESETS,
    ConfigError,
    LoraConfig,
    ModelConfig,
    RopeScaling,
    from_hf_config,
    to_hf_config,
)
from ropo_jax.models.hf_convert import CheckpointError, load_hf, save_hf, stored_dtype
from ropo_jax.models.kv_cache import decode_step, init_cache, prefill
from ropo_jax.models.transformer import (
    forward,
    hidden_states,
    init_params,
    logits_from_hidden,
    param_logical_axes,
    unembedding,
)

__all__ = [
    "PRESETS",
    "CheckpointError",
    "ConfigError",
    "LoraConfig",
    "ModelConfig",
    "RopeScaling",
    "decode_step",
    "forward",
    "from_hf_config",
    "hidden_states",
    "init_cache",
    "init_params",
    "load_hf",
    "logits_from_hidden",
    "param_logical_axes",
    "prefill",
    "save_hf",
    "stored_dtype",
    "to_hf_config",
    "unembedding",
]
