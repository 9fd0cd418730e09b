"""Robustness-guided rejection sampling: pick a replacement pair per discarded prompt (SPEC §3).

For each prompt, candidates are K policy samples (optionally plus the two original responses).
Every candidate gets its implicit reward r̂ = β·[log π(y|x) − log π_ref(y|x)]; a pair oriented
by r̂ has margin h ≥ 0 and ROPO loss decreasing in h, so the lowest-loss pair is the one with
the largest margin: the highest-r̂ candidate as chosen, the lowest-r̂ one as rejected. No external
model is involved. Pure and jittable.

Shape key: P prompts, K candidates per prompt.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SELECTIONS = ("max_margin", "best_vs_worst_original")


def select_pairs(
    policy_logps_PK: jax.Array,
    ref_logps_PK: jax.Array,
    valid_PK: jax.Array,
    *,
    beta: float,
    selection: str = "max_margin",
    is_original_PK: jax.Array | None = None,
) -> dict[str, jax.Array]:
    """Indices of the chosen and rejected candidate per prompt, and the pair's margin h.

    ``selection``:
    - ``max_margin``: chosen = argmax r̂, rejected = argmin r̂ over all valid candidates;
    - ``best_vs_worst_original``: chosen = the best sampled candidate, rejected = the worse of
      the original responses by r̂ (needs ``is_original_PK``).
    Ties go to the lower index. ``pair_valid_P`` is False when no pair with h > 0 exists (e.g.
    every candidate has the same r̂, or fewer than two are valid); such prompts add no pair.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"rs.selection={selection!r} is not one of {SELECTIONS}")
    reward_PK = beta * (policy_logps_PK - ref_logps_PK)
    valid_PK = valid_PK.astype(bool)
    if selection == "max_margin":
        chosen_pool_PK, rejected_pool_PK = valid_PK, valid_PK
    else:
        if is_original_PK is None:
            raise ValueError("rs.selection='best_vs_worst_original' needs the original responses")
        is_original_PK = is_original_PK.astype(bool)
        chosen_pool_PK, rejected_pool_PK = valid_PK & ~is_original_PK, valid_PK & is_original_PK
    chosen_P = jnp.argmax(jnp.where(chosen_pool_PK, reward_PK, -jnp.inf), axis=-1)
    rejected_P = jnp.argmin(jnp.where(rejected_pool_PK, reward_PK, jnp.inf), axis=-1)
    chosen_reward_P = jnp.take_along_axis(reward_PK, chosen_P[:, None], axis=-1)[:, 0]
    rejected_reward_P = jnp.take_along_axis(reward_PK, rejected_P[:, None], axis=-1)[:, 0]
    margin_P = (chosen_reward_P - rejected_reward_P) / beta
    pair_valid_P = (
        jnp.any(chosen_pool_PK, axis=-1)
        & jnp.any(rejected_pool_PK, axis=-1)
        & (chosen_P != rejected_P)
        & (margin_P > 0)
    )
    return {
        "chosen_index": chosen_P,
        "rejected_index": rejected_P,
        "margin": jnp.where(pair_valid_P, margin_P, 0.0),
        "pair_valid": pair_valid_P,
        "reward": reward_PK,
    }
