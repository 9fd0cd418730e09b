"""Per-device memory of the full-parameter DPO train step at the paper's scale, without
allocating anything: the step is lowered on abstract (shape-only) sharded inputs over a fake
8-device mesh and XLA's memory analysis of the partitioned program is printed.

    python scripts/memory_plan.py --models=mistral_7b,llama2_7b --layouts=1x8x1,1x4x2 \\
        --batch_pairs=8 --remat=full,dots --seq_len=1024

The step: policy forward over chosen+rejected (2·pairs sequences), chunked log-probs, DPO loss
with cached reference log-probs (no reference parameters), AdamW (float32 params and moments),
state donated. Per device: arguments (params + optimizer state + batch), temporaries (peak
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
import optax
from absl import app, flags

from ropo_jax import losses, models, sharding

_MODELS = flags.DEFINE_list("models", ["mistral_7b", "llama2_7b"], "Model presets.")
_LAYOUTS = flags.DEFINE_list("layouts", ["1x8x1", "1x4x2", "2x4x1"], "data x fsdp x tensor.")
_BATCH = flags.DEFINE_list("batch_pairs", ["8"], "Global preference pairs per step.")
_REMAT = flags.DEFINE_list("remat", ["full", "dots"], "Remat policies.")
_SEQ = flags.DEFINE_integer("seq_len", 1024, "Tokens per sequence (prompt + response).")
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")


def dpo_train_step(config, state, batch):
    params, opt_state = state

    def loss_fn(p):
        hidden_RTD = models.hidden_states(config, p, batch["tokens"])
        logps_RT = losses.chunked_token_logps(
            hidden_RTD[:, :-1],
            models.unembedding(config, p),
            batch["tokens"][:, 1:],
            chunk_size=256,
        )
        seq_logps_R = losses.sequence_logps(logps_RT, batch["loss_mask"][:, 1:])
        chosen_B, rejected_B = jnp.split(seq_logps_R, 2)
        loss_B, _ = losses.dpo_loss(
            chosen_B, rejected_B, batch["ref_chosen"], batch["ref_rejected"], beta=0.1
        )
        return jnp.mean(loss_B)

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = OPTIMIZER.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), opt_state), loss


OPTIMIZER = optax.adamw(5e-7, weight_decay=0.0)


def plan(preset: str, layout: str, pairs: int, remat: str, seq_len: int, dtype: str) -> dict:
    config = models.ModelConfig.preset(preset, remat_policy=remat, dtype=dtype)
    mesh = sharding.make_mesh(tuple(int(x) for x in layout.split("x")))
    abstract_params = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    param_shardings = sharding.tree_shardings(
        mesh, models.param_logical_axes(config), abstract_params
    )
    abstract_opt = jax.eval_shape(OPTIMIZER.init, abstract_params)
    # Optimizer moments mirror the parameters' shardings; scalars (step counts) are replicated.
    opt_shardings = optax.tree_map_params(
        OPTIMIZER,
        lambda _, s: s,
        abstract_opt,
        param_shardings,
        transform_non_params=lambda _: sharding.replicated(mesh),
    )
    rows = 2 * pairs
    batch = {
        "tokens": jax.ShapeDtypeStruct(
            (rows, seq_len), jnp.int32, sharding=sharding.batch_sharding(mesh, 2)
        ),
        "loss_mask": jax.ShapeDtypeStruct(
            (rows, seq_len), jnp.int32, sharding=sharding.batch_sharding(mesh, 2)
        ),
        "ref_chosen": jax.ShapeDtypeStruct(
            (pairs,), jnp.float32, sharding=sharding.replicated(mesh)
        ),
        "ref_rejected": jax.ShapeDtypeStruct(
            (pairs,), jnp.float32, sharding=sharding.replicated(mesh)
        ),
    }
    state = (
        jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_params,
            param_shardings,
        ),
        jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
            abstract_opt,
            opt_shardings,
        ),
    )
    start = time.time()
    step = jax.jit(
        dpo_train_step,
        static_argnums=0,
        donate_argnums=1,
        out_shardings=((param_shardings, opt_shardings), sharding.replicated(mesh)),
    )
    with jax.set_mesh(mesh):  # activates the model's activation sharding constraints
        compiled = step.lower(config, state, batch).compile()
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
