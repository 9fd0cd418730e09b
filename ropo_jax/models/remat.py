"""Named rematerialisation policies of the decoder layer (``ModelConfig.remat_policy``).

``jax.checkpoint`` wraps each (scanned) layer; the policy says which of the layer's intermediate
values the backward pass may keep from the forward pass, and everything else is recomputed
from the layer's input. The layer tags its matmul outputs with ``checkpoint_name`` (see
``layers.py``): ``query_proj``, ``key_proj``, ``value_proj``, ``attention_out`` (the attention
kernel's output, before the output projection), ``out_proj``, ``mlp_gate``, ``mlp_up`` and
``mlp_down``.

From most memory to least (per layer, B·T tokens, D width, N·H = D, K kv heads, F MLP width):

- ``none``: no remat; every residual of every op is kept (the attention's [B, N, T, S]
  probabilities too on the xla path).
- ``dots``: every matmul output (``jax.checkpoint_policies.checkpoint_dots``), including the
  attention scores on the xla path; ``dots_no_batch`` drops the batched ones (the scores).
- ``qkv_attention``: the q/k/v projections and the attention output, about
  B·T·(2D + 2K·H) values; the backward recomputes the norms, the output projection and the MLP
  but not the attention itself.
- ``attention_out``: only the attention output, B·T·D values; the backward recomputes the
  projections and the MLP, not the attention.
- ``offload_dots``: the tagged matmul outputs are moved to host memory (``pinned_host``) after
  the forward pass and back for the backward pass, nothing else is kept on the device. For
  accelerators with fast host links; XLA:CPU has no separate host memory space.
- ``full``: nothing; the whole layer is recomputed (the least memory, one extra forward).
"""

from __future__ import annotations

import jax

from ropo_jax.models.config import REMAT_POLICIES

MATMUL_NAMES = (
    "query_proj",
    "key_proj",
    "value_proj",
    "attention_out",
    "out_proj",
    "mlp_gate",
    "mlp_up",
    "mlp_down",
)
_CP = jax.checkpoint_policies

POLICIES = {
    "full": _CP.nothing_saveable,
    "dots": _CP.checkpoint_dots,
    "dots_no_batch": _CP.dots_with_no_batch_dims_saveable,
    "qkv_attention": _CP.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out"
    ),
    "attention_out": _CP.save_only_these_names("attention_out"),
    "offload_dots": _CP.save_and_offload_only_these_names(
        names_which_can_be_saved=(),
        names_which_can_be_offloaded=MATMUL_NAMES,
        offload_src="device",
        offload_dst="pinned_host",
    ),
}
assert set(POLICIES) | {"none"} == set(REMAT_POLICIES), "config.REMAT_POLICIES out of date"


def remat_layer(layer_fn, policy: str):
    """``layer_fn`` under ``jax.checkpoint`` with the named policy ("none": unchanged)."""
    if policy == "none":
        return layer_fn
    return jax.checkpoint(layer_fn, policy=POLICIES[policy])
