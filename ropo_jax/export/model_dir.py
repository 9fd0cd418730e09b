"""A Hugging Face model directory from parameters: weights (``models.save_hf``), config,
``generation_config.json``, tokenizer and chat template, ``export.json``; assembled beside the
target and renamed into place."""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

from absl import logging

from ropo_jax.export.info import (
    EXPORT_RECORD,
    ExportError,
    _write_json_atomic,
)
from ropo_jax.parallel import processes


def _tokenizer_directory(tokenizer_dir: str) -> str:
    if not os.path.exists(tokenizer_dir):
        raise ExportError(f"tokenizer {tokenizer_dir} not found")
    return tokenizer_dir if os.path.isdir(tokenizer_dir) else os.path.dirname(tokenizer_dir)


def load_hf_tokenizer(tokenizer_dir: str, model_config, *, chat_template: str | None = None):
    """The run's tokenizer as transformers loads it, checked against this project's reading of
    the same files (transformers can build an empty tokenizer without complaint) and against
    the model's vocabulary; ``chat_template`` (text) replaces the tokenizer's own."""
    from transformers import AutoTokenizer

    from ropo_jax.data.tokenizer import load_tokenizer

    directory = _tokenizer_directory(tokenizer_dir)
    ours = load_tokenizer(tokenizer_dir)
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    if len(tokenizer) != ours.vocab_size:
        raise ExportError(
            f"{directory}: transformers reads a tokenizer of {len(tokenizer)} tokens but it has "
            f"{ours.vocab_size}; add a tokenizer.json (or a tokenizer_config.json naming the "
            "tokenizer class) that transformers loads"
        )
    if len(tokenizer) > model_config.vocab_size:
        raise ExportError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens but the model embeds "
            f"{model_config.vocab_size}; export with the run's own tokenizer"
        )
    if chat_template is not None:
        tokenizer.chat_template = chat_template
    return tokenizer


def with_token_ids(model_config, tokenizer):
    """The model's BOS/EOS/PAD ids, each filled from the tokenizer where the model has none
    (PAD: the tokenizer's, else EOS)."""
    if tokenizer is None:
        return model_config
    bos = model_config.bos_token_id
    eos = model_config.eos_token_id
    if eos is not None and tokenizer.eos_token_id is not None and eos != tokenizer.eos_token_id:
        logging.warning(
            "the model's eos_token_id=%s differs from the tokenizer's %s; config.json keeps the "
            "model's",
            eos,
            tokenizer.eos_token_id,
        )
    bos = tokenizer.bos_token_id if bos is None else bos
    eos = tokenizer.eos_token_id if eos is None else eos
    pad = model_config.pad_token_id
    if pad is None:
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    return model_config.replace(bos_token_id=bos, eos_token_id=eos, pad_token_id=pad)


def _generation_config(model_config):
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=model_config.bos_token_id,
        eos_token_id=model_config.eos_token_id,
        pad_token_id=model_config.pad_token_id,
    )


def _json_value(value):
    return json.loads(json.dumps(value))


def is_exported(output_dir: str, provenance: dict[str, Any]) -> bool:
    """True when ``output_dir`` holds a finished export of exactly ``provenance``."""
    path = os.path.join(output_dir, EXPORT_RECORD)
    if not os.path.isfile(path):
        return False
    try:
        with open(path) as f:
            return json.load(f) == _json_value(provenance)
    except json.JSONDecodeError:
        return False


def _check_replaceable(output_dir: str) -> None:
    """An existing ``output_dir`` is replaced only when it is empty or an earlier export."""
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise ExportError(f"{output_dir} exists and is not a directory")
    if os.listdir(output_dir) and not os.path.isfile(os.path.join(output_dir, EXPORT_RECORD)):
        raise ExportError(
            f"{output_dir} exists and is not an export (no {EXPORT_RECORD}); choose "
            "another directory or remove it"
        )


def _move_into_place(tmp: str, output_dir: str) -> None:
    old = None
    if os.path.exists(output_dir):
        old = f"{tmp}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.rename(output_dir, old)
    os.rename(tmp, output_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def export_model(
    model_config,
    params,
    output_dir: str,
    *,
    tokenizer_dir: str | None,
    chat_template: str | None = None,
    dtype=None,
    max_shard_bytes: int = 2 * 1024**3,
    provenance: dict[str, Any] | None = None,
) -> str:
    """Writes a transformers model directory (see the module docstring) and returns its path.

    ``tokenizer_dir``: the run's tokenizer (None: no tokenizer files); ``chat_template``: the
    template text, replacing the tokenizer's; ``dtype``: the saved dtype (default: the
    parameters'); ``provenance``: the JSON-serialisable content of ``export.json``. All
    processes must call this; only process 0 writes.
    """
    from ropo_jax import models

    output_dir = os.path.abspath(output_dir)
    parent, name = os.path.split(output_dir)
    tmp = os.path.join(parent, f".{name}.export-tmp")
    writer = processes.is_writer()
    # Every process reads the tokenizer: a bad one fails everywhere, not only where it writes.
    tokenizer = None
    if tokenizer_dir:
        tokenizer = load_hf_tokenizer(tokenizer_dir, model_config, chat_template=chat_template)
    elif chat_template is not None:
        raise ExportError("a chat template needs a tokenizer to carry it; pass tokenizer_dir")
    model_config = with_token_ids(model_config, tokenizer)
    _check_replaceable(output_dir)
    if writer:
        shutil.rmtree(tmp, ignore_errors=True)  # a crashed export's leftovers
        os.makedirs(tmp)
    models.save_hf(model_config, params, tmp, dtype=dtype, max_shard_bytes=max_shard_bytes)
    if writer:
        _generation_config(model_config).save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        _write_json_atomic(os.path.join(tmp, EXPORT_RECORD), _json_value(provenance or {}))
        _move_into_place(tmp, output_dir)
    processes.barrier("ropo_jax.export.export_model")
    return output_dir
