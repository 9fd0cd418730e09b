"""Generic JSON Lines / Parquet preference rows (docs/data.md "Formats and their prompt/response
conventions", Generic).

Explicit prompt ``{"prompt", "chosen", "rejected"}`` or implicit ``{"chosen", "rejected"}``; each
a string or a list of chat messages. Conventions:

- text + text: the responses are continuations of the prompt, taken verbatim;
- any messages: the example becomes a chat example; a text prompt is one user message, a text
  response one assistant message; a response list that repeats the prompt messages (as
  UltraFeedback does) has that prefix removed;
- implicit messages: the prompt is everything before the final run of assistant messages, which
  must be the same in both conversations;
- implicit text: transcripts with ``"\\n\\nAssistant:"`` turns follow the HH-RLHF rule; otherwise
  the prompt is the longest common prefix backed off to the last whitespace, so the responses
  start at a word boundary.

Optional fields: ``id`` (else a content hash), ``score_chosen``/``score_rejected`` (numbers),
``source_chosen``/``source_rejected`` (generator names).
"""

from __future__ import annotations

from collections.abc import Iterator

from ropo_jax.data.example import Message, PreferenceExample, parse_messages, stable_id
from ropo_jax.data.formats.common import NUMBER, ReadContext, field, optional_field
from ropo_jax.data.formats.hh_rlhf import ASSISTANT, split_transcripts


def _text_or_messages(row: dict, name: str) -> str | tuple[Message, ...]:
    value = field(row, name, (str, list))
    return value if isinstance(value, str) else parse_messages(value, name)


def _as_messages(value, role: str) -> tuple[Message, ...]:
    return (Message(role, value),) if isinstance(value, str) else value


def _strip_prompt(prompt: tuple[Message, ...], response: tuple[Message, ...], name: str):
    if len(response) > len(prompt) and response[: len(prompt)] == prompt:
        return response[len(prompt) :]
    return response


def _final_assistant_start(messages: tuple[Message, ...]) -> int:
    start = len(messages)
    while start > 0 and messages[start - 1].role == "assistant":
        start -= 1
    return start


def _implicit_messages(chosen, rejected):
    start = _final_assistant_start(chosen)
    if start == 0 or start == len(chosen):
        raise ValueError(
            "'chosen' must be a conversation ending with assistant message(s) after "
            "at least one user message"
        )
    if rejected[:start] != chosen[:start] or _final_assistant_start(rejected) != start:
        raise ValueError("chosen and rejected conversations differ before the final assistant turn")
    return chosen[:start], chosen[start:], rejected[start:]


def _implicit_text(chosen: str, rejected: str):
    if ASSISTANT in chosen or ASSISTANT in rejected:
        return split_transcripts(chosen, rejected)
    n = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        n += 1
    # Back off to a word boundary, leaving the whitespace with the responses.
    while n > 0 and not chosen[n - 1].isspace():
        n -= 1
    while n > 0 and chosen[n - 1].isspace():
        n -= 1
    if n == 0:
        raise ValueError(
            "implicit prompt: chosen and rejected share no prefix; add a 'prompt' field"
        )
    return chosen[:n], chosen[n:], rejected[n:]


def convert_row(row: dict, path: str, line: int, ctx: ReadContext) -> Iterator[PreferenceExample]:
    chosen = _text_or_messages(row, "chosen")
    rejected = _text_or_messages(row, "rejected")
    if "prompt" in row and row["prompt"] is not None:
        prompt = _text_or_messages(row, "prompt")
        if not (isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str)):
            prompt = _as_messages(prompt, "user")
            chosen = _strip_prompt(prompt, _as_messages(chosen, "assistant"), "chosen")
            rejected = _strip_prompt(prompt, _as_messages(rejected, "assistant"), "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        prompt, chosen, rejected = _implicit_text(chosen, rejected)
    elif isinstance(chosen, tuple) and isinstance(rejected, tuple):
        prompt, chosen, rejected = _implicit_messages(chosen, rejected)
    else:
        raise ValueError(
            "without a 'prompt' field, 'chosen' and 'rejected' must both be strings "
            "or both be message lists"
        )
    example_id = optional_field(row, "id", (str, int))
    metadata = {}
    for key in ("score_chosen", "score_rejected"):
        value = optional_field(row, key, NUMBER)
        if value is not None:
            metadata[key] = float(value)
    for key in ("source_chosen", "source_rejected"):
        value = optional_field(row, key, str)
        if value is not None:
            metadata[key] = value
    yield PreferenceExample(
        id=str(example_id) if example_id is not None else stable_id(prompt, chosen, rejected),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        metadata=metadata,
    )
