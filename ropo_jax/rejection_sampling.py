"""Robustness-guided rejection sampling: pick a replacement pair per discarded prompt (SPEC §3).

For each prompt, candidates are K policy samples (optionally plus the two original responses).
Every candidate gets its implicit reward r̂ = β·[log π(y|x) − log π_ref(y|x)] (docs/ropo.md,
"The loop"); a pair oriented by r̂ has margin h ≥ 0 and ROPO loss decreasing in h, so the
lowest-loss pair is the one with the largest margin: the highest-r̂ candidate as chosen, the
lowest-r̂ one as rejected. No external model is involved. Variants (docs/ropo.md): rank by r̂
per token instead of the sum, which grows with length; keep a sample only against an original
response; re-orient the original pair; drop pairs whose margin is below a threshold. Pure and
jittable.

Shape key: P prompts, K candidates per prompt.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

SELECTIONS = ("max_margin", "best_vs_worst_original", "reorient_original")
RANKINGS = ("sum", "mean")


def candidate_scores(
    reward_PK: jax.Array, lengths_PK: jax.Array, ranking: str = "sum"
) -> jax.Array:
    """The score candidates are ranked by: the implicit reward r̂ itself (``sum``: summed over
    the response's tokens, so it grows with length) or r̂ per response token (``mean``)."""
    if ranking not in RANKINGS:
        raise ValueError(f"rs.ranking={ranking!r} is not one of {RANKINGS}")
    if ranking == "sum":
        return reward_PK
    return reward_PK / jnp.maximum(lengths_PK, 1).astype(reward_PK.dtype)


def select_pairs(
    policy_logps_PK: jax.Array,
    ref_logps_PK: jax.Array,
    valid_PK: jax.Array,
    *,
    beta: float,
    selection: str = "max_margin",
    is_original_PK: jax.Array | None = None,
    lengths_PK: jax.Array | None = None,
    ranking: str = "sum",
    min_margin: float = 0.0,
) -> dict[str, jax.Array]:
    """Indices of the chosen and rejected candidate per prompt, and the pair's margin h.

    Candidates are ranked by ``candidate_scores`` (``ranking``; ``mean`` needs
    ``lengths_PK``, the response lengths in tokens). ``selection``:
    - ``max_margin``: chosen = the best-scored, rejected = the worst-scored valid candidate;
    - ``best_vs_worst_original``: chosen = the best sampled candidate, rejected = the worse of
      the original responses (needs ``is_original_PK``);
    - ``reorient_original``: the two original responses, ordered by the model (a label
      correction of the discarded pair; no sample is used).
    Ties go to the lower index. ``pair_valid_P`` is False when no pair whose score margin
    exceeds ``min_margin`` (> 0) exists (e.g. every candidate has the same score, or fewer than
    two are valid); such prompts add no pair. ``margin`` is h of the pair (its summed log-ratio
    margin); ``score_margin`` the ranking score's margin the threshold applies to.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"rs.selection={selection!r} is not one of {SELECTIONS}")
    reward_PK = beta * (policy_logps_PK - ref_logps_PK)
    valid_PK = valid_PK.astype(bool)
    if lengths_PK is None:
        if ranking != "sum":
            raise ValueError(f"rs.ranking={ranking!r} needs the candidates' lengths")
        lengths_PK = jnp.ones(reward_PK.shape, jnp.int32)
    score_PK = candidate_scores(reward_PK, lengths_PK, ranking)
    if selection == "max_margin":
        chosen_pool_PK, rejected_pool_PK = valid_PK, valid_PK
    else:
        if is_original_PK is None:
            raise ValueError(f"rs.selection={selection!r} needs the original responses")
        is_original_PK = is_original_PK.astype(bool)
        rejected_pool_PK = valid_PK & is_original_PK
        sampled_PK = valid_PK & ~is_original_PK
        chosen_pool_PK = sampled_PK if selection == "best_vs_worst_original" else rejected_pool_PK
    chosen_P = jnp.argmax(jnp.where(chosen_pool_PK, score_PK, -jnp.inf), axis=-1)
    rejected_P = jnp.argmin(jnp.where(rejected_pool_PK, score_PK, jnp.inf), axis=-1)

    def pick(values_PK, index_P):
        return jnp.take_along_axis(values_PK, index_P[:, None], axis=-1)[:, 0]

    margin_P = (pick(reward_PK, chosen_P) - pick(reward_PK, rejected_P)) / beta
    score_margin_P = pick(score_PK, chosen_P) - pick(score_PK, rejected_P)
    pair_valid_P = (
        jnp.any(chosen_pool_PK, axis=-1)
        & jnp.any(rejected_pool_PK, axis=-1)
        & (chosen_P != rejected_P)
        & (score_margin_P > max(min_margin, 0.0))
    )
    return {
        "chosen_index": chosen_P,
        "rejected_index": rejected_P,
        "margin": jnp.where(pair_valid_P, margin_P, 0.0),
        "score_margin": jnp.where(pair_valid_P, score_margin_P, 0.0),
        "pair_valid": pair_valid_P,
        "reward": reward_PK,
        "score": score_PK,
    }
