"""Robustness-guided rejection sampling: a replacement pair per discarded prompt (docs/method.md
§3.5).

For each prompt, candidates are K policy samples (optionally plus the two original responses).
Every candidate gets its implicit reward r̂ = β·[log π(y|x) − log π_ref(y|x)] (docs/ropo.md,
"The loop"); a pair oriented by r̂ has margin h ≥ 0 and ROPO loss decreasing in h, so the
lowest-loss pair is the one with the largest margin: the highest-r̂ candidate as chosen, the
lowest-r̂ one as rejected. No external model is involved. Variants (docs/ropo.md): rank by r̂
per token instead of the sum, which grows with length; keep a sample only against an original
response; re-orient the original pair; drop pairs whose margin is below a threshold.

``rejection_sample`` runs the steps in order: ``candidate_prompts``, ``sample_candidates`` and
``with_originals`` (the candidates), ``candidate_logps`` (each candidate scored once per model
by ``score_sequences``), ``select_candidates`` (``select_pairs``, pure and jittable, under the
run's options: the pair per prompt), ``sample_records`` (the round's ``samples.jsonl`` rows)
and ``records_to_pairs`` (the new training pairs).

Shape key: P prompts, K candidates per prompt, S scored sequences.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.inference import sampling, scoring
from ropo_jax.models import ModelConfig
from ropo_jax.ropo.options import RANKINGS, SELECTIONS, RopoConfig


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


# --- the steps around select_pairs: candidates, their log-probs, the round's new pairs ----------


def longest_response(data: PreferenceData) -> int:
    """The most tokens any chosen or rejected response of ``data`` has (``rs.max_new_tokens=0``
    samples up to this)."""
    return int(data.lengths[:, 1:].max(initial=0))


def candidate_prompts(train_data: PreferenceData, prompts_idx) -> list[list[int]]:
    """The prompt token ids of the examples at ``prompts_idx`` (the discarded pairs)."""
    return [prompt.tolist() for prompt, _, _ in train_data.pairs(prompts_idx)]


def sample_candidates(
    model_config: ModelConfig,
    policy_params,
    train_data: PreferenceData,
    prompts: list[list[int]],
    *,
    ropo: RopoConfig,
    round_index: int,
    seed: int,
    batch_size: int,
) -> list[list[list[int]]]:
    """K = ``rs_num_candidates`` policy samples per prompt, or none for ``reorient_original``
    (which only re-orders the original pair). The key depends on the run's seed and the round
    only, so a round that is run again samples the same candidates."""
    k = 0 if ropo.rs_selection == "reorient_original" else ropo.rs_num_candidates
    if not k:
        return [[] for _ in prompts]
    config = sampling.SamplingConfig(
        max_new_tokens=ropo.rs_max_new_tokens or longest_response(train_data),
        temperature=ropo.rs_temperature,
        top_p=ropo.rs_top_p,
        pad_token_id=train_data.pad_id,
        length_bucket=16,
    )
    samples = sampling.generate(
        model_config,
        policy_params,
        [p for p in prompts for _ in range(k)],
        config,
        rng=jax.random.key(seed * 1000 + round_index),
        batch_size=batch_size,
    )
    return [samples[j * k : (j + 1) * k] for j in range(len(prompts))]


def with_originals(
    candidates: list[list[list[int]]], train_data: PreferenceData, prompts_idx, *, include: bool
) -> tuple[list[list[list[int]]], np.ndarray]:
    """The candidates, followed (with ``include``, i.e. ``rs_include_original``) by each
    prompt's two original responses in training orientation; and the bool [P, K] mask of the
    original ones."""
    if include:
        originals = (pair[1:] for pair in train_data.pairs(prompts_idx))
        candidates = [
            [*cands, chosen.tolist(), rejected.tolist()]
            for cands, (chosen, rejected) in zip(candidates, originals, strict=True)
        ]
    width = len(candidates[0]) if candidates else 0
    is_original_PK = np.zeros((len(candidates), width), bool)
    if include:
        is_original_PK[:, -2:] = True
    return candidates, is_original_PK


def score_sequences(
    model_config: ModelConfig,
    params,
    prompts: list[list[int]],
    responses: list[list[int]],
    *,
    manifest: dict[str, Any],
    batch_size: int,
    mesh=None,
    desc: str = "scoring",
) -> np.ndarray:
    """float32 [S] response log-probs of the sequences prompt_s + response_s under ``params``.

    They go through the scorer of every data set (``scoring.sequence_logps_over``) as an SFT
    data set, one sequence per example (stored as its chosen response; ``ropo_jax.data.loader``
    batches those one sequence per slot). ``batch_size`` counts sequences, i.e. token rows.
    ``manifest``: the token ids and limits of the data the sequences come from.
    """
    data = PreferenceData.from_token_lists(
        [f"seq{s}" for s in range(len(prompts))],
        prompts,
        responses,
        [[] for _ in prompts],
        manifest={**manifest, "kind": "sft"},
    )
    logps_S, _ = scoring.sequence_logps_over(
        model_config, params, data, batch_size=batch_size, mesh=mesh, desc=desc
    )
    return logps_S


def candidate_logps(
    model_config: ModelConfig,
    params_by_name: dict[str, Any],
    prompts: list[list[int]],
    candidates: list[list[list[int]]],
    *,
    manifest: dict[str, Any],
    batch_size: int,
    mesh=None,
) -> dict[str, np.ndarray]:
    """{name: float32 [P, K] log-probs} of every candidate under each model, each candidate
    scored once, in batches of 2·``batch_size`` rows (as many as a batch of ``batch_size``
    pairs). An empty candidate (never valid) is scored as one pad token, so that the reward
    its record lists in ``candidate_rewards`` is a number."""
    pad_id = int(manifest["pad_id"])
    prompts_S = [prompt for prompt, cands in zip(prompts, candidates, strict=True) for _ in cands]
    responses_S = [c if c else [pad_id] for cands in candidates for c in cands]
    shape_PK = (len(prompts), len(candidates[0]))
    return {
        name: score_sequences(
            model_config,
            params,
            prompts_S,
            responses_S,
            manifest=manifest,
            batch_size=2 * batch_size,
            mesh=mesh,
            desc=f"RS {name}",
        ).reshape(shape_PK)
        for name, params in params_by_name.items()
    }


def select_candidates(
    logps: dict[str, np.ndarray],
    candidates: list[list[list[int]]],
    is_original_PK: np.ndarray,
    *,
    ropo: RopoConfig,
    beta: float,
) -> dict[str, np.ndarray]:
    """``select_pairs`` on the candidates' policy and reference log-probs under the run's
    ``rs_*`` options (non-empty candidates are valid), fetched to the host."""
    lengths_PK = np.array([[len(c) for c in cands] for cands in candidates])
    return jax.device_get(
        select_pairs(
            jnp.asarray(logps["policy"]),
            jnp.asarray(logps["reference"]),
            jnp.asarray(lengths_PK > 0),
            beta=beta,
            selection=ropo.rs_selection,
            is_original_PK=jnp.asarray(is_original_PK),
            lengths_PK=jnp.asarray(lengths_PK),
            ranking=ropo.rs_ranking,
            min_margin=ropo.rs_min_margin,
        )
    )


def sample_records(
    picked: dict[str, np.ndarray],
    candidates: list[list[list[int]]],
    is_original_PK: np.ndarray,
    source_ids: list[str],
    *,
    round_index: int,
) -> list[dict[str, Any]]:
    """The round's ``samples.jsonl`` rows (docs/ropo.md, round files), one per prompt with a
    valid pair: its new id ``rs{round}:{source id}``, margin h, score margin, the rewards of
    chosen, rejected and every candidate, whether each side is an original response, and the
    two responses' token ids."""
    records = []
    for j, source_id in enumerate(source_ids):
        if not picked["pair_valid"][j]:
            continue
        ci, ri = int(picked["chosen_index"][j]), int(picked["rejected_index"][j])
        records.append(
            {
                "id": f"rs{round_index}:{source_id}",
                "source_id": source_id,
                "round": round_index,
                "margin": float(picked["margin"][j]),
                "score_margin": float(picked["score_margin"][j]),
                "chosen_reward": float(picked["reward"][j, ci]),
                "rejected_reward": float(picked["reward"][j, ri]),
                "candidate_rewards": [float(x) for x in picked["reward"][j]],
                "chosen_original": bool(is_original_PK[j, ci]),
                "rejected_original": bool(is_original_PK[j, ri]),
                "chosen_tokens": candidates[j][ci],
                "rejected_tokens": candidates[j][ri],
            }
        )
    return records


def records_to_pairs(
    records: list[dict[str, Any]],
    prompt_by_source: dict[str, list[int]],
    *,
    manifest: dict[str, Any],
    round_index: int,
) -> PreferenceData:
    """The training pairs of ``records``, stored chosen over rejected as recorded (the higher-r̂
    candidate as chosen: the other way round, the next round would train the policy away from
    its own best sample), with their provenance as metadata."""
    return PreferenceData.from_token_lists(
        [r["id"] for r in records],
        [prompt_by_source[r["source_id"]] for r in records],
        [r["chosen_tokens"] for r in records],
        [r["rejected_tokens"] for r in records],
        manifest=manifest,
        metadata=[{"provenance": "rejection_sampling", "round": round_index} for _ in records],
    )


def rejection_sample(
    model_config: ModelConfig,
    policy_params,
    ref_params,
    train_data: PreferenceData,
    prompts_idx: np.ndarray,
    *,
    ropo: RopoConfig,
    beta: float,
    round_index: int,
    seed: int,
    batch_size: int,
    mesh=None,
) -> tuple[PreferenceData, list[dict[str, Any]]]:
    """New pairs for the prompts of ``prompts_idx`` and their ``samples.jsonl`` rows: candidates
    (K policy samples and/or the original responses), scored by the implicit reward
    r̂ = β·(log π − log π_ref), the pair chosen by ``rs_selection`` under ``rs_ranking`` and
    ``rs_min_margin`` (docs/method.md §3.5)."""
    manifest = train_data.manifest
    prompts = candidate_prompts(train_data, prompts_idx)
    if not prompts:
        return records_to_pairs([], {}, manifest=manifest, round_index=round_index), []
    sampled = sample_candidates(
        model_config,
        policy_params,
        train_data,
        prompts,
        ropo=ropo,
        round_index=round_index,
        seed=seed,
        batch_size=batch_size,
    )
    candidates, is_original_PK = with_originals(
        sampled, train_data, prompts_idx, include=ropo.rs_include_original
    )
    logps = candidate_logps(
        model_config,
        {"policy": policy_params, "reference": ref_params},
        prompts,
        candidates,
        manifest=manifest,
        batch_size=batch_size,
        mesh=mesh,
    )
    picked = select_candidates(logps, candidates, is_original_PK, ropo=ropo, beta=beta)
    source_ids = [train_data.ids[int(i)] for i in prompts_idx]
    records = sample_records(
        picked, candidates, is_original_PK, source_ids, round_index=round_index
    )
    prompt_by_source = dict(zip(source_ids, prompts, strict=True))
    new = records_to_pairs(records, prompt_by_source, manifest=manifest, round_index=round_index)
    return new, records
