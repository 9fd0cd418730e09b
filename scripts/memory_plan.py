"""Per-device memory of the full-parameter DPO train step, without allocating anything: the step
is lowered on abstract (shape-only) sharded inputs over a fake 8-device mesh and XLA's memory
analysis of the partitioned program is printed, with whether it fits ``--device_memory_gib``.

Either chosen settings (every combination of the lists)::

    python scripts/memory_plan.py --models=mistral_7b,llama2_7b --layouts=1x8x1,1x4x2 \\
        --batch_pairs=8 --remat=full,dots --seq_len=1024

or the defaults of experiment configs, exactly as a run of ``ropo_jax.main`` would set them
(model preset, dtype, remat policy, mesh, micro-batch size; one row per config)::

    python scripts/memory_plan.py \\
        --experiments=experiments/paper/ultrafeedback.py:mistral_7b,experiments/sft.py

With ``--lora_rank=R`` (R > 0) the step trains LoRA adapters (docs/lora.md) on
``--lora_targets`` over a frozen base held in ``--lora_base_dtype``: the arguments are then the
base + the float32 adapters and their AdamW moments + the batch, e.g. a 7B model on one 80 GB
GPU or a v5e-8 (8 × 16 GiB)::

    python scripts/memory_plan.py --models=mistral_7b,llama3_8b --layouts=1x1x1 \\
        --batch_pairs=8 --remat=full --lora_rank=16

The step is the project's own (``ropo_jax.training.step.make_train_step``): policy forward over
chosen+rejected (2·pairs sequences per micro-batch), the LM head on the response positions only
(``--response_len`` of them per sequence), DPO loss with cached reference log-probs (no reference
parameters), AdamW with clipping (float32 params and moments), state donated. Per device:
arguments (params + optimizer state + batch), temporaries (peak activations/gradients), and their
sum. Numbers are XLA's CPU-backend estimates; accelerator compilers schedule differently (see
docs/models.md).
"""

import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()

import importlib.util
import math
import time

import jax
import jax.numpy as jnp
from absl import app, flags

from ropo_jax import models
from ropo_jax.data import batching
from ropo_jax.models.config import REMAT_POLICIES
from ropo_jax.parallel import sharding
from ropo_jax.training import optim
from ropo_jax.training import step as train

_MODELS = flags.DEFINE_list("models", ["mistral_7b", "llama2_7b"], "Model presets.")
_LAYOUTS = flags.DEFINE_list("layouts", ["1x8x1", "1x4x2", "2x4x1"], "data x fsdp x tensor.")
_BATCH = flags.DEFINE_list("batch_pairs", ["8"], "Preference pairs per micro-batch (global).")
_REMAT = flags.DEFINE_list(
    "remat", ["full", "dots"], f"Remat policies ({', '.join(REMAT_POLICIES)}, or auto)."
)
_SEQ = flags.DEFINE_integer("seq_len", 1024, "Tokens per sequence (prompt + response).")
_RESPONSE = flags.DEFINE_integer(
    "response_len", 512, "Response tokens per sequence (the LM head's rows); capped at seq_len-1."
)
_DTYPE = flags.DEFINE_string("dtype", "bfloat16", "Compute dtype.")
_EXPERIMENTS = flags.DEFINE_list(
    "experiments",
    [],
    "Experiment configs (FILE[:ARG]) to plan at their defaults instead of --models etc.; "
    "sequence length from their data.raw.max_length (or --seq_len when that is 0/unset).",
)
_DEVICE_GIB = flags.DEFINE_float(
    "device_memory_gib", 80.0, "Memory per device the plan must fit (80: A100/H100 80 GB)."
)
_LORA_RANK = flags.DEFINE_integer("lora_rank", 0, "LoRA rank (0: full-weight training).")
_LORA_TARGETS = flags.DEFINE_list(
    "lora_targets", ["q", "k", "v", "o", "gate", "up", "down"], "LoRA's projections."
)
_LORA_BASE_DTYPE = flags.DEFINE_string(
    "lora_base_dtype",
    "bfloat16",
    "dtype of LoRA's frozen base (its checkpoint's: bfloat16 for the published 7B/8B ones).",
)
NAN_POLICY = "skip"


def abstract_batch(mesh, pairs: int, seq_len: int, response_len: int) -> dict:
    """Shapes of one padded preference batch (the data pipeline's row format, K = 1)."""
    rows = 2 * pairs
    example = batching.collate([], num_pairs=1, seq_len=2, pad_id=0, completion_len=1)
    shapes = {key: (pairs,) for key in batching.PAIR_KEYS}
    shapes.update({key: (rows, seq_len) for key in batching.TOKEN_KEYS})
    shapes[batching.COMPLETION_KEY] = (rows, max(1, min(response_len, seq_len - 1)))
    dtypes = {key: value.dtype for key, value in example.items()}
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        shapes[key], dtypes[key] = (pairs,), jnp.float32

    def spec(shape, dtype):
        axes = (None, "batch") + (None,) * (len(shape) - 1)
        return jax.ShapeDtypeStruct(
            (1, *shape),
            dtype,
            sharding=jax.sharding.NamedSharding(
                mesh, sharding.logical_to_spec(axes, mesh, shape=(1, *shape))
            ),
        )

    return {key: spec(shapes[key], dtypes[key]) for key in shapes}


def _mesh(shape) -> jax.sharding.Mesh:
    devices = jax.devices()
    known = math.prod(s for s in shape if s != -1)
    if -1 not in shape:
        devices = devices[:known]  # e.g. 1x1x1: one device of the 8
    return sharding.make_mesh(tuple(shape), devices=devices)


def plan(config, mesh_shape, pairs: int, seq_len: int, response_len: int) -> dict:
    """Lowers ropo_jax.training.step's DPO step (cached reference) on abstract sharded inputs."""
    mesh = _mesh(mesh_shape)
    optimizer = optim.make_optimizer(learning_rate=5e-7, total_steps=1000, warmup_steps=100)
    base = None
    if config.lora is not None:  # LoRA: the frozen base is the step's third argument
        weights = config.replace(param_dtype=_LORA_BASE_DTYPE.value, lora=None)
        base = jax.eval_shape(lambda: models.init_params(weights, jax.random.key(0)))
        base_sharding = sharding.tree_shardings(mesh, models.param_logical_axes(weights), base)
        base = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), base, base_sharding
        )
    abstract_state = jax.eval_shape(
        lambda: train.init_state(config, optimizer, jax.random.key(0), base=base)
    )
    state_sharding = train.state_shardings(config, optimizer, mesh, abstract_state)
    state = jax.tree.map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        abstract_state,
        state_sharding,
    )
    step = train.make_train_step(
        "preference",
        train.StepConfig(loss="dpo", nan_policy=NAN_POLICY, one_sequence_per_row=True),
        config,
        optimizer,
        state_sharding=state_sharding,
    )
    start = time.time()
    batch = abstract_batch(mesh, pairs, seq_len, response_len)
    with jax.set_mesh(mesh):  # activates the model's activation sharding constraints
        compiled = step.lower(state, batch, base).compile()
    memory = compiled.memory_analysis()
    gib = 1024**3
    total = (memory.argument_size_in_bytes + memory.temp_size_in_bytes) / gib
    return {
        "layout": "x".join(str(s) for s in mesh.devices.shape),
        "pairs": pairs,
        "remat": config.remat_policy,
        "lora": "full" if config.lora is None else f"r{config.lora.rank}",
        "params_B": config.num_params() / 1e9,
        "arguments_GiB": memory.argument_size_in_bytes / gib,
        "temp_GiB": memory.temp_size_in_bytes / gib,
        "total_GiB": total,
        "fits": total <= _DEVICE_GIB.value,
        "compile_s": time.time() - start,
    }


def experiment_settings(spec: str) -> dict:
    """What a run of this config would train: its model, mesh and micro-batch, as
    ``ropo_jax.run.pipeline`` reads them."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("experiment_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    c = module.get_config(arg) if arg else module.get_config()
    m = c.model
    lora = None
    if "lora" in m and int(m.lora.rank) > 0:
        lora = models.LoraConfig(
            rank=int(m.lora.rank), alpha=float(m.lora.alpha), targets=tuple(m.lora.targets)
        )
    config = models.ModelConfig.preset(
        m.preset,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        remat_policy=m.remat_policy,
        attention_impl="xla",  # the CPU backend's lowering (memory as the dense kernel needs)
        lora=lora,
    )
    block = c.train
    seq_len = int(c.data.raw.get("max_length", 0) or 0) or _SEQ.value
    return {
        "preset": m.preset,
        "config": config,
        "mesh_shape": tuple(int(s) for s in c.mesh.shape),
        "pairs": int(block.batch_size) // int(block.micro_batches),
        "seq_len": seq_len,
        "response_len": seq_len - int(c.data.raw.get("max_prompt_length", seq_len // 2)),
    }


def row_cells(r) -> str:
    return (
        f"{r['layout']} | {r['pairs']} | {r['remat']} | {r['lora']} | {r['arguments_GiB']:.1f} | "
        f"{r['temp_GiB']:.1f} | {r['total_GiB']:.1f} | {'yes' if r['fits'] else 'NO'} |"
    )


COLUMNS = (
    "data×fsdp×tensor | pairs/micro-batch | remat | trained | args GiB/dev | temp GiB/dev | "
    "total GiB/dev | fits {gib:g} GiB |"
)


def main(argv):
    del argv
    columns = COLUMNS.format(gib=_DEVICE_GIB.value)
    if _EXPERIMENTS.value:
        print(f"| config | model | {columns}")
        print("|---" * 10 + "|")
        for spec in _EXPERIMENTS.value:
            s = experiment_settings(spec)
            r = plan(s["config"], s["mesh_shape"], s["pairs"], s["seq_len"], s["response_len"])
            print(f"| {spec} | {s['preset']} | {row_cells(r)}", flush=True)
        return
    print(f"| model | {columns}")
    print("|---" * 9 + "|")
    lora = None
    if _LORA_RANK.value > 0:
        lora = models.LoraConfig(rank=_LORA_RANK.value, targets=tuple(_LORA_TARGETS.value))
    for preset in _MODELS.value:
        for layout in _LAYOUTS.value:
            for pairs in _BATCH.value:
                for remat in _REMAT.value:
                    config = models.ModelConfig.preset(
                        preset,
                        remat_policy=remat,
                        dtype=_DTYPE.value,
                        attention_impl="xla",
                        lora=lora,
                    )
                    shape = tuple(int(x) for x in layout.split("x"))
                    r = plan(config, shape, int(pairs), _SEQ.value, _RESPONSE.value)
                    print(f"| {preset} | {row_cells(r)}", flush=True)


if __name__ == "__main__":
    app.run(main)
