"""Tiny Hugging Face checkpoints saved by transformers itself (not by this project), each with its
own tokenizer and chat template, for the tests that run the whole pipeline from a checkpoint.

Kinds:
- ``llama``: LlamaForCausalLM, untied head, grouped-query attention, a ChatML-style template;
- ``mistral_window``: MistralForCausalLM with a sliding window shorter than the data's
  sequences, a Mistral ``[INST]`` template;
- ``llama_tied``: LlamaForCausalLM with tied embeddings, a Zephyr-style template.

Each tokenizer is a byte-level BPE trained on the text fixtures (so every string encodes), with
its own merges and vocabulary size, saved by ``PreTrainedTokenizerFast.save_pretrained``.
"""

from __future__ import annotations

import glob
import json
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE_DATA = os.path.join(ROOT, "tests", "fixtures", "data")
KINDS = ("llama", "mistral_window", "llama_tied")

CHATML = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{{ '[INST] ' + m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}"
    "{{ m['content'] + eos_token }}{% else %}{{ m['content'] + '\\n\\n' }}{% endif %}{% endfor %}"
)
ZEPHYR = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>\\n' + m['content'] + '</s>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
SPECS = {
    "llama": dict(template=CHATML, vocab=420, tied=False, mistral=False),
    "mistral_window": dict(template=MISTRAL, vocab=380, tied=False, mistral=True),
    "llama_tied": dict(template=ZEPHYR, vocab=400, tied=True, mistral=False),
}


def _corpus() -> list[str]:
    """Every string in the text fixtures (enough to learn a few hundred merges)."""
    texts: list[str] = []

    def walk(x):
        if isinstance(x, str):
            texts.append(x)
        elif isinstance(x, dict):
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    for path in sorted(glob.glob(os.path.join(FIXTURE_DATA, "*.json*"))):
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                for line in f:
                    if line.strip():
                        walk(json.loads(line))
            else:
                walk(json.load(f))
    return texts


def build_tokenizer(directory: str, kind: str) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = SPECS[kind]
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=spec["vocab"],
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(_corpus(), trainer=trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
    )
    tok.chat_template = spec["template"]
    tok.save_pretrained(directory)
    return directory


def build_checkpoint(directory: str, kind: str, *, seed: int = 0) -> str:
    """A random tiny model of ``kind`` saved by transformers, with its tokenizer, in
    ``directory``."""
    import torch
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    spec = SPECS[kind]
    build_tokenizer(directory, kind)
    tok = AutoTokenizer.from_pretrained(directory)
    common = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=spec["tied"],
    )
    torch.manual_seed(seed)
    if spec["mistral"]:
        model = MistralForCausalLM(MistralConfig(sliding_window=24, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    model.save_pretrained(directory)
    return directory
