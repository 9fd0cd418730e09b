"""What one run does when it spans several processes (multi-host): process 0 writes every run
file, all processes agree on decisions read from disk, and progress bars show on process 0 only.

Every process runs the same program (JAX's multi-controller model): collectives such as a
sharded forward pass must be entered by all of them, so any choice that skips or repeats device
work (a cache hit, a finished round) is made once and broadcast. A multi-host run needs its
workdir on a file system all hosts share (as Orbax checkpoints do).
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm


def is_writer() -> bool:
    """True in the one process that writes run files (process 0)."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Waits until every process reaches ``name`` (a no-op in a single-process run), e.g. after
    process 0 wrote files the others read next."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` in every process: a decision taken from local state (a file that
    exists) that must not differ between processes."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(bool(flag)))


def progress(iterable=None, **kwargs) -> tqdm:
    """A tqdm bar shown by process 0 only (``disable=True`` from the caller still hides it)."""
    kwargs["disable"] = kwargs.get("disable", False) or not is_writer()
    return tqdm(iterable, **kwargs)


def write_json(path: str, value) -> None:
    """``value`` as JSON from process 0 only, atomically (a kill leaves the old file or the new
    one, never half of it)."""
    if not is_writer():
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1)
    os.replace(tmp, path)


def write_npz(path: str, **arrays) -> None:
    """``np.savez`` from process 0 only."""
    if is_writer():
        np.savez(path, **arrays)


def fetch(tree):
    """Host NumPy copies of global arrays, whole in every process: ``jax.device_get`` where
    this process holds every shard, else an all-gather across processes (small outputs such as
    per-example scores; parameters are never fetched this way)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(x, "is_fully_addressable", True) for x in leaves):
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)
