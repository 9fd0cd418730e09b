"""Supervised fine-tuning rows: ``{"prompt", "response"}`` or ``{"messages"}`` (JSON Lines /
Parquet), e.g. the synthetic task's ``sft.jsonl``.

``prompt``/``response`` follow the generic format's conventions (strings are a text prompt and
its continuation; message lists are rendered with the chat template). ``messages`` is a whole
conversation whose final run of assistant messages is the response. The example is stored with
the response as ``chosen`` and no ``rejected``; the prepared data set's manifest says
``"kind": "sft"``. Optional ``id`` (else a content hash).
"""

from __future__ import annotations

from collections.abc import Iterator

from ropo_jax.data.example import PreferenceExample, parse_messages, stable_id
from ropo_jax.data.formats.common import ReadContext, field, optional_field
from ropo_jax.data.formats.generic import _as_messages, _final_assistant_start, _text_or_messages


def convert_row(row: dict, path: str, line: int, ctx: ReadContext) -> Iterator[PreferenceExample]:
    if row.get("messages") is not None and row.get("response") is None:
        messages = parse_messages(field(row, "messages", list), "messages")
        start = _final_assistant_start(messages)
        if start == 0 or start == len(messages):
            raise ValueError(
                "field 'messages' must end with assistant message(s) after a user turn"
            )
        prompt, response = messages[:start], messages[start:]
    else:
        prompt = _text_or_messages(row, "prompt")
        response = _text_or_messages(row, "response")
        if not (isinstance(prompt, str) and isinstance(response, str)):
            prompt = _as_messages(prompt, "user")
            response = _as_messages(response, "assistant")
    example_id = optional_field(row, "id", (str, int))
    yield PreferenceExample(
        id=str(example_id) if example_id is not None else stable_id(prompt, response),
        prompt=prompt,
        chosen=response,
        rejected=None,
    )
