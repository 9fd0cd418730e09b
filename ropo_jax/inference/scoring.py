"""Forward-only passes over a data set: reference log-probs (computed once, cached on disk) and
per-example scores of the current policy (margin and loss, for ROPO's w-step and evaluation).

The reference cache is keyed by (data fingerprint, reference-parameter hash) and stores
log-probs in the data's stored orientation (as labelled in the input), so one cache serves every
noise setting: ``join_reference`` swaps chosen/rejected where noise flipped a pair.

Shape key: N examples, B pairs, S sequence slots (2B).
"""

from __future__ import annotations

import functools
import hashlib
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ropo_jax import losses
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.inference.logps import sequence_logps
from ropo_jax.models import ModelConfig
from ropo_jax.parallel import processes, sharding


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _slot_logps(model_config: ModelConfig, chunk_size: int, packed: bool, params, batch):
    logps_S, _ = sequence_logps(
        model_config, params, batch, chunk_size, one_sequence_per_row=not packed
    )
    return logps_S, batch["example_index"]


def sequence_logps_over(
    model_config: ModelConfig,
    params,
    data: PreferenceData,
    *,
    batch_size: int,
    mode: str = "bucketed",
    chunk_size: int = 256,
    mesh=None,
    desc: str = "scoring",
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen_N, rejected_N) response log-probs of every example, in stored orientation."""
    unflipped = data.with_flips(np.zeros(len(data), bool))
    iterator = make_loader(
        unflipped,
        batch_size=batch_size,
        shuffle=False,
        num_epochs=1,
        mode=mode,
        drop_remainder=False,
    )
    chosen_N = np.full(len(data), np.nan, np.float32)
    rejected_N = np.full(len(data), np.nan, np.float32)
    num_batches = -(-len(data) // batch_size)
    for batch in processes.progress(iterator, total=num_batches, desc=desc, unit="batch"):
        device_batch = sharding.put_batch(batch, mesh, micro_axis=False)
        logps_S, index_B = processes.fetch(
            _slot_logps(model_config, chunk_size, mode == "packed", params, device_batch)
        )
        b = len(index_B)
        real = index_B >= 0
        chosen_N[index_B[real]] = logps_S[:b][real]
        rejected_N[index_B[real]] = logps_S[b:][real]
    missing = int(np.isnan(chosen_N).sum())
    if missing:
        raise RuntimeError(f"{desc}: {missing} of {len(data)} examples were not scored")
    return chosen_N, rejected_N


_MIX_SEEDS = (0x9E3779B9, 0x85EBCA6B)


def _mix32(x):
    """murmur3's 32-bit finaliser: a bijection that spreads every input bit over the word."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


@jax.jit
def _fingerprint(x):
    """Two 32-bit sums of mix(bits, position, seed) over one array, computed where it lives.
    Sums mod 2^32 are exact whatever the reduction order, so an array gives the same value on
    any mesh, sharded or not, and only 8 bytes reach the host. XLA keeps the array's bits and
    positions as two uint32 temporaries of its size (the two seeds' sums share them), so one
    array at a time: for the whole tree at once they were twice the parameters' bytes (1 GiB
    for SmolLM2-135M's float32 weights; docs/PERFORMANCE.md)."""
    width = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    bits = jax.lax.bitcast_convert_type(x, width).astype(jnp.uint32)
    position = jnp.zeros(x.shape, jnp.uint32)
    for dim in range(x.ndim):  # the row-major index, without reshaping a sharded array
        stride = int(np.prod(x.shape[dim + 1 :], dtype=np.int64)) % 2**32
        iota = jax.lax.broadcasted_iota(jnp.uint32, x.shape, dim)
        position = position + iota * jnp.uint32(stride)
    return jnp.stack(
        [
            jnp.sum(_mix32(_mix32(bits ^ jnp.uint32(seed)) + position), dtype=jnp.uint32)
            for seed in _MIX_SEEDS
        ]
    )


def params_hash(params) -> str:
    """A digest of every parameter's path, dtype, shape and values, computed on the devices that
    hold them (parameters sharded over hosts are never fetched; see ``_fingerprint``). Each
    array's sums are fetched before the next is dispatched, so only one array's temporaries
    exist at a time."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        pair = jax.device_get(_fingerprint(leaf))
        h.update(f"{jax.tree_util.keystr(path)}|{leaf.dtype}|{leaf.shape}|".encode())
        h.update(np.asarray(pair, np.uint32).tobytes())
    return h.hexdigest()


def reference_logps(
    model_config: ModelConfig,
    ref_params,
    data: PreferenceData,
    *,
    cache_dir: str | None,
    batch_size: int,
    mode: str = "bucketed",
    mesh=None,
    params_key: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference log-probs of every example, from ``cache_dir`` when this (data, reference)
    pair was scored before, else computed once (a progress bar) and cached. ``params_key``:
    ``params_hash(ref_params)`` when the caller already has it (hashing reads every weight)."""
    path = None
    if cache_dir:
        params_key = params_key or params_hash(ref_params)
        key = hashlib.sha256((data.fingerprint() + params_key).encode()).hexdigest()[:24]
        path = os.path.join(cache_dir, f"ref_logps_{key}.npz")
        if processes.agree(os.path.exists(path)):
            cached = np.load(path)
            logging.info("reference log-probs of %d examples from cache %s", len(data), path)
            return cached["chosen"], cached["rejected"]
    chosen_N, rejected_N = sequence_logps_over(
        model_config,
        ref_params,
        data,
        batch_size=batch_size,
        mode=mode,
        mesh=mesh,
        desc="reference log-probs",
    )
    if path and processes.is_writer():
        os.makedirs(cache_dir, exist_ok=True)
        tmp = path + ".tmp.npz"
        np.savez(tmp, chosen=chosen_N, rejected=rejected_N)
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
    return chosen_N, rejected_N


def join_reference(batch: dict, ref_chosen_N: np.ndarray, ref_rejected_N: np.ndarray) -> dict:
    """Adds the batch's reference log-probs (training orientation: swapped where flipped)."""
    index_B = batch["example_index"]
    real_B = index_B >= 0
    safe_B = np.where(real_B, index_B, 0)
    stored_chosen_B = np.where(real_B, ref_chosen_N[safe_B], 0.0)
    stored_rejected_B = np.where(real_B, ref_rejected_N[safe_B], 0.0)
    flipped_B = batch["is_flipped"].astype(bool)
    return {
        **batch,
        "ref_chosen_logps": np.where(flipped_B, stored_rejected_B, stored_chosen_B).astype(
            np.float32
        ),
        "ref_rejected_logps": np.where(flipped_B, stored_chosen_B, stored_rejected_B).astype(
            np.float32
        ),
    }


def example_scores(
    policy_chosen_N,
    policy_rejected_N,
    ref_chosen_N,
    ref_rejected_N,
    is_flipped_N,
    *,
    loss: str,
    hyperparams: dict,
    response_lengths_N2=None,
) -> dict[str, np.ndarray]:
    """Per-example margin h and loss in training orientation (noisy labels): ROPO's w-step
    ranks by this loss; evaluation uses the margins. ``response_lengths_N2``: the (chosen,
    rejected) response token counts in stored orientation (``PreferenceData.lengths[:, 1:3]``),
    which the length-normalised losses (SimPO, DPO+NLL) need."""
    flip = np.asarray(is_flipped_N, bool)
    pc = np.where(flip, policy_rejected_N, policy_chosen_N)
    pr = np.where(flip, policy_chosen_N, policy_rejected_N)
    rc = np.where(flip, ref_rejected_N, ref_chosen_N)
    rr = np.where(flip, ref_chosen_N, ref_rejected_N)
    lengths = ()
    if response_lengths_N2 is not None:
        chosen_len_N, rejected_len_N = np.asarray(response_lengths_N2).T
        lengths = (
            np.where(flip, rejected_len_N, chosen_len_N),
            np.where(flip, chosen_len_N, rejected_len_N),
        )
    loss_N, aux = losses.preference_loss(
        loss,
        losses.PairLogps(*(jnp.asarray(a, jnp.float32) for a in (pc, pr, rc, rr, *lengths))),
        **hyperparams,
    )
    return {"margin": np.asarray(aux["margin"]), "loss": np.asarray(loss_N)}
