"""Per-device memory of the full-parameter DPO train step at the paper's scale, without
allocating anything: the step is lowered on abstract (shape-only) sharded inputs over a fake
8-device mesh and XLA's memory analysis of the partitioned program is printed.

    python scripts/memory_plan.py --models=mistral_7b,llama2_7b --layouts=1x8x1,1x4x2 \\
        --batch_pairs=8 --remat=full,dots --seq_len=1024

The step is the project's own (``ropo_jax.train.make_train_step``): policy forward over
chosen+rejected (2·pairs sequences), chunked log-probs, DPO loss with cached reference log-probs
(no reference parameters), AdamW with clipping (float32 params and moments), state donated.
Per device: arguments (params + optimizer state + batch), temporaries (peak
activations/gradients), and their sum. Numbers are XLA's CPU-backend estimates; accelerator
compilers schedule differently (see docs/models.md).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import time

import jax
import jax.numpy as jnp
from absl import app, flags

from ropo_jax import models, optim, sharding, train

_MODELS = flags.DEFINE_list("models", ["mistral_7b", "llama2_7b"], "Model presets.")
_LAYOUTS = flags.DEFINE_list("layouts", ["1x8x1", "1x4x2", "2x4x1"], "data x fsdp x tensor.")
_BATCH = flags.DEFINE_list("batch_pairs", ["8"], "Global preference pairs per step.")
_REMAT = flags.DEFINE_list("remat", ["full", "dots"], "Remat policies.")
_SEQ = flags.DEFINE_integer("seq_len", 1024, "Tokens per sequence (prompt + response).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
NAN_POLICY = "skip"


def abstract_batch(mesh, pairs: int, seq_len: int) -> dict:
    """Shapes of one padded preference batch (the data pipeline's row format, K = 1)."""
    rows = 2 * pairs

    def spec(shape, dtype):
        return jax.ShapeDtypeStruct(
            (1, *shape),
            dtype,
            sharding=jax.sharding.NamedSharding(
                mesh,
                sharding.logical_to_spec(
                    (None, "batch") + (None,) * (len(shape) - 1), mesh, shape=(1, *shape)
                ),
            ),
        )

    batch = {
        k: spec((rows, seq_len), jnp.int32)
        for k in ("tokens", "positions", "segment_ids", "loss_mask", "sequence_index")
    }
    batch.update(
        {
            k: spec((pairs,), jnp.int32)
            for k in ("example_index", "chosen_lengths", "rejected_lengths")
        }
    )
    batch["is_flipped"] = spec((pairs,), jnp.bool_)
    for key in ("weight", "ref_chosen_logps", "ref_rejected_logps"):
        batch[key] = spec((pairs,), jnp.float32)
    return batch


def plan(preset: str, layout: str, pairs: int, remat: str, seq_len: int, dtype: str) -> dict:
    """Lowers ropo_jax.train's DPO step (cached reference) on abstract sharded inputs."""
    config = models.ModelConfig.preset(preset, remat_policy=remat, dtype=dtype)
    mesh = sharding.make_mesh(tuple(int(x) for x in layout.split("x")))
    optimizer = optim.make_optimizer(learning_rate=5e-7, total_steps=1000, warmup_steps=100)
    abstract_state = jax.eval_shape(lambda: train.init_state(config, optimizer, jax.random.key(0)))
    state_sharding = train.state_shardings(config, optimizer, mesh, abstract_state)
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_sharding,
    )
    step = train.make_train_step(
        "preference",
        train.StepConfig(loss="dpo", nan_policy=NAN_POLICY),
        config,
        optimizer,
        state_sharding=state_sharding,
    )
    start = time.time()
    with jax.set_mesh(mesh):  # activates the model's activation sharding constraints
        compiled = step.lower(state, abstract_batch(mesh, pairs, seq_len), None).compile()
    seconds = time.time() - start
    memory = compiled.memory_analysis()
    gib = 1024**3
    return {
        "model": preset,
        "layout": layout,
        "pairs": pairs,
        "remat": remat,
        "params_B": config.num_params() / 1e9,
        "arguments_GiB": memory.argument_size_in_bytes / gib,
        "temp_GiB": memory.temp_size_in_bytes / gib,
        "total_GiB": (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / gib,
        "compile_s": seconds,
    }


def main(argv):
    del argv
    print(
        "| model | data×fsdp×tensor | pairs | remat | args GiB/dev | temp GiB/dev | total GiB/dev |"
    )
    print("|---|---|---|---|---|---|---|")
    for preset in _MODELS.value:
        for layout in _LAYOUTS.value:
            for pairs in _BATCH.value:
                for remat in _REMAT.value:
                    r = plan(preset, layout, int(pairs), remat, _SEQ.value, _DTYPE.value)
                    print(
                        f"| {r['model']} | {r['layout']} | {r['pairs']} | {r['remat']} | "
                        f"{r['arguments_GiB']:.1f} | {r['temp_GiB']:.1f} | {r['total_GiB']:.1f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    app.run(main)
