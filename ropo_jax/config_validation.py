"""Every config error before any work: ``validate(config)`` checks a whole experiment ConfigDict
in one cheap pass (no JAX compile, no data read beyond small ``manifest.json`` / ``config.json``
files) and raises :class:`~ropo_jax.errors.ConfigValueError` with one line that names the key,
the bad value and the fix. ``python -m ropo_jax.main`` calls it before it touches the workdir.

The checks, in order (docs/training.md "Config checks"):

1. values: the type and range of every key of ``configs.base_config()`` and of the synthetic
   task's block, block by block from the rule tables below, plus the rules between keys of one
   block (``micro_batches`` divides ``batch_size``; the rejection-sampling selection rule;
   the noise rate a noise kind accepts; the loss hyper-parameters of ``method``);
2. layout: ``mesh.shape`` against the device count, and batch sizes against the processes;
3. inputs (``check_files=True``): the files and directories the run reads, the prepared data
   sets' manifests, the model directory's ``config.json`` and weights, and their agreement
   (one tokenizer, a vocabulary the model covers, enough examples for one update).
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import json
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
from ropo_jax.data.prepared import FORMAT_VERSION
from ropo_jax.data.sources import expand_inputs
from ropo_jax.errors import ConfigValueError, UserError
from ropo_jax.eval_generations import PROMPT_FORMATS, PROMPT_STYLES
from ropo_jax.losses import registry
from ropo_jax.losses.pairwise import HYPERPARAM_RULES
from ropo_jax.models.config import PRESETS, REMAT_POLICIES, from_hf_config
from ropo_jax.optim import SCHEDULES
from ropo_jax.rejection_sampling import SELECTIONS
from ropo_jax.ropo import FILTER_MODES, GRANULARITIES
from ropo_jax.synthetic.dataset import DataConfig
from ropo_jax.synthetic.task import TaskConfig
from ropo_jax.train import NAN_POLICIES

METHODS = (*registry.LOSSES, "ropo_full", "sft")
TASKS = ("prepared", "synthetic")
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


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


def _int(low: int) -> Rule:
    return Rule(lambda v: _is_int(v) and v >= low, f"an integer >= {low}")


def _real(low=None, high=None, *, open_low=False, open_high=False) -> Rule:
    def ok(v):
        return (
            _is_real(v)
            and (low is None or (v > low if open_low else v >= low))
            and (high is None or (v < high if open_high else v <= high))
        )

    if high is None:
        must = "a finite number" if low is None else f"a number {'>' if open_low else '>='} {low}"
    else:
        must = f"a number in {'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
    return Rule(ok, must)


def _one_of(choices, *, empty_ok: bool = False) -> Rule:
    choices = tuple(choices)
    listed = ", ".join(repr(c) for c in choices)
    return Rule(
        lambda v: v in choices or (empty_ok and v == ""),
        f"one of {listed}" + (" (or '' for none)" if empty_ok else ""),
        choices,
    )


POSITIVE = Rule(lambda v: _is_int(v) and v >= 1, "a positive integer")
BOOL = Rule(lambda v: isinstance(v, bool), "True or False")
STR = Rule(lambda v: isinstance(v, str), "a string")
PROBABILITY = _real(0, 1)
TOP_P = _real(0, 1, open_low=True)

TOP_RULES = {
    "seed": _int(0),
    "method": _one_of(METHODS),
    "task": _one_of(TASKS),
    "tensorboard": BOOL,
    "compilation_cache_dir": STR,
}
STAGE_RULES = {
    "batch_size": POSITIVE,
    "micro_batches": POSITIVE,
    "learning_rate": _real(0),
    "warmup_ratio": PROBABILITY,
    "schedule": _one_of(SCHEDULES),
    "weight_decay": _real(0),
    "max_grad_norm": _real(0),  # 0: no clipping
    "batch_mode": _one_of(MODES),
    "max_length": _int(0),  # 0: the prepared data's max_length
    "log_every": POSITIVE,
    "checkpoint_every": POSITIVE,
    "keep_checkpoints": POSITIVE,
}
SFT_RULES = {**STAGE_RULES, "epochs": _real(0, open_low=True), "enabled": BOOL}
TRAIN_RULES = {
    **STAGE_RULES,
    "online_reference": BOOL,
    "nan_policy": _one_of(NAN_POLICIES),
    "logps_chunk_size": POSITIVE,
}
DATA_RULES = dict.fromkeys(
    ("train", "test", "sft", "tokenizer", "eval_prompts", "chat_template"), STR
)
RAW_RULES = {
    "format": _one_of(FORMATS, empty_ok=True),
    "train": STR,
    "test": STR,
    "sft": STR,
    "max_length": POSITIVE,
    "max_prompt_length": POSITIVE,
    "on_error": _one_of(ON_ERROR_CHOICES),
    "dedupe": BOOL,
    "pairing": _one_of(PAIRINGS),
    "include_cnndm": BOOL,
}
NOISE_RULES = {
    "kind": _one_of(KINDS),
    "rate": PROBABILITY,
    "seed": Rule(_is_int, "an integer"),
    "temperature": _real(0, open_low=True),
}
MODEL_RULES = {
    "preset": STR,
    "hf_path": STR,
    "dtype": _one_of(DTYPES),
    "param_dtype": _one_of(DTYPES),
    "remat_policy": _one_of(REMAT_POLICIES),
}
ROPO_RULES = {
    "num_rounds": POSITIVE,
    "epochs_per_round": _real(0, open_low=True),
    "filter_ratio": Rule(
        lambda v: v == "auto" or (_is_real(v) and 0 <= v < 1), "a number in [0, 1) or 'auto'"
    ),
    "filter_start_round": POSITIVE,
    "filter_mode": _one_of(FILTER_MODES),
    "filter_granularity": _one_of(GRANULARITIES),
}
RS_RULES = {
    "enabled": BOOL,
    "num_candidates": _int(2),
    "temperature": _real(0),  # 0: greedy
    "top_p": TOP_P,
    "max_new_tokens": POSITIVE,
    "include_original": BOOL,
    "selection": _one_of(SELECTIONS),
}
EVAL_RULES = {
    "batch_size": POSITIVE,
    "temperature": _real(0),
    "top_p": TOP_P,
    "max_new_tokens": POSITIVE,
    "generate_batch_size": POSITIVE,
    "prompts_format": _one_of(PROMPT_FORMATS),
    "prompt_style": _one_of(PROMPT_STYLES),
    "num_prompts": _int(0),  # 0: every prompt
    "generator": STR,
    "reward_model": STR,
    "reward_batch_size": POSITIVE,
    "reward_device": _one_of(REWARD_DEVICES),
}
SYNTHETIC_TASK_RULES = {
    "num_topics": _int(2),  # a response's off-topic words come from another topic
    "words_per_topic": POSITIVE,
    "num_bad_words": POSITIVE,
    "num_filler_words": POSITIVE,
    "min_length": POSITIVE,
    "max_length": POSITIVE,
    "length_weight": _real(0),
    "off_topic_score": _real(),
}
SYNTHETIC_DATA_RULES = {
    "num_sft": POSITIVE,  # every split is prepared, and an empty one is a data error
    "num_train_pairs": POSITIVE,
    "num_test_pairs": POSITIVE,
    "num_eval_prompts": POSITIVE,
    "sft_quality": PROBABILITY,
}
EXPORT_RULES = {
    "dtype": _one_of(DTYPES, empty_ok=True),  # '': the parameters' dtype
    "max_shard_gb": _real(0, open_low=True),
}
BLOCK_RULES = {
    "": TOP_RULES,
    "sft": SFT_RULES,
    "train": TRAIN_RULES,
    "data": DATA_RULES,
    "data.raw": RAW_RULES,
    "noise": NOISE_RULES,
    "model": MODEL_RULES,
    "ropo": ROPO_RULES,
    "ropo.rs": RS_RULES,
    "eval": EVAL_RULES,
    "export": EXPORT_RULES,
}


# --- helpers ----------------------------------------------------------------------------------


def _fail(message: str) -> NoReturn:
    raise ConfigValueError(re.sub(r"\s*\n\s*", " ", message))  # one line, always


def _suggest(value, choices) -> str:
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _node(config, block: str):
    node = config
    for part in filter(None, block.split(".")):
        if not isinstance(node, Mapping | ml_collections.ConfigDict) or part not in node:
            _fail(
                f"config.{block} is missing: experiment configs start from "
                "ropo_jax.configs.base_config()"
            )
        node = node[part]
    return node


def _value(config, key: str):
    block, _, leaf = key.rpartition(".")
    node = _node(config, block)
    if leaf not in node:
        _fail(f"config.{key} is missing: experiment configs start from base_config()")
    return node[leaf]


def _check(key: str, value, rule: Rule) -> None:
    if not rule.ok(value):
        hint = _suggest(value, rule.choices) if rule.choices and isinstance(value, str) else ""
        _fail(f"config.{key}={value!r}: must be {rule.must}{hint}")


def _check_block(config, block: str, rules: Mapping[str, Rule]) -> None:
    for leaf, rule in rules.items():
        key = f"{block}.{leaf}" if block else leaf
        _check(key, _value(config, key), rule)


def _path(value: str) -> str:
    return os.path.abspath(os.path.expanduser(value))


# --- 1. values --------------------------------------------------------------------------------


def _check_stages(config) -> None:
    for block in ("sft", "train"):
        size = _value(config, f"{block}.batch_size")
        micro = _value(config, f"{block}.micro_batches")
        if size % micro:
            _fail(
                f"config.{block}.micro_batches={micro}: must divide config.{block}.batch_size="
                f"{size} (each update is micro_batches steps of batch_size / micro_batches)"
            )
    if config.method == "sft" and not config.sft.enabled:
        _fail("config.method='sft' needs config.sft.enabled=True (SFT is the whole run)")


def _check_noise(config) -> None:
    kind, rate = config.noise.kind, config.noise.rate
    if kind in UNIFORM_RATE_KINDS and not rate < 0.5:
        _fail(
            f"config.noise.rate={rate!r}: {kind} noise needs a rate in [0, 0.5): at 0.5 the "
            "labels carry no signal and above it most of them are inverted; use a rate < 0.5"
        )
    if kind == "none" and rate != 0:
        _fail(
            f"config.noise.rate={rate!r} has no effect with config.noise.kind='none'; set "
            "--config.noise.kind=symmetric (or another kind) or leave the rate at 0"
        )


def _check_loss(config) -> None:
    """The knobs the method's loss takes (pipeline.loss_hyperparams): ``sft`` is scored with
    dpo's, ``ropo_full`` trains with ropo's; a negative label_smoothing/flip_rate means the
    noise rate."""
    method = config.method
    loss = {"ropo_full": "ropo", "sft": "dpo"}.get(method, method)
    knobs = dict(_node(config, "loss"))
    for key in ("label_smoothing", "flip_rate"):
        if _is_real(knobs.get(key)) and knobs[key] < 0:
            knobs[key] = min(float(config.noise.rate), 0.49)
    for key in registry.LOSSES[loss].hyperparams:
        if key not in knobs:
            continue
        value = knobs[key]
        if key == "ipo_average":
            _check("loss.ipo_average", value, BOOL)
        elif key in HYPERPARAM_RULES:
            ok, requirement = HYPERPARAM_RULES[key]
            if not (_is_real(value) and ok(float(value))):
                _fail(f"config.loss.{key}={config.loss[key]!r}: {requirement} (method {method!r})")
    try:
        registry.hyperparams_from(loss, knobs)
    except ValueError as error:
        _fail(f"config.loss (method {method!r}): {error}")


def _check_ropo(config) -> None:
    """What RopoConfig.__post_init__ checks, before SFT and scoring rather than after."""
    rs = config.ropo.rs
    if rs.selection == "best_vs_worst_original" and not rs.include_original:
        _fail(
            "config.ropo.rs.selection='best_vs_worst_original' needs the original responses "
            "among the candidates: set --config.ropo.rs.include_original=True"
        )


def _check_model_values(config) -> None:
    m = config.model
    if not m.hf_path and m.preset not in PRESETS:
        _fail(
            f"config.model.preset={m.preset!r}: must be one of {', '.join(sorted(PRESETS))} "
            f"(or set config.model.hf_path){_suggest(m.preset, PRESETS)}"
        )


def _check_synthetic(config) -> None:
    if config.task != "synthetic":
        return
    if "synthetic" not in config:
        _fail(
            "config.synthetic is missing: task='synthetic' needs the block of "
            "experiments/synthetic.py (data_seed, task, data)"
        )
    _check("synthetic.data_seed", _value(config, "synthetic.data_seed"), _int(0))
    for block, fields, rules in (
        ("synthetic.task", TaskConfig, SYNTHETIC_TASK_RULES),
        ("synthetic.data", DataConfig, SYNTHETIC_DATA_RULES),
    ):
        node = _node(config, block)
        known = [f.name for f in dataclasses.fields(fields)]
        for key in node:
            if key not in known:
                _fail(f"config.{block}.{key}: no such key{_suggest(key, known)}")
            _check(f"{block}.{key}", node[key], rules[key])
    task = TaskConfig(**dict(config.synthetic.task))
    if task.max_length < task.min_length:
        _fail(
            f"config.synthetic.task.max_length={task.max_length}: must be >= "
            f"config.synthetic.task.min_length={task.min_length}"
        )


def check_values(config: ml_collections.ConfigDict) -> None:
    """Types and ranges of every key, and the rules between keys; reads nothing."""
    for block, rules in BLOCK_RULES.items():
        _check_block(config, block, rules)
    _check_stages(config)
    _check_noise(config)
    _check_loss(config)
    _check_ropo(config)
    _check_model_values(config)
    _check_synthetic(config)


# --- 2. layout --------------------------------------------------------------------------------


def mesh_sizes(shape, device_count: int) -> tuple[int, int, int]:
    """The (data, fsdp, tensor) sizes of ``config.mesh.shape`` on ``device_count`` devices, as
    sharding.make_mesh builds them; a ConfigValueError if it cannot."""
    fix = "set one axis to -1 to take the rest, e.g. --config.mesh.shape='(-1,1,1)'"
    if not (
        isinstance(shape, tuple | list)
        and len(shape) == 3
        and all(_is_int(s) and (s >= 1 or s == -1) for s in shape)
    ):
        _fail(
            f"config.mesh.shape={shape!r}: must be 3 sizes (data, fsdp, tensor), each >= 1 or "
            f"-1; {fix}"
        )
    if list(shape).count(-1) > 1:
        _fail(f"config.mesh.shape={tuple(shape)}: at most one axis may be -1 ('the rest')")
    known = math.prod(s for s in shape if s != -1)
    fits = device_count % known == 0 if -1 in shape else known == device_count
    if not fits:
        _fail(
            f"config.mesh.shape={tuple(shape)} does not fit the {device_count} device(s): the "
            f"fixed axes (product {known}) must "
            f"{'divide' if -1 in shape else 'equal'} the device count; {fix}"
        )
    return tuple(device_count // known if s == -1 else s for s in shape)


def _check_batch_layout(config, sizes: tuple[int, int, int], process_count: int) -> None:
    """Each process loads an equal share of every (micro-)batch (data.loader.BatchPlan). On one
    process nothing else is needed: batches.put_batch replicates a batch dimension the
    (data, fsdp) axes do not divide. Across processes every process's rows must land on its
    own devices, so the per-micro-batch size must divide over data × fsdp as well."""
    batch_ways = sizes[0] * sizes[1]
    per_step = [
        ("train.batch_size", config.train.batch_size // config.train.micro_batches),
        ("eval.batch_size", config.eval.batch_size),  # scoring, evaluation, RS candidates
    ]
    if config.sft.enabled:
        per_step.append(("sft.batch_size", config.sft.batch_size // config.sft.micro_batches))
    for key, size in per_step:
        what = "per micro-batch" if key != "eval.batch_size" else "per batch"
        if size % process_count:
            _fail(
                f"config.{key}: {size} examples {what} do not split evenly over the "
                f"{process_count} processes; use a multiple of {process_count}"
            )
        if process_count > 1 and size % batch_ways:
            _fail(
                f"config.{key}: {size} examples {what} do not split over the data x fsdp = "
                f"{batch_ways} devices of config.mesh.shape={tuple(config.mesh.shape)}; use a "
                f"multiple of {batch_ways}"
            )


# --- 3. inputs --------------------------------------------------------------------------------


def _is_placeholder(value: str) -> bool:
    return value.startswith("<") and value.endswith(">")


def _check_required_inputs(config) -> None:
    """What a prepared-data run cannot start without, all named in one line."""
    data, raw, missing = config.data, config.data.raw, []
    if not (data.train or raw.train):
        missing.append("data.train")
    if config.sft.enabled and not (data.sft or raw.sft):
        missing.append("data.sft")
    if _is_placeholder(config.model.hf_path):
        missing.append("model.hf_path")
    if missing:
        keys = " and ".join(f"config.{k}" for k in missing)
        flags = " ".join(f"--config.{k}=DIR" for k in missing)
        why = " (or --config.sft.enabled=False)" if "data.sft" in missing else ""
        _fail(
            f"{keys} must be set for task='prepared': pass {flags}{why}; prepare data "
            "directories with python -m ropo_jax.data.prepare"
        )


def _read_json(path: str, key: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        _fail(f"config.{key}: cannot read {path}: {error}")


def _manifests(config) -> dict[str, dict]:
    """The manifest of each prepared split named in config.data, checked for its kind."""
    manifests = {}
    for split in ("train", "test", "sft"):
        value = config.data[split]
        if not value:
            continue
        path = _path(value)
        manifest_path = os.path.join(path, "manifest.json")
        if not os.path.isdir(path):
            _fail(f"config.data.{split}={value!r}: no such directory; give a prepared data set")
        if not os.path.isfile(manifest_path):
            _fail(
                f"config.data.{split}={value!r}: not a prepared data set (no manifest.json); "
                "prepare it with python -m ropo_jax.data.prepare"
            )
        manifest = _read_json(manifest_path, f"data.{split}")
        if manifest.get("format_version") != FORMAT_VERSION:
            _fail(
                f"config.data.{split}={value!r}: format_version "
                f"{manifest.get('format_version')!r} is not {FORMAT_VERSION}; prepare it again"
            )
        is_sft, want_sft = manifest.get("kind") == "sft", split == "sft"
        if is_sft != want_sft:
            _fail(
                f"config.data.{split}={value!r} holds {manifest.get('kind')!r} data; "
                f"{'SFT needs --format=sft' if want_sft else 'preference pairs are needed'}"
            )
        manifests[split] = manifest
    return manifests


def _check_paths(config) -> None:
    data = config.data
    for key, want in (
        ("tokenizer", os.path.exists),
        ("eval_prompts", os.path.isfile),
        ("chat_template", os.path.isfile),
    ):
        if data[key] and not want(_path(data[key])):
            _fail(f"config.data.{key}={data[key]!r}: no such file or directory")


def _check_raw(config) -> None:
    raw, data = config.data.raw, config.data
    splits = [s for s in ("train", "test", "sft") if raw[s]]
    if not splits:
        return
    if not raw.format:
        _fail(
            f"config.data.raw.{splits[0]} is set but config.data.raw.format is empty: set "
            f"--config.data.raw.format to one of {', '.join(FORMATS)}"
        )
    for split in splits:
        if data[split]:
            _fail(
                f"config.data.{split} and config.data.raw.{split} are both set: keep the "
                "prepared directory or the raw file, not both"
            )
        files = expand_inputs(os.path.expanduser(raw[split]))
        missing = [f for f in files if not os.path.isfile(f)]
        if not files or missing:
            named = f" {missing[0]!r}" if missing and len(files) > 1 else ""
            _fail(f"config.data.raw.{split}={raw[split]!r}: no such file{named}")
    if not data.tokenizer:
        _fail("config.data.raw needs config.data.tokenizer (a tokenizer directory or file)")
    if not raw.max_prompt_length < raw.max_length:
        _fail(
            f"config.data.raw.max_prompt_length={raw.max_prompt_length}: must be smaller than "
            f"config.data.raw.max_length={raw.max_length}"
        )


def _check_tokenizers(config, manifests: dict[str, dict]) -> None:
    """One tokenizer for every split, and config.data.tokenizer the data's own. A manifest's
    tokenizer path that does not exist here (data prepared on another machine) is not
    compared: config.data.tokenizer then names the local copy."""
    named = {s: _path(m["tokenizer"]) for s, m in manifests.items() if m.get("tokenizer")}
    if len(set(named.values())) > 1:
        _fail(
            "config.data splits were prepared with different tokenizers ("
            + ", ".join(f"{s}: {p}" for s, p in named.items())
            + "); prepare every split with the model's tokenizer"
        )
    if config.data.tokenizer and named:
        split, path = next(iter(named.items()))
        if os.path.exists(path) and path != _path(config.data.tokenizer):
            _fail(
                f"config.data.tokenizer={config.data.tokenizer!r} is not the tokenizer "
                f"config.data.{split} was prepared with ({path}); use that one or leave "
                "config.data.tokenizer empty"
            )


def _check_hf_model(config, manifests: dict[str, dict]) -> None:
    path = config.model.hf_path
    if not path:
        return
    where = _path(path)
    if not os.path.isdir(where):
        _fail(f"config.model.hf_path={path!r}: no such directory; give a Hugging Face model dir")
    if not os.path.isfile(os.path.join(where, "config.json")):
        _fail(f"config.model.hf_path={path!r}: no config.json; give a Hugging Face model dir")
    if not any(os.path.isfile(os.path.join(where, f)) for f in WEIGHT_FILES):
        pickled = sorted(f for f in os.listdir(where) if f.endswith(PICKLED_SUFFIXES))
        fix = (
            f"it has only pickled weights ({', '.join(pickled[:2])}), which are never loaded: "
            "convert them once with transformers' save_pretrained(dir, safe_serialization=True)"
            if pickled
            else "the weights are missing"
        )
        _fail(f"config.model.hf_path={path!r}: no {' or '.join(WEIGHT_FILES)}; {fix}")
    try:
        model = from_hf_config(where)
    except UserError as error:
        _fail(f"config.model.hf_path={path!r}: {error}")
    except (KeyError, TypeError, ValueError) as error:
        _fail(f"config.model.hf_path={path!r}: config.json is incomplete or invalid ({error!r})")
    for split, manifest in manifests.items():
        if int(manifest.get("vocab_size", 0)) > model.vocab_size:
            _fail(
                f"config.data.{split}: its tokenizer has {manifest['vocab_size']} tokens but "
                f"config.model.hf_path={path!r} embeds {model.vocab_size}; prepare the data with "
                "the model's own tokenizer"
            )


def _check_data_sizes(config, manifests: dict[str, dict]) -> None:
    """One full update per stage (trainer.run_stage), from the manifests' example counts."""
    stages = [("train", "train", float(config.ropo.epochs_per_round))]
    if config.sft.enabled:
        stages.append(("sft", "sft", float(config.sft.epochs)))
    for split, block, epochs in stages:
        if split not in manifests or "num_examples" not in manifests[split]:
            continue
        n, stage = int(manifests[split]["num_examples"]), config[block]
        micro = stage.batch_size // stage.micro_batches
        if math.floor(epochs * (n // micro) / stage.micro_batches) < 1:
            _fail(
                f"config.{block}.batch_size={stage.batch_size}: config.data.{split} has {n} "
                f"examples, too few for one update of {epochs:g} epoch(s); lower the batch size"
            )


def _check_reward_model(config) -> None:
    """What eval_generations' RewardModel needs at the very end of a run, checked at its start:
    PyTorch and transformers, a model directory with safetensors weights and a single score."""
    path = config.eval.reward_model
    if not path:
        return
    key = f"config.eval.reward_model={path!r}"
    missing = [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]
    if missing:
        _fail(f"{key} needs {' and '.join(missing)}: pip install torch transformers")
    where = _path(path)
    if not os.path.isfile(os.path.join(where, "config.json")):
        _fail(f"{key}: not a model directory (no config.json); give a reward model directory")
    if not any(os.path.isfile(os.path.join(where, f)) for f in WEIGHT_FILES):
        _fail(f"{key}: no {' or '.join(WEIGHT_FILES)} (only safetensors weights are loaded)")
    labels = _read_json(os.path.join(where, "config.json"), "eval.reward_model").get("id2label")
    if labels is not None and len(labels) != 1:
        _fail(f"{key}: the model has {len(labels)} labels; a single-score head is needed")


def check_inputs(config: ml_collections.ConfigDict) -> None:
    """The files the run reads exist and agree (small JSON files only)."""
    _check_reward_model(config)
    if config.task == "synthetic":
        _check_hf_model(config, {})
        return
    _check_required_inputs(config)
    _check_paths(config)
    _check_raw(config)
    manifests = _manifests(config)
    _check_tokenizers(config, manifests)
    _check_hf_model(config, manifests)
    _check_data_sizes(config, manifests)


# --- entry points -----------------------------------------------------------------------------


def validate(
    config: ml_collections.ConfigDict,
    *,
    device_count: int | None = None,
    process_count: int | None = None,
    check_files: bool = True,
) -> None:
    """Raises ConfigValueError (one line: key, bad value, fix) for the first problem found.

    ``device_count``/``process_count`` default to JAX's (the backend is initialised, nothing is
    compiled); ``check_files=False`` checks values and layout only (a config whose paths are
    given later).
    """
    check_values(config)
    if device_count is None or process_count is None:
        import jax

        device_count = jax.device_count() if device_count is None else device_count
        process_count = jax.process_count() if process_count is None else process_count
    sizes = mesh_sizes(config.mesh.shape, device_count)
    _check_batch_layout(config, sizes, process_count)
    if check_files:
        check_inputs(config)
