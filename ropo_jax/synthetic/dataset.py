"""Data sets of the synthetic task, written in the generic JSONL format of
docs/data.md ("Formats and their prompt/response conventions").

- ``sft.jsonl``: mediocre demonstrations ``{"id", "prompt", "response", "gold_reward"}``;
- ``train.jsonl`` / ``test.jsonl``: preference pairs ``{"id", "prompt", "chosen", "rejected",
  "score_chosen", "score_rejected", "source_chosen", "source_rejected"}`` whose responses come
  from generators of different strength, labelled by the gold reward (so the stored labels are
  all correct; noise is applied at load time, docs/method.md §4.1). Ties are dropped and counted;
- ``eval_prompts.jsonl``: prompts for generation-based evaluation.

With ``heldout_prompt_fraction > 0`` the prompt space is split once (``task.is_heldout``): SFT
demonstrations and training pairs use the other prompts only, test pairs and evaluation prompts
(distinct, each once) the held-out ones, so held-out evaluation is on prompts never trained on.
With 0 every split draws from all prompts (the earlier presets).

Everything is a deterministic function of (TaskConfig, DataConfig, seed).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from ropo_jax.synthetic import task

# Generators of different strength, as in Alpaca Comparison (GPT-4 vs GPT-3.5 vs a 1.3B model):
# what the source_biased noise model acts on.
SOURCES = {"weak": 0.2, "medium": 0.5, "strong": 0.8}


@dataclasses.dataclass(frozen=True)
class DataConfig:
    num_sft: int = 2000
    num_train_pairs: int = 2000
    num_test_pairs: int = 500
    num_eval_prompts: int = 256
    sft_quality: float = 0.35  # "mediocre demonstrations"
    heldout_prompt_fraction: float = 0.0  # > 0: evaluation prompts never seen in training


def prompt_pools(config: task.TaskConfig, data: DataConfig):
    """(training prompts, held-out prompts), or (None, None) when nothing is held out."""
    if data.heldout_prompt_fraction <= 0:
        return None, None
    prompts = task.all_prompts(config)
    heldout = [p for p in prompts if task.is_heldout(p, data.heldout_prompt_fraction)]
    train = [p for p in prompts if not task.is_heldout(p, data.heldout_prompt_fraction)]
    if not heldout or not train:
        raise ValueError(
            f"heldout_prompt_fraction={data.heldout_prompt_fraction} leaves "
            f"{len(train)} training and {len(heldout)} held-out prompts of {len(prompts)}"
        )
    return train, heldout


def _pair(config: task.TaskConfig, prompt: task.Prompt, rng, index: int, split: str, seed: int):
    source_a, source_b = rng.choice(list(SOURCES), size=2, replace=True)
    response_a = task.generate_response(config, prompt, SOURCES[source_a], rng)
    response_b = task.generate_response(config, prompt, SOURCES[source_b], rng)
    reward_a = task.gold_reward(config, prompt, response_a)
    reward_b = task.gold_reward(config, prompt, response_b)
    if reward_a == reward_b:
        return None
    if reward_b > reward_a:
        response_a, response_b = response_b, response_a
        reward_a, reward_b = reward_b, reward_a
        source_a, source_b = source_b, source_a
    return {
        "id": task.example_id("pair", split, seed, index),
        "prompt": prompt.text,
        "chosen": response_a,
        "rejected": response_b,
        "score_chosen": reward_a,
        "score_rejected": reward_b,
        "source_chosen": str(source_a),
        "source_rejected": str(source_b),
    }


def make_pairs(config: task.TaskConfig, num_pairs: int, *, seed: int, split: str, pool=None):
    """``num_pairs`` gold-labelled pairs on prompts of ``pool`` (default: all), plus the number
    of tied draws that were dropped."""
    rng = np.random.default_rng([seed, {"train": 1, "test": 2}[split]])
    pairs, ties, index = [], 0, 0
    while len(pairs) < num_pairs:
        prompt = task.sample_prompts(config, rng, 1, pool)[0]
        pair = _pair(config, prompt, rng, index, split, seed)
        index += 1
        if pair is None:
            ties += 1
        else:
            pairs.append(pair)
    return pairs, ties


def make_sft(config: task.TaskConfig, data: DataConfig, *, seed: int):
    rng = np.random.default_rng([seed, 3])
    rows = []
    pool, _ = prompt_pools(config, data)
    for i, prompt in enumerate(task.sample_prompts(config, rng, data.num_sft, pool)):
        response = task.generate_response(config, prompt, data.sft_quality, rng)
        rows.append(
            {
                "id": task.example_id("sft", seed, i),
                "prompt": prompt.text,
                "response": response,
                "gold_reward": task.gold_reward(config, prompt, response),
            }
        )
    return rows


def make_eval_prompts(config: task.TaskConfig, data: DataConfig, *, seed: int):
    rng = np.random.default_rng([seed, 4])
    _, heldout = prompt_pools(config, data)
    if heldout is None:
        prompts = task.sample_prompts(config, rng, data.num_eval_prompts)
    else:  # distinct held-out prompts, in a seeded order
        prompts = [heldout[int(i)] for i in rng.permutation(len(heldout))]
        prompts = prompts[: data.num_eval_prompts]
    return [
        {"id": task.example_id("eval", seed, i), "prompt": p.text} for i, p in enumerate(prompts)
    ]


def _write_jsonl(path: str, rows) -> None:
    with open(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def write_dataset(directory: str, config: task.TaskConfig, data: DataConfig, *, seed: int) -> dict:
    """Writes the four files and returns a summary (counts, tie drops, label statistics)."""
    os.makedirs(directory, exist_ok=True)
    train_pool, heldout_pool = prompt_pools(config, data)
    train, train_ties = make_pairs(
        config, data.num_train_pairs, seed=seed, split="train", pool=train_pool
    )
    test, test_ties = make_pairs(
        config, data.num_test_pairs, seed=seed, split="test", pool=heldout_pool
    )
    sft = make_sft(config, data, seed=seed)
    _write_jsonl(os.path.join(directory, "train.jsonl"), train)
    _write_jsonl(os.path.join(directory, "test.jsonl"), test)
    _write_jsonl(os.path.join(directory, "sft.jsonl"), sft)
    _write_jsonl(
        os.path.join(directory, "eval_prompts.jsonl"), make_eval_prompts(config, data, seed=seed)
    )
    stronger_source_wins = np.mean(
        [SOURCES[p["source_chosen"]] >= SOURCES[p["source_rejected"]] for p in train]
    )
    summary = {
        "train_pairs": len(train),
        "test_pairs": len(test),
        "sft_examples": len(sft),
        "ties_dropped": {"train": train_ties, "test": test_ties},
        "sft_gold_reward_mean": float(np.mean([r["gold_reward"] for r in sft])),
        "train_gold_margin_mean": float(
            np.mean([p["score_chosen"] - p["score_rejected"] for p in train])
        ),
        "train_fraction_chosen_from_stronger_or_equal_source": float(stronger_source_wins),
    }
    with open(os.path.join(directory, "dataset_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary
