"""The controlled benchmark on a real language model: SmolLM2-135M-Instruct is the policy and the
reference; the prompts are natural-language instructions with verifiable constraints (include a
word, stay under N words, lowercase, end with a question, no commas, start with a word) whose
gold reward a program computes (ropo_jax/instructions/, docs/method.md §4.4); the candidate
responses are sampled from the model itself, paired by the gold reward, then flipped by the
noise model. No SFT: the instruction-tuned checkpoint is the starting point.

    python scripts/fetch_smollm2.py          # once: the checkpoint (./scripts/test.sh runs it)
    python -m ropo_jax.main --config=experiments/real_model.py:cpu --workdir=runs/real_dpo \\
        --config.method=dpo --config.noise.rate=0.4 --config.seed=100

Presets (the ``:ARG``):

- ``cpu``: sized for a 2-core CPU — 160 training and 96 evaluation prompts (disjoint), 4
  samples per prompt, one best-vs-worst pair per prompt, 2 rounds × 1 epoch at a constant
  learning rate; one run ≈ 5–8 minutes after the shared candidates are sampled once
  (``instructions.cache_dir``, keyed by the checkpoint and the settings);
- ``gpu``: the same benchmark at full scale for one H100/H200 (1024 + 256 prompts, 8 samples,
  2 pairs per prompt, 2 rounds × 2 epochs, bfloat16 compute);
- ``smoke`` (tests): 12 + 8 prompts, 2 samples, a handful of steps.

``--config.model.hf_path`` (and ``data.tokenizer``) default to the fetched SmolLM2 directory;
any Llama/Mistral chat checkpoint works the same way.
"""

import os

import ml_collections

from ropo_jax.config.defaults import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOLLM2 = os.environ.get(
    "ROPO_JAX_SMOLLM2", os.path.join(ROOT, ".venv", "share", "ropo_jax", "smollm2-135m-instruct")
)
PRESETS = {
    "smoke": dict(
        train_prompts=12,
        eval_prompts=8,
        candidates=2,
        pairs=1,
        new_tokens=12,
        rounds=2,
        epochs=1.0,
        batch=4,
        dynamics_prompts=4,
    ),
    "cpu": dict(
        train_prompts=160,
        eval_prompts=96,
        candidates=4,
        pairs=1,
        new_tokens=32,
        rounds=2,
        epochs=1.0,
        batch=8,
        dynamics_prompts=32,
    ),
    "gpu": dict(
        train_prompts=1024,
        eval_prompts=256,
        candidates=8,
        pairs=2,
        new_tokens=48,
        rounds=2,
        epochs=2.0,
        batch=32,
        dynamics_prompts=128,
        dtype="bfloat16",
    ),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "cpu"
    if preset not in PRESETS:
        raise ValueError(f"experiments/real_model.py:{preset}: choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    c = base_config()
    c.task = "instructions"
    c.method = "dpo"
    c.model.hf_path = SMOLLM2
    c.model.dtype = p.get("dtype", "float32")
    c.data.tokenizer = SMOLLM2
    c.instructions = ml_collections.ConfigDict(
        dict(
            num_train_prompts=p["train_prompts"],
            num_eval_prompts=p["eval_prompts"],
            constraints_per_prompt=2,
            num_candidates=p["candidates"],
            max_new_tokens=p["new_tokens"],
            temperature=0.8,
            top_p=1.0,
            pairs_per_prompt=p["pairs"],
            min_gap=0.2,
            max_length=128,
            max_prompt_length=80,
            generate_batch_size=64,
            seed=0,  # the prompts and candidates are fixed across methods and seeds
            # Sampled once per checkpoint and settings, shared by every run (a sweep's too);
            # "" → WORKDIR/data.
            cache_dir="" if preset == "smoke" else "~/.cache/ropo_jax/instructions",
        )
    )
    # Exact counts: at 136 pairs a Bernoulli draw at 40 % realises 0.32-0.47 across seeds.
    c.noise.update(kind="symmetric", rate=0.4, seed=0, exact=True)
    c.sft.enabled = False  # the instruction-tuned checkpoint is the policy and the reference
    c.train.update(batch_size=p["batch"], learning_rate=2e-5, warmup_ratio=0.05)
    c.train.update(schedule="constant", log_every=5, checkpoint_every=50)
    c.ropo.update(num_rounds=p["rounds"], epochs_per_round=p["epochs"], filter_ratio=0.2)
    c.ropo.rs.update(enabled=True, num_candidates=4, max_new_tokens=p["new_tokens"])
    c.eval.update(batch_size=32, max_new_tokens=p["new_tokens"], generate_batch_size=64)
    c.eval.temperature = 0.7
    c.eval.samples_per_prompt = 1
    c.eval.dynamics_prompts = p["dynamics_prompts"]
    # A sweep's runs share the reference log-probs and the checkpoint's evaluation responses.
    c.cache_dir = "" if preset == "smoke" else "~/.cache/ropo_jax/runs"
    return c
