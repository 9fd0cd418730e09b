"""Train-step throughput of ropo_jax's own preference step on a random batch of a fixed shape.

    python scripts/bench/train_step.py --preset=tiny --pairs=8 --prompt_len=32 --response_len=32 \\
        --steps=10 --loss=dpo --dtype=float32 --remat=none [--online_ref] [--micro_batches=2]

Random weights of ``--preset`` (``common.random_params(--seed)``: the same weights
scripts/bench/trl_dpo.py hands to transformers) and random tokens: ``--pairs`` pairs per
optimizer step, every prompt exactly ``--prompt_len`` tokens and every response exactly
``--response_len`` (the last one EOS), in the padded row layout of ``ropo_jax.data.batching``:
2·pairs rows of prompt_len + response_len tokens, no padding at all, the same tokens TRL's
collator builds, with completion positions of width response_len: the LM head projects only the
response positions (``--nocompletion_head``: every position, masked afterwards).

The step is ``ropo_jax.training.step.make_train_step("preference", ...)`` exactly as
``ropo_jax.training.loop.run_stage`` builds it: chunked policy log-probs, the registry loss, AdamW
with global-norm clipping, the NaN guard, the state donated. Reference log-probs come cached in the
batch (the default: the step holds no reference parameters) or, with ``--online_ref``, from a frozen
copy of the parameters run inside the step. ``--micro_batches=K`` splits the pairs into K
accumulated micro-batches (``_accumulate``'s scan). ``--lora_rank=R`` trains rank-R LoRA adapters
on every projection over the frozen random weights instead (docs/lora.md; the state holds the
adapters, the base is the step's reference argument).

Timed: ``--warmup`` steps after compilation, then ``--steps`` steps, each dispatched and waited on
with ``block_until_ready`` (the state and the metric sums). The batch is put on the device once
before the loop, so host data loading and transfer are not timed (the trainer overlaps them with
the previous step). Compilation is timed separately (``compile_time_s``). Prints one JSON line.
"""

import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import losses, models
from ropo_jax.data import batching
from ropo_jax.models import attention
from ropo_jax.models.config import ATTENTION_IMPLS
from ropo_jax.training import metrics, optim
from ropo_jax.training import step as train

_STEP = common.define_step_flags(flags)
_ATTENTION = flags.DEFINE_enum(
    "attention_impl",
    "auto",
    list(ATTENTION_IMPLS),
    "ModelConfig.attention_impl (auto: the library default for this backend — blocked on CPU, "
    "cuDNN flash on NVIDIA GPUs in bf16, splash on TPU; see ropo_jax.models.attention).",
)
_CHUNK = flags.DEFINE_integer("logps_chunk_size", 256, "StepConfig.logps_chunk_size.")
_LORA_RANK = flags.DEFINE_integer(
    "lora_rank", 0, "LoRA rank (0: full-weight training); adapters on every projection."
)
_COMPLETION_HEAD = flags.DEFINE_bool(
    "completion_head",
    True,
    "Run the LM head on the response positions only (batches carry completion_positions of "
    "width --response_len); false: on every position, masked afterwards.",
)


def make_batch(
    config,
    pairs: int,
    micro_batches: int,
    prompt_len: int,
    response_len: int,
    completion_head: bool = True,
):
    """[K, ...] host batch of the trainer's layout, plus cached reference log-probs. Every
    response has ``response_len`` tokens, the static completion bound of the batch."""
    prompts, chosen, rejected = common.random_pairs(
        config, pairs, prompt_len, response_len, seed=_STEP.seed.value
    )
    micro = pairs // micro_batches
    host_batches = []
    for k in range(micro_batches):
        rows = [
            (i, prompts[i], chosen[i], rejected[i], False)
            for i in range(k * micro, (k + 1) * micro)
        ]
        host_batches.append(
            batching.collate(
                rows,
                num_pairs=micro,
                seq_len=prompt_len + response_len,
                pad_id=0,
                packed=False,
                completion_len=response_len,
            )
        )
    batch_K = batching.stack_micro_batches(host_batches)
    if not completion_head:
        del batch_K[batching.COMPLETION_KEY]
    # Any finite values do: the reference only shifts the margin, not the work.
    uniform_logps = -response_len * np.log(config.vocab_size)
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        batch_K[key] = np.full(batch_K["weight"].shape, uniform_logps, np.float32)
    return batch_K


def peak_memory(rss_reset: bool) -> tuple[int, str]:
    """Accelerator: the allocator's peak over the whole process. CPU: the host RSS peak since
    the reset before the first step (or over the whole process if the reset failed)."""
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device_peak_bytes_in_use"
    source = "host_max_rss_during_steps" if rss_reset else "host_max_rss"
    return common.host_max_rss_bytes(), source


def main(argv):
    del argv
    pairs, micro_batches = _STEP.pairs.value, _STEP.micro_batches.value
    if pairs % micro_batches:
        raise app.UsageError(f"--pairs={pairs} is not divisible by --micro_batches={micro_batches}")
    setup_start = time.perf_counter()
    config = models.ModelConfig.preset(
        _STEP.preset.value,
        dtype=_STEP.dtype.value,
        remat_policy=_STEP.remat.value,
        attention_impl=_ATTENTION.value,
    )
    if _LORA_RANK.value > 0:
        config = config.replace(lora=models.LoraConfig(rank=_LORA_RANK.value))
    total_steps = _STEP.warmup.value + _STEP.steps.value
    optimizer = optim.make_optimizer(
        learning_rate=_STEP.learning_rate.value,
        total_steps=total_steps,
        schedule="constant",
        max_grad_norm=1.0,
    )
    params = jax.tree.map(jnp.asarray, common.random_params(config, _STEP.seed.value))
    # The state is donated every step, so the online reference needs buffers of its own.
    ref_params = (
        jax.tree.map(lambda x: jnp.array(x, copy=True), params) if _STEP.online_ref.value else None
    )
    if config.lora is not None:  # the random weights are the frozen base (and reference)
        ref_params = params
        state = jax.jit(lambda b: train.init_state(config, optimizer, jax.random.key(0), base=b))(
            params
        )
    else:
        state = jax.jit(lambda p: train.init_state(config, optimizer, jax.random.key(0), params=p))(
            params
        )
    del params
    step_config = train.StepConfig(
        loss=_STEP.loss.value,
        hyperparams=tuple(sorted(common.LOSS_HYPERPARAMS.get(_STEP.loss.value, {}).items())),
        logps_chunk_size=_CHUNK.value,
        online_reference=_STEP.online_ref.value,
        one_sequence_per_row=True,  # every row: one prompt + response, no padding
    )
    step = train.make_train_step("preference", step_config, config, optimizer)
    batch_K = jax.tree.map(
        jnp.asarray,
        make_batch(
            config,
            pairs,
            micro_batches,
            _STEP.prompt_len.value,
            _STEP.response_len.value,
            _COMPLETION_HEAD.value,
        ),
    )
    jax.block_until_ready((state, batch_K))
    setup_s = time.perf_counter() - setup_start

    compile_start = time.perf_counter()
    compiled = step.lower(state, batch_K, ref_params).compile()
    compile_s = time.perf_counter() - compile_start

    def run_step(state):
        start = time.perf_counter()
        state, sums = compiled(state, batch_K, ref_params)
        jax.block_until_ready((state, sums))
        return state, sums, time.perf_counter() - start

    rss_reset = common.reset_host_peak_rss()
    first_step_s = None
    for i in range(_STEP.warmup.value):
        state, _, seconds = run_step(state)
        first_step_s = seconds if i == 0 else first_step_s
    times, sums = [], None
    for _ in range(_STEP.steps.value):
        state, sums, seconds = run_step(state)
        times.append(seconds)
    memory_bytes, memory_source = peak_memory(rss_reset)

    device = jax.devices()[0]
    device_name = common.cpu_device_name() if device.platform == "cpu" else device.device_kind
    row = common.step_row(
        "ropo_jax",
        device_name,
        _STEP,
        config,
        times,
        metrics.device_peak_flops(device),
        loss_hyperparams=losses.validate_hyperparams(
            _STEP.loss.value, step_config.loss_hyperparams
        ),
        attention_impl=attention.impl_for(config),
        logps_chunk_size=_CHUNK.value,
        completion_head=_COMPLETION_HEAD.value,
    )
    finalized = metrics.finalize(jax.device_get(sums))
    row.update(
        {
            "peak_memory_bytes": memory_bytes,
            "peak_memory_source": memory_source,
            "compile_time_s": compile_s,
            "first_step_time_s": first_step_s,
            "setup_time_s": setup_s,
            "last_step_loss": finalized["loss"],
            "last_step_tokens": finalized["tokens"],
            "lora_rank": _LORA_RANK.value,
            "trained_params": sum(int(x.size) for x in jax.tree.leaves(state.params)),
            "jax_version": jax.__version__,
        }
    )
    common.print_json(row)


if __name__ == "__main__":
    app.run(main)
