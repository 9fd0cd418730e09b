"""Token and sequence log-probabilities, and the one weighted reduction (docs/method.md §1).

Sequence log-probabilities are sums of per-token log-probs over response tokens only, in float32.
Shape key: B batch, T length, V vocabulary, D model width, C chunk length (in
``gather_completions``: completion positions per row), N chunks, R token rows, S sequences.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_logps(logits_BTV: jax.Array, targets_BT: jax.Array) -> jax.Array:
    """log p(target) per position, float32, as logit[target] − logsumexp(logits).

    Never materialises a log-softmax: only the [B, T] logsumexp and the gathered logit.
    """
    logits_BTV = logits_BTV.astype(jnp.float32)
    logsumexp_BT = jax.nn.logsumexp(logits_BTV, axis=-1)
    target_logit_BT = jnp.take_along_axis(logits_BTV, targets_BT[..., None], axis=-1)[..., 0]
    return target_logit_BT - logsumexp_BT


def chunked_token_logps(
    hidden_BTD: jax.Array,
    unembed_DV: jax.Array,
    targets_BT: jax.Array,
    *,
    chunk_size: int = 256,
) -> jax.Array:
    """``token_logps(hidden_BTD @ unembed_DV, targets_BT)`` without a [B, T, V] array.

    The sequence is processed in chunks of ``chunk_size`` positions; each chunk's logits are
    recomputed in the backward pass (``jax.checkpoint``), so peak memory holds one chunk's
    [B, C, V] logits instead of the whole sequence's — what makes 32k–128k vocabularies fit.
    Logits are accumulated in float32 whatever the input dtype.
    """
    batch, length, width = hidden_BTD.shape
    chunk_size = min(chunk_size, length)
    num_chunks = -(-length // chunk_size)
    pad = num_chunks * chunk_size - length
    hidden_BTD = jnp.pad(hidden_BTD, ((0, 0), (0, pad), (0, 0)))
    targets_BT = jnp.pad(targets_BT, ((0, 0), (0, pad)))
    hidden_NBCD = hidden_BTD.reshape(batch, num_chunks, chunk_size, width).swapaxes(0, 1)
    targets_NBC = targets_BT.reshape(batch, num_chunks, chunk_size).swapaxes(0, 1)

    @jax.checkpoint
    def chunk_logps(args):
        hidden_BCD, targets_BC = args
        logits_BCV = jnp.einsum(
            "bcd,dv->bcv", hidden_BCD, unembed_DV, preferred_element_type=jnp.float32
        )
        return token_logps(logits_BCV, targets_BC)

    logps_NBC = jax.lax.map(chunk_logps, (hidden_NBCD, targets_NBC))
    return logps_NBC.swapaxes(0, 1).reshape(batch, num_chunks * chunk_size)[:, :length]


def gather_completions(
    hidden_RTD: jax.Array,
    tokens_RT: jax.Array,
    loss_mask_RT: jax.Array,
    sequence_index_RT: jax.Array,
    completion_positions_RC: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The positions whose logits enter a sequence log-prob, gathered before the LM head.

    ``completion_positions_RC`` lists per row the columns t whose target ``tokens[t + 1]`` is a
    response token, −1 for padding (see ``ropo_jax.data.batching``). Returns the hidden states
    [R, C, D] at those columns, their targets [R, C], a mask [R, C] (0 on −1 entries, and
    wherever the target is not a response token) and the targets' sequence slots [R, C]. Padding
    entries read column 0 and carry mask 0, so they add nothing to sums or gradients.
    """
    length = tokens_RT.shape[1]
    valid_RC = completion_positions_RC >= 0
    column_RC = jnp.maximum(completion_positions_RC, 0)
    target_column_RC = jnp.minimum(column_RC + 1, length - 1)
    hidden_RCD = jnp.take_along_axis(hidden_RTD, column_RC[..., None], axis=1)
    targets_RC = jnp.take_along_axis(tokens_RT, target_column_RC, axis=1)
    mask_RC = valid_RC & (jnp.take_along_axis(loss_mask_RT, target_column_RC, axis=1) != 0)
    index_RC = jnp.take_along_axis(sequence_index_RT, target_column_RC, axis=1)
    return hidden_RCD, targets_RC, mask_RC, index_RC


def sequence_logps(logps_BT: jax.Array, mask_BT: jax.Array, *, average: bool = False) -> jax.Array:
    """Sum (or, with ``average``, mean) of token log-probs where ``mask_BT`` is set
    (docs/method.md §1)."""
    mask_BT = mask_BT.astype(jnp.float32)
    total_B = jnp.sum(logps_BT * mask_BT, axis=-1)
    if not average:
        return total_B
    return total_B / jnp.maximum(jnp.sum(mask_BT, axis=-1), 1.0)


def segment_logps(
    logps_RT: jax.Array, mask_RT: jax.Array, sequence_index_RT: jax.Array, num_sequences: int
) -> jax.Array:
    """Per-sequence sums of masked token log-probs when rows hold several sequences (packing).

    ``sequence_index_RT`` names the sequence slot of every token; masked-out tokens contribute
    nothing whatever their index, so padding may carry any valid index.
    """
    contribution_RT = logps_RT * mask_RT.astype(jnp.float32)
    return jax.ops.segment_sum(
        contribution_RT.reshape(-1), sequence_index_RT.reshape(-1), num_segments=num_sequences
    )


def segment_token_counts(
    mask_RT: jax.Array, sequence_index_RT: jax.Array, num_sequences: int
) -> jax.Array:
    """Number of masked-in (response) tokens per sequence slot, float32."""
    return jax.ops.segment_sum(
        mask_RT.astype(jnp.float32).reshape(-1),
        sequence_index_RT.reshape(-1),
        num_segments=num_sequences,
    )


def weighted_mean(loss_B: jax.Array, weights_B: jax.Array | None = None) -> jax.Array:
    """Σ wᵢ·lossᵢ / Σ wᵢ — the single reduction for padding, filter weights and accumulation.

    Returns 0 when every weight is 0 (an all-padding batch) instead of NaN. Weights of 0 also
    block NaN/Inf losses of padding rows from reaching the result and its gradient.
    """
    if weights_B is None:
        weights_B = jnp.ones_like(loss_B)
    weights_B = weights_B.astype(jnp.float32)
    safe_loss_B = jnp.where(weights_B > 0, loss_B, 0.0)
    total_weight = jnp.sum(weights_B)
    return jnp.sum(weights_B * safe_loss_B) / jnp.where(total_weight > 0, total_weight, 1.0)
