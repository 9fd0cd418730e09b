"""models.remat: every named policy gives the same gradients as no remat, keeps what its name
says for the backward pass (and less memory in that order), and offloading lowers for GPU and
TPU to host-placement annotations."""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.models import remat

TINY = models.ModelConfig.preset("tiny", attention_impl="xla", scan_layers=True)
TOKENS = jax.random.randint(jax.random.key(1), (2, 64), 0, TINY.vocab_size)


def _loss(config):
    return lambda p: jnp.sum(jnp.sin(models.forward(config, p, TOKENS)))


@pytest.fixture(scope="module")
def params():
    return models.init_params(TINY, jax.random.key(0))


@pytest.mark.parametrize("policy", [p for p in models.config.REMAT_POLICIES if p != "none"])
def test_same_gradients_as_no_remat(params, policy):
    if policy == "offload_dots":
        pytest.skip("XLA:CPU has no host memory space to offload to (lowered below)")
    want = jax.jit(jax.grad(_loss(TINY)))(params)
    got = jax.jit(jax.grad(_loss(TINY.replace(remat_policy=policy))))(params)
    # Recomputation fuses differently, so float32 sums reassociate: each leaf agrees to 1e-5 of
    # its largest entry (a wrong or missing residual would be off by O(1) of it).
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        scale = float(np.max(np.abs(w)))
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * scale)


def _saved(params, policy) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(_loss(TINY.replace(remat_policy=policy)), params)
    return out.getvalue()


def _scan_residual_shapes(text):
    """Shapes of the per-layer values the scanned layers keep for the backward pass."""
    return sorted(line.split()[0] for line in text.splitlines() if "output of scan" in line)


def test_named_policies_keep_what_they_name(params):
    # Per layer (L = 2 stacked): q and the attention output [L, B, T, N, H], k and v
    # [L, B, T, K, H], besides the layer input [B, T, D] that every policy keeps.
    q, kv = "f32[2,2,64,4,16]", "f32[2,2,64,2,16]"
    qkv_attention = _scan_residual_shapes(_saved(params, "qkv_attention"))
    assert qkv_attention.count(q) == 2 and qkv_attention.count(kv) == 2, qkv_attention
    attention_out = _scan_residual_shapes(_saved(params, "attention_out"))
    assert attention_out.count(q) == 1 and kv not in attention_out, attention_out
    full = _scan_residual_shapes(_saved(params, "full"))
    assert q not in full and kv not in full, full


def test_memory_falls_in_the_documented_order(params):
    tokens = jnp.zeros((2, 256), jnp.int32)

    def temp_bytes(policy):
        config = TINY.replace(remat_policy=policy)
        fn = jax.jit(jax.grad(lambda p: jnp.sum(models.forward(config, p, tokens))))
        return fn.lower(params).compile().memory_analysis().temp_size_in_bytes

    temps = {p: temp_bytes(p) for p in ("none", "dots", "qkv_attention", "attention_out", "full")}
    assert temps["none"] > temps["dots"] > temps["qkv_attention"] > temps["attention_out"], temps
    assert temps["full"] <= temps["attention_out"], temps


@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_offload_lowers_to_host_placement(platform):
    config = TINY.replace(remat_policy="offload_dots")
    abstract = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    text = (
        jax.jit(jax.grad(_loss(config)))
        .trace(abstract)
        .lower(lowering_platforms=(platform,))
        .as_text()
    )
    placements = [line for line in text.splitlines() if "annotate_device_placement" in line]
    to_host = [line for line in placements if '"pinned_host"' in line]
    # Every tagged matmul output the backward pass uses goes to the host (one per name the
    # layer's gradient needs); nothing else does.
    assert 1 <= len(to_host) <= len(remat.MATMUL_NAMES), to_host
