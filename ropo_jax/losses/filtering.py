"""The w-step of the ROPO framework (docs/method.md §3.2): keep the (1−ρ)·N lowest-loss examples.

With θ fixed, the optimal sample weights of ``min Σ wᵢ ℓᵢ s.t. Σ wᵢ = (1−ρ)N, 0 ≤ wᵢ ≤ 1`` put
weight 1 on the lowest-loss examples and 0 on the rest. Pure and jittable; the number kept may
be a traced value, so one compiled function serves every ρ.

Conventions (the paper leaves them open; docs/method.md §3.2 and docs/ropo.md record them):
- the number discarded is ⌊ρ·N⌋ of the N valid examples, so never more than ρN are dropped;
- ties are broken by position: among equal scores the earlier example is kept (a stable sort);
- NaN scores rank after every number (they are discarded first), and invalid entries (padding)
  are never kept and not counted in N.

Shape key: N examples (data set or mini-batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def num_discarded(num_valid, filter_ratio):
    """⌊ρ·N⌋, computed so that exact products (ρ = 0.2, N = 10) are not lost to rounding."""
    return jnp.floor(filter_ratio * num_valid + 1e-6).astype(jnp.int32)


def keep_lowest(
    scores_N: jax.Array, *, filter_ratio, valid_N: jax.Array | None = None
) -> jax.Array:
    """Boolean mask of the ⌈(1−ρ)N⌉ = N − ⌊ρN⌋ lowest scores among the valid entries."""
    scores_N = jnp.asarray(scores_N, jnp.float32)
    valid_N = jnp.ones(scores_N.shape, bool) if valid_N is None else valid_N.astype(bool)
    # Invalid entries sort after NaNs, NaNs after every number: (class, score) lexicographic.
    sort_class_N = jnp.where(valid_N, jnp.where(jnp.isnan(scores_N), 1, 0), 2)
    finite_scores_N = jnp.where(sort_class_N == 0, scores_N, 0.0)
    # lexsort sorts by the last key first and is stable: ties keep index order.
    order_N = jnp.lexsort((finite_scores_N, sort_class_N))
    rank_N = jnp.zeros_like(order_N).at[order_N].set(jnp.arange(order_N.size, dtype=order_N.dtype))
    num_valid = jnp.sum(valid_N)
    num_keep = num_valid - num_discarded(num_valid, filter_ratio)
    return (rank_N < num_keep) & valid_N


def filter_weights(
    scores_N: jax.Array,
    *,
    filter_ratio,
    valid_N: jax.Array | None = None,
    previous_keep_N: jax.Array | None = None,
) -> jax.Array:
    """Sample weights wᵢ ∈ {0, 1} of the w-step, float32.

    ``previous_keep_N`` selects the ``cumulative`` filter mode: examples discarded in earlier
    rounds stay discarded and ⌊ρ·N_active⌋ more are dropped from the still-active ones.
    Without it (``recompute``), the kept set is chosen afresh over all valid examples.
    """
    if previous_keep_N is not None:
        active_N = previous_keep_N.astype(bool)
        valid_N = active_N if valid_N is None else (active_N & valid_N.astype(bool))
    return keep_lowest(scores_N, filter_ratio=filter_ratio, valid_N=valid_N).astype(jnp.float32)


def in_batch_weights(loss_B: jax.Array, weight_B: jax.Array, *, filter_ratio) -> jax.Array:
    """The cheap "small-loss" variant (filter_granularity = batch): inside one mini-batch, zero
    the weights of the ⌊ρ·B_valid⌋ highest losses. The selection carries no gradient."""
    keep_B = keep_lowest(
        jax.lax.stop_gradient(loss_B), filter_ratio=filter_ratio, valid_N=weight_B > 0
    )
    return weight_B * keep_B.astype(weight_B.dtype)
