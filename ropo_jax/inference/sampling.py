"""Jitted KV-cache decoding for rejection sampling and evaluation.

Prompts of different lengths are decoded together: right-padded prompts are prefilled, then one
token per step inside a ``lax.while_loop`` that stops when every row has emitted EOS or
``max_new_tokens`` were generated. Greedy, temperature, top-k and top-p selection
(``sampling_ops``); deterministic for a given RNG key. Prompt lengths are bucketed (padded up to
a multiple of ``length_bucket``) so the number of compiles stays bounded over a data set.

Shape key: B batch, T prompt length, N new tokens, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from ropo_jax import models
from ropo_jax.inference.sampling_ops import select_next_token
from ropo_jax.models import ModelConfig
from ropo_jax.parallel import processes


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
    max_new_tokens: int = 64
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = off
    top_p: float = 1.0
    eos_token_id: int | None = None  # defaults to the model's
    pad_token_id: int = 0
    length_bucket: int = 64  # prompt lengths are padded up to a multiple of this


@functools.partial(jax.jit, static_argnums=(0, 1))
def generate_batch(
    config: ModelConfig,
    sampling: SamplingConfig,
    params,
    prompts_BT: jax.Array,
    lengths_B: jax.Array,
    rng: jax.Array,
) -> dict[str, jax.Array]:
    """Decodes up to ``max_new_tokens`` per row. Returns ``tokens`` [B, N] (padding after EOS),
    ``lengths`` [B] (new tokens including the EOS) and ``finished`` [B] (EOS emitted)."""
    batch, prompt_len = prompts_BT.shape
    steps = sampling.max_new_tokens
    eos = config.eos_token_id if sampling.eos_token_id is None else sampling.eos_token_id
    cache = models.init_cache(config, batch, prompt_len + steps)
    logits_BV, cache = models.prefill(config, params, prompts_BT, cache, lengths_B=lengths_B)

    def choose(logits_BV, step):
        key = jax.random.fold_in(rng, step)
        return select_next_token(
            logits_BV,
            key,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
        )

    def cond(state):
        step, _, _, finished_B, _ = state
        return (step < steps) & ~jnp.all(finished_B)

    def body(state):
        step, logits_BV, cache, finished_B, out_BN = state
        token_B = choose(logits_BV, step)
        token_B = jnp.where(finished_B, sampling.pad_token_id, token_B)
        out_BN = out_BN.at[:, step].set(token_B)
        finished_B = finished_B | (token_B == eos)
        logits_BV, cache = models.decode_step(config, params, token_B, cache)
        return step + 1, logits_BV, cache, finished_B, out_BN

    init = (
        jnp.int32(0),
        logits_BV,
        cache,
        jnp.zeros((batch,), bool),
        jnp.full((batch, steps), sampling.pad_token_id, jnp.int32),
    )
    _, _, _, finished_B, tokens_BN = jax.lax.while_loop(cond, body, init)
    is_eos_BN = tokens_BN == eos
    first_eos_B = jnp.argmax(is_eos_BN, axis=1)
    lengths_out_B = jnp.where(finished_B, first_eos_B + 1, steps)
    return {"tokens": tokens_BN, "lengths": lengths_out_B, "finished": finished_B}


def _bucket(length: int, bucket: int) -> int:
    return max(bucket, -(-length // bucket) * bucket)


def generate(
    config: ModelConfig,
    params,
    prompts: list[list[int]],
    sampling: SamplingConfig,
    *,
    rng: jax.Array,
    batch_size: int = 32,
    progress: bool = True,
) -> list[list[int]]:
    """Samples one continuation per prompt (token-id lists, EOS kept when emitted).

    Prompts are processed in their given order in fixed-size batches (the last is padded with
    copies of a real prompt and the copies' outputs dropped), so outputs are a deterministic
    function of (params, prompts, sampling, rng, batch_size).
    """
    if not prompts:
        return []
    empty = [i for i, p in enumerate(prompts) if not p]
    if empty:
        raise ValueError(f"generate: prompts {empty[:5]} are empty (need at least one token)")
    outputs: list[list[int]] = []
    num_batches = -(-len(prompts) // batch_size)
    compiled_shapes = set()
    for b in processes.progress(
        range(num_batches), desc="sampling", disable=not progress, unit="batch"
    ):
        chunk = prompts[b * batch_size : (b + 1) * batch_size]
        real = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - real)
        width = _bucket(max(len(p) for p in chunk), sampling.length_bucket)
        tokens_BT = np.full((batch_size, width), sampling.pad_token_id, np.int32)
        for i, p in enumerate(chunk):
            tokens_BT[i, : len(p)] = p
        lengths_B = np.array([len(p) for p in chunk], np.int32)
        compiled_shapes.add(width)
        out = generate_batch(
            config,
            sampling,
            params,
            jnp.asarray(tokens_BT),
            jnp.asarray(lengths_B),
            jax.random.fold_in(rng, b),
        )
        tokens_BN, lengths_out_B = jax.device_get((out["tokens"], out["lengths"]))
        outputs.extend(tokens_BN[i, : lengths_out_B[i]].tolist() for i in range(real))
    logging.info(
        "sampled %d prompts with %d prompt-length buckets", len(prompts), len(compiled_shapes)
    )
    return outputs
