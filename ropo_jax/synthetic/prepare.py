"""Materialises the synthetic task as ordinary prepared data sets: generated JSONL files, the
in-memory tokenizer saved as ``tokenizer.json``, then ``ropo_jax.data.prepare`` — so the benchmark
goes through exactly the data pipeline real runs use. Idempotent (a re-run reuses the files)."""

from __future__ import annotations

import json
import os

from ropo_jax.data.prepare import prepare
from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.synthetic import dataset, task, tokenizer


def prepare_synthetic(
    directory: str, task_config: task.TaskConfig, data_config: dataset.DataConfig, *, seed: int
) -> dict[str, str]:
    paths = {
        "raw": os.path.join(directory, "raw"),
        "tokenizer": os.path.join(directory, "tokenizer"),
        "train": os.path.join(directory, "train"),
        "test": os.path.join(directory, "test"),
        "sft": os.path.join(directory, "sft"),
    }
    paths["eval_prompts"] = os.path.join(paths["raw"], "eval_prompts.jsonl")
    done = os.path.join(directory, "prepared.json")
    if os.path.exists(done):
        if not load_tokenizer(paths["tokenizer"]).add_bos:
            # Saved before the tokenizer added BOS itself: the prepared ids (BOS first) are the
            # same, but generation must now read the BOS from the tokenizer.
            tokenizer.save_tokenizer(task_config, paths["tokenizer"])
        return paths
    dataset.write_dataset(paths["raw"], task_config, data_config, seed=seed)
    tokenizer.save_tokenizer(task_config, paths["tokenizer"])
    max_len = 2 * (task_config.max_length + 8)
    for name, fmt in (("train", "jsonl"), ("test", "jsonl"), ("sft", "sft")):
        prepare(
            format=fmt,
            input=os.path.join(paths["raw"], f"{name}.jsonl"),
            tokenizer=paths["tokenizer"],
            output_dir=paths[name],
            max_length=max_len,
            max_prompt_length=max_len // 2,
            progress=False,
        )
    with open(done, "w") as f:
        json.dump({"task": task_config.__dict__, "data": data_config.__dict__, "seed": seed}, f)
    return paths


def prompt_counts(paths: dict[str, str]) -> dict[str, int]:
    """Distinct training and evaluation prompts of a prepared synthetic task, and how many
    evaluation prompts also occur in training (held-out prompts are only as held out as this)."""
    with open(os.path.join(paths["raw"], "train.jsonl")) as f:
        train = {json.loads(line)["prompt"] for line in f if line.strip()}
    evaluation = set(read_eval_prompts(paths["eval_prompts"]))
    return {"train": len(train), "eval": len(evaluation), "overlap": len(train & evaluation)}


def read_eval_prompts(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["prompt"] for line in f if line.strip()]
