"""What the DPO train step becomes on an accelerator, seen from any machine: the step is lowered
for ``--platform`` (TPU or CUDA GPU) with JAX's cross-platform lowering, on abstract inputs
(``jax.ShapeDtypeStruct``: nothing is allocated, no accelerator is needed).

    python scripts/bench/lowering.py --platform=tpu --preset=tiny --pairs=8 --prompt_len=128 \\
        --response_len=128 [--remat=full] [--attention_impl=auto] [--dtype=bfloat16] \\
        [--lora_rank=16]

The step is ``ropo_jax.training.step.make_train_step("preference", ...)`` as
scripts/bench/train_step.py builds it (AdamW with clipping, the NaN guard, cached reference
log-probs unless ``--online_ref``), on a padded batch of ``--pairs`` pairs of ``--prompt_len`` +
``--response_len`` tokens in the layout of ``ropo_jax.data.batching`` (completion positions of
width ``--response_len``), one device, no mesh. Before lowering, the model's attention
implementation is set to ``ropo_jax.models.attention.resolve(--attention_impl, --platform)``.
With ``--lora_rank`` > 0 the step trains LoRA adapters on every projection over a frozen base in
the compute dtype (docs/lora.md): the state is the adapters, the base the step's third argument.

Prints one JSON line:

- ``platform``, ``attention_impl`` (the resolved implementation, null if the attention module
  is missing), ``custom_calls`` (sorted distinct custom-call targets of the lowered StableHLO)
  and ``attention_kernel``: ``cudnn_flash`` (``__cudnn$fmha*``), ``splash`` (a Mosaic
  ``tpu_custom_call`` whose kernel is named splash…), ``mosaic`` (another Mosaic kernel),
  ``triton``, or ``xla`` (no attention custom call);
- ``lm_head_rows``: positions the LM head projects per step (policy forward; the online
  reference projects as many again);
- ``flops``: ``analytic`` (MaxText's accounting: 6 · matmul parameters · tokens for the layers'
  weights, 6 · D · V · ``lm_head_rows`` for the head, and attention's 4 · L · N · H · T² per row
  forward, halved for the causal mask, ×3 with the backward pass; the embedding lookup is no
  matmul; the online reference adds its forward, a third of each term), its parts, and
  ``cost_analysis``: the lowered module's own estimate (``Lowered.cost_analysis()``, XLA's HLO
  cost analysis before optimisation: custom calls count nothing and loop bodies once, so it is
  no substitute for the analytic count), or null;
- ``memory``: the compiler's memory analysis (bytes) when ``--platform`` is the local backend,
  else null (the TPU and GPU compilers are not available on a CPU host).

Lowering cuDNN attention checks the cuDNN version at trace time; on a host without cuDNN the
check is answered with ``--cudnn_version`` (a version the kernel supports), which changes
nothing in the lowered module but lets it be built.
"""

import json
import os
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common

from ropo_jax import losses, models
from ropo_jax.data import batching
from ropo_jax.training import optim
from ropo_jax.training import step as train

PLATFORMS = ("tpu", "cuda")
_PLATFORM = flags.DEFINE_enum("platform", "tpu", PLATFORMS, "Platform to lower the step for.")
_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset.")
_PAIRS = flags.DEFINE_integer("pairs", 8, "Preference pairs per optimizer step.")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens of every pair.")
_RESPONSE = flags.DEFINE_integer("response_len", 32, "Tokens of every response.")
_REMAT = flags.DEFINE_enum(
    "remat", "auto", list(models.config.REMAT_CHOICES), "Remat policy (auto: by model size)."
)
_ATTENTION = flags.DEFINE_string(
    "attention_impl", "auto", "ModelConfig.attention_impl before resolving for --platform."
)
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "Compute dtype.")
_LOSS = flags.DEFINE_enum("loss", "dpo", sorted(losses.LOSSES), "Preference loss.")
_MICRO = flags.DEFINE_integer("micro_batches", 1, "Gradient accumulation micro-batches.")
_ONLINE_REF = flags.DEFINE_bool("online_ref", False, "Reference forward inside the step.")
_CHUNK = flags.DEFINE_integer("logps_chunk_size", 256, "StepConfig.logps_chunk_size.")
_LORA_RANK = flags.DEFINE_integer(
    "lora_rank", 0, "LoRA rank (0: full-weight training); adapters on every projection."
)
_CUDNN_VERSION = flags.DEFINE_integer(
    "cudnn_version", 91000, "cuDNN version assumed when lowering for CUDA on a host without it."
)


def attention_module():
    """``ropo_jax.models.attention`` if it is there and importable with ``resolve``, else None."""
    try:
        from ropo_jax.models import attention
    except ImportError:
        return None
    return attention if hasattr(attention, "resolve") else None


def resolve_attention(impl: str, platform: str, config) -> str | None:
    module = attention_module()
    if module is None:
        print(
            "lowering.py: ropo_jax.models.attention (with resolve) is not available; the step is "
            f"lowered with the model's default attention, not --attention_impl={impl}",
            file=sys.stderr,
        )
        return None
    return module.resolve(impl, platform, dtype=config.dtype, head_dim=config.head_dim)


def allow_cudnn_lowering(version: int) -> None:
    """Answers jax's cuDNN version check where no cuDNN is installed (lowering only)."""
    from jax._src.cudnn import fused_attention_stablehlo as cudnn

    if cudnn.cuda_versions is None:
        cudnn.check_cudnn_version = lambda: version


def abstract_batch(pairs: int, micro_batches: int, prompt_len: int, response_len: int) -> dict:
    """[K, ...] ShapeDtypeStructs of a padded batch; keys and dtypes are those ``collate``
    gives, plus the cached reference log-probs."""
    micro = pairs // micro_batches
    rows, length = 2 * micro, prompt_len + response_len
    example = batching.collate([], num_pairs=1, seq_len=2, pad_id=0, completion_len=1)
    shapes = {key: (micro,) for key in batching.PAIR_KEYS}
    shapes.update({key: (rows, length) for key in batching.TOKEN_KEYS})
    shapes[batching.COMPLETION_KEY] = (rows, response_len)
    batch = {
        key: jax.ShapeDtypeStruct((micro_batches, *shapes[key]), example[key].dtype)
        for key in example
    }
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        batch[key] = jax.ShapeDtypeStruct((micro_batches, micro), jnp.float32)
    return batch


def custom_call_targets(text: str) -> list[str]:
    """Distinct custom-call targets of a StableHLO module's text (pretty or generic form)."""
    pretty = re.findall(r'custom_call\s+@"?([^\s("]+)"?', text)
    generic = re.findall(r'call_target_name\s*=\s*"([^"]+)"', text)
    return sorted(set(pretty) | set(generic))


def attention_kernel(targets: list[str], text: str) -> str:
    if any(t.startswith("__cudnn$fmha") for t in targets):
        return "cudnn_flash"
    if "tpu_custom_call" in targets:
        names = re.findall(r'kernel_name\s*=\s*"([^"]+)"', text)
        return "splash" if any("splash" in n for n in names) else "mosaic"
    if any("triton" in t for t in targets):
        return "triton"
    return "xla"


def analytic_flops(config, *, rows: int, length: int, head_rows: int, online_ref: bool) -> dict:
    """MaxText-style FLOPs of one step (see the module docstring)."""
    d, f, h = config.hidden_size, config.intermediate_size, config.head_dim
    n_heads, n_kv, n_layers = config.num_heads, config.num_kv_heads, config.num_layers
    layer_weights = n_layers * (d * h * (2 * n_heads + 2 * n_kv) + 3 * d * f)
    tokens = rows * length
    forward = {
        "layers_matmul": 2 * layer_weights * tokens,
        "lm_head": 2 * d * config.vocab_size * head_rows,
        # QKᵀ and PV: 2 · 2 · T² · N · H per row and layer, half of it under the causal mask.
        "attention": 4 * n_layers * n_heads * h * length * length * rows / 2,
    }
    factor = 3 + (1 if online_ref else 0)
    parts = {key: factor * value for key, value in forward.items()}
    return {"analytic": sum(parts.values()), **parts}


def lower(platform: str) -> dict:
    pairs, micro_batches = _PAIRS.value, _MICRO.value
    if pairs % micro_batches:
        raise app.UsageError(f"--pairs={pairs} is not divisible by --micro_batches={micro_batches}")
    config = models.ModelConfig.preset(_PRESET.value, dtype=_DTYPE.value, remat_policy=_REMAT.value)
    if _LORA_RANK.value > 0:
        config = config.replace(lora=models.LoraConfig(rank=_LORA_RANK.value))
    impl = resolve_attention(_ATTENTION.value, platform, config)
    if impl is not None:
        config = config.replace(attention_impl=impl)
    if platform == "cuda":
        allow_cudnn_lowering(_CUDNN_VERSION.value)
    optimizer = optim.make_optimizer(
        learning_rate=1e-6, total_steps=10, schedule="constant", max_grad_norm=1.0
    )
    base = None
    if config.lora is not None:  # the frozen base, held in the compute dtype
        weights = config.replace(param_dtype=config.dtype, lora=None)
        base = jax.eval_shape(lambda: models.init_params(weights, jax.random.key(0)))
    state = jax.eval_shape(
        lambda: train.init_state(config, optimizer, jax.random.key(0), base=base)
    )
    ref_params = state.params if _ONLINE_REF.value else None
    if base is not None:
        ref_params = base  # with LoRA the step's reference argument is the base (and reference)
    step_config = train.StepConfig(
        loss=_LOSS.value,
        hyperparams=tuple(sorted(common.LOSS_HYPERPARAMS.get(_LOSS.value, {}).items())),
        logps_chunk_size=_CHUNK.value,
        online_reference=_ONLINE_REF.value,
        one_sequence_per_row=True,  # abstract_batch: padded rows, as the bucketed loader gives
    )
    step = train.make_train_step("preference", step_config, config, optimizer)
    batch = abstract_batch(pairs, micro_batches, _PROMPT.value, _RESPONSE.value)
    lowered = step.trace(state, batch, ref_params).lower(lowering_platforms=(platform,))
    text = lowered.as_text()
    targets = custom_call_targets(text)

    # lm_head_rows is computed from the static bound the model code gathers by (the batch's
    # completion_positions shape, K × R × C), not read back from the module: the head's matmul
    # runs chunk by chunk inside a loop whose trip count the text does not state plainly.
    k, rows, width = batch[batching.COMPLETION_KEY].shape
    head_rows = k * rows * width
    length = _PROMPT.value + _RESPONSE.value
    flops = analytic_flops(
        config, rows=k * rows, length=length, head_rows=head_rows, online_ref=_ONLINE_REF.value
    )
    try:
        cost = lowered.cost_analysis()
    except Exception:  # an estimate some platforms do not give
        cost = None
    cost_flops = cost.get("flops") if isinstance(cost, dict) else None
    flops["cost_analysis"] = float(cost_flops) if cost_flops is not None else None

    memory = None
    local = {"gpu": "cuda"}.get(jax.default_backend(), jax.default_backend())
    if local == platform:
        analysis = lowered.compile().memory_analysis()
        memory = {
            name: int(getattr(analysis, f"{name}_size_in_bytes"))
            for name in ("argument", "output", "alias", "temp", "generated_code")
            if hasattr(analysis, f"{name}_size_in_bytes")
        }
    return {
        "platform": platform,
        "preset": _PRESET.value,
        "pairs": pairs,
        "prompt_len": _PROMPT.value,
        "response_len": _RESPONSE.value,
        "micro_batches": micro_batches,
        "dtype": _DTYPE.value,
        "remat": _REMAT.value,
        "remat_policy": config.remat_policy,
        "loss": _LOSS.value,
        "online_ref": _ONLINE_REF.value,
        "lora_rank": _LORA_RANK.value,
        "trained_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params)),
        "attention_impl_requested": _ATTENTION.value,
        "attention_impl": impl,
        "custom_calls": targets,
        "attention_kernel": attention_kernel(targets, text),
        "lm_head_rows": head_rows,
        "tokens_per_step": k * rows * length,
        "num_params": config.num_params(),
        "flops": flops,
        "memory": memory,
        "jax_version": jax.__version__,
    }


def main(argv):
    del argv
    row = lower(_PLATFORM.value)
    print(json.dumps(row, default=lambda x: x.item() if isinstance(x, np.generic) else str(x)))


if __name__ == "__main__":
    app.run(main)
