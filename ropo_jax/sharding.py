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
}


def make_mesh(
    shape: Sequence[int] = (-1, 1, 1),
    axis_names: Sequence[str] = MESH_AXES,
    devices: Sequence[jax.Device] | None = None,
) -> Mesh:
    """Builds a mesh with explicit ``AxisType.Auto`` axes; one ``-1`` entry means "the rest".

    Raises ValueError naming the mesh shape and device count when they do not fit.
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
    device_array = np.asarray(devices).reshape(shape)
    return Mesh(device_array, tuple(axis_names), axis_types=(AxisType.Auto,) * len(shape))


def logical_to_spec(
    logical_axes: Sequence[str | None],
    mesh: Mesh | None = None,
    rules: dict[str, str | tuple[str, ...] | None] | None = None,
) -> PartitionSpec:
    """Maps a tuple of logical axis names to a PartitionSpec over the mesh axes.

    Mesh axes of size 1 (or absent from ``mesh``) are dropped, and a mesh axis is used at most
    once per spec, so any rule table gives a valid spec on any mesh.
    """
    rules = LOGICAL_AXIS_RULES if rules is None else rules
    used: set[str] = set()
    entries = []
    for name in logical_axes:
        if name is not None and name not in rules:
            raise KeyError(f"logical axis {name!r} has no rule in sharding.LOGICAL_AXIS_RULES")
        target = None if name is None else rules[name]
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        kept = tuple(
            a
            for a in axes
            if a not in used and (mesh is None or (a in mesh.shape and mesh.shape[a] > 1))
        )
        used.update(kept)
        entries.append(None if not kept else kept[0] if len(kept) == 1 else kept)
    return PartitionSpec(*entries)


def named_sharding(mesh: Mesh, logical_axes: Sequence[str | None]) -> NamedSharding:
    """NamedSharding for an array whose dimensions carry these logical names."""
    return NamedSharding(mesh, logical_to_spec(logical_axes, mesh))


def tree_shardings(mesh: Mesh, logical_axes_tree):
    """Maps a pytree of logical-axis tuples to a pytree of NamedShardings."""
    return jax.tree.map(
        lambda axes: named_sharding(mesh, axes),
        logical_axes_tree,
        is_leaf=lambda x: isinstance(x, tuple) and all(a is None or isinstance(a, str) for a in x),
    )


def batch_sharding(mesh: Mesh, ndim: int) -> NamedSharding:
    """Sharding for a batch array: the leading dimension split over (data, fsdp)."""
    return named_sharding(mesh, ("batch",) + (None,) * (ndim - 1))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())
