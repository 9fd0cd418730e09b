"""Check 3 of ``validate``: the files and directories a run reads, the prepared data sets'
manifests, the model directory's ``config.json`` and weights, and their agreement.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os

import ml_collections
from etils import epath

from ropo_jax.config.validation.rules import (
    PICKLED_SUFFIXES,
    WEIGHT_FILES,
    abspath,
    fail,
)
from ropo_jax.data.formats import FORMATS
from ropo_jax.data.prepared import FORMAT_VERSION, format_1_error
from ropo_jax.data.sources import TFDS_PREFIX, expand_inputs, split_tfds_input
from ropo_jax.errors import UserError
from ropo_jax.models.config import from_hf_config

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
        fail(
            f"{keys} must be set for task='prepared': pass {flags}{why}; prepare data "
            "directories with python -m ropo_jax.data.prepare"
        )


def _read_json(path: str, key: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as error:
        fail(f"config.{key}: cannot read {path}: {error}")


def _manifests(config) -> dict[str, dict]:
    """The manifest of each prepared split named in config.data, checked for its kind."""
    manifests = {}
    for split in ("train", "test", "sft"):
        value = config.data[split]
        if not value:
            continue
        # A prepared set may live at any etils.epath location (gs://...): read it through epath.
        path = epath.Path(value if "://" in value else abspath(value))
        if not path.is_dir():
            fail(f"config.data.{split}={value!r}: no such directory; give a prepared data set")
        if not (path / "manifest.json").is_file():
            fail(
                f"config.data.{split}={value!r}: not a prepared data set (no manifest.json); "
                "prepare it with python -m ropo_jax.data.prepare"
            )
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except (OSError, ValueError) as error:
            fail(f"config.data.{split}: cannot read {path / 'manifest.json'}: {error}")
        if manifest.get("format_version") == 1:
            fail(f"config.data.{split}: {format_1_error(value)}")
        if manifest.get("format_version") != FORMAT_VERSION:
            fail(
                f"config.data.{split}={value!r}: format_version "
                f"{manifest.get('format_version')!r} is not {FORMAT_VERSION}; prepare it again"
            )
        is_sft, want_sft = manifest.get("kind") == "sft", split == "sft"
        if is_sft != want_sft:
            fail(
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
        if data[key] and not want(abspath(data[key])):
            fail(f"config.data.{key}={data[key]!r}: no such file or directory")


def _tfds_dir_exists(directory: str) -> bool:
    return "://" in directory or os.path.isfile(os.path.join(directory, "dataset_info.json"))


def _check_raw(config) -> None:
    raw, data = config.data.raw, config.data
    splits = [s for s in ("train", "test", "sft") if raw[s]]
    if not splits:
        return
    if not raw.format:
        fail(
            f"config.data.raw.{splits[0]} is set but config.data.raw.format is empty: set "
            f"--config.data.raw.format to one of {', '.join(FORMATS)}"
        )
    for split in splits:
        if data[split]:
            fail(
                f"config.data.{split} and config.data.raw.{split} are both set: keep the "
                "prepared directory or the raw file, not both"
            )
        files = expand_inputs(os.path.expanduser(raw[split]))
        missing = [
            f
            for f in files
            if not (f.startswith(TFDS_PREFIX) and _tfds_dir_exists(split_tfds_input(f)[0]))
            and not os.path.isfile(f)
        ]
        if not files or missing:
            named = f" {missing[0]!r}" if missing and len(files) > 1 else ""
            fail(f"config.data.raw.{split}={raw[split]!r}: no such file{named}")
    if not data.tokenizer:
        fail("config.data.raw needs config.data.tokenizer (a tokenizer directory or file)")
    if not raw.max_prompt_length < raw.max_length:
        fail(
            f"config.data.raw.max_prompt_length={raw.max_prompt_length}: must be smaller than "
            f"config.data.raw.max_length={raw.max_length}"
        )


def _check_tokenizers(config, manifests: dict[str, dict]) -> None:
    """One tokenizer for every split, and config.data.tokenizer the data's own. A manifest's
    tokenizer path that does not exist here (data prepared on another machine) is not
    compared: config.data.tokenizer then names the local copy."""
    named = {s: abspath(m["tokenizer"]) for s, m in manifests.items() if m.get("tokenizer")}
    if len(set(named.values())) > 1:
        fail(
            "config.data splits were prepared with different tokenizers ("
            + ", ".join(f"{s}: {p}" for s, p in named.items())
            + "); prepare every split with the model's tokenizer"
        )
    if config.data.tokenizer and named:
        split, path = next(iter(named.items()))
        if os.path.exists(path) and path != abspath(config.data.tokenizer):
            fail(
                f"config.data.tokenizer={config.data.tokenizer!r} is not the tokenizer "
                f"config.data.{split} was prepared with ({path}); use that one or leave "
                "config.data.tokenizer empty"
            )


def _check_hf_model(config, manifests: dict[str, dict]) -> None:
    path = config.model.hf_path
    if not path:
        return
    where = abspath(path)
    if not os.path.isdir(where):
        fail(f"config.model.hf_path={path!r}: no such directory; give a Hugging Face model dir")
    if not os.path.isfile(os.path.join(where, "config.json")):
        fail(f"config.model.hf_path={path!r}: no config.json; give a Hugging Face model dir")
    if not any(os.path.isfile(os.path.join(where, f)) for f in WEIGHT_FILES):
        pickled = sorted(f for f in os.listdir(where) if f.endswith(PICKLED_SUFFIXES))
        fix = (
            f"it has only pickled weights ({', '.join(pickled[:2])}), which are never loaded: "
            "convert them once with transformers' save_pretrained(dir, safe_serialization=True)"
            if pickled
            else "the weights are missing"
        )
        fail(f"config.model.hf_path={path!r}: no {' or '.join(WEIGHT_FILES)}; {fix}")
    try:
        model = from_hf_config(where)
    except UserError as error:
        fail(f"config.model.hf_path={path!r}: {error}")
    except (KeyError, TypeError, ValueError) as error:
        fail(f"config.model.hf_path={path!r}: config.json is incomplete or invalid ({error!r})")
    for split, manifest in manifests.items():
        if int(manifest.get("vocab_size", 0)) > model.vocab_size:
            fail(
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
            fail(
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
        fail(f"{key} needs {' and '.join(missing)}: pip install torch transformers")
    where = abspath(path)
    if not os.path.isfile(os.path.join(where, "config.json")):
        fail(f"{key}: not a model directory (no config.json); give a reward model directory")
    if not any(os.path.isfile(os.path.join(where, f)) for f in WEIGHT_FILES):
        fail(f"{key}: no {' or '.join(WEIGHT_FILES)} (only safetensors weights are loaded)")
    labels = _read_json(os.path.join(where, "config.json"), "eval.reward_model").get("id2label")
    if labels is not None and len(labels) != 1:
        fail(f"{key}: the model has {len(labels)} labels; a single-score head is needed")


def check_inputs(config: ml_collections.ConfigDict) -> None:
    """The files the run reads exist and agree (small JSON files only)."""
    _check_reward_model(config)
    if config.task in ("synthetic", "instructions"):
        _check_hf_model(config, {})
        return
    _check_required_inputs(config)
    _check_paths(config)
    _check_raw(config)
    manifests = _manifests(config)
    _check_tokenizers(config, manifests)
    _check_hf_model(config, manifests)
    _check_data_sizes(config, manifests)
