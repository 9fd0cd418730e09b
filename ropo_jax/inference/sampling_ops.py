"""Next-token selection for decoding: greedy, temperature, top-k and top-p (nucleus). Pure jnp.

All filters act on float32 logits and keep at least one token, so sampling is always defined.
Shape key: B batch, V vocabulary.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

NEG_INF = -1e30  # finite, so a fully filtered row cannot produce NaN in softmax


def top_k_filter(logits_BV: jax.Array, top_k: int) -> jax.Array:
    """Keeps the ``top_k`` largest logits per row (all of them when top_k ≤ 0 or ≥ V)."""
    vocab = logits_BV.shape[-1]
    if top_k <= 0 or top_k >= vocab:
        return logits_BV
    kth_largest_B1 = jax.lax.top_k(logits_BV, top_k)[0][..., -1:]
    return jnp.where(logits_BV >= kth_largest_B1, logits_BV, NEG_INF)


def top_p_filter(logits_BV: jax.Array, top_p) -> jax.Array:
    """Keeps the smallest set of most-probable tokens whose probability mass reaches ``top_p``.

    A token is kept if the mass of the tokens strictly more probable than it is < top_p, so the
    most probable token is always kept and top_p = 1 keeps everything.
    """
    sorted_logits_BV = jnp.sort(logits_BV, axis=-1)[..., ::-1]
    sorted_probs_BV = jax.nn.softmax(sorted_logits_BV, axis=-1)
    mass_before_BV = jnp.cumsum(sorted_probs_BV, axis=-1) - sorted_probs_BV
    is_most_probable_BV = jnp.arange(logits_BV.shape[-1]) == 0
    keep_sorted_BV = (mass_before_BV < top_p) | is_most_probable_BV
    # The smallest kept logit is the threshold; ties at the threshold are all kept.
    threshold_B1 = jnp.min(
        jnp.where(keep_sorted_BV, sorted_logits_BV, jnp.inf), axis=-1, keepdims=True
    )
    return jnp.where(logits_BV >= threshold_B1, logits_BV, NEG_INF)


def select_next_token(
    logits_BV: jax.Array,
    rng: jax.Array,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> jax.Array:
    """Greedy when ``temperature == 0``, else a sample from softmax(filtered logits / T)."""
    logits_BV = logits_BV.astype(jnp.float32)
    if temperature == 0.0:
        return jnp.argmax(logits_BV, axis=-1).astype(jnp.int32)
    logits_BV = top_k_filter(logits_BV / temperature, top_k)
    if top_p < 1.0:
        logits_BV = top_p_filter(logits_BV, top_p)
    return jax.random.categorical(rng, logits_BV, axis=-1).astype(jnp.int32)
