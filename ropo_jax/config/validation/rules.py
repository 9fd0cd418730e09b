"""The rule tables of every config key (type, range, choices) and the helpers the checks share:
``fail`` raises the one-line ConfigValueError, ``value``/``node`` read a dotted key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import ml_collections

from ropo_jax.data.errors import ON_ERROR_CHOICES
from ropo_jax.data.formats import FORMATS
from ropo_jax.data.formats.alpaca_comparison import PAIRINGS
from ropo_jax.data.loader import MODES
from ropo_jax.data.noise import KINDS
from ropo_jax.errors import ConfigValueError
from ropo_jax.evaluation.generations import PROMPT_FORMATS, PROMPT_STYLES
from ropo_jax.losses import registry
from ropo_jax.models.attention import IMPLS as ATTENTION_IMPLS
from ropo_jax.models.config import LORA_TARGETS, REMAT_CHOICES
from ropo_jax.ropo.options import (
    ESTIMATED_RATIOS,
    FILTER_MODES,
    FRAMEWORK_METHODS,
    GRANULARITIES,
)
from ropo_jax.ropo.rejection_sampling import RANKINGS, SELECTIONS
from ropo_jax.training.optim import SCHEDULES
from ropo_jax.training.step import NAN_POLICIES

METHODS = (*registry.LOSSES, *FRAMEWORK_METHODS, "sft")
TASKS = ("prepared", "synthetic", "instructions")
DTYPES = ("float32", "bfloat16", "float16")
REWARD_DEVICES = ("auto", "cpu", "cuda")  # reward_model.RewardModel(device=...)
# Noise kinds whose rate is the flip probability of every pair: at 0.5 the labels carry no
# signal and above it most of them are inverted. length_biased and source_biased flip only the
# pairs their bias applies to (rate 1 = a fully biased annotator); bradley_terry ignores rate.
UNIFORM_RATE_KINDS = ("symmetric",)
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json")
PICKLED_SUFFIXES = (".bin", ".pt", ".pth")


# --- rules ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Rule:
    """A valid value: ``ok(value)``; ``must`` completes "must be ..."; ``choices`` (if any) are
    offered as "did you mean" suggestions."""

    ok: Callable[[Any], bool]
    must: str
    choices: tuple[str, ...] = ()


def is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def integer(low: int) -> Rule:
    return Rule(lambda v: is_int(v) and v >= low, f"an integer >= {low}")


def real(low=None, high=None, *, open_low=False, open_high=False) -> Rule:
    def ok(v):
        return (
            is_real(v)
            and (low is None or (v > low if open_low else v >= low))
            and (high is None or (v < high if open_high else v <= high))
        )

    if high is None:
        must = "a finite number" if low is None else f"a number {'>' if open_low else '>='} {low}"
    else:
        must = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return Rule(ok, must)


def one_of(choices, *, empty_ok: bool = False) -> Rule:
    choices = tuple(choices)
    listed = ", ".join(repr(c) for c in choices)
    return Rule(
        lambda v: v in choices or (empty_ok and v == ""),
        f"one of {listed}" + (" (or '' for none)" if empty_ok else ""),
        choices,
    )


POSITIVE = Rule(lambda v: is_int(v) and v >= 1, "a positive integer")
BOOL = Rule(lambda v: isinstance(v, bool), "True or False")
STR = Rule(lambda v: isinstance(v, str), "a string")
PROBABILITY = real(0, 1)
TOP_P = real(0, 1, open_low=True)

TOP_RULES = {
    "seed": integer(0),
    "method": one_of(METHODS),
    "task": one_of(TASKS),
    "tensorboard": BOOL,
    "compilation_cache_dir": STR,
    "cache_dir": STR,
}
STAGE_RULES = {
    "batch_size": POSITIVE,
    "micro_batches": POSITIVE,
    "learning_rate": real(0),
    "warmup_ratio": PROBABILITY,
    "schedule": one_of(SCHEDULES),
    "weight_decay": real(0),
    "max_grad_norm": real(0),  # 0: no clipping
    "batch_mode": one_of(MODES),
    "max_length": integer(0),  # 0: the prepared data's max_length
    "max_completion_tokens": integer(0),  # 0: the data's longest response
    "log_every": POSITIVE,
    "checkpoint_every": POSITIVE,
    "keep_checkpoints": POSITIVE,
}
SFT_RULES = {**STAGE_RULES, "epochs": real(0, open_low=True), "enabled": BOOL}
TRAIN_RULES = {
    **STAGE_RULES,
    "online_reference": BOOL,
    "nan_policy": one_of(NAN_POLICIES),
    "logps_chunk_size": POSITIVE,
}
DATA_RULES = dict.fromkeys(
    ("train", "test", "sft", "tokenizer", "eval_prompts", "chat_template"), STR
)
RAW_RULES = {
    "format": one_of(FORMATS, empty_ok=True),
    "train": STR,
    "test": STR,
    "sft": STR,
    "max_length": POSITIVE,
    "max_prompt_length": POSITIVE,
    "on_error": one_of(ON_ERROR_CHOICES),
    "dedupe": BOOL,
    "pairing": one_of(PAIRINGS),
    "include_cnndm": BOOL,
}


def _is_source_strengths(v) -> bool:
    return (
        isinstance(v, tuple | list)
        and len(v) > 0
        and all(
            isinstance(pair, tuple | list)
            and len(pair) == 2
            and isinstance(pair[0], str)
            and is_real(pair[1])
            for pair in v
        )
        and len({pair[0] for pair in v}) == len(v)
    )


NOISE_RULES = {
    "kind": one_of(KINDS),
    "rate": PROBABILITY,
    "seed": Rule(is_int, "an integer"),
    "temperature": real(0, open_low=True),
    "exact": BOOL,
    "source_strengths": Rule(
        _is_source_strengths,
        "(source, strength) pairs with distinct sources, e.g. "
        '\'(("ppo_xl", 2), ("sup2", 1))\' (higher is stronger)',
    ),
}
MODEL_RULES = {
    "preset": STR,
    "hf_path": STR,
    "dtype": one_of(DTYPES),
    "param_dtype": one_of(DTYPES),
    "remat_policy": one_of(REMAT_CHOICES),
    "attention_impl": one_of(ATTENTION_IMPLS),
}
LORA_RULES = {
    "rank": integer(0),  # 0: no LoRA
    "alpha": real(0, open_low=True),
    "dropout": real(0, 1, open_high=True),
    "targets": Rule(
        lambda v: (
            isinstance(v, tuple | list)
            and len(v) > 0
            and all(t in LORA_TARGETS for t in v)
            and len(set(v)) == len(v)
        ),
        "distinct projection names among " + ", ".join(LORA_TARGETS) + ', e.g. \'("q", "v")\'',
        LORA_TARGETS,
    ),
}
ROPO_RULES = {
    "num_rounds": POSITIVE,
    "epochs_per_round": real(0, open_low=True),
    "filter_ratio": Rule(
        lambda v: v in ESTIMATED_RATIOS or real(0, 1, open_high=True).ok(v),
        "a number in [0, 1), 'auto' or 'holder'",
    ),
    "filter_start_round": POSITIVE,
    "filter_mode": one_of(FILTER_MODES),
    "filter_granularity": one_of(GRANULARITIES),
    "restart_optimizer": BOOL,
}
RS_RULES = {
    "enabled": BOOL,
    "num_candidates": integer(2),
    "temperature": real(0),  # 0: greedy
    "top_p": TOP_P,
    "max_new_tokens": integer(0),  # 0: the longest response of the training data
    "include_original": BOOL,
    "selection": one_of(SELECTIONS),
    "ranking": one_of(RANKINGS),
    "min_margin": real(0),
}
EVAL_RULES = {
    "batch_size": POSITIVE,
    "temperature": real(0),
    "top_p": TOP_P,
    "max_new_tokens": POSITIVE,
    "generate_batch_size": POSITIVE,
    "samples_per_prompt": POSITIVE,
    "dynamics": BOOL,
    "dynamics_prompts": integer(0),
    "prompts_format": one_of(PROMPT_FORMATS),
    "prompt_style": one_of(PROMPT_STYLES),
    "num_prompts": integer(0),  # 0: every prompt
    "generator": STR,
    "reward_model": STR,
    "reward_batch_size": POSITIVE,
    "reward_device": one_of(REWARD_DEVICES),
}
SYNTHETIC_TASK_RULES = {
    "num_topics": integer(2),  # a response's off-topic words come from another topic
    "words_per_topic": POSITIVE,
    "num_bad_words": POSITIVE,
    "num_filler_words": POSITIVE,
    "min_length": POSITIVE,
    "max_length": POSITIVE,
    "length_weight": real(0),
    "off_topic_score": real(),
    "num_keywords": integer(0),
    "keyword_weight": real(0),
}
SYNTHETIC_DATA_RULES = {
    "num_sft": POSITIVE,  # every split is prepared, and an empty one is a data error
    "num_train_pairs": POSITIVE,
    "num_test_pairs": POSITIVE,
    "num_eval_prompts": POSITIVE,
    "sft_quality": PROBABILITY,
    "heldout_prompt_fraction": real(0, 1, open_high=True),
}
EXPORT_RULES = {
    "dtype": one_of(DTYPES, empty_ok=True),  # '': the parameters' dtype
    "max_shard_gb": real(0, open_low=True),
}
BLOCK_RULES = {
    "": TOP_RULES,
    "sft": SFT_RULES,
    "train": TRAIN_RULES,
    "data": DATA_RULES,
    "data.raw": RAW_RULES,
    "noise": NOISE_RULES,
    "model": MODEL_RULES,
    "model.lora": LORA_RULES,
    "ropo": ROPO_RULES,
    "ropo.rs": RS_RULES,
    "eval": EVAL_RULES,
    "export": EXPORT_RULES,
}


# --- helpers ----------------------------------------------------------------------------------


def fail(message: str) -> NoReturn:
    raise ConfigValueError(re.sub(r"\s*\n\s*", " ", message))  # one line, always


def suggest(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def block_of(config, block: str):
    node = config
    for part in filter(None, block.split(".")):
        if not isinstance(node, Mapping | ml_collections.ConfigDict) or part not in node:
            fail(
                f"config.{block} is missing: experiment configs start from "
                "ropo_jax.config.defaults.base_config()"
            )
        node = node[part]
    return node


def value_of(config, key: str):
    block, _, leaf = key.rpartition(".")
    node = block_of(config, block)
    if leaf not in node:
        fail(f"config.{key} is missing: experiment configs start from base_config()")
    return node[leaf]


def check(key: str, value, rule: Rule) -> None:
    if not rule.ok(value):
        hint = suggest(value, rule.choices) if rule.choices and isinstance(value, str) else ""
        fail(f"config.{key}={value!r}: must be {rule.must}{hint}")


def check_block(config, block: str, rules: Mapping[str, Rule]) -> None:
    for leaf, rule in rules.items():
        key = f"{block}.{leaf}" if block else leaf
        check(key, value_of(config, key), rule)


def abspath(value: str) -> str:
    return os.path.abspath(os.path.expanduser(value))
