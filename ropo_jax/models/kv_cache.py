"""KV-cache decoding: prefill a batch of prompts of different lengths, then one token at a time.

The cache has a fixed size S (one compile per (batch, S)); every row keeps its own length, so
prompts of different lengths decode together. Logits equal the full forward's.

Cache: ``keys``/``values`` [L, B, S, K, H], ``positions`` [B, S] (the position of each slot),
``valid`` [B, S] (slot written), ``lengths`` [B] (slots used = next write index).
Shape key: L layers, B batch, T prompt length, S cache size, K kv heads, H head dim, V vocab.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ropo_jax.models.attention import Masking, attention_mask, self_attention_masking
from ropo_jax.models.config import ModelConfig
from ropo_jax.models.transformer import (
    embed,
    final_norm,
    layer_adapters,
    logits_from_hidden,
    run_layers,
)


def init_cache(config: ModelConfig, batch_size: int, max_len: int, dtype=None) -> dict:
    dtype = jnp.dtype(dtype or config.dtype)
    shape = (config.num_layers, batch_size, max_len, config.num_kv_heads, config.head_dim)
    return {
        "keys": jnp.zeros(shape, dtype),
        "values": jnp.zeros(shape, dtype),
        "positions": jnp.zeros((batch_size, max_len), jnp.int32),
        "valid": jnp.zeros((batch_size, max_len), bool),
        "lengths": jnp.zeros((batch_size,), jnp.int32),
    }


def prefill(config: ModelConfig, params, tokens_BT, cache: dict, *, lengths_B) -> tuple:
    """Runs the right-padded prompts ``tokens_BT`` (row b real for t < lengths_B[b]) and fills
    cache slots 0..T−1. Returns the logits at each prompt's last token [B, V] and the cache."""
    batch, length = tokens_BT.shape
    positions_BT = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
    valid_BT = positions_BT < lengths_B[:, None]
    segments_BT = valid_BT.astype(jnp.int32)
    # Self-attention over the prompts: the configured kernel (cudnn/splash on GPU/TPU).
    masking = self_attention_masking(config, positions_BT, segments_BT, one_sequence_per_row=True)
    x_BTD, (keys_LBTKH, values_LBTKH) = run_layers(
        config,
        params["layers"],
        embed(config, params, tokens_BT),
        positions_BT,
        masking,
        adapters=layer_adapters(config, params),
    )
    last_BD = jnp.take_along_axis(x_BTD, (lengths_B - 1)[:, None, None], axis=1)
    logits_BV = logits_from_hidden(config, params, final_norm(config, params, last_BD))[:, 0]
    dtype = cache["keys"].dtype
    cache = {
        "keys": cache["keys"].at[:, :, :length].set(keys_LBTKH.astype(dtype)),
        "values": cache["values"].at[:, :, :length].set(values_LBTKH.astype(dtype)),
        "positions": cache["positions"].at[:, :length].set(positions_BT),
        "valid": cache["valid"].at[:, :length].set(valid_BT),
        "lengths": lengths_B.astype(jnp.int32),
    }
    return logits_BV, cache


def _write_row(cache_SKH, index, new_1KH):
    return jax.lax.dynamic_update_slice_in_dim(cache_SKH, new_1KH.astype(cache_SKH.dtype), index, 0)


def decode_step(config: ModelConfig, params, tokens_B, cache: dict) -> tuple:
    """Appends one token per row (at slot ``lengths[b]``, position = that slot) and returns the
    next-token logits [B, V] and the updated cache."""
    lengths_B = cache["lengths"]
    positions_B1 = lengths_B[:, None]
    slots_S = jnp.arange(cache["valid"].shape[1])
    written_BS = slots_S[None, :] == positions_B1
    key_valid_BS = cache["valid"] | written_BS
    key_positions_BS = jnp.where(written_BS, positions_B1, cache["positions"])
    # One query against the cache (T = 1 ≠ S): the xla kernel with its dense mask.
    query_segments_B1 = jnp.ones_like(positions_B1)
    key_segments_BS = key_valid_BS.astype(jnp.int32)
    masking = Masking(
        "xla",
        positions_B1,
        query_segments_B1,
        key_positions_BS,
        key_segments_BS,
        attention_mask(
            positions_B1,
            query_segments_B1,
            key_positions_BS,
            key_segments_BS,
            config.sliding_window,
        ),
    )

    def make_kv_fn(layer_cache):
        keys_BSKH, values_BSKH = layer_cache

        def kv_fn(new_keys_B1KH, new_values_B1KH):
            keys = jax.vmap(_write_row)(keys_BSKH, lengths_B, new_keys_B1KH)
            values = jax.vmap(_write_row)(values_BSKH, lengths_B, new_values_B1KH)
            return keys, values

        return kv_fn

    x_B1D, (keys_LBSKH, values_LBSKH) = run_layers(
        config,
        params["layers"],
        embed(config, params, tokens_B[:, None]),
        positions_B1,
        masking,
        kv_fn_xs=(make_kv_fn, (cache["keys"], cache["values"])),
        adapters=layer_adapters(config, params),
    )
    logits_BV = logits_from_hidden(config, params, final_norm(config, params, x_B1D))[:, 0]
    cache = {
        "keys": keys_LBSKH,
        "values": values_LBSKH,
        "positions": key_positions_BS,
        "valid": key_valid_BS,
        "lengths": lengths_B + 1,
    }
    return logits_BV, cache
