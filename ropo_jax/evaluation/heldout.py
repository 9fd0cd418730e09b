"""Evaluation of a trained policy (docs/method.md §5): clean held-out preference accuracy, noise
identification on the training set, and generations — scored by the gold reward on the
synthetic task, or written in AlpacaEval's format for an external judge.

Shape key: N examples.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import jax
import numpy as np

from ropo_jax.data.encode import Encoder, Limits
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.evaluation import metrics as eval_metrics
from ropo_jax.inference import sampling, scoring
from ropo_jax.losses import filtering
from ropo_jax.models import ModelConfig


def preference_accuracy(
    model_config: ModelConfig,
    params,
    data: PreferenceData,
    reference,
    *,
    batch_size: int,
    mesh=None,
    logps=None,
) -> dict[str, float | None]:
    """``pref_accuracy_clean``: held-out pairs with their true labels, fraction with h > 0.
    ``logps``: the policy's (chosen, rejected) log-probs of ``data`` if already computed."""
    if logps is None:
        logps = scoring.sequence_logps_over(
            model_config, params, data, batch_size=batch_size, mesh=mesh, desc="eval log-probs"
        )
    chosen, rejected = logps
    margin_N = (chosen - reference[0]) - (rejected - reference[1])
    return {
        "pref_accuracy_clean": eval_metrics.preference_accuracy(margin_N),
        **eval_metrics.margin_statistics(margin_N, "eval_margin"),
    }


def noise_identification(
    margin_N: np.ndarray, is_flipped_N: np.ndarray, *, filter_ratio: float
) -> dict[str, float | None]:
    """How well the policy's margins separate flipped from clean training pairs, the same way
    for every method: AUROC of −h (h in training orientation) against the flip mask, and
    precision/recall/F1 of the ⌊ρN⌋ pairs with the lowest h (the pairs the model contradicts
    most). A method's own loss would rank pairs meaningfully only where it decreases in h (not
    cDPO, IPO, LCPO-EM or DR-DPO); ROPO's w-step, whose loss does decrease in h, discards the
    same pairs up to ties. None where no pair was flipped."""
    flipped_N = np.asarray(is_flipped_N, bool)
    if not flipped_N.any():
        return {"precision": None, "recall": None, "f1": None, "auroc": None}
    scores_N = -np.asarray(margin_N, np.float64)
    keep_N = np.asarray(filtering.keep_lowest(scores_N, filter_ratio=filter_ratio))
    return eval_metrics.noise_identification(flipped_N, ~keep_N, scores_N=scores_N)


def generate_responses(
    model_config: ModelConfig,
    params,
    prompts: list[str],
    *,
    tokenizer_dir: str,
    sampling_config: sampling.SamplingConfig,
    seed: int,
    batch_size: int,
    chat_template: str | None = None,
    max_prompt_length: int | None = None,
) -> list[str]:
    """Decoded responses (EOS stripped) for prompts (text, or chat messages rendered with the
    chat template), encoded exactly as in training: a prompt longer than ``max_prompt_length``
    keeps its BOS and its last tokens."""
    tokenizer = load_tokenizer(tokenizer_dir)
    encoder = Encoder(
        tokenizer, Limits(max_length=2**30, max_prompt_length=2**29), chat_template=chat_template
    )
    prompt_ids = [encoder.prompt_ids(p) for p in prompts]
    if max_prompt_length:
        bos = tokenizer.bos_id
        prompt_ids = [_truncate_left(ids, max_prompt_length, bos) for ids in prompt_ids]
    outputs = sampling.generate(
        model_config,
        params,
        prompt_ids,
        sampling_config,
        rng=jax.random.key(seed),
        batch_size=batch_size,
    )
    eos = tokenizer.eos_id
    return [tokenizer.decode([t for t in out if t != eos]).strip() for out in outputs]


def _truncate_left(ids: list[int], limit: int, bos: int | None) -> list[int]:
    """The prompt truncation of ``data.encode``: keep the BOS and the last tokens."""
    if len(ids) <= limit:
        return ids
    head = ids[:1] if bos is not None and ids[:1] == [bos] else []
    return head + ids[len(ids) - (limit - len(head)) :]


def gold_win_rate(
    prompts: list[str],
    policy_responses: list[str],
    baseline_responses: list[str],
    gold_reward: Callable[[str, str], float],
    *,
    samples_per_prompt: int = 1,
) -> dict[str, float | None]:
    """``gold_win_rate_vs_sft`` and ``gold_reward_mean`` (synthetic task) with their standard
    errors over prompts. ``prompts`` holds each prompt ``samples_per_prompt`` times in a row; the
    k-th policy sample of a prompt is compared with the k-th SFT sample, and a prompt's samples
    are averaged before the error is taken (samples of one prompt are not independent)."""
    policy = np.array([gold_reward(p, r) for p, r in zip(prompts, policy_responses, strict=True)])
    baseline = np.array(
        [gold_reward(p, r) for p, r in zip(prompts, baseline_responses, strict=True)]
    )
    wins = (policy > baseline) + 0.5 * (policy == baseline)
    reward_mean, reward_stderr = eval_metrics.mean_and_stderr(policy, samples_per_prompt)
    win_mean, win_stderr = eval_metrics.mean_and_stderr(wins, samples_per_prompt)
    return {
        "gold_win_rate_vs_sft": win_mean,
        "gold_win_rate_stderr": win_stderr,
        "gold_reward_mean": reward_mean,
        "gold_reward_stderr": reward_stderr,
        "sft_gold_reward_mean": float(baseline.mean()),
    }


def write_alpaca_eval(
    path: str,
    prompts: list[str],
    responses: list[str],
    generator: str,
    datasets: list[str | None] | None = None,
) -> None:
    """Generations in AlpacaEval's JSON format (``instruction``, ``output``, ``generator``, and
    ``dataset`` where the prompt set names one)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    datasets = datasets or [None] * len(prompts)
    rows = []
    for p, r, d in zip(prompts, responses, datasets, strict=True):
        row = {"instruction": p, "output": r, "generator": generator}
        if d is not None:
            row["dataset"] = d
        rows.append(row)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)
