"""ROPO on Alpaca Comparison (GPT-4-LLM ``comparison_data_v2.json``, docs/method.md §6), Mistral-7B
or Llama-2-7B starting from an SFT model, with symmetric or the paper's practical noise.

ARG: ``MODEL[,NOISE]`` — ``mistral_7b`` | ``llama2_7b`` | ``smoke``, and ``clean`` | ``sym20``
(default) | ``sym40`` | ``source`` (source-biased: the stronger generator's response labelled
chosen, GPT-4 > text-davinci-003 > a 1.3B model). Hardware as in ultrafeedback.py: 8 × 80 GB
GPUs or a TPU v5p-8 / v4-32 slice, full FSDP, bf16, full remat.

The file has one split; hold out its last 1,000 instructions (docs/experiments.md, a
reconstruction), then prepare both parts (best vs worst scored response per instruction; the
empty responses of the file are reported and skipped):

    python -m ropo_jax.data.prepare --format=alpaca_comparison --pairing=best_vs_worst \
        --on_error=skip --input=$HOME/data/gpt4_llm/alpaca_comparison_train.json \
        --tokenizer=$HOME/models/mistral-7b-sft --output_dir=$HOME/prepared/mistral/ac_train \
        --max_length=1024 --max_prompt_length=512
    (the same with alpaca_comparison_test.json → $HOME/prepared/mistral/ac_test)

Train and evaluate:

    python -m ropo_jax.main --config=experiments/paper/alpaca_comparison.py:mistral_7b,source \
        --workdir=runs/paper/alpaca_comparison/mistral_7b/source/ropo_full \
        --config.method=ropo_full --config.model.hf_path=$HOME/models/mistral-7b-sft \
        --config.data.train=$HOME/prepared/mistral/ac_train \
        --config.data.test=$HOME/prepared/mistral/ac_test \
        --config.data.eval_prompts=$HOME/data/alpaca_eval/alpaca_eval.json
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
    return _common().get_config("alpaca_comparison", arg)
