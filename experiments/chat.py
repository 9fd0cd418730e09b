"""Preference training of a small real chat model on your own preference data: a Llama- or
Mistral-architecture instruction-tuned checkpoint (SmolLM2-135M/360M/1.7B-Instruct and the like)
on one GPU or a CPU, with the hyper-parameters of a published small-model DPO recipe.

    MODEL=/path/to/hf_chat_model       # config.json, safetensors, tokenizer, chat template
    python -m ropo_jax.main --config=experiments/chat.py --workdir=runs/my_chat \\
        --config.model.hf_path=$MODEL --config.data.tokenizer=$MODEL \\
        --config.data.raw.format=generic --config.data.raw.train=my_pairs.jsonl \\
        [--config.data.raw.test=my_heldout_pairs.jsonl] [--config.data.eval_prompts=prompts.json]

The data is any format of ``python -m ropo_jax.data.prepare`` (docs/data.md; ``generic`` reads
``{"prompt", "chosen", "rejected"}`` or chat-message rows), prepared inside the run with the
model's own tokenizer and chat template. ``WORKDIR/model/`` is the trained model as a Hugging
Face directory.

Hyper-parameters: SmolLM2's public DPO recipe — β = 0.5, learning rate 1e-6 with a cosine decay
and warmup ratio 0.1, 2 epochs. Where this preset differs, and why:

- the method is ``ropo_full`` (the ROPO loss, α = 14 as in the paper, then filtering of the 20 %
  most contradicted pairs and rejection sampling for their prompts): this library is for
  preference data that may be noisy; ``--config.method=dpo`` is the recipe's own loss;
- the 2 epochs are 2 rounds × 1 epoch, the framework's unit (round 2 trains on the filtered
  pairs and the rejection-sampled ones), under one cosine schedule with one warmup, as the
  recipe's 2 epochs;
- batch 32 pairs (micro-batched by 4 to fit a 1.7B model's activations on one 80 GB GPU with
  float32 weights), sequences ≤ 1024 tokens with prompts ≤ 512, as the paper configs;
- no SFT stage: the instruction-tuned checkpoint is the starting policy and the reference
  (``--config.sft.enabled=True --config.data.raw.sft=...`` adds one, at 1e-5 for 1 epoch).

``:smoke`` is the same run at toy size for the tests: the UltraFeedback fixture through the byte
tokenizer of tests/fixtures, the ``tiny`` preset with random weights, small batches and short
generations.

A learning rate of 1e-3 (the toy smoke configs') wrecks a real model within a few steps; at
1e-6 a short run leaves SmolLM2 answering as before (tests/real_model_pipeline_test.py).
"""

import os

import ml_collections

from ropo_jax.config.defaults import base_config

FIXTURES = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures"
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    if arg not in (None, "", "smoke"):
        raise ValueError(f"experiments/chat.py takes no argument or ':smoke', got {arg!r}")
    c = base_config()
    c.task = "prepared"
    c.method = "ropo_full"
    c.model.update(preset="", hf_path="", dtype="float32", param_dtype="float32")
    c.data.raw.update(format="generic", max_length=1024, max_prompt_length=512)
    c.noise.update(kind="none", rate=0.0)
    c.sft.enabled = False
    c.sft.update(epochs=1.0, learning_rate=1e-5, warmup_ratio=0.1, schedule="cosine")
    c.train.update(batch_size=32, micro_batches=4, learning_rate=1e-6, warmup_ratio=0.1)
    c.train.update(schedule="cosine", log_every=10, checkpoint_every=200, keep_checkpoints=2)
    c.loss.update(beta=0.5, alpha=14.0)
    c.ropo.update(num_rounds=2, epochs_per_round=1.0, filter_ratio=0.2, filter_start_round=2)
    c.ropo.rs.update(enabled=True, num_candidates=4, temperature=0.9, max_new_tokens=256)
    c.eval.update(batch_size=16, generate_batch_size=16, temperature=0.7, max_new_tokens=256)
    if arg == "smoke":
        data = os.path.join(FIXTURES, "data")
        c.model.preset = "tiny"
        c.data.update(
            tokenizer=os.path.join(FIXTURES, "tokenizers", "byte_bpe"),
            eval_prompts=os.path.join(data, "alpaca_eval.json"),
        )
        c.data.raw.update(
            format="ultrafeedback",
            train=os.path.join(data, "ultrafeedback.jsonl"),
            test=os.path.join(data, "ultrafeedback.jsonl"),  # the fixture has no held-out split
            max_length=256,
            max_prompt_length=192,
        )
        c.train.update(batch_size=4, micro_batches=2, log_every=1, checkpoint_every=4)
        c.ropo.rs.max_new_tokens = 8
        c.eval.update(batch_size=8, generate_batch_size=4, max_new_tokens=8)
    return c
