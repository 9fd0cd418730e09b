"""ROPO on Reddit TL;DR human comparisons (OpenAI "summarize from feedback", docs/method.md §6),
Mistral-7B or Llama-2-7B starting from an SFT model.

ARG: ``MODEL[,NOISE]`` — ``mistral_7b`` | ``llama2_7b`` | ``smoke``, and ``clean`` | ``sym20``
(default) | ``sym40``. Hardware as in ultrafeedback.py: 8 × 80 GB GPUs or a TPU v5p-8 / v4-32
slice, full FSDP, bf16, full remat. Prompts are text (``SUBREDDIT: … TL;DR:``, no chat template).

The reader keeps every row of its input, so give it one split per file (docs/experiments.md
splits the comparison batches by their ``split`` field): train = ``train``, test = ``valid2``.
CNN/DM rows are left out and counted.

    python -m ropo_jax.data.prepare --format=tldr \
        --input=$HOME/data/tldr/comparisons_train.jsonl \
        --tokenizer=$HOME/models/mistral-7b-sft-tldr \
        --output_dir=$HOME/prepared/mistral/tldr_train --max_length=1024 --max_prompt_length=512
    (the same with comparisons_valid2.jsonl → $HOME/prepared/mistral/tldr_test)

Train and evaluate; the evaluation prompts are 500 test posts, judged against their chosen
summaries (``WORKDIR/eval/reference.json``):

    python -m ropo_jax.main --config=experiments/paper/tldr.py:mistral_7b,sym20 \
        --workdir=runs/paper/tldr/mistral_7b/sym20/ropo_full --config.method=ropo_full \
        --config.model.hf_path=$HOME/models/mistral-7b-sft-tldr \
        --config.data.train=$HOME/prepared/mistral/tldr_train \
        --config.data.test=$HOME/prepared/mistral/tldr_test \
        --config.data.eval_prompts=$HOME/data/tldr/comparisons_valid2.jsonl
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
    return _common().get_config("tldr", arg)
