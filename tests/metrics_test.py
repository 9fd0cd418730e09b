"""Metrics: exact means from (sum, count), the FLOP count behind MFU, device peaks, writers."""

import math

import jax
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.training import metrics

CONFIG = models.ModelConfig(
    vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)


def test_finalize_divides_sums_by_weight_and_real_pairs():
    # two micro-batches: weights (1, 1, 0) and (2,): the loss is the weight-weighted mean over
    # all of them, not the mean of the per-micro-batch means
    sums = {
        "loss": np.float32(1.0 + 3.0 + 0.0) + np.float32(2 * 5.0),
        "weight": 4.0,
        "pairs": 4.0,
        "rewards/accuracies": 3.0,
        "tokens": 100.0,
        "nonfinite": 0.0,
    }
    out = metrics.finalize(sums)
    assert out["loss"] == pytest.approx(14.0 / 4.0)
    assert out["rewards/accuracies"] == pytest.approx(0.75)
    assert out["tokens"] == 100.0 and out["nonfinite"] == 0.0


def test_finalize_with_no_weight_is_nan_not_an_error():
    out = metrics.finalize({"loss": 0.0, "weight": 0.0, "pairs": 0.0, "logps/chosen": 0.0})
    assert math.isnan(out["loss"]) and math.isnan(out["logps/chosen"])


def test_flops_per_token_is_6n_plus_attention():
    t = 128
    c = CONFIG
    d, f, v, h = c.hidden_size, c.intermediate_size, c.vocab_size, c.head_dim
    per_layer = d * h * (2 * c.num_heads + 2 * c.num_kv_heads) + 3 * d * f + 2 * d
    # matmul parameters: layers, final norm, untied head (the embedding lookup is no matmul)
    n = c.num_layers * per_layer + d + d * v
    attention = 4 * c.num_layers * c.num_heads * h * t
    assert metrics.flops_per_token(c, t) == 3 * (2 * n + attention)
    assert metrics.flops_per_token(c, t, backward=False) == 2 * n + attention
    tied = c.replace(tie_word_embeddings=True)
    assert metrics.flops_per_token(tied, t) == metrics.flops_per_token(c, t)


def test_device_peak_table(monkeypatch):
    class Fake:
        def __init__(self, kind):
            self.device_kind = kind

    peaks = {
        "NVIDIA H100 80GB HBM3": 989e12,
        "NVIDIA H100 PCIe": 989e12,
        "NVIDIA H200": 989e12,
        "NVIDIA A100-SXM4-40GB": 312e12,
        "NVIDIA A100 80GB PCIe": 312e12,
        "NVIDIA L4": 121e12,
        "NVIDIA L40S": 362e12,  # contains "L4" as a substring, not as a word
        "NVIDIA A10": 125e12,
        "NVIDIA A10G": None,  # another chip than the A10: no peak rather than a wrong one
        "TPU v4": 275e12,
        "TPU v5 lite": 197e12,
        "TPU v5p": 459e12,
        "TPU v6 lite": 918e12,
        "cpu": None,
    }
    for kind, peak in peaks.items():
        assert metrics.device_peak_flops(Fake(kind)) == peak, kind
    assert metrics.device_peak_flops(jax.devices("cpu")[0]) is None
    # Where two names match as words, the longer (more specific) one wins, in any table order.
    monkeypatch.setitem(metrics.PEAK_FLOPS, "TPU v5", 1.0)
    assert metrics.device_peak_flops(Fake("TPU v5 lite")) == 197e12
    assert metrics.device_peak_flops(Fake("TPU v5")) == 1.0


def test_writer_appends_jsonl_and_tensorboard(tmp_path):
    writer = metrics.MetricsWriter(str(tmp_path))
    writer.write({"stage": "train", "step": 1, "loss": np.float32(0.5), "ok": True})
    writer.write({"stage": "train", "step": 2, "loss": 0.25, "ids": np.arange(2)})
    writer.close()
    records = metrics.read_metrics(str(tmp_path))
    assert records == [
        {"stage": "train", "step": 1, "loss": 0.5, "ok": True},
        {"stage": "train", "step": 2, "loss": 0.25, "ids": [0, 1]},
    ]
    assert any((tmp_path / "tensorboard").iterdir())


def test_flatten_nests_with_slashes():
    assert metrics.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a/b": 1, "a/c/d": 2, "e": 3}
