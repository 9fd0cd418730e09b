"""Where a ropo_jax train step's model time goes, at the step's own shapes: forward + backward
of the model body (all layers), of the body plus the chunked log-probs, and of the attention
alone (JAX's XLA attention with the model's boolean segment/causal mask, the same with
``is_causal``, ropo_jax's blocked attention, PyTorch's ``scaled_dot_product_attention`` with
``is_causal``), summed over the layers. The body runs ``--attention_impl`` (default auto).

    python scripts/bench/breakdown.py --preset=tiny --rows=32 --seq_len=128 [--skip_torch]

``rows`` are token rows (2 per preference pair), all ``seq_len`` long with no padding. Each
number is the median of ``--repeats`` calls after a warm-up (compilation excluded). The
attention inputs are random; the body runs ``common.random_params`` weights. Prints one JSON line.
"""

import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import losses, models
from ropo_jax.models import attention, layers
from ropo_jax.models.config import ATTENTION_IMPLS

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights).")
_ROWS = flags.DEFINE_integer("rows", 32, "Token rows (2 per pair).")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per row.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ATTENTION = flags.DEFINE_enum(
    "attention_impl", "auto", list(ATTENTION_IMPLS), "The model body's attention (auto: blocked)."
)
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per measurement.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Leave out PyTorch's SDPA.")


def median_ms(fn, *args) -> float:
    jax.block_until_ready(fn(*args))  # compiles
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv):
    del argv
    config = models.ModelConfig.preset(
        _PRESET.value, dtype=_DTYPE.value, attention_impl=_ATTENTION.value
    )
    rows, length = _ROWS.value, _SEQ.value
    dtype = jnp.dtype(_DTYPE.value)
    params = jax.tree.map(jnp.asarray, common.random_params(config))
    rng = np.random.default_rng(0)
    tokens_RT = jnp.asarray(rng.integers(3, config.vocab_size, (rows, length)), jnp.int32)
    positions_RT = jnp.broadcast_to(jnp.arange(length), (rows, length))
    segments_RT = jnp.ones((rows, length), jnp.int32)

    def hidden(p):
        return models.hidden_states(
            config, p, tokens_RT, positions_BT=positions_RT, segment_ids_BT=segments_RT
        )

    def body_loss(p):
        return jnp.sum(jnp.square(hidden(p).astype(jnp.float32)))

    def body_logps_loss(p):
        hidden_RTD = hidden(p)
        return jnp.sum(
            losses.chunked_token_logps(
                hidden_RTD[:, :-1], models.unembedding(config, p), tokens_RT[:, 1:]
            )
        )

    n, k, h = config.num_heads, config.num_kv_heads, config.head_dim
    query = jnp.asarray(rng.standard_normal((rows, length, n, h)), dtype)
    key = jnp.asarray(rng.standard_normal((rows, length, k, h)), dtype)
    value = jnp.asarray(rng.standard_normal((rows, length, k, h)), dtype)
    mask = layers.attention_mask(
        positions_RT, segments_RT, positions_RT, segments_RT, config.sliding_window
    )

    def attention_loss(q, kk, v, **kwargs):
        out = jax.nn.dot_product_attention(q, kk, v, **kwargs)
        return jnp.sum(jnp.square(out.astype(jnp.float32)))

    def blocked_loss(q, kk, v):
        out = attention.attend(
            config,
            q,
            kk,
            v,
            query_positions_BT=positions_RT,
            query_segments_BT=segments_RT,
            key_positions_BS=positions_RT,
            key_segments_BS=segments_RT,
            mask_B1TS=mask,
            impl="blocked",
        )
        return jnp.sum(jnp.square(out.astype(jnp.float32)))

    grad_all = lambda f: jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    num_layers = config.num_layers
    row = {
        "preset": _PRESET.value,
        "rows": rows,
        "seq_len": length,
        "dtype": _DTYPE.value,
        "device": common.cpu_device_name()
        if jax.devices()[0].platform == "cpu"
        else jax.devices()[0].device_kind,
        "body_fwd_bwd_ms": median_ms(jax.jit(jax.grad(body_loss)), params),
        "body_and_logps_fwd_bwd_ms": median_ms(jax.jit(jax.grad(body_logps_loss)), params),
        "jax_attention_mask_fwd_bwd_ms": num_layers
        * median_ms(
            grad_all(lambda q, kk, v: attention_loss(q, kk, v, mask=mask)), query, key, value
        ),
        "jax_attention_causal_fwd_bwd_ms": num_layers
        * median_ms(
            grad_all(lambda q, kk, v: attention_loss(q, kk, v, is_causal=True)), query, key, value
        ),
        "jax_attention_blocked_fwd_bwd_ms": num_layers
        * median_ms(grad_all(blocked_loss), query, key, value),
        "body_attention_impl": attention.impl_for(config),
    }
    if not _SKIP_TORCH.value:
        import torch

        # [B, heads, T, H] layout; requires_grad so backward runs as in training.
        def tensor(x):
            return torch.tensor(np.asarray(x, np.float32).transpose(0, 2, 1, 3), requires_grad=True)

        tq, tk, tv = tensor(query), tensor(key), tensor(value)

        def sdpa():
            out = torch.nn.functional.scaled_dot_product_attention(
                tq, tk, tv, is_causal=True, enable_gqa=True
            )
            out.square().sum().backward()

        sdpa()
        times = []
        for _ in range(_REPEATS.value):
            start = time.perf_counter()
            sdpa()
            times.append(time.perf_counter() - start)
        row["torch_sdpa_causal_fwd_bwd_ms"] = num_layers * statistics.median(times) * 1e3
        row["torch_threads"] = torch.get_num_threads()
        row["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    common.print_json(row)


if __name__ == "__main__":
    app.run(main)
