"""Decode throughput: ropo_jax's jitted KV-cache sampler vs transformers' ``generate`` on the
same weights, batch and lengths, in one run. Prints one JSON line per implementation and the ratio.

    python scripts/bench/sampling.py --preset=tiny --batch=16 --prompt_len=32 --new_tokens=64

Random weights (``--preset``), random prompts; both sides decode exactly ``--new_tokens`` tokens
(no EOS) greedily so the work is identical. Timings are medians over ``--repeats`` after a warm-up
(compilation excluded for JAX; PyTorch runs eagerly on the same device kind).
"""

import json
import os
import statistics
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ropo_jax import models
from ropo_jax.inference import sampling

_PRESET = flags.DEFINE_string("preset", "tiny", "Model preset (random weights).")
_BATCH = flags.DEFINE_integer("batch", 16, "Prompts decoded together.")
_PROMPT = flags.DEFINE_integer("prompt_len", 32, "Prompt tokens.")
_NEW = flags.DEFINE_integer("new_tokens", 64, "Tokens generated per prompt.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions after one warm-up.")
_DTYPE = flags.DEFINE_string("dtype", "float32", "Compute dtype on both sides.")
_SKIP_TORCH = flags.DEFINE_bool("skip_transformers", False, "Time ropo_jax only.")


def _timed(fn, repeats):
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def _report(name, device, times, tokens):
    median = statistics.median(times)
    row = {
        "impl": name,
        "device": device,
        "decode_time_s_median": median,
        "decode_time_s_min": min(times),
        "decode_time_s_max": max(times),
        "new_tokens_per_s": tokens / median,
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv):
    del argv
    config = models.ModelConfig.preset(_PRESET.value, dtype=_DTYPE.value, eos_token_id=-1)
    params = models.init_params(config, jax.random.key(0))
    rng = np.random.default_rng(0)
    prompts = rng.integers(3, config.vocab_size, size=(_BATCH.value, _PROMPT.value)).astype(
        np.int32
    )
    lengths = np.full((_BATCH.value,), _PROMPT.value, np.int32)
    greedy = sampling.SamplingConfig(
        max_new_tokens=_NEW.value, temperature=0.0, eos_token_id=-1, length_bucket=_PROMPT.value
    )
    tokens = _BATCH.value * _NEW.value

    def run_jax():
        out = sampling.generate_batch(
            config, greedy, params, jnp.asarray(prompts), jnp.asarray(lengths), jax.random.key(0)
        )
        jax.block_until_ready(out["tokens"])
        return out

    ours = _report(
        "ropo_jax", str(jax.devices()[0].device_kind), _timed(run_jax, _REPEATS.value), tokens
    )
    if _SKIP_TORCH.value:
        return
    import torch
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as directory:
        models.save_hf(config, params, directory)
        model = AutoModelForCausalLM.from_pretrained(directory, dtype=getattr(torch, _DTYPE.value))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = model.to(device).eval()
    prompt_t = torch.tensor(prompts, device=device)

    def run_torch():
        with torch.no_grad():
            out = model.generate(
                prompt_t,
                attention_mask=torch.ones_like(prompt_t),
                max_new_tokens=_NEW.value,
                min_new_tokens=_NEW.value,
                do_sample=False,
                pad_token_id=0,
            )
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    theirs = _report(
        "transformers.generate",
        torch.cuda.get_device_name() if device == "cuda" else f"cpu ({os.cpu_count()} cores)",
        _timed(run_torch, _REPEATS.value),
        tokens,
    )
    # Same greedy tokens on both sides (float32): a correctness check of the comparison itself.
    same = (
        np.array_equal(
            np.asarray(run_jax()["tokens"]), run_torch()[:, _PROMPT.value :].cpu().numpy()
        )
        if _DTYPE.value == "float32"
        else None
    )
    print(
        json.dumps(
            {
                "ratio_tokens_per_s": ours["new_tokens_per_s"] / theirs["new_tokens_per_s"],
                "same_greedy_tokens": same,
            }
        )
    )


if __name__ == "__main__":
    app.run(main)
