"""models.attention: every implementation that runs on CPU matches the xla attention (outputs
and gradients at real tokens) on padded, packed and sliding-window batches with GQA; splash and
cuDNN lower for TPU and CUDA from this CPU host to their fused kernels; the choice per backend.

Splash runs in the Pallas interpreter here. cuDNN cannot run on CPU: its masks (lengths from
segment ids, causal flag, window) are checked through jax's XLA reference of the same call
(``implementation="xla"``), its kernel and its static layout choice by lowering for CUDA.
"""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import models as models_lib
from ropo_jax.config import defaults as configs
from ropo_jax.config import validation as config_validation
from ropo_jax.errors import ConfigValueError
from ropo_jax.models import ConfigError, ModelConfig, attention
from ropo_jax.parallel import sharding

B, T, N, K, H = 3, 128, 4, 2, 16
WINDOW = 48
TINY = ModelConfig.preset("tiny")


def _layout(kind):
    """positions and segment ids [B, T] of a padded, packed or left-padded batch."""
    positions = np.zeros((B, T), np.int32)
    segments = np.zeros((B, T), np.int32)
    if kind == "padded":  # one sequence per row, right padding; the last row is all padding
        for row, length in enumerate([T, 77]):
            positions[row, :length] = np.arange(length)
            segments[row, :length] = 1
    elif kind == "packed":  # several sequences per row, then padding
        for row, lengths in enumerate([[40, 50, 20], [T - 38, 38], [21]]):
            start = 0
            for segment, length in enumerate(lengths, start=1):
                positions[row, start : start + length] = np.arange(length)
                segments[row, start : start + length] = segment
                start += length
    else:  # left padding with positions counting real tokens only
        for row, pad in enumerate([0, 11, 100]):
            positions[row, pad:] = np.arange(T - pad)
            segments[row, pad:] = 1
    return jnp.asarray(positions), jnp.asarray(segments)


def _qkv(seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    shapes = [(B, T, N, H), (B, T, K, H), (B, T, K, H), (B, T, N, H)]
    return [jnp.asarray(rng.standard_normal(s), dtype) for s in shapes]


def _run(fn, config, positions, segments, qkvc):
    """fn's output and the gradients of Σ cotangent · output over real tokens."""
    q, k, v, cotangent = qkvc
    real = (segments != 0)[:, :, None, None]

    def call(q, k, v):
        return fn(
            config,
            q,
            k,
            v,
            query_positions_BT=positions,
            query_segments_BT=segments,
            key_positions_BS=positions,
            key_segments_BS=segments,
        )

    def loss(q, k, v):
        return jnp.sum(jnp.where(real, call(q, k, v) * cotangent, 0.0))

    out = jax.jit(call)(q, k, v)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    return np.where(np.asarray(real), np.asarray(out), 0.0), [np.asarray(g) for g in grads]


def _cudnn_masks_on_xla(config, q, k, v, **kw):
    return attention._cudnn_attention(
        config, q, k, v, kw["query_segments_BT"], implementation="xla"
    )


IMPLS_ON_CPU = {
    "blocked": functools.partial(attention.attend, impl="blocked"),
    "splash": functools.partial(attention.attend, impl="splash"),
    "cudnn_masks": _cudnn_masks_on_xla,
}
# (a) right-padded rows, (b) packed rows, (c) a sliding window shorter than the sequence, (d)
# left-padded rows (sampling's prompts). cuDNN only ever sees one right-padded sequence per row
# (self_attention_masking gives every other layout to xla: test_cudnn_layout_is_static…).
CASES = [
    ("blocked", "padded", None),
    ("blocked", "packed", None),
    ("blocked", "packed", WINDOW),
    ("blocked", "padded", WINDOW),
    ("blocked", "left_padded", None),
    ("splash", "padded", None),
    ("splash", "packed", None),
    ("splash", "packed", WINDOW),
    ("cudnn_masks", "padded", None),
    ("cudnn_masks", "padded", WINDOW),
]


@pytest.mark.parametrize("impl,kind,window", CASES)
def test_matches_xla_attention(impl, kind, window):
    config = TINY.replace(sliding_window=window)
    positions, segments = _layout(kind)
    qkvc = _qkv()
    xla = functools.partial(attention.attend, impl="xla")
    want_out, want_grads = _run(xla, config, positions, segments, qkvc)
    got_out, got_grads = _run(IMPLS_ON_CPU[impl], config, positions, segments, qkvc)
    np.testing.assert_allclose(got_out, want_out, atol=2e-5, rtol=1e-5)
    for got, want in zip(got_grads, want_grads, strict=True):
        np.testing.assert_allclose(got, want, atol=5e-5, rtol=1e-4)
    assert np.all(np.isfinite(got_out))


def test_one_sequence_per_row_recognises_the_layouts():
    fits = {
        kind: bool(attention.one_sequence_per_row(*_layout(kind)))
        for kind in ("padded", "packed", "left_padded")
    }
    assert fits == {"padded": True, "packed": False, "left_padded": False}


@pytest.mark.parametrize(
    "batch,seq_len,want", [(32, 128, 32), (16, 256, 32), (8, 512, 32), (1, 64, 32), (64, 2048, 128)]
)
def test_blocked_query_block(batch, seq_len, want):
    # tiny: 4 heads. ≤ 2 MiB of float32 scores per block, ≥ 16 queries, ≤ 16 blocks.
    assert attention.blocked_query_block(batch, 4, seq_len) == want


def test_blocked_skips_the_masked_upper_triangle():
    # T = 128 in blocks of 64 (3 rows): the score matmuls see 64 and 128 keys, never 2 × 128.
    config = TINY.replace(attention_impl="blocked")
    positions, segments = _layout("padded")
    q, k, v, _ = _qkv()
    assert attention.blocked_query_block(B, N, T) == 64
    fn = functools.partial(
        attention.attend,
        config,
        query_positions_BT=positions,
        query_segments_BT=segments,
        key_positions_BS=positions,
        key_segments_BS=segments,
    )
    text = jax.jit(fn).lower(q, k, v).as_text()
    score_shapes = set(re.findall(rf"tensor<{B}x{K}x{N // K}x(\d+)x(\d+)xf32>", text))
    score_shapes = {shape for shape in score_shapes if shape[1] != "1"}  # not softmax's max/sum
    assert score_shapes == {("64", "64"), ("64", "128")}, score_shapes


def _lowered(fn, platform, *args):
    return jax.jit(fn).trace(*args).lower(lowering_platforms=(platform,)).as_text()


def _summed_self_attention(config, positions, segments, impl=None):
    """(q, k, v) -> Σ attend(...) in float32: a scalar to differentiate and lower."""

    def loss(q, k, v):
        out = attention.attend(
            config,
            q,
            k,
            v,
            query_positions_BT=positions,
            query_segments_BT=segments,
            key_positions_BS=positions,
            key_segments_BS=segments,
            impl=impl,
        )
        return jnp.sum(out.astype(jnp.float32))

    return loss


def test_splash_lowers_for_tpu_to_the_mosaic_kernel():
    config = TINY.replace(sliding_window=WINDOW)
    positions, segments = _layout("packed")
    q, k, v, _ = _qkv()

    loss = _summed_self_attention(config, positions, segments, impl="splash")
    text = _lowered(jax.grad(loss, argnums=(0, 1, 2)), "tpu", q, k, v)
    assert "tpu_custom_call" in text
    for kernel in ("splash_mha_fwd_segmented", "splash_mha_dq_segmented", "splash_mha_dkv"):
        assert kernel in text, kernel


@pytest.fixture
def fake_cudnn(monkeypatch):
    """jax asks the local cuDNN library for its version while tracing; a CPU host has none."""
    from jax._src.cudnn import fused_attention_stablehlo

    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 90800)


def _cudnn_calls(text):
    return [line for line in text.splitlines() if "custom_call @__cudnn$fmha" in line]


def test_cudnn_lowers_for_cuda_to_flash_attention_without_a_bias(fake_cudnn):
    config = TINY.replace(dtype="bfloat16", attention_impl="cudnn", sliding_window=WINDOW)
    positions, segments = _layout("padded")
    q, k, v, _ = (x.astype(jnp.bfloat16) for x in _qkv())

    loss = _summed_self_attention(config, positions, segments)
    calls = _cudnn_calls(_lowered(jax.grad(loss, argnums=(0, 1, 2)), "cuda", q, k, v))
    names = sorted({line.split("@")[1].split("(")[0] for line in calls})
    assert names == ["__cudnn$fmhaSoftmax", "__cudnn$fmhaSoftmaxBackward"], names
    # No [B, 1, T, S] (or [B, N, T, S]) bias operand: q/k/v/out and per-row lengths only.
    assert not any(f"{B}x1x{T}x{T}" in line or f"{B}x{N}x{T}x{T}" in line for line in calls)


def test_full_model_lowers_with_fused_kernels(fake_cudnn):
    tokens = jnp.zeros((2, 128), jnp.int32)
    params = jax.eval_shape(lambda: models_lib.init_params(TINY, jax.random.key(0)))

    def loss_fn(config):
        return jax.grad(lambda p: jnp.sum(models_lib.forward(config, p, tokens)))

    tpu = TINY.replace(attention_impl=attention.resolve("auto", "tpu"))
    assert "splash_mha_fwd" in _lowered(loss_fn(tpu), "tpu", params)
    gpu_config = TINY.replace(dtype="bfloat16")
    gpu = gpu_config.replace(attention_impl=attention.impl_for(gpu_config, "gpu"))
    assert gpu.attention_impl == "cudnn"
    assert _cudnn_calls(_lowered(loss_fn(gpu), "cuda", params))


@pytest.mark.parametrize("promise", [True, False])
def test_cudnn_layout_is_static(fake_cudnn, promise):
    # With the caller's promise of one right-padded sequence per row the model lowers to cuDNN
    # flash attention only; without it (packed rows) to the xla attention only. Either way one
    # attention per layer and no run-time branch between them.
    config = TINY.replace(dtype="bfloat16", attention_impl="cudnn")
    positions, segments = _layout("padded" if promise else "packed")
    tokens = jnp.zeros((B, T), jnp.int32)
    params = jax.eval_shape(lambda: models_lib.init_params(config, jax.random.key(0)))

    def loss(p):
        logits = models_lib.forward(
            config,
            p,
            tokens,
            positions_BT=positions,
            segment_ids_BT=segments,
            one_sequence_per_row=promise,
        )
        return jnp.sum(logits)

    text = _lowered(jax.grad(loss), "cuda", params)
    assert bool(_cudnn_calls(text)) == promise
    assert "stablehlo.case" not in text and "stablehlo.if" not in text


def test_model_logits_equal_across_cpu_implementations():
    # Packed rows and a Mistral sliding window shorter than the rows; "auto" is blocked on CPU.
    config = TINY.replace(sliding_window=WINDOW, architecture="mistral")
    assert attention.impl_for(config) == "blocked"
    positions, segments = _layout("packed")
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, TINY.vocab_size)
    params = models_lib.init_params(config, jax.random.key(0))
    real = np.asarray(segments != 0)
    logits = {
        impl: np.asarray(
            jax.jit(functools.partial(models_lib.forward, config.replace(attention_impl=impl)))(
                params, tokens, positions_BT=positions, segment_ids_BT=segments
            )
        )[real]
        for impl in ("xla", "blocked", "splash")
    }
    np.testing.assert_allclose(logits["splash"], logits["xla"], atol=2e-5, rtol=1e-5)
    np.testing.assert_allclose(logits["blocked"], logits["xla"], atol=2e-5, rtol=1e-5)


def test_kv_cache_decoding_with_splash_prefill_equals_xla():
    params = models_lib.init_params(TINY, jax.random.key(0))
    prompts = jax.random.randint(jax.random.key(2), (2, 12), 0, TINY.vocab_size)
    lengths = jnp.asarray([12, 7], jnp.int32)
    outs = {}
    for impl in ("xla", "splash"):
        config = TINY.replace(attention_impl=impl)
        cache = models_lib.init_cache(config, 2, 16)
        first, cache = jax.jit(functools.partial(models_lib.prefill, config))(
            params, prompts, cache, lengths_B=lengths
        )
        second, _ = jax.jit(functools.partial(models_lib.decode_step, config))(
            params, jnp.argmax(first, -1), cache
        )
        outs[impl] = (np.asarray(first), np.asarray(second))
    for got, want in zip(outs["splash"], outs["xla"], strict=True):
        np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-5)


def test_splash_under_a_mesh_matches_xla():
    mesh = sharding.make_mesh((2, 2, 2))
    config = TINY.replace(sliding_window=WINDOW)
    positions, segments = _layout("packed")
    q, k, v, _ = _qkv()
    pad = lambda x: jnp.concatenate([x, x[:1]])  # 4 rows: the batch splits over data × fsdp
    q, k, v, positions, segments = map(pad, (q, k, v, positions, segments))
    kw = dict(
        query_positions_BT=positions,
        query_segments_BT=segments,
        key_positions_BS=positions,
        key_segments_BS=segments,
    )
    want = attention.attend(config, q, k, v, impl="xla", **kw)
    with jax.set_mesh(mesh):
        got = jax.jit(functools.partial(attention.attend, config, impl="splash", **kw))(q, k, v)
    real = np.asarray(segments != 0)
    np.testing.assert_allclose(np.asarray(got)[real], np.asarray(want)[real], atol=2e-5)


@pytest.mark.parametrize(
    "impl,platform,kwargs,want",
    [
        ("auto", "tpu", {}, "splash"),
        ("auto", "cpu", {}, "blocked"),
        ("blocked", "tpu", {}, "blocked"),
        ("auto", "rocm", {"dtype": "bfloat16"}, "xla"),
        ("auto", "gpu", {"dtype": "bfloat16", "head_dim": 128}, "cudnn"),
        ("auto", "cuda", {"dtype": "float16", "head_dim": 64}, "cudnn"),
        ("auto", "gpu", {"dtype": "float32", "head_dim": 128}, "xla"),
        ("auto", "gpu", {"dtype": "bfloat16", "head_dim": 256}, "xla"),
        ("cudnn", "gpu", {"dtype": "bfloat16", "head_dim": 256}, "cudnn"),
        ("splash", "cpu", {}, "splash"),
        ("xla", "tpu", {}, "xla"),
        (None, "gpu", {}, "xla"),
    ],
)
def test_resolve(impl, platform, kwargs, want):
    assert attention.resolve(impl, platform, **kwargs) == want


@pytest.mark.parametrize(
    "impl,platform,kwargs,match",
    [
        ("cudnn", "tpu", {}, "only on NVIDIA GPUs"),
        ("cudnn", "gpu", {"dtype": "float32"}, "bfloat16 or float16"),
        ("cudnn", "gpu", {"head_dim": 100}, "multiple of 8"),
        ("splash", "gpu", {}, "TPU kernel"),
        ("flash", "tpu", {}, "not one of"),
        ("auto", "metal", {}, "unknown platform"),
    ],
)
def test_resolve_refuses(impl, platform, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        attention.resolve(impl, platform, **kwargs)


def test_model_config_attention_impl():
    assert ModelConfig.preset("tiny").attention_impl == "auto"
    assert TINY.replace(attention_impl=None) == TINY.replace(attention_impl="xla")
    with pytest.raises(ConfigError, match="attention_impl='flash'"):
        TINY.replace(attention_impl="flash")
    with pytest.raises(ConfigError, match="cudnn"):  # float32 compute: checked at trace time
        attention.impl_for(TINY.replace(attention_impl="cudnn"))


def test_training_config_key_is_validated():
    config = configs.base_config()
    assert config.model.attention_impl == "auto"
    config.model.attention_impl = "flash"
    with pytest.raises(ConfigValueError, match=r"config.model.attention_impl='flash'"):
        config_validation.validate(config, device_count=8, process_count=1)
