"""Train-step throughput of ropo_jax's own preference step on a random batch of a fixed shape.

    python scripts/bench/train_step.py --preset=tiny --pairs=8 --prompt_len=32 --response_len=32 \\
        --steps=10 --loss=dpo --dtype=float32 --remat=none [--online_ref] [--micro_batches=2]

Random weights of ``--preset`` (``common.random_params(--seed)``: the same weights
scripts/bench/trl_dpo.py hands to transformers) and random tokens: ``--pairs`` pairs per
optimizer step, every prompt exactly ``--prompt_len`` tokens and every response exactly
``--response_len`` (the last one EOS), in the padded row layout of ``ropo_jax.data.batching``:
2·pairs rows of prompt_len + response_len tokens, no padding at all, the same tokens TRL's
collator builds.

The step is ``ropo_jax.train.make_train_step("preference", ...)`` exactly as ``trainer.run_stage``
builds it: chunked policy log-probs, the registry loss, AdamW with global-norm clipping, the
NaN guard, the state donated. Reference log-probs come cached in the batch (the default: the
step holds no reference parameters) or, with ``--online_ref``, from a frozen copy of the
parameters run inside the step. ``--micro_batches=K`` splits the pairs into K accumulated
micro-batches (``_accumulate``'s scan).

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

from ropo_jax import batches, losses, metrics, models, optim, train
from ropo_jax.data import batching

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights).")
_PAIRS = flags.DEFINE_integer("pairs", 8, "Preference pairs per optimizer step.")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens of every pair.")
_RESPONSE = flags.DEFINE_integer("response_len", 32, "Tokens of every response (EOS included).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed optimizer steps.")
_WARMUP = flags.DEFINE_integer("warmup", 2, "Untimed steps after compilation.")
_LOSS = flags.DEFINE_enum("loss", "dpo", sorted(losses.LOSSES), "Preference loss.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
_REMAT = flags.DEFINE_enum("remat", "none", list(models.config.REMAT_POLICIES), "Remat policy.")
_ONLINE = flags.DEFINE_bool("online_ref", False, "Run the reference forward inside the step.")
_MICRO = flags.DEFINE_integer("micro_batches", 1, "Gradient accumulation micro-batches.")
_ATTENTION = flags.DEFINE_enum(
    "attention_impl",
    None,
    ["xla", "cudnn"],
    "jax.nn.dot_product_attention implementation (unset: JAX picks; cudnn: flash attention on "
    "NVIDIA GPUs, bf16 only).",
)
_CHUNK = flags.DEFINE_integer("logps_chunk_size", 256, "StepConfig.logps_chunk_size.")
_LR = flags.DEFINE_float("learning_rate", 1e-6, "Constant learning rate (TRL's DPO default).")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the weights and tokens.")


def make_batch(config, pairs: int, micro_batches: int, prompt_len: int, response_len: int):
    """[K, ...] host batch of the trainer's layout, plus cached reference log-probs."""
    prompts, chosen, rejected = common.random_pairs(
        config, pairs, prompt_len, response_len, seed=_SEED.value
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
                rows, num_pairs=micro, seq_len=prompt_len + response_len, pad_id=0, packed=False
            )
        )
    batch_K = batches.stack_micro_batches(host_batches)
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
    pairs, micro_batches = _PAIRS.value, _MICRO.value
    if pairs % micro_batches:
        raise app.UsageError(f"--pairs={pairs} is not divisible by --micro_batches={micro_batches}")
    seq_len = _PROMPT.value + _RESPONSE.value
    setup_start = time.perf_counter()
    config = models.ModelConfig.preset(
        _PRESET.value,
        dtype=_DTYPE.value,
        remat_policy=_REMAT.value,
        attention_impl=_ATTENTION.value,
    )
    total_steps = _WARMUP.value + _STEPS.value
    optimizer = optim.make_optimizer(
        learning_rate=_LR.value, total_steps=total_steps, schedule="constant", max_grad_norm=1.0
    )
    params = jax.tree.map(jnp.asarray, common.random_params(config, _SEED.value))
    # The state is donated every step, so the online reference needs buffers of its own.
    ref_params = jax.tree.map(lambda x: jnp.array(x, copy=True), params) if _ONLINE.value else None
    state = jax.jit(lambda p: train.init_state(config, optimizer, jax.random.key(0), params=p))(
        params
    )
    del params
    step_config = train.StepConfig(
        loss=_LOSS.value,
        hyperparams=tuple(sorted(common.LOSS_HYPERPARAMS.get(_LOSS.value, {}).items())),
        logps_chunk_size=_CHUNK.value,
        online_reference=_ONLINE.value,
    )
    step = train.make_train_step("preference", step_config, config, optimizer)
    batch_K = jax.tree.map(
        jnp.asarray, make_batch(config, pairs, micro_batches, _PROMPT.value, _RESPONSE.value)
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
    for i in range(_WARMUP.value):
        state, _, seconds = run_step(state)
        first_step_s = seconds if i == 0 else first_step_s
    times, sums = [], None
    for _ in range(_STEPS.value):
        state, sums, seconds = run_step(state)
        times.append(seconds)
    memory_bytes, memory_source = peak_memory(rss_reset)

    device = jax.devices()[0]
    device_name = common.cpu_device_name() if device.platform == "cpu" else device.device_kind
    tokens_per_step = 2 * pairs * seq_len  # every token of both sequences of every pair
    row = {
        "impl": "ropo_jax",
        "device": device_name,
        "preset": _PRESET.value,
        "pairs": pairs,
        "prompt_len": _PROMPT.value,
        "response_len": _RESPONSE.value,
        "seq_len": seq_len,
        "micro_batches": micro_batches,
        "loss": _LOSS.value,
        "loss_hyperparams": losses.validate_hyperparams(_LOSS.value, step_config.loss_hyperparams),
        "dtype": _DTYPE.value,
        "remat": _REMAT.value,
        "attention_impl": _ATTENTION.value,
        "logps_chunk_size": _CHUNK.value,
        "online_ref": _ONLINE.value,
        "steps": _STEPS.value,
        "warmup": _WARMUP.value,
        "num_params": config.num_params(),
    }
    row.update(common.timing_fields(times, tokens_per_step=tokens_per_step, pairs_per_step=pairs))
    row.update(
        common.flop_fields(
            config,
            seq_len,
            tokens_per_step,
            row["step_time_s_median"],
            metrics.device_peak_flops(device),
            online_ref=_ONLINE.value,
        )
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
            "jax_version": jax.__version__,
        }
    )
    common.print_json(row)


if __name__ == "__main__":
    app.run(main)
