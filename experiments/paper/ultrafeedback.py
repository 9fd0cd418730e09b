"""ROPO on UltraFeedback Binarized (docs/method.md §6), Mistral-7B or Llama-2-7B starting from an
SFT model.

ARG: ``MODEL[,NOISE]`` — ``mistral_7b`` | ``llama2_7b`` | ``smoke``, and ``clean`` | ``sym20``
(default) | ``sym40`` (see experiments/paper/_common.py). Hardware: 8 × 80 GB GPUs (H100 or
A100-80GB; 8 × A100-40GB fits by the memory plan), or a TPU v5p-8 / v4-32 slice (multi-host:
add ``--distributed``); mesh (1, -1, 1) = full FSDP, bf16 compute, full remat, 32 pairs × 1024
tokens per micro-step. docs/experiments.md has the wall-time estimates and the judging commands.

Prepare once per tokenizer (the SFT model's; ``--chat_template=FILE`` if it has none, and then
the same file as ``--config.data.chat_template``):

    python -m ropo_jax.data.prepare --format=ultrafeedback \
        --input=$HOME/data/ultrafeedback_binarized/data/train_prefs-00000-of-00001.parquet \
        --tokenizer=$HOME/models/mistral-7b-sft --output_dir=$HOME/prepared/mistral/uf_train \
        --max_length=1024 --max_prompt_length=512
    (the same with test_prefs-00000-of-00001.parquet → $HOME/prepared/mistral/uf_test)

Train and evaluate (one method; repeat with dpo, cdpo, rdpo, ipo, ropo):

    python -m ropo_jax.main --config=experiments/paper/ultrafeedback.py:mistral_7b,sym20 \
        --workdir=runs/paper/ultrafeedback/mistral_7b/sym20/ropo_full --config.method=ropo_full \
        --config.model.hf_path=$HOME/models/mistral-7b-sft \
        --config.data.train=$HOME/prepared/mistral/uf_train \
        --config.data.test=$HOME/prepared/mistral/uf_test \
        --config.data.eval_prompts=$HOME/data/alpaca_eval/alpaca_eval.json

The generations land in ``WORKDIR/eval/{policy,sft,reference}.json`` (AlpacaEval format).
"""

import importlib.util
import os


def _common():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_common.py")
    spec = importlib.util.spec_from_file_location("experiments_paper_common", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_config(arg=None):
    return _common().get_config("ultrafeedback", arg)
