"""Sequence log-probs of a batch's token rows under a model: the forward pass the train step,
scoring and evaluation share (docs/method.md §1).

Shape key: R token rows, T length, C completion positions per row, D width, S sequence slots
(2B for B pairs).
"""

from __future__ import annotations

from ropo_jax import losses, models
from ropo_jax.data.batching import COMPLETION_KEY
from ropo_jax.models import ModelConfig
from ropo_jax.models.layers import ACTIVATION_BTD
from ropo_jax.parallel import sharding


def sequence_logps(
    model_config: ModelConfig,
    params,
    batch: dict,
    chunk_size: int,
    *,
    one_sequence_per_row: bool = False,
    lora_rng=None,
):
    """Per-slot response log-probs [S] and token counts [S] of a batch's token rows (docs/method.md
    §1).

    ``one_sequence_per_row``: the rows are not packed (see ``models.hidden_states``);
    ``lora_rng``: the LoRA adapters' dropout key (training steps only).

    With ``completion_positions`` in the batch (every loader batch), the LM head and the
    log-softmax run only on the hidden states of those positions, gathered into [R, C, D]
    (C: the batcher's static bound) — the prompt and padding positions, whose log-probs the
    loss mask would drop anyway, never reach the head. Without it, the head runs on every
    position and the mask is applied afterwards; both give the same log-probs.
    """
    tokens_RT = batch["tokens"]
    hidden_RTD = models.hidden_states(
        model_config,
        params,
        tokens_RT,
        positions_BT=batch["positions"],
        segment_ids_BT=batch["segment_ids"],
        one_sequence_per_row=one_sequence_per_row,
        lora_rng=lora_rng,
    )
    num_slots = 2 * batch["weight"].shape[0]
    if COMPLETION_KEY in batch:
        hidden_RCD, targets_RC, mask_RC, index_RC = losses.gather_completions(
            hidden_RTD,
            tokens_RT,
            batch["loss_mask"],
            batch["sequence_index"],
            batch[COMPLETION_KEY],
        )
        hidden_RCD = sharding.constrain(hidden_RCD, ACTIVATION_BTD)
    else:
        # logits at t predict token t+1: drop the last position, shift targets and masks.
        hidden_RCD, targets_RC = hidden_RTD[:, :-1], tokens_RT[:, 1:]
        mask_RC, index_RC = batch["loss_mask"][:, 1:], batch["sequence_index"][:, 1:]
    token_logps_RC = losses.chunked_token_logps(
        hidden_RCD,
        models.unembedding(model_config, params),
        targets_RC,
        chunk_size=chunk_size,
    )
    return (
        losses.segment_logps(token_logps_RC, mask_RC, index_RC, num_slots),
        losses.segment_token_counts(mask_RC, index_RC, num_slots),
    )
