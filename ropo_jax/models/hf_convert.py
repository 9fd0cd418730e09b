"""Hugging Face safetensors checkpoints ↔ ropo_jax parameters, through one declarative table.

Each row names a HF tensor (``{i}`` = layer index), the parameter path, and the reshape between
HF's ``[out, in]`` Linear layout and ours (``[in, heads, head_dim]`` etc.). Loading streams one
parameter at a time: a stacked [L, ...] host array is filled tensor by tensor from the
safetensors files (memory-mapped) and moved to its target sharding before the next parameter is
read, so a 7B checkpoint never needs two copies in host memory. Saving streams the other way:
each HF tensor (one layer's slice of a stacked parameter) is cut and cast on device, fetched
alone (gathered across processes when the parameters are sharded over hosts) and appended to the
current safetensors shard, so host memory peaks at about one shard. Pickled ``.bin`` weights are
never loaded.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file

from ropo_jax.errors import UserError
from ropo_jax.models import lora as lora_lib
from ropo_jax.models.config import ConfigError, ModelConfig, from_hf_config, to_hf_config
from ropo_jax.models.transformer import init_params, param_logical_axes
from ropo_jax.parallel import processes
from ropo_jax.parallel import sharding as sharding_lib

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Buffers some older checkpoints carry that are recomputed, not learned.
IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


class CheckpointError(UserError, ValueError):
    """A checkpoint that does not match its config or this model, naming the tensors."""


@dataclasses.dataclass(frozen=True)
class TensorRule:
    hf_name: str
    path: tuple[str, ...]
    # HF array → ours, and back; both also get the config (for head counts).
    to_ours: Callable[[np.ndarray, ModelConfig], np.ndarray]
    to_hf: Callable[[np.ndarray, ModelConfig], np.ndarray]
    per_layer: bool = True


def _identity(x, c):
    return x


def _transpose(x, c):
    return x.T


def _heads_in(num_heads: Callable[[ModelConfig], int]):
    """HF [heads·head_dim, D] ↔ ours [D, heads, head_dim]."""
    return (
        lambda x, c: x.T.reshape(c.hidden_size, num_heads(c), c.head_dim),
        lambda x, c: x.reshape(c.hidden_size, num_heads(c) * c.head_dim).T,
    )


def _heads_out():
    """HF o_proj [D, heads·head_dim] ↔ ours [heads, head_dim, D]."""
    return (
        lambda x, c: x.T.reshape(c.num_heads, c.head_dim, c.hidden_size),
        lambda x, c: x.reshape(c.num_heads * c.head_dim, c.hidden_size).T,
    )


_Q = _heads_in(lambda c: c.num_heads)
_KV = _heads_in(lambda c: c.num_kv_heads)
_O = _heads_out()
_LAYER = "model.layers.{i}."
TABLE: tuple[TensorRule, ...] = (
    TensorRule("model.embed_tokens.weight", ("embed", "embedding"), _identity, _identity, False),
    TensorRule("model.norm.weight", ("final_norm", "scale"), _identity, _identity, False),
    TensorRule("lm_head.weight", ("lm_head", "kernel"), _transpose, _transpose, False),
    TensorRule(_LAYER + "self_attn.q_proj.weight", ("layers", "attn", "q"), *_Q),
    TensorRule(_LAYER + "self_attn.k_proj.weight", ("layers", "attn", "k"), *_KV),
    TensorRule(_LAYER + "self_attn.v_proj.weight", ("layers", "attn", "v"), *_KV),
    TensorRule(_LAYER + "self_attn.o_proj.weight", ("layers", "attn", "o"), *_O),
    TensorRule(_LAYER + "mlp.gate_proj.weight", ("layers", "mlp", "gate"), _transpose, _transpose),
    TensorRule(_LAYER + "mlp.up_proj.weight", ("layers", "mlp", "up"), _transpose, _transpose),
    TensorRule(_LAYER + "mlp.down_proj.weight", ("layers", "mlp", "down"), _transpose, _transpose),
    TensorRule(
        _LAYER + "input_layernorm.weight", ("layers", "input_norm", "scale"), _identity, _identity
    ),
    TensorRule(
        _LAYER + "post_attention_layernorm.weight",
        ("layers", "post_attn_norm", "scale"),
        _identity,
        _identity,
    ),
)


def rules_for(config: ModelConfig) -> list[TensorRule]:
    return [r for r in TABLE if not (config.tie_word_embeddings and r.path[0] == "lm_head")]


def hf_shape(rule: TensorRule, config: ModelConfig) -> tuple[int, ...]:
    """The HF tensor shape a config implies (via the abstract parameter shape)."""
    ours = _our_shape(rule, config)
    dummy = np.empty(ours, np.float32)
    return rule.to_hf(dummy, config).shape


def _our_shape(rule: TensorRule, config: ModelConfig) -> tuple[int, ...]:
    shapes = _abstract_shapes(config)
    node = shapes
    for key in rule.path:
        node = node[key]
    return node[1:] if rule.per_layer else node


@functools.cache
def _abstract_shapes(config: ModelConfig) -> dict:
    abstract = jax.eval_shape(lambda: init_params(config, jax.random.key(0)))
    return jax.tree.map(lambda a: tuple(a.shape), abstract)


def _weight_map(path: str) -> dict[str, str]:
    index = os.path.join(path, INDEX_FILE)
    if os.path.exists(index):
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
        if not weight_map:
            raise CheckpointError(f"{index} has no 'weight_map'")
        return {name: os.path.join(path, file) for name, file in weight_map.items()}
    single = os.path.join(path, SINGLE_FILE)
    if os.path.exists(single):
        with safe_open(single, framework="numpy") as f:
            return dict.fromkeys(f.keys(), single)
    pickled = [f for f in os.listdir(path) if f.endswith((".bin", ".pt", ".pth"))]
    hint = (
        f" Found pickled weights {pickled[:3]}: this project never unpickles checkpoints; convert "
        "them once with transformers (`model.save_pretrained(dir, safe_serialization=True)`)."
        if pickled
        else ""
    )
    raise CheckpointError(f"{path}: no {SINGLE_FILE} or {INDEX_FILE}.{hint}")


# safetensors' dtype names of floating tensors, from narrow to wide.
_STORED_FLOATS = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def stored_dtype(path: str) -> str:
    """The widest floating dtype the weights of the checkpoint in ``path`` are stored in (read
    from the safetensors headers; no tensor is loaded)."""
    found = set()
    by_file: dict[str, list[str]] = {}
    for name, file in _weight_map(path).items():
        by_file.setdefault(file, []).append(name)
    for file, names in by_file.items():
        with safe_open(file, framework="numpy") as f:
            found.update(f.get_slice(name).get_dtype() for name in names)
    floats = [dtype for dtype in _STORED_FLOATS if dtype in found]
    if not floats:
        raise CheckpointError(f"{path}: no floating-point weights")
    return _STORED_FLOATS[floats[-1]]


def _expected_names(config: ModelConfig) -> dict[str, tuple[TensorRule, int | None]]:
    names = {}
    for rule in rules_for(config):
        if rule.per_layer:
            for i in range(config.num_layers):
                names[rule.hf_name.format(i=i)] = (rule, i)
        else:
            names[rule.hf_name] = (rule, None)
    return names


def _check_names(path: str, config: ModelConfig, weight_map: dict[str, str]) -> None:
    expected = set(_expected_names(config))
    present = {n for n in weight_map if not n.endswith(IGNORED_SUFFIXES)}
    if config.tie_word_embeddings:
        present.discard("lm_head.weight")  # tied: the head is the embedding
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensor(s): {missing[:6]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensor(s): {unexpected[:6]}")
        raise CheckpointError(
            f"{path}: checkpoint does not match its config.json "
            f"({config.architecture}, {config.num_layers} layers, tied embeddings="
            f"{config.tie_word_embeddings}): " + "; ".join(parts)
        )


def load_hf(
    path: str,
    *,
    dtype=jnp.float32,
    mesh: jax.sharding.Mesh | None = None,
    compute_dtype=None,
    **config_overrides,
):
    """Loads ``config.json`` + safetensors from ``path`` → ``(ModelConfig, params)``.

    ``dtype`` is the parameters' dtype (what is stored and updated); ``compute_dtype`` the dtype
    of activations and matmuls (``ModelConfig.dtype``; default: the config's default). With
    ``mesh`` every parameter is placed directly into its NamedSharding (logical axes via
    ``ropo_jax.parallel.sharding``); otherwise onto the default device.
    """
    if compute_dtype is not None:
        config_overrides["dtype"] = jnp.dtype(compute_dtype).name
    config = from_hf_config(path, param_dtype=jnp.dtype(dtype).name, **config_overrides)
    weight_map = _weight_map(path)
    _check_names(path, config, weight_map)
    handles: dict[str, object] = {}
    axes = param_logical_axes(config)
    params: dict = {}
    try:
        rules = rules_for(config)
        for rule in processes.progress(rules, desc="loading weights", unit="param", leave=False):
            our_shape = _our_shape(rule, config)
            expected_hf = hf_shape(rule, config)
            layers = range(config.num_layers) if rule.per_layer else [None]
            host = np.empty(
                ((config.num_layers,) if rule.per_layer else ()) + our_shape, jnp.dtype(dtype)
            )
            for i in layers:
                name = rule.hf_name.format(i=i)
                file = weight_map[name]
                if file not in handles:
                    handles[file] = safe_open(file, framework="numpy").__enter__()
                tensor = handles[file].get_tensor(name)
                if tuple(tensor.shape) != expected_hf:
                    raise CheckpointError(
                        f"{file}: tensor {name} has shape {tuple(tensor.shape)} but config.json "
                        f"implies {expected_hf}; the checkpoint and config.json disagree"
                    )
                converted = rule.to_ours(tensor, config).astype(host.dtype)
                if i is None:
                    host[...] = converted
                else:
                    host[i] = converted
            node = params
            for key in rule.path[:-1]:
                node = node.setdefault(key, {})
            leaf_axes = axes
            for key in rule.path:
                leaf_axes = leaf_axes[key]
            target = (
                sharding_lib.named_sharding(mesh, leaf_axes, host.shape)
                if mesh is not None
                else None
            )
            node[rule.path[-1]] = jax.device_put(host, target) if target else jnp.asarray(host)
            del host
    finally:
        for handle in handles.values():
            handle.__exit__(None, None, None)
    return config, params


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One tensor of the saved checkpoint: its rule, layer (None: not per layer), dtype, bytes."""

    name: str
    rule: TensorRule
    layer: int | None
    dtype: np.dtype
    nbytes: int


def _param(params: dict, rule: TensorRule):
    value = params
    for key in rule.path:
        value = value[key]
    return value


def _save_plan(
    config: ModelConfig, params: dict, dtype, max_shard_bytes: int
) -> list[list[_Entry]]:
    """The shards (lists of tensors) in save order, from shapes and dtypes alone: rule by rule,
    layer by layer; a shard is closed when the next tensor would take it past the limit."""
    shards: list[list[_Entry]] = [[]]
    size = 0
    for rule in rules_for(config):
        value = _param(params, rule)
        ours = _our_shape(rule, config)
        got = tuple(value.shape[1:] if rule.per_layer else value.shape)
        if got != tuple(ours) or (rule.per_layer and value.shape[0] != config.num_layers):
            raise ValueError(
                f"parameter {'/'.join(rule.path)} has shape {tuple(value.shape)}, but the config "
                f"implies {((config.num_layers,) if rule.per_layer else ()) + tuple(ours)}"
            )
        saved = np.dtype(jnp.dtype(dtype if dtype is not None else value.dtype))
        nbytes = int(np.prod(hf_shape(rule, config))) * saved.itemsize
        for i in range(config.num_layers) if rule.per_layer else [None]:
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            name = rule.hf_name if i is None else rule.hf_name.format(i=i)
            shards[-1].append(_Entry(name, rule, i, saved, nbytes))
            size += nbytes
    return shards


@functools.partial(jax.jit, static_argnames="dtype")
def _layer_slice(x, i, dtype):
    return jax.lax.dynamic_index_in_dim(x, i, keepdims=False).astype(dtype)


@functools.partial(jax.jit, static_argnames=("dtype", "scale"))
def _merged_layer_slice(w, a, b, i, dtype, scale):
    """Layer i of kernel ``w`` with its LoRA pair merged, W + scale·a·b, in float32 first."""
    layer = functools.partial(jax.lax.dynamic_index_in_dim, index=i, keepdims=False)
    merged = layer(w).astype(jnp.float32) + scale * lora_lib.kernel_delta(layer(a), layer(b))
    return merged.astype(dtype)


@functools.partial(jax.jit, static_argnames="dtype")
def _cast(x, dtype):
    return x.astype(dtype)


def _adapter_pair(params: dict, rule: TensorRule) -> dict | None:
    """The LoRA pair {"a", "b"} of ``rule``'s kernel in adapted parameters, else None (the
    adapters mirror the base's paths, ``models.lora``)."""
    node = params.get(lora_lib.KEY)
    for key in rule.path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def _fetch(params: dict, entry: _Entry, config: ModelConfig) -> np.ndarray:
    """One HF tensor: the layer's slice (and the cast, and a LoRA pair's merge) happens on
    device, so only this tensor ever reaches the host."""
    value = _param(params, entry.rule)
    pair = _adapter_pair(params, entry.rule)
    if pair is not None:
        value = _merged_layer_slice(
            jnp.asarray(value), pair["a"], pair["b"], entry.layer, entry.dtype, config.lora.scale
        )
        host = np.asarray(processes.fetch(value))
    elif isinstance(value, jax.Array):
        if entry.layer is not None:
            value = _layer_slice(value, entry.layer, entry.dtype)
        elif value.dtype != entry.dtype:
            value = _cast(value, entry.dtype)
        host = np.asarray(processes.fetch(value))  # gathered across hosts if sharded there
    else:  # numpy parameters
        host = np.asarray(value if entry.layer is None else value[entry.layer])
        host = host.astype(entry.dtype, copy=False)
    return np.ascontiguousarray(entry.rule.to_hf(host, config))


def _shard_file(k: int, n: int) -> str:
    return SINGLE_FILE if n == 1 else f"model-{k:05d}-of-{n:05d}.safetensors"


def _remove_stale(path: str) -> None:
    """Deletes the weights of an earlier save (any shard count) so none is left beside ours."""
    for file in os.listdir(path):
        if file in (SINGLE_FILE, INDEX_FILE) or re.fullmatch(
            r"model-\d{5}-of-\d{5}\.safetensors", file
        ):
            os.remove(os.path.join(path, file))


def save_hf(
    config: ModelConfig,
    params: dict,
    path: str,
    *,
    dtype=None,
    max_shard_bytes: int = 5 * 1024**3,
) -> None:
    """Writes ``config.json`` and safetensors (sharded with an index above ``max_shard_bytes``)
    in the layout transformers loads. ``dtype`` defaults to the parameters' dtype. Parameters
    with LoRA adapters (``models.lora.attach``) are saved merged, one layer's kernel at a time.

    Streams: the shard plan comes from shapes and dtypes; then each tensor (a layer's slice of a
    stacked parameter) is sliced and cast on device, fetched alone and appended to the current
    shard, which is written when complete, so host memory peaks at about one shard. Parameters
    may be sharded across processes: every process must call this (the fetches are collectives)
    and only process 0 writes files.
    """
    shards = _save_plan(config, params, dtype, max_shard_bytes)
    writer = processes.is_writer()
    if writer:
        os.makedirs(path, exist_ok=True)
        _remove_stale(path)
        saved_dtype = shards[0][0].dtype.name
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(to_hf_config(config, dtype=saved_dtype), f, indent=2)
    weight_map: dict[str, str] = {}
    written = processes.progress(
        enumerate(shards, start=1), total=len(shards), desc="writing weights", unit="shard"
    )
    for k, shard in written:
        file = _shard_file(k, len(shards))
        tensors = {entry.name: _fetch(params, entry, config) for entry in shard}
        if writer:
            save_file(tensors, os.path.join(path, file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    if writer and len(shards) > 1:
        total = sum(entry.nbytes for shard in shards for entry in shard)
        with open(os.path.join(path, INDEX_FILE), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


__all__ = ["TABLE", "CheckpointError", "ConfigError", "load_hf", "save_hf", "stored_dtype"]
