"""Shared pieces of the benchmark scripts: the random preference batch both implementations
train on, the word-level tokenizer that turns it into text for TRL, timing summaries, FLOP and
memory fields of the JSON line.

Only NumPy and ropo_jax (no torch) at import time, so the JAX benchmarks never load PyTorch.

Shape key: N pairs, P prompt length, L response length.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import types

import numpy as np

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
# Knobs the registry requires without a default (modelling choices); any valid value costs the
# same, so the benchmark fixes one. Losses with complete defaults are not listed.
LOSS_HYPERPARAMS = {
    "cdpo": {"label_smoothing": 0.1},
    "rdpo": {"flip_rate": 0.1},
    "dpo_nll": {"nll_weight": 1.0},
    "simpo": {"gamma": 0.5},
    "dr_dpo": {"beta_prime": 1.0},
    "lcpo_em": {"eta": 0.1},
}
# The TRL loss_type computing the same objective; losses TRL lacks (ropo, ...) run as
# "sigmoid" there: the loss itself is O(pairs) work next to the model's forward and backward.
TRL_LOSS_TYPES = {"dpo": "sigmoid", "rdpo": "robust", "ipo": "ipo", "hinge": "hinge"}
INIT_STD = 0.02  # transformers' Llama initializer_range


def define_step_flags(flags) -> types.SimpleNamespace:
    """The flags train_step.py and trl_dpo.py share (absl ``flags`` module passed in), so that
    compare.py hands both sides the same model, batch, optimiser and loss settings."""
    from ropo_jax import losses, models

    return types.SimpleNamespace(
        preset=flags.DEFINE_string("preset", "tiny", "Model preset (random weights)."),
        pairs=flags.DEFINE_integer("pairs", 8, "Preference pairs per optimizer step."),
        prompt_len=flags.DEFINE_integer("prompt_len", 32, "Prompt tokens of every pair."),
        response_len=flags.DEFINE_integer(
            "response_len", 32, "Tokens of every response (EOS included)."
        ),
        steps=flags.DEFINE_integer("steps", 10, "Timed optimizer steps."),
        warmup=flags.DEFINE_integer("warmup", 2, "Untimed steps (after compilation in JAX)."),
        loss=flags.DEFINE_enum("loss", "dpo", sorted(losses.LOSSES), "Preference loss."),
        dtype=flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype."),
        remat=flags.DEFINE_enum(
            "remat",
            "auto",
            list(models.config.REMAT_CHOICES),
            "Remat policy; auto: the library default for the preset's size (none below 100M "
            "parameters). TRL: gradient checkpointing unless it resolves to none.",
        ),
        online_ref=flags.DEFINE_bool(
            "online_ref", False, "Run the reference forward inside the step."
        ),
        micro_batches=flags.DEFINE_integer(
            "micro_batches", 1, "Gradient accumulation micro-batches."
        ),
        learning_rate=flags.DEFINE_float(
            "learning_rate", 1e-6, "Constant learning rate (TRL's DPO default)."
        ),
        seed=flags.DEFINE_integer("seed", 0, "Seed of the weights and tokens."),
    )


def random_params(config, seed: int = 0) -> dict:
    """Host (NumPy float32) parameters in ropo_jax's layout: N(0, 0.02²) weights, unit norm
    scales. Drawn with NumPy from ``jax.eval_shape(models.init_params)``: no XLA compilation
    (compiling the random initialisers costs ~10 s on a busy 2-core CPU, more than a tiny step)
    and no accelerator memory, so train_step.py and trl_dpo.py train identical weights."""
    import jax

    from ropo_jax import models

    shapes = jax.eval_shape(lambda: models.init_params(config, jax.random.key(0)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if "norm" in jax.tree_util.keystr(path):
            return np.ones(leaf.shape, np.float32)
        return rng.standard_normal(leaf.shape, dtype=np.float32) * np.float32(INIT_STD)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def reserved_ids(config) -> set[int]:
    """Ids random tokens avoid: 0 (unknown/padding), BOS, EOS, pad."""
    ids = {0, config.bos_token_id, config.eos_token_id, config.pad_token_id}
    return {i for i in ids if i is not None and i >= 0}


def random_pairs(config, num_pairs: int, prompt_len: int, response_len: int, seed: int = 0):
    """(prompts_NP, chosen_NL, rejected_NL) int32: random ordinary tokens, every response ending
    in EOS (as TRL appends it), so both implementations see exactly P + L tokens per sequence."""
    if prompt_len < 1 or response_len < 1:
        raise ValueError("prompt_len and response_len must be at least 1")
    allowed = np.setdiff1d(np.arange(config.vocab_size), sorted(reserved_ids(config)))
    rng = np.random.default_rng(seed)
    prompts_NP = rng.choice(allowed, size=(num_pairs, prompt_len)).astype(np.int32)
    chosen_NL = rng.choice(allowed, size=(num_pairs, response_len)).astype(np.int32)
    rejected_NL = rng.choice(allowed, size=(num_pairs, response_len)).astype(np.int32)
    if config.eos_token_id is not None:
        chosen_NL[:, -1] = config.eos_token_id
        rejected_NL[:, -1] = config.eos_token_id
    return prompts_NP, chosen_NL, rejected_NL


def token_names(config) -> list[str]:
    """One whitespace-free word per token id (id i → ``t{i}``; the special ids by their role)."""
    names = [f"t{i}" for i in range(config.vocab_size)]
    names[0] = "<unk>"
    for token_id, name in ((config.bos_token_id, "<s>"), (config.eos_token_id, "</s>")):
        if token_id is not None and 0 < token_id < config.vocab_size:
            names[token_id] = name
    return names


def timing_fields(times: list[float], *, tokens_per_step: int, pairs_per_step: int) -> dict:
    """Median/min/max step time and the throughputs at the median (robust to a noisy host)."""
    median = statistics.median(times)
    return {
        "step_time_s_median": median,
        "step_time_s_min": min(times),
        "step_time_s_max": max(times),
        "step_times_s": times,
        "tokens_per_step": tokens_per_step,
        "tokens_per_s": tokens_per_step / median,
        "pairs_per_s": pairs_per_step / median,
    }


def step_row(impl, device_name, step, config, times, peak_flops, **settings) -> dict:
    """The JSON row both train-step benchmarks print: the shared flags ``step``
    (``define_step_flags``), side-specific ``settings``, timings and FLOP fields."""
    from ropo_jax import models

    pairs, seq_len = step.pairs.value, step.prompt_len.value + step.response_len.value
    tokens_per_step = 2 * pairs * seq_len  # every token of both sequences of every pair
    row = {
        "impl": impl,
        "device": device_name,
        "preset": step.preset.value,
        "pairs": pairs,
        "prompt_len": step.prompt_len.value,
        "response_len": step.response_len.value,
        "seq_len": seq_len,
        "micro_batches": step.micro_batches.value,
        "loss": step.loss.value,
        "dtype": step.dtype.value,
        "remat": step.remat.value,
        # what "auto" resolved to for this preset
        "remat_policy": models.ModelConfig.preset(
            step.preset.value, remat_policy=step.remat.value
        ).remat_policy,
        "online_ref": step.online_ref.value,
        "steps": step.steps.value,
        "warmup": step.warmup.value,
        "num_params": config.num_params(),
        **settings,
    }
    row.update(timing_fields(times, tokens_per_step=tokens_per_step, pairs_per_step=pairs))
    row.update(
        flop_fields(
            config,
            seq_len,
            tokens_per_step,
            row["step_time_s_median"],
            peak_flops,
            online_ref=step.online_ref.value,
        )
    )
    return row


def flop_fields(config, seq_len: int, tokens_per_step: int, median_s: float, peak, *, online_ref):
    """Model FLOPs of one step (ropo_jax.training.metrics formula: policy forward + backward, plus
    the reference forward when it runs inside the step) and MFU against ``peak`` (None → null)."""
    from ropo_jax.training import metrics

    policy = metrics.flops_per_token(config, seq_len) * tokens_per_step
    reference = (
        metrics.flops_per_token(config, seq_len, backward=False) * tokens_per_step
        if online_ref
        else 0.0
    )
    total = policy + reference
    return {
        "model_flops_per_step": total,
        "policy_flops_per_step": policy,
        "reference_flops_per_step": reference,
        "achieved_flops_per_s": total / median_s,
        "peak_flops_per_s": peak,
        "mfu": total / median_s / peak if peak else None,
    }


def peak_flops_by_name(device_name: str):
    """The peak table of ropo_jax.training.metrics looked up by a device name (None for CPUs)."""
    from ropo_jax.training import metrics

    for name, flops in metrics.PEAK_FLOPS.items():
        if name.lower() in device_name.lower():
            return flops
    return None


def reset_host_peak_rss() -> bool:
    """Resets this process's RSS high-water mark to its current RSS (Linux ``clear_refs`` 5), so
    ``host_max_rss_bytes`` then reports the peak of what follows — the training steps — and not
    of the set-up (weights drawn on the host, written and read back). False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def host_max_rss_bytes() -> int:
    """This process's peak resident set size since start or the last reset (ru_maxrss, KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def set_omp_wait_policy(policy: str | None) -> None:
    """Sets OMP_WAIT_POLICY for PyTorch's OpenMP pool. Read once, when torch loads the OpenMP
    runtime, so it must run before the first ``import torch`` of the process."""
    if not policy:
        return
    if "torch" in sys.modules:
        raise RuntimeError("OMP_WAIT_POLICY must be set before torch is imported")
    os.environ["OMP_WAIT_POLICY"] = policy


def cpu_device_name() -> str:
    return f"cpu ({os.cpu_count()} cores)"


def print_json(row: dict) -> None:
    print(json.dumps(row), flush=True)


def parse_json_lines(stdout: str) -> list[dict]:
    """The JSON objects a benchmark printed (one per line; other lines, such as the Python dict
    transformers' Trainer prints at the end of training, ignored)."""
    rows = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
