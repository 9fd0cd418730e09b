"""The Llama/Mistral transformer as pure functions of a parameter pytree.

Modules are defined in Flax NNX (``layers.py``); parameters live in a plain nested dict of arrays
(``nnx.to_pure_dict``) so that optax, Orbax, sharding and the HF converter see ordinary pytrees.
Layer parameters are stacked on a leading ``layers`` axis and run under ``jax.lax.scan`` (one
compiled layer for any depth) with a configurable remat policy, or unrolled.

Shape key: B batch, T length, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ropo_jax.models import lora as lora_lib
from ropo_jax.models.attention import Masking, self_attention_masking
from ropo_jax.models.config import ModelConfig
from ropo_jax.models.layers import (
    ACTIVATION_BTD,
    DecoderLayer,
    RMSNorm,
    rope_inverse_frequencies,
)
from ropo_jax.models.remat import remat_layer
from ropo_jax.parallel.sharding import constrain

Params = dict
# The embedding lookup's output where the FSDP-sharded table puts it: batch over data, D over fsdp.
EMBED_LOOKUP_BTD = ("batch_over_data", None, "embed")


class Embedder(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        value = jax.random.normal(rngs.params(), (config.vocab_size, config.hidden_size))
        self.embedding = nnx.Param(
            value.astype(config.param_dtype), logical_axes=("vocab", "embed")
        )


class OutputHead(nnx.Module):
    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        d, v = config.hidden_size, config.vocab_size
        value = jax.random.normal(rngs.params(), (d, v)) / jnp.sqrt(d)
        self.kernel = nnx.Param(value.astype(config.param_dtype), logical_axes=("embed", "vocab"))


def _final_norm(config: ModelConfig) -> RMSNorm:
    return RMSNorm(config.hidden_size, config.rms_norm_eps, jnp.dtype(config.param_dtype))


def _modules(config: ModelConfig, rngs: nnx.Rngs) -> dict[str, nnx.Module]:
    modules = {"embed": Embedder(config, rngs=rngs), "final_norm": _final_norm(config)}
    if not config.tie_word_embeddings:
        modules["lm_head"] = OutputHead(config, rngs=rngs)
    return modules


def _bind(make_module, pure: dict) -> nnx.Module:
    """A module whose parameters are the arrays of ``pure`` (a fresh abstract state per call,
    so no tracer outlives its trace)."""
    graphdef, state = nnx.split(nnx.eval_shape(make_module))
    nnx.replace_by_pure_dict(state, pure)
    return nnx.merge(graphdef, state)


def init_params(config: ModelConfig, rng: jax.Array) -> Params:
    """Random parameters (a pure function: jit it with out_shardings for sharded init)."""
    top_rng, layers_rng = jax.random.split(rng)
    params = {
        name: nnx.to_pure_dict(nnx.state(module))
        for name, module in _modules(config, nnx.Rngs(top_rng)).items()
    }
    params["layers"] = jax.vmap(
        lambda key: nnx.to_pure_dict(nnx.state(DecoderLayer(config, rngs=nnx.Rngs(key))))
    )(jax.random.split(layers_rng, config.num_layers))
    return params


def _logical_axes_of(make_module) -> dict:
    state = nnx.state(nnx.eval_shape(make_module))
    return nnx.to_pure_dict(state, extract_fn=lambda variable: variable.logical_axes)


@functools.cache
def param_logical_axes(config: ModelConfig) -> dict:
    """Same structure as ``init_params``' output, each leaf a tuple of logical axis names."""
    axes = {
        name: _logical_axes_of(lambda name=name: _modules(config, nnx.Rngs(0))[name])
        for name in _modules_names(config)
    }
    layer_axes = _logical_axes_of(lambda: DecoderLayer(config, rngs=nnx.Rngs(0)))
    axes["layers"] = jax.tree.map(
        lambda a: ("layers", *a), layer_axes, is_leaf=lambda x: isinstance(x, tuple)
    )
    return axes


def _modules_names(config: ModelConfig) -> tuple[str, ...]:
    return ("embed", "final_norm") + (() if config.tie_word_embeddings else ("lm_head",))


def layer_adapters(config: ModelConfig, params: Params) -> dict | None:
    """The stacked LoRA adapters of ``params`` (``models.lora``), or None for base parameters."""
    adapters = params.get(lora_lib.KEY)
    if adapters is None:
        return None
    if config.lora is None:
        raise ValueError(
            "the parameters carry LoRA adapters but the ModelConfig has no lora settings; "
            "use the config the adapters were trained with"
        )
    return adapters["layers"]


def run_layers(
    config: ModelConfig,
    layer_params: dict,
    x_BTD,
    positions_BT,
    masking: Masking,
    kv_fn_xs=None,
    *,
    adapters: dict | None = None,
    lora_rng=None,
):
    """Applies the stacked layers, attending as ``masking`` says. ``kv_fn_xs = (make_kv_fn, xs)``
    threads per-layer inputs (a KV cache slice) through the scan: ``make_kv_fn(x)`` builds that
    layer's ``kv_fn``. ``adapters``: the stacked LoRA adapters (``layer_adapters``), applied
    unmerged; ``lora_rng``: a key for their input dropout (training only).
    Returns the output activations and the per-layer (keys, values) that the kv_fn returned."""
    inv_freq_H2 = rope_inverse_frequencies(config)
    make_kv_fn, per_layer_xs = kv_fn_xs if kv_fn_xs is not None else (None, None)
    dropout = 0.0 if config.lora is None else config.lora.dropout
    rngs_L = None
    if adapters is not None and lora_rng is not None and dropout > 0:
        rngs_L = jax.random.split(lora_rng, config.num_layers)  # one dropout key per layer

    def layer_fn(x_BTD, inputs):
        params_l, adapters_l, rng_l, extra_l = inputs
        layer = _bind(lambda: DecoderLayer(config, rngs=nnx.Rngs(0)), params_l)
        kv_fn = (lambda k, v: (k, v)) if make_kv_fn is None else make_kv_fn(extra_l)
        layer_lora = None
        if adapters_l is not None:
            layer_lora = lora_lib.LayerAdapters(adapters_l, config.lora.scale, dropout, rng_l)
        return layer(x_BTD, positions_BT, inv_freq_H2, kv_fn, masking, layer_lora)

    layer_fn = remat_layer(layer_fn, config.remat_policy)
    xs = (layer_params, adapters, rngs_L, per_layer_xs)
    if config.scan_layers:
        return jax.lax.scan(layer_fn, x_BTD, xs)
    kv_per_layer = []
    for i in range(config.num_layers):
        slice_i = jax.tree.map(lambda a, i=i: a[i], xs)
        x_BTD, kv = layer_fn(x_BTD, slice_i)
        kv_per_layer.append(kv)
    return x_BTD, jax.tree.map(lambda *xs: jnp.stack(xs), *kv_per_layer)


def default_positions_and_segments(tokens_BT, positions_BT, segment_ids_BT):
    if positions_BT is None:
        positions_BT = jnp.broadcast_to(jnp.arange(tokens_BT.shape[1]), tokens_BT.shape)
    if segment_ids_BT is None:
        segment_ids_BT = jnp.ones_like(tokens_BT)
    return positions_BT.astype(jnp.int32), segment_ids_BT.astype(jnp.int32)


def embed(config: ModelConfig, params: Params, tokens_BT) -> jax.Array:
    # The lookup is local on the table as FSDP stores it (each device holds a slice of D; with
    # tensor parallelism, also of the rows), and its output is pinned to that D split before
    # one all-to-all moves it to the activation layout. Left to itself, XLA picks a layout for
    # the lookup from which, with a data axis too, the backward pass can only reach the
    # batch-sharded gradient by replicating a [B, T, D] array on every device ("involuntary
    # full rematerialization").
    lookup_BTD = jnp.take(params["embed"]["embedding"], tokens_BT, axis=0).astype(config.dtype)
    lookup_BTD = constrain(lookup_BTD, EMBED_LOOKUP_BTD)
    return constrain(lookup_BTD, ACTIVATION_BTD)


def final_norm(config: ModelConfig, params: Params, x_BTD) -> jax.Array:
    return _bind(lambda: _final_norm(config), params["final_norm"])(x_BTD)


def compute_params(config: ModelConfig, params: Params) -> Params:
    """``params`` with the stacked layer weights in the compute dtype, cast once per forward.

    The layers cast each weight at its use anyway; casting the stack first means the scanned
    (and rematerialised) layers find the compute-dtype copy ready, and with FSDP the all-gather
    moves bf16 instead of float32. The gradient still flows to the float32 parameters. The
    embedding table is left alone: its lookup's gradient is a scatter-add, which must accumulate
    in float32.
    """
    dtype = jnp.dtype(config.dtype)
    layers = jax.tree.map(
        lambda p: p.astype(dtype) if jnp.issubdtype(p.dtype, jnp.floating) else p,
        params["layers"],
    )
    return {**params, "layers": layers}


def hidden_states(
    config: ModelConfig,
    params: Params,
    tokens_BT,
    *,
    positions_BT=None,
    segment_ids_BT=None,
    one_sequence_per_row: bool | None = None,
    lora_rng=None,
) -> jax.Array:
    """Final-norm hidden states [B, T, D]; ``forward == hidden_states @ unembedding``.

    ``segment_ids_BT``: 0 marks padding, 1..k the packed sequences of a row; attention stays
    within a segment and is causal by ``positions_BT`` (which restart per packed sequence).
    ``one_sequence_per_row``: the caller's static promise that every row is one sequence from
    column 0 followed by right padding (lets a "cudnn" model use cuDNN's flash kernel; see
    ``attention.self_attention_masking``). Default: true only when neither positions nor
    segment ids are given (every row is then one unpadded sequence). Parameters with LoRA
    adapters (``models.lora.attach``) run with them; ``lora_rng`` turns on their input dropout
    (the train step's).
    """
    if one_sequence_per_row is None:
        one_sequence_per_row = positions_BT is None and segment_ids_BT is None
    positions_BT, segment_ids_BT = default_positions_and_segments(
        tokens_BT, positions_BT, segment_ids_BT
    )
    masking = self_attention_masking(
        config, positions_BT, segment_ids_BT, one_sequence_per_row=one_sequence_per_row
    )
    params = compute_params(config, params)
    x_BTD, _ = run_layers(
        config,
        params["layers"],
        embed(config, params, tokens_BT),
        positions_BT,
        masking,
        adapters=layer_adapters(config, params),
        lora_rng=lora_rng,
    )
    return final_norm(config, params, x_BTD)


def unembedding(config: ModelConfig, params: Params) -> jax.Array:
    """The [D, V] output matrix (the transposed embedding when embeddings are tied)."""
    if config.tie_word_embeddings:
        return params["embed"]["embedding"].T
    return params["lm_head"]["kernel"]


def logits_from_hidden(config: ModelConfig, params: Params, hidden_BTD) -> jax.Array:
    unembed_DV = unembedding(config, params).astype(hidden_BTD.dtype)
    logits_BTV = jnp.einsum(
        "btd,dv->btv", hidden_BTD, unembed_DV, preferred_element_type=jnp.float32
    )
    return constrain(logits_BTV, ("batch", "length", "activation_vocab"))


def forward(
    config: ModelConfig,
    params: Params,
    tokens_BT,
    *,
    positions_BT=None,
    segment_ids_BT=None,
    one_sequence_per_row: bool | None = None,
) -> jax.Array:
    """Logits [B, T, V] in float32 (the project's public model contract; ``hidden_states``
    explains the keyword arguments)."""
    hidden_BTD = hidden_states(
        config,
        params,
        tokens_BT,
        positions_BT=positions_BT,
        segment_ids_BT=segment_ids_BT,
        one_sequence_per_row=one_sequence_per_row,
    )
    return logits_from_hidden(config, params, hidden_BTD)
