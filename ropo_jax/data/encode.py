"""Tokenization of preference examples: BOS/EOS, chat templates, exact boundaries, truncation.

Conventions (docs/method.md §1: log-probs count response tokens only; docs/data.md "Tokenization").
BOS and turn markers come from the tokenizer and its chat template, never from a fixed
convention, so training sees exactly the ids the model is given at generation time:

- chat prompts: the ids of ``render(prompt, add_generation_prompt=True)`` tokenized as it is
  (special-token strings the template renders become their ids, nothing is added) — what
  transformers' ``apply_chat_template(..., add_generation_prompt=True, tokenize=True)`` gives.
  A template that renders BOS gets exactly one, one that renders none gets none, and a ChatML
  BOS (``<|im_start|>``) at every turn stays where the template put it; a template rendering
  BOS twice at the start is refused. The response is the rest
  of ``render(prompt + response)``, which must extend the prompt rendering both as text and as
  tokens: prompt ids + response ids == the ids of the whole rendered conversation, else the row
  is refused (the template is not prefix-consistent). Message contents must not contain the
  tokenizer's special-token strings (BOS, EOS, PAD, UNK, other special added tokens): inside a
  content they would become control tokens the template cannot see, so such a row is refused;
  every special token of a chat rendering is then the template's own, accepted wherever it is;
- text prompts: BOS is put first iff the tokenizer itself adds it to text (``Tokenizer.add_bos``),
  once even when the text already starts with it. A BOS after the start of a text prompt or
  inside a text response is refused when BOS marks documents only; where the chat template
  renders BOS at more than one turn (ChatML), BOS is a turn marker and pre-rendered turns are
  accepted.
  An empty text prompt without BOS is refused (the first response token needs a logit);
- every response ends with exactly one EOS (a template's trailing whitespace after EOS is dropped);
- prompt and responses are tokenized separately (responses as continuations, see
  :mod:`ropo_jax.data.tokenizer`), so no token straddles the boundary;
- truncation: the prompt first, from the left (a leading BOS is kept), to ``max_prompt_length``;
  then each response from the right to ``max_length - len(prompt)`` (a cut response has no EOS).
  Every truncation is counted.

``ENCODING_VERSION`` is written to the prepared manifest; prepared data from another version is
prepared again (``data.prepare.prepare_splits``). Version 2: the rules above (version 1 put one
BOS first in every prompt and refused any other BOS).
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

from ropo_jax.data import chat_template
from ropo_jax.data.errors import DataError
from ropo_jax.data.example import Message, PreferenceExample, Text
from ropo_jax.data.tokenizer import Tokenizer

ENCODING_VERSION = 2


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
    prompt: np.ndarray  # int32, BOS first where the tokenizer or template puts it
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
        specials = sorted(set(tokenizer.special_tokens), key=len, reverse=True)
        self._specials = re.compile("|".join(map(re.escape, specials))) if specials else None
        self._bos_marks_turns: bool | None = None

    def prompt_ids(self, prompt: Text) -> list[int]:
        """The prompt's ids, as the model is given them at generation time."""
        if not isinstance(prompt, str):
            self._check_contents(prompt)
            ids = self.tok.encode(self._render(prompt, add_generation_prompt=True))
            if not ids:
                raise ValueError("the chat template renders an empty prompt")
            bos = self.tok.bos_id
            if bos is not None and ids[:2] == [bos, bos]:
                raise ValueError(
                    "the chat template renders BOS twice at the start of the prompt; render "
                    "{{ bos_token }} once"
                )
            return ids
        ids = self.tok.encode(prompt)
        bos = self.tok.bos_id
        if self.tok.add_bos and ids[:1] != [bos]:  # a text already starting with BOS keeps one
            ids = [bos, *ids]
        if not ids:
            # Without BOS the first response token would have no logit to come from.
            raise ValueError("empty prompt (the tokenizer adds no BOS token to start it)")
        if bos is not None and bos in ids[1:] and not self.bos_marks_turns():
            raise ValueError(
                f"the prompt text contains the BOS token {self.tok.bos_token!r} after its start"
            )
        return ids

    def response_ids(
        self, prompt: Text, response: Text, *, prompt_ids: list[int] | None = None
    ) -> list[int]:
        """The response's ids, ending with one EOS (``prompt_ids``: ``prompt_ids(prompt)``, to
        spare recomputing it)."""
        eos = self.tok.eos_id
        if isinstance(response, str):
            ids = self.tok.encode(response, continuation=True)
            bos = self.tok.bos_id
            if bos is not None and bos in ids and not self.bos_marks_turns():
                raise ValueError(f"a response contains the BOS token {self.tok.bos_token!r}")
        else:
            self._check_contents(response, first=len(prompt))
            before = self._render(prompt, add_generation_prompt=True)
            full = self._render(prompt + response, add_generation_prompt=False)
            if not full.startswith(before):
                raise ValueError(
                    "the chat template renders the conversation with a different "
                    "prefix than the prompt alone; use a prefix-consistent template"
                )
            ids = self.tok.encode(full[len(before) :], continuation=True)
            if prompt_ids is None:
                prompt_ids = self.prompt_ids(prompt)
            if [*prompt_ids, *ids] != self.tok.encode(full):
                raise ValueError(
                    "the chat template's conversation does not tokenize as the prompt's tokens "
                    "followed by the response's (a token straddles the end of the generation "
                    "prompt); use a prefix-consistent template"
                )
            if eos in ids:
                last = len(ids) - 1 - ids[::-1].index(eos)
                if not self.tok.decode(ids[last + 1 :]).strip():
                    ids = ids[:last]
        while ids[-1:] == [eos]:
            ids = ids[:-1]
        return [*ids, eos]

    def bos_marks_turns(self) -> bool:
        """Whether BOS is a turn marker: the chat template renders it at more than one turn of
        a short conversation (ChatML's ``<|im_start|>``), not once per document."""
        if self._bos_marks_turns is None:
            probe = (Message("user", "a"), Message("assistant", "b"), Message("user", "c"))
            try:
                text = self._render(probe, add_generation_prompt=True)
            except (DataError, chat_template.TemplateError):
                text = ""
            self._bos_marks_turns = self.tok.bos_id is not None and (
                self.tok.encode(text).count(self.tok.bos_id) > 1
            )
        return self._bos_marks_turns

    def _check_contents(self, messages, *, first: int = 0) -> None:
        """Refuses special-token strings inside message contents: they would become control
        tokens (e.g. a second BOS, an early end of turn) the chat template cannot see."""
        if self._specials is None:
            return
        for i, message in enumerate(messages, start=first):
            found = self._specials.search(message.content)
            if found:
                raise ValueError(
                    f"message {i} ({message.role}) contains the special token "
                    f"{found.group()!r}, which would become a control token; remove it "
                    "from the data"
                )

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
        chosen = self.response_ids(example.prompt, example.chosen, prompt_ids=prompt)
        if example.rejected is None:  # SFT: one response, stored as chosen
            rejected = []
        else:
            rejected = self.response_ids(example.prompt, example.rejected, prompt_ids=prompt)
        if chosen == rejected:
            raise ValueError("chosen and rejected are identical after tokenization")
        original = (len(prompt), len(chosen), len(rejected))
        limit = self.limits.max_prompt_length
        if len(prompt) > limit:
            # Keep the end of the prompt (the question closest to the answer) and a leading BOS.
            bos = self.tok.bos_id
            head = prompt[:1] if bos is not None and prompt[:1] == [bos] else []
            prompt = head + prompt[len(prompt) - (limit - len(head)) :]
        budget = self.limits.max_length - len(prompt)
        as_array = lambda ids: np.asarray(ids, dtype=np.int32)
        return EncodedExample(
            as_array(prompt), as_array(chosen[:budget]), as_array(rejected[:budget]), original
        )
