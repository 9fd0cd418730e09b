"""The ROPO framework's pieces (SPEC §3): its options, the w-step, and robustness-guided
rejection sampling of new pairs for the discarded prompts. ``ropo_jax.rounds`` runs them round
by round.

Shape key: N original examples, P prompts, K candidates per prompt.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ropo_jax import (
    filtering,
    rejection_sampling,
    sampling,
    scoring,
    train,
    trainer,
)
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.errors import ConfigValueError
from ropo_jax.models import ModelConfig

FILTER_MODES = ("recompute", "cumulative")
GRANULARITIES = ("dataset", "batch")


@dataclasses.dataclass(frozen=True)
class RopoConfig:
    """The options of SPEC §3 (config keys ``ropo.*``)."""

    num_rounds: int = 1
    # ρ, or "auto": estimated from the margins at the first w-step (ropo_jax/noise_rate.py).
    filter_ratio: float | str = 0.2
    filter_start_round: int = 2  # first round trained on filtered weights
    filter_mode: str = "recompute"
    filter_granularity: str = "dataset"
    filtering: bool = True  # off for the baselines
    rs_enabled: bool = False
    rs_num_candidates: int = 4
    rs_temperature: float = 0.9
    rs_top_p: float = 1.0
    rs_max_new_tokens: int = 64  # 0: the longest response of the training data
    rs_include_original: bool = False
    rs_selection: str = "max_margin"
    rs_ranking: str = "sum"  # "sum": r̂; "mean": r̂ per response token
    rs_min_margin: float = 0.0  # a new pair needs a ranking-score margin above this
    # False: one optimizer over all rounds (Adam moments and the learning-rate schedule carry
    # on from round to round, warmup only at the start); True: a fresh optimizer, warmup and
    # decay in every round.
    restart_optimizer: bool = False

    def __post_init__(self):
        if self.num_rounds < 1:
            raise ConfigValueError(f"ropo.num_rounds={self.num_rounds} must be >= 1")
        if self.filter_ratio != "auto" and not 0.0 <= self.filter_ratio < 1.0:
            raise ConfigValueError(
                f"ropo.filter_ratio={self.filter_ratio!r} must lie in [0, 1) or be 'auto'"
            )
        if self.filter_mode not in FILTER_MODES:
            raise ConfigValueError(
                f"ropo.filter_mode={self.filter_mode!r} is not one of {FILTER_MODES}"
            )
        if self.filter_granularity not in GRANULARITIES:
            raise ConfigValueError(
                f"ropo.filter_granularity={self.filter_granularity!r} is not one of {GRANULARITIES}"
            )
        selections = rejection_sampling.SELECTIONS
        if self.rs_selection not in selections:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} is not one of {selections}"
            )
        if self.rs_selection != "max_margin" and not self.rs_include_original:
            raise ConfigValueError(
                f"ropo.rs.selection={self.rs_selection!r} needs rs.include_original=True"
            )
        if self.rs_ranking not in rejection_sampling.RANKINGS:
            raise ConfigValueError(
                f"ropo.rs.ranking={self.rs_ranking!r} is not one of {rejection_sampling.RANKINGS}"
            )
        if self.rs_min_margin < 0:
            raise ConfigValueError(f"ropo.rs.min_margin={self.rs_min_margin} must be >= 0")
        if self.rs_num_candidates < 2:
            raise ConfigValueError(f"ropo.rs.num_candidates={self.rs_num_candidates} must be >= 2")


def concat(a: PreferenceData, b: PreferenceData | None) -> PreferenceData:
    """Examples of ``a`` then ``b`` (same tokenizer), flip masks included."""
    if b is None or len(b) == 0:
        return a
    offsets = np.concatenate([a.offsets, b.offsets + len(a.tokens)])
    return dataclasses.replace(
        a,
        ids=list(a.ids) + list(b.ids),
        tokens=np.concatenate([np.asarray(a.tokens), np.asarray(b.tokens)]),
        offsets=offsets,
        lengths=np.concatenate([a.lengths, b.lengths]),
        original_lengths=np.concatenate([a.original_lengths, b.original_lengths]),
        metadata=list(a.metadata) + list(b.metadata),
        is_flipped=np.concatenate([a.is_flipped, b.is_flipped]),
    )


def w_step(scores_N, *, ropo: RopoConfig, previous_keep_N=None) -> np.ndarray:
    """Sample weights of the w-step (SPEC §3), as a float32 {0, 1} array."""
    previous = None if ropo.filter_mode == "recompute" else previous_keep_N
    return np.asarray(
        filtering.filter_weights(
            jnp.asarray(scores_N),
            filter_ratio=ropo.filter_ratio,
            previous_keep_N=None if previous is None else jnp.asarray(previous, bool),
        )
    )


def longest_response(data: PreferenceData) -> int:
    """The most tokens any chosen or rejected response of ``data`` has (``rs.max_new_tokens=0``
    samples up to this)."""
    return max(max(len(data.pair(i)[1]), len(data.pair(i)[2])) for i in range(len(data)))


def _candidates(
    model_config, policy_params, train_data, prompts_idx, *, ropo, round_index, seed, batch_size
):
    """Per prompt: K policy samples (none for ``reorient_original``), then the two original
    responses with ``rs_include_original``; and which of them are originals."""
    prompts = [train_data.pair(int(i))[0].tolist() for i in prompts_idx]
    k = 0 if ropo.rs_selection == "reorient_original" else ropo.rs_num_candidates
    candidates = [[] for _ in prompts]
    if k:
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
        candidates = [samples[j * k : (j + 1) * k] for j in range(len(prompts))]
    if ropo.rs_include_original:
        for j, i in enumerate(prompts_idx):
            _, chosen, rejected = train_data.pair(int(i))
            candidates[j] = candidates[j] + [chosen.tolist(), rejected.tolist()]
    width = len(candidates[0]) if candidates else 0
    is_original_PK = np.zeros((len(prompts), width), bool)
    if ropo.rs_include_original:
        is_original_PK[:, -2:] = True
    return prompts, candidates, is_original_PK


def _candidate_logps(
    model_config, params_by_name, train_data, prompts, candidates, *, batch_size, mesh
):
    """{name: [P, K] sequence log-probs} of every candidate under each model, each scored once:
    within a prompt, pairs (c_2m, c_2m+1) give two sequences' log-probs; an odd list repeats its
    last candidate (pairs never straddle prompts)."""
    pair_prompts, firsts, seconds = [], [], []
    for j, cands in enumerate(candidates):
        padded = [c if c else [train_data.pad_id] for c in cands]
        if len(padded) % 2:
            padded.append(padded[-1])
        for m in range(0, len(padded), 2):
            pair_prompts.append(prompts[j])
            firsts.append(padded[m])
            seconds.append(padded[m + 1])
    scored = PreferenceData.from_token_lists(
        [f"cand{m}" for m in range(len(firsts))],
        pair_prompts,
        firsts,
        seconds,
        manifest=train_data.manifest,
    )
    width = len(candidates[0])
    logps = {}
    for name, params in params_by_name.items():
        a, b = scoring.sequence_logps_over(
            model_config, params, scored, batch_size=batch_size, mesh=mesh, desc=f"RS {name}"
        )
        interleaved = np.stack([a, b], axis=1).reshape(len(prompts), width + width % 2)
        logps[name] = interleaved[:, :width]
    return logps


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
    """New pairs for the prompts of ``prompts_idx``: candidates (K policy samples and/or the
    original responses), scored by the implicit reward r̂ = β·(log π − log π_ref), the pair
    chosen by ``rs_selection`` under ``rs_ranking`` and ``rs_min_margin``."""
    prompts, candidates, is_original_PK = _candidates(
        model_config,
        policy_params,
        train_data,
        prompts_idx,
        ropo=ropo,
        round_index=round_index,
        seed=seed,
        batch_size=batch_size,
    )
    if not prompts:
        return PreferenceData.from_token_lists([], [], [], [], manifest=train_data.manifest), []
    logps = _candidate_logps(
        model_config,
        {"policy": policy_params, "reference": ref_params},
        train_data,
        prompts,
        candidates,
        batch_size=batch_size,
        mesh=mesh,
    )
    lengths_PK = np.array([[len(c) for c in cands] for cands in candidates])
    picked = jax.device_get(
        rejection_sampling.select_pairs(
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
    ids, p_list, c_list, r_list, records = [], [], [], [], []
    for j, i in enumerate(prompts_idx):
        if not picked["pair_valid"][j]:
            continue
        ci, ri = int(picked["chosen_index"][j]), int(picked["rejected_index"][j])
        new_id = f"rs{round_index}:{train_data.ids[int(i)]}"
        ids.append(new_id)
        p_list.append(prompts[j])
        c_list.append(candidates[j][ci])
        r_list.append(candidates[j][ri])
        records.append(
            {
                "id": new_id,
                "source_id": train_data.ids[int(i)],
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
    new = PreferenceData.from_token_lists(
        ids,
        p_list,
        c_list,
        r_list,
        manifest=train_data.manifest,
        metadata=[{"provenance": "rejection_sampling", "round": round_index} for _ in ids],
    )
    return new, records


def schedule_steps(stage: trainer.StageConfig, num_examples: int, ropo: RopoConfig) -> int:
    """The optimizer steps of all rounds, for one learning-rate schedule over them: round 1's
    exactly, later rounds' with the most rejection-sampled pairs they can hold (one per
    discarded pair), so the schedule never ends before training does."""
    micro_size = stage.batch_size // stage.micro_batches

    def steps(n):
        return math.floor(stage.epochs * (n // micro_size) / stage.micro_batches)

    most = num_examples + (math.floor(ropo.filter_ratio * num_examples) if ropo.rs_enabled else 0)
    return steps(num_examples) + (ropo.num_rounds - 1) * steps(most)


def step_config_for(template: train.StepConfig, loss: str, hyperparams: dict) -> train.StepConfig:
    return dataclasses.replace(template, loss=loss, hyperparams=tuple(sorted(hyperparams.items())))
