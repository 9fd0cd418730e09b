"""The starting model as the benchmark's sampler of candidate responses (docs/method.md §4.4),
and the fingerprint that keys the sampled data to the checkpoint that produced it."""

from __future__ import annotations

import glob
import hashlib
import os

import jax

from ropo_jax import models
from ropo_jax.evaluation import heldout
from ropo_jax.inference import sampling
from ropo_jax.instructions.dataset import DataConfig, Generate

# The files that decide what the model samples: its weights, its architecture, its tokenizer.
_FINGERPRINTED = ("config.json", "*.safetensors", "tokenizer.json", "tokenizer_config.json")


def checkpoint_fingerprint(model_path: str, tokenizer: str) -> str:
    """A digest of the checkpoint's config, weights and tokenizer files (their bytes)."""
    h = hashlib.sha256()
    for directory in dict.fromkeys((model_path, tokenizer)):
        for pattern in _FINGERPRINTED:
            for path in sorted(glob.glob(os.path.join(os.path.expanduser(directory), pattern))):
                h.update(os.path.basename(path).encode())
                with open(path, "rb") as f:
                    for block in iter(lambda f=f: f.read(1 << 22), b""):
                        h.update(block)
    return h.hexdigest()[:16]


def model_sampler(model_path: str, tokenizer: str, config: DataConfig) -> Generate:
    """``generate(prompts, count)``: ``count`` samples per chat prompt from the checkpoint,
    loaded in float32 when first called, with ``config``'s sampling settings and seed."""

    def generate(prompts, count):
        model_config, params = models.load_hf(os.path.expanduser(model_path))
        repeated = [p for p in prompts for _ in range(count)]
        responses = heldout.generate_responses(
            model_config,
            params,
            repeated,
            tokenizer_dir=tokenizer,
            sampling_config=sampling.SamplingConfig(
                max_new_tokens=config.max_new_tokens,
                temperature=config.temperature,
                top_p=config.top_p,
                pad_token_id=model_config.pad_token_id or 0,
                length_bucket=16,
            ),
            seed=config.seed,
            batch_size=config.generate_batch_size,
        )
        del params
        jax.clear_caches()
        return [responses[i * count : (i + 1) * count] for i in range(len(prompts))]

    return generate
