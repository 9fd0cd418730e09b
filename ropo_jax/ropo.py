"""The iterative ROPO framework (SPEC §3): noise-tolerant training, noisy-sample filtering and
robustness-guided rejection sampling, round by round, with every round's artefacts on disk.

    π_θ ← π_ref (SFT); w ← 1
    for round t = 1..T:
        θ-step: train E epochs on (original pairs weighted by w) + (last round's RS pairs)
        score every original pair with π_θ (margin and loss, training orientation)
        w-step: keep the (1−ρ)N lowest-loss pairs (from round filter_start_round − 1 on)
        RS: for the discarded prompts, K samples from π_θ → the max-margin pair by implicit reward

Baselines run through the same loop with filtering and RS off (their loss instead of ROPO's),
so every method is trained by the same code for the same number of epochs. A round's directory
``round_t/`` holds ``weights.npy``, ``scores.npz`` (ids, margin, loss, flip mask, kept),
``kept_ids.json``, ``samples.jsonl`` (RS pairs with provenance and scores), ``eval.json``; its
``done.json`` is written last, so a killed run redoes at most the unfinished round (whose
training resumes from its checkpoint).

Shape key: N original examples, M rejection-sampled pairs, K candidates per prompt.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ropo_jax import eval as eval_lib
from ropo_jax import (
    filtering,
    processes,
    rejection_sampling,
    sampling,
    scoring,
    train,
    trainer,
)
from ropo_jax.data.prepared import PreferenceData, load_prepared
from ropo_jax.errors import ConfigValueError
from ropo_jax.metrics import flatten
from ropo_jax.models import ModelConfig

FILTER_MODES = ("recompute", "cumulative")
GRANULARITIES = ("dataset", "batch")


@dataclasses.dataclass(frozen=True)
class RopoConfig:
    """The options of SPEC §3 (config keys ``ropo.*``)."""

    num_rounds: int = 1
    filter_ratio: float = 0.2
    filter_start_round: int = 2  # first round trained on filtered weights
    filter_mode: str = "recompute"
    filter_granularity: str = "dataset"
    filtering: bool = True  # off for the baselines
    rs_enabled: bool = False
    rs_num_candidates: int = 4
    rs_temperature: float = 0.9
    rs_top_p: float = 1.0
    rs_max_new_tokens: int = 64
    rs_include_original: bool = False
    rs_selection: str = "max_margin"
    # False: one optimizer over all rounds (Adam moments and the learning-rate schedule carry
    # on from round to round, warmup only at the start); True: a fresh optimizer, warmup and
    # decay in every round.
    restart_optimizer: bool = False

    def __post_init__(self):
        if self.num_rounds < 1:
            raise ConfigValueError(f"ropo.num_rounds={self.num_rounds} must be >= 1")
        if not 0.0 <= self.filter_ratio < 1.0:
            raise ConfigValueError(f"ropo.filter_ratio={self.filter_ratio} must lie in [0, 1)")
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
        if self.rs_selection == "best_vs_worst_original" and not self.rs_include_original:
            raise ConfigValueError(
                "ropo.rs.selection='best_vs_worst_original' needs rs.include_original=True"
            )
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
    """New pairs for the prompts of ``prompts_idx``: K samples from the policy, scored by the
    implicit reward r̂ = β·(log π − log π_ref), the pair chosen by ``rs_selection``."""
    k = ropo.rs_num_candidates
    prompts = [train_data.pair(int(i))[0].tolist() for i in prompts_idx]
    repeated = [p for p in prompts for _ in range(k)]
    config = sampling.SamplingConfig(
        max_new_tokens=ropo.rs_max_new_tokens,
        temperature=ropo.rs_temperature,
        top_p=ropo.rs_top_p,
        pad_token_id=train_data.pad_id,
        length_bucket=16,
    )
    samples = sampling.generate(
        model_config,
        policy_params,
        repeated,
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
    # Score every candidate once: within each prompt, pairs (c_2m, c_2m+1) give two sequences'
    # log-probs; an odd list repeats its last candidate (pairs never straddle prompts).
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
    per_prompt = width + width % 2
    logps = {}
    for name, params in (("policy", policy_params), ("reference", ref_params)):
        a, b = scoring.sequence_logps_over(
            model_config, params, scored, batch_size=batch_size, mesh=mesh, desc=f"RS {name}"
        )
        interleaved = np.stack([a, b], axis=1).reshape(len(prompts), per_prompt)
        logps[name] = interleaved[:, :width]
    policy_PK, ref_PK = logps["policy"], logps["reference"]
    valid_PK = np.array([[len(c) > 0 for c in cands] for cands in candidates]).reshape(
        len(prompts), width
    )
    is_original_PK = np.zeros_like(valid_PK)
    if ropo.rs_include_original:
        is_original_PK[:, -2:] = True
    picked = jax.device_get(
        rejection_sampling.select_pairs(
            jnp.asarray(policy_PK),
            jnp.asarray(ref_PK),
            jnp.asarray(valid_PK),
            beta=beta,
            selection=ropo.rs_selection,
            is_original_PK=jnp.asarray(is_original_PK),
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
                "chosen_reward": float(picked["reward"][j, ci]),
                "rejected_reward": float(picked["reward"][j, ri]),
                "candidate_rewards": [float(x) for x in picked["reward"][j]],
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


def _write_json(path, value):
    if not processes.is_writer():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def schedule_steps(stage: trainer.StageConfig, num_examples: int, ropo: RopoConfig) -> int:
    """The optimizer steps of all rounds, for one learning-rate schedule over them: round 1's
    exactly, later rounds' with the most rejection-sampled pairs they can hold (one per
    discarded pair), so the schedule never ends before training does."""
    micro_size = stage.batch_size // stage.micro_batches

    def steps(n):
        return math.floor(stage.epochs * (n // micro_size) / stage.micro_batches)

    most = num_examples + (math.floor(ropo.filter_ratio * num_examples) if ropo.rs_enabled else 0)
    return steps(num_examples) + (ropo.num_rounds - 1) * steps(most)


def run_rounds(
    *,
    workdir: str,
    ropo: RopoConfig,
    loss: str,
    hyperparams: dict[str, Any],
    stage_template: trainer.StageConfig,
    step_template: train.StepConfig,
    model_config: ModelConfig,
    sft_params,
    train_data: PreferenceData,
    reference: tuple[np.ndarray, np.ndarray],
    writer,
    mesh=None,
    batch_size: int = 64,
    seed: int = 0,
    evaluate_round=None,
    reference_key: str | None = None,
    probe=None,
):
    """Runs the rounds and returns (final params, per-round summaries). ``reference_key`` is
    the reference parameters' hash (``scoring.params_hash``), computed once by the caller;
    ``probe(params)`` (a ``dynamics.DynamicsProbe``) measures the training dynamics before round
    1 and at every epoch boundary."""
    n = len(train_data)
    weights_N = np.ones(n, np.float32)
    rs_data: PreferenceData | None = None
    params = sft_params
    summaries = []
    in_batch = ropo.filtering and ropo.filter_granularity == "batch"
    step_config = dataclasses.replace(
        step_config_for(step_template, loss, hyperparams),
        in_batch_filter_ratio=ropo.filter_ratio if in_batch else 0.0,
    )
    cache_dir = os.path.join(workdir, "cache")
    opt_state = None  # carried from round to round unless ropo.restart_optimizer
    shared_schedule = 0 if ropo.restart_optimizer else schedule_steps(stage_template, n, ropo)
    for t in range(1, ropo.num_rounds + 1):
        round_dir = os.path.join(workdir, f"round_{t}")
        os.makedirs(round_dir, exist_ok=True)
        data_t = concat(train_data, rs_data)
        weights_t = np.concatenate([weights_N, np.ones(len(data_t) - n, np.float32)])
        ref_t = reference
        if rs_data is not None and len(rs_data):
            rs_ref = scoring.reference_logps(
                model_config,
                sft_params,
                rs_data,
                cache_dir=cache_dir,
                batch_size=batch_size,
                mesh=mesh,
                params_key=reference_key,
            )
            ref_t = (
                np.concatenate([reference[0], rs_ref[0]]),
                np.concatenate([reference[1], rs_ref[1]]),
            )
        stage = dataclasses.replace(
            stage_template,
            name=f"round_{t}",
            seed=stage_template.seed + t - 1,
            schedule_steps=shared_schedule,
        )
        on_epoch = None
        if probe is not None:
            on_epoch = lambda p, t=t: {"round": t, **probe(p)}
            # Once, before any training of round 1 (a resumed round 1 has its directory).
            started = os.path.isdir(os.path.join(workdir, "checkpoints", stage.name))
            if t == 1 and not processes.agree(started):
                writer.write(
                    {
                        "stage": stage.name,
                        "kind": "dynamics",
                        "step": 0,
                        "round_epoch": 0.0,
                        **on_epoch(sft_params),
                    }
                )
        state = trainer.run_stage(
            stage,
            step_config,
            model_config,
            params,
            data_t,
            workdir=workdir,
            writer=writer,
            mesh=mesh,
            reference=None if step_config.online_reference else ref_t,
            ref_params=sft_params if step_config.online_reference else None,
            example_weights=weights_t,
            on_epoch=on_epoch,
            init_opt_state=opt_state,
            return_state=True,
        )
        params = state.params
        if not ropo.restart_optimizer:
            opt_state = state.opt_state
        done_path = os.path.join(round_dir, "done.json")
        if processes.agree(os.path.exists(done_path)):  # scores, w and RS are on disk
            with open(done_path) as f:
                summary = json.load(f)
            weights_N = np.load(os.path.join(round_dir, "weights_next.npy"))
            rs_path = os.path.join(round_dir, "rs_pairs")
            rs_data = load_prepared(rs_path) if os.path.isdir(rs_path) else None
            summaries.append(summary)
            continue
        # Score every original example with the current policy (training orientation).
        pc, pr = scoring.sequence_logps_over(
            model_config,
            params,
            train_data,
            batch_size=batch_size,
            mesh=mesh,
            desc=f"round {t} scores",
        )
        scores = scoring.example_scores(
            pc, pr, *reference, train_data.is_flipped, loss=loss, hyperparams=hyperparams
        )
        filter_next = (
            ropo.filtering
            and ropo.filter_granularity == "dataset"
            and t + 1 >= ropo.filter_start_round
        )
        keep_N = w_step(scores["loss"], ropo=ropo, previous_keep_N=weights_N > 0) > 0
        identification = eval_lib.noise_identification(
            scores["margin"], train_data.is_flipped, filter_ratio=ropo.filter_ratio
        )
        next_weights_N = keep_N.astype(np.float32) if filter_next else np.ones(n, np.float32)
        processes.write_npz(
            os.path.join(round_dir, "scores.npz"),
            ids=np.array(train_data.ids),
            margin=scores["margin"],
            loss=scores["loss"],
            is_flipped=train_data.is_flipped,
            kept=keep_N,
            weights_trained=weights_N,
        )
        _write_json(
            os.path.join(round_dir, "kept_ids.json"),
            {
                "kept": [train_data.ids[i] for i in np.flatnonzero(keep_N)],
                "discarded": [train_data.ids[i] for i in np.flatnonzero(~keep_N)],
                "applied_next_round": bool(filter_next),
            },
        )
        new_rs, records = None, []
        if ropo.rs_enabled and filter_next and (~keep_N).any() and t < ropo.num_rounds:
            new_rs, records = rejection_sample(
                model_config,
                params,
                sft_params,
                train_data,
                np.flatnonzero(~keep_N),
                ropo=ropo,
                beta=float(hyperparams["beta"]),
                round_index=t,
                seed=seed,
                batch_size=batch_size,
                mesh=mesh,
            )
            if processes.is_writer():
                new_rs.save(os.path.join(round_dir, "rs_pairs"))
        if processes.is_writer():
            with open(os.path.join(round_dir, "samples.jsonl"), "w") as f:
                for record in records:
                    f.write(json.dumps(record) + "\n")
        round_eval = evaluate_round(params) if evaluate_round is not None else {}
        summary = {
            "round": t,
            "noise_identification": identification,
            "num_discarded": int((~keep_N).sum()),
            "num_rs_pairs": len(records),
            "trained_on": len(data_t),
            "trained_weight_sum": float(weights_t.sum()),
            **round_eval,
        }
        _write_json(os.path.join(round_dir, "eval.json"), summary)
        writer.write({"stage": f"round_{t}", "round": t, **flatten(summary)})
        if processes.is_writer():
            np.save(os.path.join(round_dir, "weights_next.npy"), next_weights_N)
        _write_json(done_path, summary)  # last: the round's files are complete
        processes.barrier(f"round {t} written")
        logging.info("round %d: %s", t, summary)
        weights_N, rs_data = next_weights_N, new_rs
        summaries.append(summary)
    return params, summaries


def step_config_for(template: train.StepConfig, loss: str, hyperparams: dict) -> train.StepConfig:
    return dataclasses.replace(template, loss=loss, hyperparams=tuple(sorted(hyperparams.items())))
