"""The end-of-run evaluation of one experiment (docs/method.md §5): what ``pipeline.run`` writes
to ``results.json`` besides the per-round records, from plain values the pipeline hands in
(``FinalEval``), never the config. The task's own part (the gold win rate on the synthetic task,
the generations on real data) is the task object's (``ropo_jax.run.tasks``); ``gold_evaluation``
is the synthetic task's."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

from absl import logging

from ropo_jax.evaluation import heldout as eval_lib
from ropo_jax.evaluation.generations import GenerationEval, generate_both
from ropo_jax.inference import scoring
from ropo_jax.parallel import processes
from ropo_jax.ropo import rounds
from ropo_jax.ropo.options import ESTIMATED_RATIOS

DEFAULT_FILTER_RATIO = 0.2  # ρ of a run that neither set nor estimated one (e.g. SFT only)


@dataclasses.dataclass(frozen=True)
class FinalEval:
    """The run's identity in ``results.json`` and how its final policy is scored."""

    method: str
    seed: int
    noise_kind: str
    noise_rate: float
    batch_size: int  # pairs per scoring batch (eval.batch_size)
    filter_ratio: float  # ρ: the flagged set is the ⌊ρN⌋ pairs with the lowest margin
    scoring_loss: str  # the loss of final_scores.npz's per-pair "loss"
    scoring_hyperparams: dict[str, Any] = dataclasses.field(default_factory=dict)


def filter_ratio(configured: float | str, workdir: str) -> float:
    """ρ of the run: the configured one, or with "auto" or "holder" the run's estimate (the
    ROPO default 0.2 for a run that made none, e.g. SFT only)."""
    if configured not in ESTIMATED_RATIOS:
        return float(configured)
    estimate = rounds.read_estimate(workdir)
    return DEFAULT_FILTER_RATIO if estimate is None else float(estimate["rate"])


def evaluate(
    workdir: str,
    model_config,
    policy_params,
    train_data,
    reference,
    heldout,
    options: FinalEval,
    *,
    mesh,
    policy_logps=None,
) -> dict[str, Any]:
    """``results.json``'s evaluation (docs/method.md §5.6): clean held-out accuracy and noise
    identification on the training pairs, both from the final policy's margins h (a pair is
    suspect by −h, docs/method.md §5.2); writes ``final_scores.npz``. ``heldout``: (held-out
    pairs, their reference log-probs) or None. ``policy_logps``: the policy's (chosen, rejected)
    log-probs of the training ("train") and held-out ("heldout") pairs where the last round
    already computed them."""
    policy_logps = policy_logps or {}
    results = empty_results(options)
    if heldout is not None:
        results["eval"].update(
            eval_lib.preference_accuracy(
                model_config,
                policy_params,
                *heldout,
                batch_size=options.batch_size,
                mesh=mesh,
                logps=policy_logps.get("heldout"),
            )
        )
    scores = final_scores(
        model_config, policy_params, train_data, reference, options, mesh, policy_logps.get("train")
    )
    if train_data.is_flipped.any():
        results["noise_identification"] = eval_lib.noise_identification(
            scores["margin"], train_data.is_flipped, filter_ratio=options.filter_ratio
        )
    processes.write_npz(
        os.path.join(workdir, "final_scores.npz"), **scores, is_flipped=train_data.is_flipped
    )
    return results


def empty_results(options: FinalEval) -> dict[str, Any]:
    """``results.json``'s keys, every metric null until computed."""
    return {
        "method": options.method,
        "noise": {"kind": options.noise_kind, "rate": float(options.noise_rate)},
        "seed": int(options.seed),
        "eval": {
            "pref_accuracy_clean": None,
            "gold_win_rate_vs_sft": None,
            "gold_win_rate_stderr": None,
            "gold_reward_mean": None,
            "gold_reward_stderr": None,
        },
        "noise_identification": {"precision": None, "recall": None, "f1": None, "auroc": None},
    }


def final_scores(
    model_config, policy_params, train_data, reference, options: FinalEval, mesh, logps=None
) -> dict[str, Any]:
    """The final policy's margin and loss of every training pair (training orientation), from
    ``logps`` (its (chosen, rejected) log-probs) when already computed."""
    policy_chosen, policy_rejected = logps or scoring.sequence_logps_over(
        model_config,
        policy_params,
        train_data,
        batch_size=options.batch_size,
        mesh=mesh,
        desc="train scores",
    )
    return scoring.example_scores(
        policy_chosen,
        policy_rejected,
        *reference,
        train_data.is_flipped,
        loss=options.scoring_loss,
        hyperparams=options.scoring_hyperparams,
        response_lengths_N2=train_data.lengths[:, 1:3],
    )


def gold_evaluation(
    model_config,
    policy_params,
    sft_params,
    prompts: list[str],
    gold_reward: Callable[[str, str], float],
    *,
    samples_per_prompt: int,
    generation: GenerationEval,
) -> dict[str, Any]:
    """The gold win rate of the policy's samples against the SFT model's and both models' mean
    gold reward (docs/method.md §5.4): ``samples_per_prompt`` samples of each model per prompt,
    with ``generation``'s sampling settings and seed."""
    repeated = [p for p in prompts for _ in range(samples_per_prompt)]
    responses = generate_both(model_config, policy_params, sft_params, repeated, generation)
    return gold_metrics(repeated, responses, gold_reward, samples_per_prompt=samples_per_prompt)


def gold_metrics(
    prompts: list[str],
    responses: dict[str, list[str]],
    gold_reward: Callable[[str, str], float],
    *,
    samples_per_prompt: int,
) -> dict[str, Any]:
    """``gold_evaluation``'s metrics of responses already generated: ``prompts`` (each repeated
    ``samples_per_prompt`` times) and ``responses`` {"policy": [...], "sft": [...]}."""
    policy, sft = responses["policy"], responses["sft"]
    logging.info("sample generation: %r → %r (SFT: %r)", prompts[0], policy[0], sft[0])
    return eval_lib.gold_win_rate(
        prompts, policy, sft, gold_reward, samples_per_prompt=samples_per_prompt
    )
