"""The one place for the device mesh and the logical-axis → mesh-axis rules.

Parameters and activations are annotated with *logical* axis names (``embed``, ``mlp``,
``heads``, ``kv_heads``, ``vocab``, ``layers``, ``batch``, ``length``); the table below maps them to
the physical mesh axes ``("data", "fsdp", "tensor")``. Changing the parallelism layout of a run is
a change of mesh shape (config), never of model code.

Shape-suffix key: B batch, T length.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Logical axis → mesh axis (or a tuple of mesh axes, or None for replicated).
# FSDP shards the large "embed" dimension of every weight; tensor parallelism splits
# heads and the MLP hidden dimension; the batch is split over both data and fsdp.
LOGICAL_AXIS_RULES: dict[str, str | tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "length": None,
    "embed": "fsdp",
    "mlp": "tensor",
    "heads": "tensor",
    "kv_heads": "tensor",
    "head_dim": None,
    "vocab": "tensor",
    "layers": None,
    "norm": None,
    # Activations: the batch is split over (data, fsdp) while weights are split over fsdp, so
    # XLA gathers weights (FSDP) rather than activations; heads/MLP follow tensor parallelism.
    "activation_embed": None,
    "activation_heads": "tensor",
    "activation_kv_heads": "tensor",
    "activation_mlp": "tensor",
    "activation_vocab": "tensor",
    # The embedding lookup's output before it moves to the activation layout (models.embed).
    "batch_over_data": "data",
}


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1),
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a mesh with ``jax.make_mesh``; one ``-1`` entry means "the rest".

    ``jax.make_mesh`` orders the devices for the physical topology (TPU rings, GPUs by id). The
    axes are ``AxisType.Auto``: recent jax defaults to ``Explicit`` axes, which break model code
    written for automatic sharding propagation. Raises ValueError naming the mesh shape and
    device count when they do not fit, before ``jax.make_mesh`` is called (given more devices
    than the shape needs, it would silently use the first ones).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != len(axis_names):
        raise ValueError(f"mesh shape {shape} must have one entry per axis {tuple(axis_names)}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1 ('the rest')")
    known = math.prod(s for s in shape if s != -1)
    if any(s == 0 or s < -1 for s in shape) or len(devices) % known:
        raise ValueError(
            f"mesh shape {shape} does not fit {len(devices)} devices: the product of the "
            "fixed axes must divide the device count (set one axis to -1 to absorb the rest)"
        )
    if -1 in shape:
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) != len(devices):
        raise ValueError(
            f"mesh shape {shape} uses {math.prod(shape)} devices but {len(devices)} are "
            "available; set one axis to -1 to use them all"
        )
    return jax.make_mesh(
        tuple(shape), tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape), devices=devices
    )


def logical_to_spec(
    logical_axes: Sequence[str | None],
    mesh: Mesh | None = None,
    rules: dict[str, str | tuple[str, ...] | None] | None = None,
    shape: Sequence[int] | None = None,
) -> PartitionSpec:
    """Maps a tuple of logical axis names to a PartitionSpec over the mesh axes.

    Mesh axes of size 1 (or absent from ``mesh``) are dropped, a mesh axis is used at most once
    per spec, and, given the array ``shape``, a mesh axis that does not divide its dimension is
    dropped for that dimension (it is replicated, e.g. a vocabulary of 32001 over 8 devices), so
    any rule table gives a valid spec on any mesh.
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    used: set[str] = set()
    entries = []
    for dim, name in enumerate(logical_axes):
        if name is not None and name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule in sharding.LOGICAL_AXIS_RULES")
        target = None if name is None else rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        kept: tuple[str, ...] = ()
        for a in axes:
            if a in used or (mesh is not None and mesh.shape.get(a, 1) <= 1):
                continue
            ways = math.prod(mesh.shape[k] for k in (*kept, a)) if mesh is not None else 1
            if shape is not None and shape[dim] % ways:
                continue
            kept = (*kept, a)
        used.update(kept)
        entries.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return PartitionSpec(*entries)


def named_sharding(
    mesh: Mesh, logical_axes: Sequence[str | None], shape: Sequence[int] | None = None
) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry these logical names."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, mesh, shape=shape))


def _is_axes(x) -> bool:
    return isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x)


def tree_shardings(mesh: Mesh, logical_axes_tree, shapes_tree=None):
    """Maps a pytree of logical-axis tuples to a pytree of NamedShardings. ``shapes_tree`` (the
    arrays, or ``jax.eval_shape`` of them) lets non-dividing axes fall back to replication."""
    if shapes_tree is None:
        return jax.tree.map(
            lambda axes: named_sharding(mesh, axes), logical_axes_tree, is_leaf=_is_axes
        )
    return jax.tree.map(
        lambda axes, x: named_sharding(mesh, axes, x.shape),
        logical_axes_tree,
        shapes_tree,
        is_leaf=_is_axes,
    )


def constrain(x: jax.Array, logical_axes: Sequence[str | None]) -> jax.Array:
    """Pins an activation's sharding by logical axis names when a mesh is set (``jax.set_mesh``,
    as the training engine does); a no-op otherwise (single device, unit tests)."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(logical_axes, mesh, shape=x.shape)
    return jax.lax.with_sharding_constraint(x, spec)


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding for a batch array: the leading dimension split over (data, fsdp)."""
    return named_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def put_batch(batch: dict[str, np.ndarray], mesh: jax.sharding.Mesh | None, *, micro_axis: bool):
    """Global device arrays for a host batch; a leading micro-batch axis is not split."""
    if mesh is None:
        return jax.tree.map(jax.numpy.asarray, batch)
    lead = (None,) if micro_axis else ()

    def put(x):
        batch_dim = len(lead)
        global_shape = list(x.shape)
        global_shape[batch_dim] *= jax.process_count()
        axes = lead + ("batch",) + (None,) * (x.ndim - batch_dim - 1)
        spec = logical_to_spec(axes, mesh, shape=global_shape)
        return jax.make_array_from_process_local_data(
            jax.sharding.NamedSharding(mesh, spec), x, tuple(global_shape)
        )

    return jax.tree.map(put, batch)
