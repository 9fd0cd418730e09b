"""The verifiable-instructions benchmark's data (docs/method.md §4.4): prompts from
:mod:`ropo_jax.instructions.constraints`, candidate responses sampled from the starting model
itself (as in the DPO paper's controlled experiment), pairs labelled by the gold reward, then
prepared with the model's own tokenizer and chat template like any real data set. Label noise is
applied at load time by the run, as for every task.

Written to ``DIRECTORY`` (a run's ``data/`` or a shared cache, keyed by a fingerprint of the
model's weights and every setting, so the runs of a sweep sample once):

- ``raw/candidates.jsonl``: every sample with its gold reward;
- ``raw/train.jsonl`` / ``raw/test.jsonl``: generic-format pairs (a one-user-turn chat prompt,
  text responses, ``score_chosen``/``score_rejected`` = gold rewards);
- ``raw/eval_prompts.json``: the evaluation prompts (AlpacaEval format), disjoint from training;
- ``train/``, ``test/``: the prepared splits; ``summary.json``: what was sampled, paired and
  skipped (ties and duplicate texts are counted, never silently dropped).

Pairs: per prompt, the candidates sorted by gold reward give up to ``pairs_per_prompt`` pairs
(best vs worst, second best vs second worst, ...) whose gold rewards differ by at least
``min_gap``; the held-out pairs come from the evaluation prompts the same way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable

import numpy as np
from absl import logging

from ropo_jax.data.encode import ENCODING_VERSION
from ropo_jax.data.example import Message
from ropo_jax.data.prepare import prepare
from ropo_jax.instructions import constraints


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``config.instructions.*``: the prompts, the candidates and the pairs."""

    num_train_prompts: int = 256
    num_eval_prompts: int = 128
    constraints_per_prompt: int = 2
    num_candidates: int = 6  # samples per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    pairs_per_prompt: int = 2
    min_gap: float = 0.2  # the least gold-reward difference a pair needs
    max_length: int = 160  # prepared sequence length (prompt + response tokens)
    max_prompt_length: int = 96
    generate_batch_size: int = 64
    seed: int = 0  # the prompts and the samples; fixed across methods and training seeds
    cache_dir: str = ""  # "" → the run's WORKDIR/data

    def __post_init__(self):
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates={self.num_candidates}: a pair needs 2 candidates")
        if not 0 < self.pairs_per_prompt <= self.num_candidates // 2:
            raise ValueError(
                f"pairs_per_prompt={self.pairs_per_prompt} must lie in [1, num_candidates // 2 "
                f"= {self.num_candidates // 2}]"
            )


# (one chat prompt per instruction, samples per prompt) → the samples, grouped by prompt.
Generate = Callable[[list[tuple[Message, ...]], int], list[list[str]]]


def fingerprint(config: DataConfig, model_fingerprint: str) -> str:
    fields = {k: v for k, v in dataclasses.asdict(config).items() if k != "cache_dir"}
    blob = json.dumps(
        {"data": fields, "model": model_fingerprint, "encoding": ENCODING_VERSION, "version": 1},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def make_pairs(
    prompt: str, responses: list[str], *, pairs_per_prompt: int, min_gap: float, counts: dict
):
    """(chosen, rejected, gold_chosen, gold_rejected) pairs of one prompt's candidates (module
    docstring); ``counts`` accumulates what was skipped and why."""
    distinct = list(dict.fromkeys(r.strip() for r in responses if r.strip()))
    counts["empty_or_duplicate"] += len(responses) - len(distinct)
    scored = sorted(
        ((constraints.gold_reward(prompt, r), r) for r in distinct), key=lambda x: -x[0]
    )
    pairs = []
    for i in range(min(pairs_per_prompt, len(scored) // 2)):
        (gold_c, chosen), (gold_r, rejected) = scored[i], scored[len(scored) - 1 - i]
        if gold_c - gold_r < min_gap:
            counts["gap_below_min"] += 1
            continue
        pairs.append((chosen, rejected, gold_c, gold_r))
    return pairs


def _pair_rows(instructions, responses_per_prompt, config: DataConfig, counts: dict, split: str):
    rows = []
    for index, (instruction, responses) in enumerate(
        zip(instructions, responses_per_prompt, strict=True)
    ):
        for k, (chosen, rejected, gold_c, gold_r) in enumerate(
            make_pairs(
                instruction.text,
                responses,
                pairs_per_prompt=config.pairs_per_prompt,
                min_gap=config.min_gap,
                counts=counts,
            )
        ):
            rows.append(
                {
                    "id": f"{split}-{index}-{k}",
                    "prompt": [{"role": "user", "content": instruction.text}],
                    "chosen": chosen,
                    "rejected": rejected,
                    "score_chosen": gold_c,
                    "score_rejected": gold_r,
                }
            )
    return rows


def _write_jsonl(path: str, rows) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(path + ".tmp", path)


def build(
    directory: str, config: DataConfig, generate: Generate, *, tokenizer: str, model: str
) -> dict:
    """Samples (``generate``, the model fingerprinted by ``model``), pairs and prepares into
    ``directory`` (module docstring); returns the summary."""
    raw = os.path.join(directory, "raw")
    os.makedirs(raw, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    instructions = constraints.sample_instructions(
        rng,
        config.num_train_prompts + config.num_eval_prompts,
        per_prompt=config.constraints_per_prompt,
    )
    train_prompts = instructions[: config.num_train_prompts]
    eval_prompts = instructions[config.num_train_prompts :]
    messages = [(Message("user", i.text),) for i in instructions]
    logging.info(
        "sampling %d candidates for each of %d prompts", config.num_candidates, len(messages)
    )
    responses = generate(messages, config.num_candidates)
    with open(os.path.join(raw, "candidates.jsonl"), "w", encoding="utf-8") as f:
        for instruction, samples in zip(instructions, responses, strict=True):
            for r in samples:
                gold = constraints.gold_reward(instruction.text, r)
                f.write(
                    json.dumps({"prompt": instruction.text, "response": r, "gold": gold}) + "\n"
                )
    counts = {"empty_or_duplicate": 0, "gap_below_min": 0}
    split_rows = {
        "train": _pair_rows(
            train_prompts, responses[: len(train_prompts)], config, counts, "train"
        ),
        "test": _pair_rows(eval_prompts, responses[len(train_prompts) :], config, counts, "test"),
    }
    for split, rows in split_rows.items():
        _write_jsonl(os.path.join(raw, f"{split}.jsonl"), rows)
        prepare(
            format="jsonl",
            input=os.path.join(raw, f"{split}.jsonl"),
            tokenizer=tokenizer,
            output_dir=os.path.join(directory, split),
            max_length=config.max_length,
            max_prompt_length=config.max_prompt_length,
            progress=False,
        )
    with open(os.path.join(raw, "eval_prompts.json"), "w", encoding="utf-8") as f:
        json.dump([{"instruction": i.text, "dataset": "instructions"} for i in eval_prompts], f)
    pairs_of_texts = zip(instructions, responses, strict=True)
    golds = [constraints.gold_reward(i.text, r) for i, rs in pairs_of_texts for r in rs]
    summary = {
        "prompts": {
            "train": len(train_prompts),
            "eval": len(eval_prompts),
            "overlap": len({i.text for i in train_prompts} & {i.text for i in eval_prompts}),
        },
        "candidates": int(sum(len(r) for r in responses)),
        "candidate_gold_mean": float(np.mean(golds)),
        "pairs": {split: len(rows) for split, rows in split_rows.items()},
        "skipped": counts,
        "model": model,
        "config": {k: v for k, v in dataclasses.asdict(config).items() if k != "cache_dir"},
    }
    with open(os.path.join(directory, "summary.json") + ".tmp", "w") as f:
        json.dump(summary, f, indent=1)
    os.replace(
        os.path.join(directory, "summary.json") + ".tmp", os.path.join(directory, "summary.json")
    )
    logging.info("instructions data: %s", json.dumps(summary["pairs"] | summary["skipped"]))
    return summary


def paths(directory: str) -> dict[str, str]:
    return {
        "train": os.path.join(directory, "train"),
        "test": os.path.join(directory, "test"),
        "eval_prompts": os.path.join(directory, "raw", "eval_prompts.json"),
        "summary": os.path.join(directory, "summary.json"),
    }


def read_eval_prompts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [row["instruction"] for row in json.load(f)]
