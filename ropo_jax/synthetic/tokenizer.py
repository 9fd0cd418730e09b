"""A real Hugging Face tokenizer for the synthetic task, built in memory (no download).

Word-level over the task's fixed vocabulary with whitespace pre-tokenisation, so prompt and
response boundaries are exact; saved with ``save_pretrained`` so the data pipeline loads it like
any model's tokenizer (``tokenizer.json`` + ``tokenizer_config.json``). It puts ``<bos>`` before
text itself (``add_bos_token``, its post-processor), as Llama-2's does: the data pipeline adds BOS
to a text prompt only where the tokenizer does, and every synthetic prompt starts with it.
"""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ropo_jax.synthetic.task import TaskConfig, vocabulary


def build_tokenizer(config: TaskConfig) -> PreTrainedTokenizerFast:
    vocab = {word: i for i, word in enumerate(vocabulary(config))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        add_bos_token=True,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer(config: TaskConfig, directory: str) -> str:
    build_tokenizer(config).save_pretrained(directory)
    return directory
