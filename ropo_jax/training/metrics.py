"""Metrics: exact means from (sum, count), ``metrics.jsonl`` and TensorBoard writers, throughput
and MFU. Only process 0 writes; every process computes the same global sums (the step reduces
over the whole sharded batch)."""

from __future__ import annotations

import json
import math
import os
import re
from typing import Any

import jax
import numpy as np
from absl import logging

from ropo_jax.models import ModelConfig

# Dense bf16 peak FLOP/s per device (vendor figures, without sparsity). CPU: no entry → MFU null.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "L4": 121e12,
    "L40S": 362e12,
    "A10": 125e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
}
PAIR_MEAN_KEYS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
)


def _words(text: str) -> tuple[str, ...]:
    return tuple(w for w in re.split(r"[\s_-]+", text.lower()) if w)


def device_peak_flops(device: jax.Device | None = None) -> float | None:
    """The PEAK_FLOPS entry whose name occurs in the device kind as whole words (split at
    spaces, hyphens and underscores; case-insensitive), the longest such name if several do. A
    substring test would read "NVIDIA L40S" as an L4 and "NVIDIA A10G" as an A10, and report
    an MFU against another chip's peak."""
    kind = _words((device or jax.devices()[0]).device_kind)
    matches = [
        name
        for name in PEAK_FLOPS
        if any(
            kind[i : i + len(_words(name))] == _words(name)
            for i in range(len(kind) - len(_words(name)) + 1)
        )
    ]
    if not matches:
        return None
    return PEAK_FLOPS[max(matches, key=lambda name: len(_words(name)))]


def flops_per_token(config: ModelConfig, seq_len: int, *, backward: bool = True) -> float:
    """6·N (forward + backward matmuls over N non-embedding-lookup parameters) plus the
    attention score/value matmuls 12·L·H·d_head·T (6·… for forward only); 2·N forward only."""
    n = config.num_params() - config.vocab_size * config.hidden_size  # the lookup is no matmul
    if config.tie_word_embeddings:
        n += config.vocab_size * config.hidden_size  # ...but the tied output head is
    attention = 2 * 2 * config.num_layers * config.num_heads * config.head_dim * seq_len
    factor = 3 if backward else 1
    return factor * (2 * n + attention)


def accumulate(window: dict[str, float] | None, sums: dict[str, Any]) -> dict[str, float]:
    """Adds one step's sums to a logging window, step by step in float64: the same totals
    whatever the fetch grouping, and exactly JSON-serialisable (a checkpoint carries the open
    window, so a resumed run logs the same numbers as an uninterrupted one)."""
    window = dict(window or {})
    for key, value in sums.items():
        window[key] = window.get(key, 0.0) + float(np.asarray(value, np.float64))
    return window


def finalize(sums: dict[str, Any]) -> dict[str, float]:
    """Host-side means: the loss per unit weight, pair metrics per real pair."""
    sums = {k: float(np.asarray(v)) for k, v in sums.items()}
    out = {}
    weight, pairs = sums.get("weight", 0.0), sums.get("pairs", 0.0)
    if "loss" in sums:
        out["loss"] = sums["loss"] / weight if weight > 0 else math.nan
    for key in PAIR_MEAN_KEYS:
        if key in sums:
            out[key] = sums[key] / pairs if pairs > 0 else math.nan
    for key in ("grad_norm", "nonfinite", "tokens", "pairs", "filtered_in_batch"):
        if key in sums:
            out[key] = sums[key]
    return out


class MetricsWriter:
    """Appends one JSON object per logged step to ``metrics.jsonl`` (the record) and mirrors
    scalars to TensorBoard when tensorboardX is installed and ``tensorboard`` is on."""

    def __init__(self, workdir: str, *, tensorboard: bool = True):
        self.enabled = jax.process_index() == 0
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._tb = None
        if self.enabled:
            os.makedirs(workdir, exist_ok=True)
            if tensorboard:
                try:
                    from tensorboardX import SummaryWriter

                    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
                except ImportError:
                    logging.info("tensorboardX not installed: metrics go to metrics.jsonl only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=_jsonable) + "\n")
        if self._tb is not None and "step" in record:
            prefix = record.get("stage", "train")
            for key, value in record.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._tb.add_scalar(f"{prefix}/{key}", value, record["step"])

    def drop_after(self, stage: str, step: int) -> None:
        """Removes ``stage``'s step records past ``step``: a resumed run logs those steps again,
        so the file reads as if the run had never been interrupted."""
        if not self.enabled or not os.path.exists(self.path):
            return
        with open(self.path) as f:
            lines = [line for line in f if line.strip()]
        kept = []
        for line in lines:
            record = json.loads(line)
            if record.get("stage") == stage and (record.get("step") or 0) > step:
                continue
            kept.append(line)
        if len(kept) < len(lines):
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.writelines(kept)
            os.replace(tmp, self.path)  # atomic: a kill now leaves the old or the new file

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"{type(x)} is not JSON serialisable")


def flatten(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} → {"a/b": 1}, for writing nested results as metrics."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}/"))
        else:
            out[f"{prefix}{key}"] = value
    return out


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
