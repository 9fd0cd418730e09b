"""Moving host batches onto the mesh: each process contributes its local rows of every global
batch (``jax.make_array_from_process_local_data``), split over the (data, fsdp) axes.

Shape key: K micro-batches, B pairs, R token rows, T length.
"""

from __future__ import annotations

import jax
import numpy as np

from ropo_jax import sharding
from ropo_jax.data.batching import COMPLETION_KEY


def stack_micro_batches(batches: list[dict[str, np.ndarray]], pad_id: int = 0) -> dict:
    """[K, ...] arrays from K loader batches, padding rows R and length T to the largest (padding
    rows/tokens carry segment 0 and loss_mask 0, so they contribute nothing), and the width C of
    ``completion_positions`` to the largest with −1 (column indices do not move when T grows)."""
    if len(batches) == 1:
        return {k: v[None] for k, v in batches[0].items()}
    rows = max(b["tokens"].shape[0] for b in batches)
    length = max(b["tokens"].shape[1] for b in batches)
    out = {}
    for key in batches[0]:
        parts = []
        width = length
        if key == COMPLETION_KEY:
            width = max(b[key].shape[1] for b in batches)
        for b in batches:
            x = b[key]
            if x.ndim == 2:  # token rows
                fill = -1 if key == COMPLETION_KEY else pad_id if key == "tokens" else 0
                x = np.pad(
                    x, ((0, rows - x.shape[0]), (0, width - x.shape[1])), constant_values=fill
                )
            parts.append(x)
        out[key] = np.stack(parts)
    return out


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
        spec = sharding.logical_to_spec(axes, mesh, shape=global_shape)
        return jax.make_array_from_process_local_data(
            jax.sharding.NamedSharding(mesh, spec), x, tuple(global_shape)
        )

    return jax.tree.map(put, batch)
