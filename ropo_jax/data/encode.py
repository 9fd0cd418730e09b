"""Tokenization of preference examples: BOS/EOS, chat templates, exact boundaries, truncation.

Conventions (docs/method.md §1: log-probs count response tokens only; docs/data.md "Tokenization"):

- the prompt starts with exactly one BOS (when the tokenizer has one) — added unless the chat
  template already rendered it, never duplicated;
- every response ends with exactly one EOS (a template's trailing whitespace after EOS is dropped);
- prompt and responses are tokenized separately (responses as continuations, see
  :mod:`ropo_jax.data.tokenizer`), so no token straddles the boundary;
- chat examples: ``prompt = render(prompt, add_generation_prompt=True)`` and the response is the
  rest of ``render(prompt + response)``, which must extend the prompt rendering;
- truncation: the prompt first, from the left (its BOS is kept), to ``max_prompt_length``; then
  each response from the right to ``max_length - len(prompt)`` (a cut response has no EOS).
  Every truncation is counted.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ropo_jax.data import chat_template
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import PreferenceExample, Text
from ropo_jax.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Limits:
    max_length: int = 1024
    max_prompt_length: int = 512

    def __post_init__(self):
        if not 0 < self.max_prompt_length < self.max_length:
            raise DataError(
                f"max_prompt_length={self.max_prompt_length} must be positive and smaller than "
                f"max_length={self.max_length}; fix --max_prompt_length/--max_length"
            )


@dataclasses.dataclass(frozen=True)
class EncodedExample:
    prompt: np.ndarray  # int32, starts with BOS
    chosen: np.ndarray  # int32, ends with EOS unless truncated
    rejected: np.ndarray
    original_lengths: tuple[int, int, int]  # before truncation: prompt, chosen, rejected

    @property
    def truncated(self) -> tuple[bool, bool, bool]:
        now = (len(self.prompt), len(self.chosen), len(self.rejected))
        return tuple(a < b for a, b in zip(now, self.original_lengths, strict=True))


class Encoder:
    """Turns examples into token ids for one tokenizer (and chat template)."""

    def __init__(self, tokenizer: Tokenizer, limits: Limits, *, chat_template: str | None = None):
        self.tok = tokenizer
        self.limits = limits
        self.template = chat_template or tokenizer.chat_template

    def prompt_ids(self, prompt: Text) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tok.encode(prompt)
        else:
            ids = self.tok.encode(self._render(prompt, add_generation_prompt=True))
        bos = self.tok.bos_id
        if bos is None:
            if not ids:
                # Without BOS the first response token would have no logit to come from.
                raise ValueError("empty prompt (the tokenizer has no BOS token to start it)")
            return ids
        while ids[:1] == [bos]:  # a template may render BOS; keep exactly one
            ids = ids[1:]
        if bos in ids:
            raise ValueError("the prompt contains a BOS token after its start")
        return [bos, *ids]

    def response_ids(self, prompt: Text, response: Text) -> list[int]:
        eos = self.tok.eos_id
        if isinstance(response, str):
            ids = self.tok.encode(response, continuation=True)
        else:
            before = self._render(prompt, add_generation_prompt=True)
            full = self._render(prompt + response, add_generation_prompt=False)
            if not full.startswith(before):
                raise ValueError(
                    "the chat template renders the conversation with a different "
                    "prefix than the prompt alone; use a prefix-consistent template"
                )
            ids = self.tok.encode(full[len(before) :], continuation=True)
            if eos in ids:
                last = len(ids) - 1 - ids[::-1].index(eos)
                if not self.tok.decode(ids[last + 1 :]).strip():
                    ids = ids[:last]
        while ids[-1:] == [eos]:
            ids = ids[:-1]
        if self.tok.bos_id is not None and self.tok.bos_id in ids:
            raise ValueError("a response contains the BOS token")
        return [*ids, eos]

    def _render(self, messages, *, add_generation_prompt: bool) -> str:
        if self.template is None:
            raise DataError(
                f"{self.tok.path}: chat examples need a chat template and the tokenizer has "
                "none; add 'chat_template' to tokenizer_config.json or pass --chat_template=FILE"
            )
        return chat_template.render(
            self.template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.tok.bos_token,
            eos_token=self.tok.eos_token,
        )

    def encode(self, example: PreferenceExample) -> EncodedExample:
        prompt = self.prompt_ids(example.prompt)
        chosen = self.response_ids(example.prompt, example.chosen)
        if example.rejected is None:  # SFT: one response, stored as chosen
            rejected = []
        else:
            rejected = self.response_ids(example.prompt, example.rejected)
        if chosen == rejected:
            raise ValueError("chosen and rejected are identical after tokenization")
        original = (len(prompt), len(chosen), len(rejected))
        limit = self.limits.max_prompt_length
        if len(prompt) > limit:
            # Keep the end of the prompt (the question closest to the answer) and the BOS.
            head = prompt[:1] if prompt[:1] == [self.tok.bos_id] else []
            prompt = head + prompt[len(prompt) - (limit - len(head)) :]
        budget = self.limits.max_length - len(prompt)
        as_array = lambda ids: np.asarray(ids, dtype=np.int32)
        return EncodedExample(
            as_array(prompt), as_array(chosen[:budget]), as_array(rejected[:budget]), original
        )
