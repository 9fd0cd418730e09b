"""LoRA: low-rank adapters over frozen base weights, as a few functions of the parameter pytree
(docs/lora.md).

Each targeted projection kernel W of the decoder layers (input axes I, output axes O, stacked
over L layers) gets two arrays, ``a`` [L, *I, R] and ``b`` [L, R, *O], and the adapted
projection is PEFT's LoRA:

    y = x·W + (α/R) · (dropout(x)·a)·b

``a`` starts as PEFT's (Kaiming-uniform, bound 1/√fan_in) and ``b`` at zero, so the adapted
model equals the base at step 0. The adapters of a model are one pytree
``{"layers": {"attn": {"q": {"a", "b"}, ...}, "mlp": {...}}}`` (the base's paths, each kernel
replaced by its pair). ``attach`` puts them into the base's parameter dict under ``"lora"``;
every forward pass (``models.forward``, scoring, KV-cache sampling, evaluation) takes those
*adapted parameters* like any others and applies the adapters unmerged, and the base alone (the
dict without ``"lora"``) is the model with the adapters off — the reference, with no second copy
of the weights. ``merge`` folds them into full weights (exports).

Shape key: L layers, I a kernel's input axes, O its output axes, R rank, B batch, T length.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from ropo_jax.models.config import LORA_TARGETS, LoraConfig

KEY = "lora"  # where attach puts the adapters in the parameter dict


class Target(NamedTuple):
    path: tuple[str, str]  # the kernel's path inside the layer parameters
    input_axes: int  # how many leading axes of the (unstacked) kernel are its input
    hf_module: str  # the Linear module of a Hugging Face Llama/Mistral layer


TARGETS: dict[str, Target] = {
    "q": Target(("attn", "q"), 1, "self_attn.q_proj"),  # [D, N, H]
    "k": Target(("attn", "k"), 1, "self_attn.k_proj"),  # [D, K, H]
    "v": Target(("attn", "v"), 1, "self_attn.v_proj"),  # [D, K, H]
    "o": Target(("attn", "o"), 2, "self_attn.o_proj"),  # [N, H, D]
    "gate": Target(("mlp", "gate"), 1, "mlp.gate_proj"),  # [D, F]
    "up": Target(("mlp", "up"), 1, "mlp.up_proj"),  # [D, F]
    "down": Target(("mlp", "down"), 1, "mlp.down_proj"),  # [F, D]
}
assert tuple(TARGETS) == LORA_TARGETS, "config.LORA_TARGETS out of date"


def _get(tree: dict, path):
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict, path, value) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def adapter_shapes(lora: LoraConfig, layer_params) -> dict:
    """``{target: (a shape, b shape)}`` for the stacked layer kernels of ``layer_params``
    (arrays or shape structs: only shapes are read)."""
    shapes = {}
    for name in lora.targets:
        target = TARGETS[name]
        shape = tuple(_get(layer_params, target.path).shape)  # [L, *I, *O]
        split = 1 + target.input_axes
        shapes[name] = ((*shape[:split], lora.rank), (shape[0], lora.rank, *shape[split:]))
    return shapes


def init_adapters(lora: LoraConfig, layer_params, rng: jax.Array, dtype=jnp.float32) -> dict:
    """Fresh adapters for the base's stacked ``layer_params``: ``a`` uniform in ±1/√fan_in
    (PEFT's ``kaiming_uniform_(a=√5)``), ``b`` zero. Pure: jit it with out_shardings. Each
    target's key is folded from its fixed index, so a target's draw does not depend on which
    others are adapted."""
    adapters: dict = {}
    for name, (a_shape, b_shape) in adapter_shapes(lora, layer_params).items():
        fan_in = math.prod(a_shape[1:-1])
        bound = 1.0 / math.sqrt(fan_in)
        key = jax.random.fold_in(rng, LORA_TARGETS.index(name))
        a = jax.random.uniform(key, a_shape, jnp.float32, -bound, bound).astype(dtype)
        _set(adapters, ("layers", *TARGETS[name].path), {"a": a, "b": jnp.zeros(b_shape, dtype)})
    return adapters


def logical_axes(lora: LoraConfig, base_axes: dict) -> dict:
    """The adapters' logical axes (``models.param_logical_axes`` gives ``base_axes``): ``a``
    keeps its kernel's input axes and ``b`` its output axes, so each follows the sharding of the
    weight it adapts; the rank axis is replicated."""
    axes: dict = {}
    for name in lora.targets:
        target = TARGETS[name]
        kernel = _get(base_axes["layers"], target.path)  # ("layers", *I, *O)
        split = 1 + target.input_axes
        pair = {"a": (*kernel[:split], None), "b": (kernel[0], None, *kernel[split:])}
        _set(axes, ("layers", *target.path), pair)
    return axes


def attach(base: dict, adapters: dict | None) -> dict:
    """The adapted parameters: the base's dict (same arrays, no copy) with ``adapters``."""
    if adapters is None:
        return base
    return {**base, KEY: adapters}


def detach(params: dict) -> tuple[dict, dict | None]:
    """``(base, adapters or None)`` of (possibly) adapted parameters."""
    base = {k: v for k, v in params.items() if k != KEY}
    return base, params.get(KEY)


def kernel_delta(a, b):
    """a·b of one layer's adapter pair ([*I, R] and [R, *O]) as a kernel [*I, *O], in float32."""
    return jnp.tensordot(a.astype(jnp.float32), b.astype(jnp.float32), axes=1)


def merge(lora: LoraConfig, params: dict) -> dict:
    """Full parameters of adapted ones: each adapted kernel W + (α/R)·a·b, computed in float32
    and kept in the wider of W's and the adapters' dtypes (a bfloat16 base with float32
    adapters merges to float32, so small updates are not rounded away). Parameters without
    adapters are returned as they are. Materialises every adapted kernel at once: exports
    merge one layer at a time instead (``models.save_hf``)."""
    base, adapters = detach(params)
    if adapters is None:
        return params
    layers = jax.tree.map(lambda x: x, base["layers"])  # a new dict tree, same arrays
    for name, target in TARGETS.items():
        if name not in lora.targets:
            continue
        pair = _get(adapters["layers"], target.path)
        kernel = _get(layers, target.path)
        delta = jax.vmap(kernel_delta)(pair["a"], pair["b"])
        dtype = jnp.promote_types(kernel.dtype, pair["a"].dtype)
        merged = (kernel.astype(jnp.float32) + lora.scale * delta).astype(dtype)
        _set(layers, target.path, merged)
    return {**base, "layers": layers}


def num_params(lora: LoraConfig, layer_params) -> int:
    """How many numbers the adapters of ``layer_params`` hold."""
    return sum(math.prod(a) + math.prod(b) for a, b in adapter_shapes(lora, layer_params).values())


# --- in the forward pass ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LayerAdapters:
    """One layer's adapters inside a forward pass: ``params`` (the layer's slice of the
    adapters, ``{"attn": {"q": {"a", "b"}}, ...}``), the scale α/R, and the input dropout
    (``rate``; ``rng`` None: no dropout, as in every pass but training)."""

    params: dict
    scale: float
    dropout: float = 0.0
    rng: Any = None

    def add(self, name: str, x, y):
        """``y`` (= x·W of target ``name``) plus the adapter's (α/R)·(dropout(x)·a)·b; ``y``
        itself when ``name`` is not adapted. Computed in x's dtype, in two thin matmuls (the
        [.., R] product in between), never forming a·b."""
        target = TARGETS[name]
        group = self.params.get(target.path[0], {})
        if target.path[1] not in group:
            return y
        pair = group[target.path[1]]
        if self.rng is not None and self.dropout > 0:
            key = jax.random.fold_in(self.rng, LORA_TARGETS.index(name))
            keep = jax.random.bernoulli(key, 1.0 - self.dropout, x.shape)
            x = jnp.where(keep, x / (1.0 - self.dropout), 0).astype(x.dtype)
        xa = jnp.tensordot(x, pair["a"].astype(x.dtype), axes=target.input_axes)  # [B, T, R]
        delta = jnp.tensordot(xa * jnp.asarray(self.scale, x.dtype), pair["b"].astype(x.dtype), 1)
        return y + delta.astype(y.dtype)


def add(adapters: LayerAdapters | None, name: str, x, y):
    """``adapters.add(name, x, y)``, or ``y`` without adapters (the base model)."""
    return y if adapters is None else adapters.add(name, x, y)


def base_dtype(compute_dtype: str, stored: str | None = None) -> str:
    """The dtype LoRA's frozen base is held in: the dtype its checkpoint stores it in
    (``stored``, ``models.hf_convert.stored_dtype``), else (random weights) the compute dtype.
    A frozen weight is never updated, so a wider master copy would only cost memory; and a
    narrower one than the checkpoint's would make the run's base differ from the base a PEFT
    user loads, by its rounding. Every use of a weight casts it to the compute dtype first
    (``transformer.compute_params``, the embedding lookup, the unembedding, the norms)."""
    return stored or compute_dtype
