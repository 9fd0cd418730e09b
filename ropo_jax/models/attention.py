"""The attention kernel: which implementation runs on which backend, and the call itself.

``ModelConfig.attention_impl`` is one of :data:`IMPLS`:

- ``"xla"``: ``jax.nn.dot_product_attention(implementation="xla")`` with one dense boolean
  [B, 1, T, S] mask (:func:`attention_mask`: same non-zero segment, key position ≤ query
  position, inside the sliding window). Runs everywhere and accepts any positions; it
  materialises [B, N, T, S] logits and probabilities (and keeps the latter for the backward
  pass).
- ``"cudnn"`` (NVIDIA GPUs, float16/bfloat16): cuDNN flash attention through
  ``jax.nn.dot_product_attention(implementation="cudnn", is_causal=True, query_seq_lengths=…,
  key_value_seq_lengths=…, local_window_size=…)``. Padding, causality and the window are masks
  inside the kernel: no [B, 1, T, S] bias operand, no bias gradient, fully masked tiles skipped.
  That form describes rows holding one sequence followed by right padding; jax's public API has
  no form for several packed sequences per row. Which layout a forward pass sees is static: the
  caller says so (``one_sequence_per_row``, from the data loader's mode), and any other layout
  (packed, left-padded) runs the xla attention — decided at trace time, so each compiled program
  holds one attention only.
- ``"splash"`` (TPU): the Pallas splash-attention kernel with segment ids and a causal (or, for
  a sliding window shorter than the sequence, local) mask; handles padded and packed rows alike.
  On other backends the same kernel runs in the Pallas interpreter (slow; for tests only).
- ``"blocked"`` (the CPU choice): the xla attention's math in query blocks, each attending only
  to the keys up to its last query (and from its window's start), so the fully masked upper
  triangle is never computed and each block's [B, N, block, S] scores stay cache-sized
  (:func:`blocked_query_block`). On a 2-core CPU it runs a DPO step's attention 2–5× faster than
  the dense xla attention (docs/PERFORMANCE.md). Plain XLA: runs on any backend.
- ``"auto"``: :func:`resolve` for the backend the model is traced on.

``None`` (the field's value before ``"auto"`` existed, still found in older checkpoint records)
means ``"xla"``, which is what ``jax.nn.dot_product_attention`` ran by default.

Decoding against a KV cache (T = 1 query per row, S cache slots) always takes the xla path:
the fused kernels here are for self-attention (T = S).

Index-based masks: cuDNN and splash apply causality and the window to token *indices* within a
segment, the xla mask to *positions*; the blocked path applies the position mask but skips key
blocks by index. They agree whenever positions rise by one per token inside every segment, which
is how every batch here is built (``data.batching.collate``, the default ``arange`` positions,
left padding with cumulative positions, KV-cache prefill); :func:`one_sequence_per_row` checks a
batch's layout (tests hold the loader to it).

Shape key: B batch, T query length, S key length, N query heads, K kv heads, H head dim.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from ropo_jax.models.config import ATTENTION_IMPLS, ConfigError, ModelConfig
from ropo_jax.parallel.sharding import logical_to_spec

IMPLS = ATTENTION_IMPLS

# cuDNN flash attention (jax._src.cudnn.fused_attention_stablehlo): fp16/bf16 inputs; head dim a
# multiple of 8, at most 128 before Hopper and 256 from Hopper on. "auto" keeps to what every
# cuDNN-capable GPU runs, because `resolve` must not look at the local device (a CPU host lowers
# for GPUs it does not have).
CUDNN_DTYPES = ("bfloat16", "float16")
CUDNN_AUTO_MAX_HEAD_DIM = 128
CUDNN_MAX_HEAD_DIM = 256

# Splash attention tiles: multiples of the 128-lane TPU vector width. Larger tiles amortise the
# per-tile overhead (MaxText's default is 512); sequences are padded to a multiple of 128.
SPLASH_LANES = 128
SPLASH_MAX_BLOCK = 512

_PLATFORMS = {"cpu": "cpu", "tpu": "tpu", "gpu": "cuda", "cuda": "cuda", "rocm": "rocm"}


def _platform(platform: str) -> str:
    name = _PLATFORMS.get(platform.lower())
    if name is None:
        raise ConfigError(
            f"unknown platform {platform!r} for attention_impl; one of {sorted(_PLATFORMS)}"
        )
    return name


def current_platform() -> str:
    """The default backend as :func:`resolve` names it: "cpu", "tpu", "cuda" or "rocm"."""
    backend = jax.default_backend()
    if backend == "gpu":
        version = jax.devices()[0].client.platform_version.lower()
        return "rocm" if "rocm" in version else "cuda"
    return backend


def _cudnn_problem(dtype, head_dim: int | None, max_head_dim: int) -> str | None:
    """Why cuDNN flash attention cannot run these shapes (None: it can, or unknown)."""
    if dtype is not None and jnp.dtype(dtype).name not in CUDNN_DTYPES:
        return f"needs a {' or '.join(CUDNN_DTYPES)} compute dtype, not {jnp.dtype(dtype).name}"
    if head_dim is not None and (head_dim % 8 or head_dim > max_head_dim):
        return f"needs a head dim that is a multiple of 8 and ≤ {max_head_dim}, not {head_dim}"
    return None


def resolve(impl: str | None, platform: str, *, dtype=None, head_dim: int | None = None) -> str:
    """The concrete implementation of ``impl`` on ``platform`` ("cpu", "gpu"/"cuda", "rocm",
    "tpu"); depends only on its arguments, never on the local backend.

    ``"auto"``: splash on TPU; cudnn on CUDA GPUs when the compute ``dtype`` is float16/bfloat16
    and ``head_dim`` is a multiple of 8 and ≤ 128 (larger heads need Hopper: ask for "cudnn"
    explicitly), else xla; blocked on CPU; xla on ROCm. ``dtype``/``head_dim`` left None are
    not checked.
    An explicit implementation passes through unless it cannot run there (ConfigError): cudnn
    off CUDA or with unsupported dtype/head dim, splash on a GPU. ``None`` means "xla".
    """
    impl = "xla" if impl is None else impl
    if impl not in IMPLS:
        raise ConfigError(f"attention_impl={impl!r} is not one of {IMPLS}")
    where = _platform(platform)
    if impl == "auto":
        if where == "tpu":
            return "splash"
        if where == "cuda" and _cudnn_problem(dtype, head_dim, CUDNN_AUTO_MAX_HEAD_DIM) is None:
            return "cudnn"
        return "blocked" if where == "cpu" else "xla"
    if impl == "cudnn":
        problem = (
            "runs only on NVIDIA GPUs"
            if where != "cuda"
            else _cudnn_problem(dtype, head_dim, CUDNN_MAX_HEAD_DIM)
        )
        if problem:
            raise ConfigError(
                f"attention_impl='cudnn' {problem} (platform {platform!r}); use 'auto' or 'xla'"
            )
    if impl == "splash" and where in ("cuda", "rocm"):
        raise ConfigError(
            f"attention_impl='splash' is a TPU kernel (platform {platform!r}); use 'auto' or 'xla'"
        )
    return impl


def impl_for(config: ModelConfig, platform: str | None = None) -> str:
    """The implementation the model runs for ``config``: a concrete ``attention_impl`` as is (on
    any backend, so a CPU host can lower for TPU/GPU; cudnn's dtype/head dim are still checked),
    ``"auto"`` resolved for ``platform`` (default: :func:`current_platform`, i.e. the backend
    ``jax.default_backend()`` names when the model is traced)."""
    impl = config.attention_impl
    if impl == "auto":
        platform = platform or current_platform()
    elif impl == "cudnn":
        platform = "cuda"  # validate dtype/head dim without requiring a local GPU
    else:
        return "xla" if impl is None else impl
    return resolve(impl, platform, dtype=config.dtype, head_dim=config.head_dim)


def attention_mask(
    query_positions_BT: jax.Array,
    query_segments_BT: jax.Array,
    key_positions_BS: jax.Array,
    key_segments_BS: jax.Array,
    sliding_window: int | None,
) -> jax.Array:
    """[B, 1, T, S] boolean: same nonzero segment, key not after the query, inside the window.

    Positions restart at 0 in every packed segment, so "same segment and key position ≤ query
    position" is causality within each packed sequence; segment 0 is padding.
    """
    q_pos_BT1 = query_positions_BT[:, :, None]
    k_pos_B1S = key_positions_BS[:, None, :]
    mask_BTS = (query_segments_BT[:, :, None] == key_segments_BS[:, None, :]) & (
        key_segments_BS[:, None, :] != 0
    )
    mask_BTS &= k_pos_B1S <= q_pos_BT1
    if sliding_window is not None:
        mask_BTS &= q_pos_BT1 - k_pos_B1S < sliding_window
    return mask_BTS[:, None, :, :]


@functools.partial(
    jax.tree_util.register_dataclass,
    data_fields=[
        "query_positions_BT",
        "query_segments_BT",
        "key_positions_BS",
        "key_segments_BS",
        "mask_B1TS",
    ],
    meta_fields=["impl"],
)
@dataclasses.dataclass(frozen=True)
class Masking:
    """Everything :func:`attend` needs besides q/k/v, built once per forward and shared by the
    layers. ``mask_B1TS`` is the dense mask, built only where the xla/blocked paths use it."""

    impl: str
    query_positions_BT: jax.Array
    query_segments_BT: jax.Array
    key_positions_BS: jax.Array
    key_segments_BS: jax.Array
    mask_B1TS: jax.Array | None = None


def self_attention_masking(
    config: ModelConfig,
    positions_BT: jax.Array,
    segments_BT: jax.Array,
    *,
    one_sequence_per_row: bool = False,
) -> Masking:
    """The Masking of a forward pass over ``positions_BT``/``segments_BT`` (keys = queries).

    ``one_sequence_per_row``: the caller's static promise that every row is one sequence from
    column 0, positions 0, 1, 2, …, then right padding (segment 0) — the only layout cuDNN's
    length masks describe. Without it, a "cudnn" model runs the xla attention for this pass.
    """
    impl = impl_for(config)
    if impl == "cudnn" and not one_sequence_per_row:
        impl = "xla"
    mask_B1TS = None
    if impl in ("xla", "blocked"):
        # Built once here rather than in every layer (the scan body would rebuild it).
        mask_B1TS = attention_mask(
            positions_BT, segments_BT, positions_BT, segments_BT, config.sliding_window
        )
    return Masking(impl, positions_BT, segments_BT, positions_BT, segments_BT, mask_B1TS)


def one_sequence_per_row(positions_BT, segments_BT) -> jax.Array:
    """Scalar bool: every row is one segment followed by padding, its positions rising by one
    per token from 0 — the layout ``self_attention_masking(one_sequence_per_row=True)`` promises
    (then cuDNN's index-based causal + length masks equal :func:`attention_mask`)."""
    valid_BT = segments_BT != 0
    index_1T = jnp.arange(segments_BT.shape[1])[None, :]
    prefix_BT = index_1T < jnp.sum(valid_BT, axis=1, keepdims=True)
    one_segment_BT = segments_BT == segments_BT[:, :1]
    consecutive_BT = positions_BT == index_1T
    return jnp.all((valid_BT == prefix_BT) & (~valid_BT | (one_segment_BT & consecutive_BT)))


def attend(
    config: ModelConfig,
    query_BTNH: jax.Array,
    keys_BSKH: jax.Array,
    values_BSKH: jax.Array,
    *,
    query_positions_BT: jax.Array,
    query_segments_BT: jax.Array,
    key_positions_BS: jax.Array,
    key_segments_BS: jax.Array,
    mask_B1TS: jax.Array | None = None,
    impl: str | None = None,
) -> jax.Array:
    """Attention output [B, T, N, H] with K ≤ N kv heads (grouped-query attention).

    ``impl``: a concrete implementation (default: :func:`impl_for` ``config``). ``mask_B1TS``:
    the dense mask of these positions/segments if the caller has it (built here otherwise).
    "cudnn" trusts the caller that the rows hold one right-padded sequence each (see
    :func:`self_attention_masking`, which makes that choice for a forward pass). The fused and
    blocked paths need self-attention (T = S); otherwise (KV-cache decoding) xla runs.

    Outputs at padding queries (segment 0) differ between implementations and mean nothing.
    """
    impl = impl_for(config) if impl is None else impl
    if impl not in IMPLS or impl == "auto":
        raise ConfigError(f"attend needs a concrete implementation, not {impl!r}")
    self_attention = query_BTNH.shape[1] == keys_BSKH.shape[1]
    if mask_B1TS is None and (impl in ("xla", "blocked") or not self_attention):
        mask_B1TS = attention_mask(
            query_positions_BT,
            query_segments_BT,
            key_positions_BS,
            key_segments_BS,
            config.sliding_window,
        )
    if impl == "xla" or not self_attention:
        return jax.nn.dot_product_attention(
            query_BTNH, keys_BSKH, values_BSKH, mask=mask_B1TS, implementation="xla"
        )
    if impl == "blocked":
        return _blocked_attention(config, query_BTNH, keys_BSKH, values_BSKH, mask_B1TS)
    if impl == "cudnn":
        return _cudnn_attention(config, query_BTNH, keys_BSKH, values_BSKH, query_segments_BT)
    return _splash_attention(
        config, query_BTNH, keys_BSKH, values_BSKH, query_segments_BT, key_segments_BS
    )


# The blocked path's tile: a query block's float32 scores [B, N, block, S] kept near the CPU's
# L2 cache size. Measured on a 2-core CPU (tiny preset, fwd + bwd of one layer): 16 rows × 256
# tokens 53 ms dense, 17 ms in blocks of 32 (2 MiB scores), 64 ms in blocks of 128 (8 MiB).
BLOCKED_TILE_BYTES = 2 * 2**20
BLOCKED_MIN_BLOCK = 16
BLOCKED_MAX_BLOCKS = 16  # unrolled blocks per layer: bounds the compiled program's size


def blocked_query_block(batch: int, heads: int, seq_len: int) -> int:
    """Queries per block: the largest power of two ≥ 16 whose float32 scores against all
    ``seq_len`` keys fit ``BLOCKED_TILE_BYTES``, raised until there are ≤ 16 blocks."""
    row_bytes = batch * heads * seq_len * 4
    block = BLOCKED_MIN_BLOCK
    while 2 * block * row_bytes <= BLOCKED_TILE_BYTES and 2 * block < seq_len:
        block *= 2
    while -(-seq_len // block) > BLOCKED_MAX_BLOCKS:
        block *= 2
    return block


def _blocked_attention(config, query_BTNH, keys_BSKH, values_BSKH, mask_B1TS):
    """Softmax attention with the dense mask, one query block at a time, each over the keys
    from its window's start to its last query only (skipped keys are masked for every query of
    the block as long as positions rise by one per token: see the module docstring). Float32
    scores and softmax, probabilities in the value dtype, as jax's xla attention does."""
    batch, seq_len, heads, head_dim = query_BTNH.shape
    kv_heads = keys_BSKH.shape[2]
    group = heads // kv_heads
    query_BTKGH = query_BTNH.reshape(batch, seq_len, kv_heads, group, head_dim)
    scale = 1.0 / math.sqrt(head_dim)
    block = blocked_query_block(batch, heads, seq_len)
    window = config.sliding_window
    outs = []
    for start in range(0, seq_len, block):
        end = min(start + block, seq_len)
        first_key = 0 if window is None else max(0, start - window + 1)
        logits_BKGTS = jnp.einsum(
            "btkgh,bskh->bkgts",
            query_BTKGH[:, start:end],
            keys_BSKH[:, first_key:end],
            preferred_element_type=jnp.float32,
        )
        mask_B11TS = mask_B1TS[:, :, None, start:end, first_key:end]
        logits_BKGTS = jnp.where(mask_B11TS, logits_BKGTS * scale, jnp.finfo(jnp.float32).min)
        probs_BKGTS = jax.nn.softmax(logits_BKGTS, axis=-1).astype(values_BSKH.dtype)
        outs.append(jnp.einsum("bkgts,bskh->btkgh", probs_BKGTS, values_BSKH[:, first_key:end]))
    return jnp.concatenate(outs, axis=1).reshape(batch, seq_len, heads, head_dim)


def _cudnn_attention(config, query_BTNH, keys_BSKH, values_BSKH, segments_BT, **kwargs):
    """cuDNN flash attention over rows of one right-padded sequence each: causal, the lengths
    from the segment ids, the window as a local window. ``kwargs`` go to
    ``jax.nn.dot_product_attention`` (tests pass ``implementation="xla"`` to run jax's XLA
    reference of the same masks on a CPU)."""
    seq_len = keys_BSKH.shape[1]
    # Rows with no real token get length 1 (a padding key): a zero-length row is left undefined
    # by cuDNN, and a NaN there would reach real tokens through 0 × NaN in later layers.
    lengths_B = jnp.maximum(jnp.sum(segments_BT != 0, axis=1), 1).astype(jnp.int32)
    window = config.sliding_window
    # cuDNN's window covers (t − window_length, t]: left size window − 1, right 0 (causal).
    local_window = (window - 1, 0) if window is not None and window < seq_len else None
    return jax.nn.dot_product_attention(
        query_BTNH,
        keys_BSKH,
        values_BSKH,
        is_causal=True,
        query_seq_lengths=lengths_B,
        key_value_seq_lengths=lengths_B,
        local_window_size=local_window,
        **{"implementation": "cudnn", **kwargs},
    )


def _splash_block(padded_len: int) -> int:
    block = SPLASH_MAX_BLOCK
    while padded_len % block:
        block //= 2
    return block


def _splash_attention(config, query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS):
    """Pallas splash attention: segment ids (padding = segment 0, its own segment, which keeps
    every softmax row non-empty) with a causal mask, or a local one for a short sliding window.

    The sequence is zero-padded (segment 0) to a multiple of 128 so any length runs. Under a
    mesh the kernel runs per shard (``shard_map``) over the batch and, when the query and kv
    heads split the same way, the heads; the kernel itself sees [N, T, H] per example.
    """
    _, seq_len, _, head_dim = query_BTNH.shape
    padded_len = -(-seq_len // SPLASH_LANES) * SPLASH_LANES
    pad = padded_len - seq_len
    if pad:
        pad_time = lambda x: jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS = map(
            pad_time, (query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS)
        )
    # The kernel takes pre-scaled queries (no softmax scale argument).
    query_BTNH = (query_BTNH.astype(jnp.float32) / math.sqrt(head_dim)).astype(query_BTNH.dtype)
    window = config.sliding_window
    local = window is not None and window < seq_len
    block = _splash_block(padded_len)

    per_shard = functools.partial(
        _splash_per_shard, padded_len=padded_len, block=block, window=window if local else None
    )

    def kernel_call(*args):
        # The Mosaic kernel when lowering for TPU, the Pallas interpreter for any other platform
        # (decided at lowering, so a CPU host can still lower the real kernel for TPU).
        return jax.lax.platform_dependent(
            *args,
            tpu=functools.partial(per_shard, interpret=False),
            default=functools.partial(per_shard, interpret=True),
        )

    segments = (q_seg_BT.astype(jnp.int32), k_seg_BS.astype(jnp.int32))
    out_BTNH = _per_shard_over_mesh(kernel_call, query_BTNH, keys_BSKH, values_BSKH, *segments)
    return out_BTNH[:, :seq_len]


def _splash_per_shard(
    q_BTNH, k_BSKH, v_BSKH, qs_BT, ks_BS, *, padded_len, block, window, interpret
):
    """The splash kernel over one shard's examples: a causal mask, or a local one when
    ``window`` is set (the window is shorter than the sequence), vmapped over the batch."""
    from jax.experimental.pallas.ops.tpu import splash_attention as splash

    shape = (padded_len, padded_len)
    head_mask = (
        splash.LocalMask(shape, window_size=(window - 1, 0), offset=0)
        if window is not None
        else splash.CausalMask(shape)
    )
    kernel = splash.make_splash_mha(
        splash.MultiHeadMask([head_mask] * q_BTNH.shape[2]),
        block_sizes=splash.BlockSizes(
            block_q=block,
            block_kv=block,
            block_kv_compute=block,
            block_q_dkv=block,
            block_kv_dkv=block,
            block_kv_dkv_compute=block,
            block_q_dq=block,
            block_kv_dq=block,
        ),
        head_shards=1,
        q_seq_shards=1,
        interpret=interpret,
    )

    def one_example(q_TNH, k_SKH, v_SKH, q_seg_T, k_seg_S):
        out_NTH = kernel(
            q_TNH.transpose(1, 0, 2),
            k_SKH.transpose(1, 0, 2),
            v_SKH.transpose(1, 0, 2),
            segment_ids=splash.SegmentIds(q_seg_T, k_seg_S),
        )
        return out_NTH.transpose(1, 0, 2)

    return jax.vmap(one_example)(q_BTNH, k_BSKH, v_BSKH, qs_BT, ks_BS)


def _per_shard_over_mesh(kernel_call, query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS):
    """``kernel_call`` on the whole batch, or per shard (``shard_map``) under a mesh: over the
    batch and, when the query and kv heads split the same way, the heads."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return kernel_call(query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS)
    q_spec = logical_to_spec(
        ("batch", None, "activation_heads", None), mesh, shape=query_BTNH.shape
    )
    kv_spec = logical_to_spec(
        ("batch", None, "activation_kv_heads", None), mesh, shape=keys_BSKH.shape
    )
    batch_axes = q_spec[0]
    # Query head n reads kv head n // (N / K) only if both split over the same mesh axes.
    heads = q_spec[2] if q_spec[2] == kv_spec[2] else None
    qkv = jax.sharding.PartitionSpec(batch_axes, None, heads, None)
    seg = jax.sharding.PartitionSpec(batch_axes, None)
    return jax.shard_map(
        kernel_call,
        mesh=mesh,
        in_specs=(qkv, qkv, qkv, seg, seg),
        out_specs=qkv,
        check_vma=False,
    )(query_BTNH, keys_BSKH, values_BSKH, q_seg_BT, k_seg_BS)
