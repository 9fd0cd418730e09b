"""Where a ropo_jax train step's model time goes, at the step's own shapes: forward, and forward +
backward, of the model body (all layers); of the body plus the chunked log-probs; of the LM head
and log-softmax alone (``chunked_token_logps`` on the ``--completion_len`` response positions
per row the step's completion head projects; 0: every position); the optimizer (clipping +
AdamW, ``training.optim.make_optimizer``, state donated); and of the attention alone (JAX's XLA
attention with the model's boolean segment/causal mask, the same with ``is_causal``, ropo_jax's
blocked attention, PyTorch's ``scaled_dot_product_attention`` with ``is_causal``), summed over
the layers. The body runs ``--attention_impl`` (default auto) and ``--remat``.

    python scripts/bench/breakdown.py --preset=tiny --rows=32 --seq_len=128 [--skip_torch]
    python scripts/bench/breakdown.py --preset=smollm2_135m --rows=8 --seq_len=128 \
        --completion_len=64 --repeats=3 --torch_model

``--torch_model`` adds the same pieces for the transformers model TRL trains (same weights,
``trl_dpo.py``'s float32 ``LlamaForCausalLM``): its body (``model.model``) forward and forward +
backward (``--torch_gradient_checkpointing``: with transformers' per-layer checkpointing, as
TRL's default), TRL's fused chunked LM head (``_ChunkedLogProbFunction``, what
``DPOTrainer`` calls) on the response positions and on every position (what TRL 1.16 scores on
a CPU, where its Triton path is off), and ``torch.optim.AdamW`` + ``clip_grad_norm_``.

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
import optax
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import losses, models
from ropo_jax.models import attention, layers
from ropo_jax.models.config import ATTENTION_IMPLS, REMAT_CHOICES
from ropo_jax.training import optim

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights).")
_ROWS = flags.DEFINE_integer("rows", 32, "Token rows (2 per pair).")
_SEQ = flags.DEFINE_integer("seq_len", 128, "Tokens per row.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_ATTENTION = flags.DEFINE_enum(
    "attention_impl", "auto", list(ATTENTION_IMPLS), "The model body's attention (auto: blocked)."
)
_REMAT = flags.DEFINE_enum("remat", "none", list(REMAT_CHOICES), "The model body's remat policy.")
_COMPLETION = flags.DEFINE_integer(
    "completion_len",
    0,
    "Response positions per row the LM head projects (the step's completion head); 0: every "
    "position (seq_len - 1).",
)
_REPEATS = flags.DEFINE_integer("repeats", 20, "Timed calls per measurement.")
_SKIP_TORCH = flags.DEFINE_bool("skip_torch", False, "Leave out PyTorch's SDPA.")
_TORCH_MODEL = flags.DEFINE_bool(
    "torch_model", False, "Also time the transformers model's pieces (see the docstring)."
)
_TORCH_CHECKPOINTING = flags.DEFINE_bool(
    "torch_gradient_checkpointing", False, "--torch_model: transformers' gradient checkpointing."
)


def median_ms(fn, *args) -> float:
    jax.block_until_ready(fn(*args))  # compiles
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def torch_median_ms(fn) -> float:
    fn()  # warm-up
    times = []
    for _ in range(_REPEATS.value):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def optimizer_ms(config, params) -> float:
    """Clipping + AdamW on parameter-shaped gradients, state donated (the step's update)."""
    optimizer = optim.make_optimizer(
        learning_rate=1e-6, total_steps=10, schedule="constant", max_grad_norm=1.0
    )
    grads = jax.tree.map(lambda x: jnp.full_like(x, 1e-3), params)
    params = jax.tree.map(lambda x: jnp.array(x, copy=True), params)
    carry = [params, optimizer.init(params)]

    def update(params, opt_state, grads):
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    update = jax.jit(update, donate_argnums=(0, 1))

    def run():
        carry[:] = update(carry[0], carry[1], grads)
        return carry

    return median_ms(run)


def torch_model_fields(config, params, tokens_RT, completion_len: int) -> dict:
    """The transformers side's pieces (docstring): the model trl_dpo.py builds, same weights."""
    import tempfile

    import torch
    import transformers
    from trl.trainer import utils as trl_utils

    with tempfile.TemporaryDirectory() as directory:
        models.save_hf(config, jax.device_get(params), directory)
        model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model.train()
    if _TORCH_CHECKPOINTING.value:
        model.gradient_checkpointing_enable()
    ids = torch.tensor(np.asarray(tokens_RT), dtype=torch.long)
    rows, length = ids.shape

    def body_forward():
        with torch.no_grad():
            model.model(input_ids=ids, use_cache=False)

    def body_forward_backward():
        hidden = model.model(input_ids=ids, use_cache=False).last_hidden_state
        hidden.square().sum().backward()
        model.zero_grad(set_to_none=True)

    weight = model.get_output_embeddings().weight
    hidden_all = torch.randn(rows * (length - 1), config.hidden_size, requires_grad=True)
    targets_all = torch.as_tensor(np.asarray(tokens_RT[:, 1:]).reshape(-1), dtype=torch.long)

    def head(count: int):
        def run():
            logps = trl_utils._ChunkedLogProbFunction.apply(
                hidden_all[:count],
                weight,
                None,
                targets_all[:count],
                1.0,
                trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE,
                None,
                1.0,
                ("log_probs",),
            )[0]
            logps.sum().backward()
            hidden_all.grad, weight.grad = None, None

        return run

    parameters = [p for p in model.parameters() if p.requires_grad]
    for p in parameters:
        p.grad = torch.full_like(p, 1e-3)
    adamw = torch.optim.AdamW(parameters, lr=1e-6, weight_decay=0.0)

    def optimizer_step():
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        adamw.step()

    fields = {
        "torch_gradient_checkpointing": _TORCH_CHECKPOINTING.value,
        "torch_optimizer_ms": torch_median_ms(optimizer_step),
    }
    model.zero_grad(set_to_none=True)
    fields.update(
        {
            "torch_body_fwd_ms": torch_median_ms(body_forward),
            "torch_body_fwd_bwd_ms": torch_median_ms(body_forward_backward),
            "torch_lm_head_logps_fwd_bwd_ms": torch_median_ms(head(rows * completion_len)),
            "torch_lm_head_logps_all_positions_fwd_bwd_ms": torch_median_ms(
                head(rows * (length - 1))
            ),
        }
    )
    return fields


def main(argv):
    del argv
    config = models.ModelConfig.preset(
        _PRESET.value,
        dtype=_DTYPE.value,
        attention_impl=_ATTENTION.value,
        remat_policy=_REMAT.value,
    )
    rows, length = _ROWS.value, _SEQ.value
    completion_len = _COMPLETION.value or length - 1
    if not 0 < completion_len < length:
        raise app.UsageError(f"--completion_len={completion_len} must be in [1, seq_len)")
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

    def body_forward(p):
        return jnp.sum(hidden(p).astype(jnp.float32))

    # The step's completion head: the last completion_len positions' hidden states predict the
    # response tokens (every position but the last when --completion_len=0).
    first = length - 1 - completion_len

    def body_logps_loss(p):
        hidden_RTD = hidden(p)
        return jnp.sum(
            losses.chunked_token_logps(
                hidden_RTD[:, first:-1], models.unembedding(config, p), tokens_RT[:, first + 1 :]
            )
        )

    head_hidden_RCD = jnp.asarray(
        rng.standard_normal((rows, completion_len, config.hidden_size)), dtype
    )
    head_targets_RC = tokens_RT[:, first + 1 :]

    def head_loss(hidden_RCD, unembed_DV):
        return jnp.sum(losses.chunked_token_logps(hidden_RCD, unembed_DV, head_targets_RC))

    unembed_DV = models.unembedding(config, params)

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
        "remat_policy": config.remat_policy,
        "completion_len": completion_len,
        "body_fwd_ms": median_ms(jax.jit(body_forward), params),
        "body_fwd_bwd_ms": median_ms(jax.jit(jax.grad(body_loss)), params),
        "body_and_logps_fwd_bwd_ms": median_ms(jax.jit(jax.grad(body_logps_loss)), params),
        "lm_head_logps_fwd_ms": median_ms(jax.jit(head_loss), head_hidden_RCD, unembed_DV),
        "lm_head_logps_fwd_bwd_ms": median_ms(
            jax.jit(jax.grad(head_loss, argnums=(0, 1))), head_hidden_RCD, unembed_DV
        ),
        "optimizer_ms": optimizer_ms(config, params),
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
        if _TORCH_MODEL.value:
            row.update(torch_model_fields(config, params, tokens_RT, completion_len))
    common.print_json(row)


if __name__ == "__main__":
    app.run(main)
