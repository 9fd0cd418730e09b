"""The normalised preference example every reader produces (docs/data.md "Formats and their
prompt/response conventions", docs/method.md §1).

A prompt is either plain text or a tuple of chat messages; the responses follow the prompt's
kind: text continuations of a text prompt, or tuples of assistant messages after a chat prompt
(rendered with the tokenizer's chat template at tokenization time). ``metadata`` carries what
the noise models and figures use: ``score_chosen``/``score_rejected`` (floats), ``source_chosen``/
``source_rejected`` (generator names) and data-set specific fields, all JSON-serialisable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

ROLES = ("system", "user", "assistant")


@dataclasses.dataclass(frozen=True)
class Message:
    role: str
    content: str


Text = str | tuple[Message, ...]


@dataclasses.dataclass(frozen=True)
class PreferenceExample:
    id: str
    prompt: Text
    chosen: Text
    rejected: Text | None  # None for supervised fine-tuning (SFT) examples: one response
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def is_chat(self) -> bool:
        return not isinstance(self.prompt, str)


def to_jsonable(text: Text) -> str | list[dict[str, str]]:
    if isinstance(text, str):
        return text
    return [{"role": m.role, "content": m.content} for m in text]


def stable_id(*parts: Any) -> str:
    """Content hash used when a row has no id: stable across runs, machines and processes."""
    blob = json.dumps(
        [to_jsonable(p) if isinstance(p, tuple) else p for p in parts],
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def parse_messages(value: Any, field: str) -> tuple[Message, ...]:
    """Chat messages from ``[{"role", "content"}, ...]``; raises ValueError naming the field."""
    if not isinstance(value, list) or not value:
        raise ValueError(f"field '{field}' must be a non-empty string or list of messages")
    messages = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"field '{field}[{i}]' must be an object with 'role' and 'content'")
        if m["role"] not in ROLES:
            raise ValueError(f"field '{field}[{i}].role' is {m['role']!r}; expected one of {ROLES}")
        if not isinstance(m["content"], str):
            raise ValueError(
                f"field '{field}[{i}].content' must be a string, got {type(m['content']).__name__}"
            )
        messages.append(Message(m["role"], m["content"]))
    return tuple(messages)


def response_text(response: Text) -> str:
    """The visible text of a response (for emptiness/identity checks and length noise)."""
    if isinstance(response, str):
        return response
    return "".join(m.content for m in response)


def check_pair(example: PreferenceExample) -> None:
    """The checks every format shares; raises ValueError with the reason."""
    names = ("chosen",) if example.rejected is None else ("chosen", "rejected")
    for name in names:
        if not response_text(getattr(example, name)).strip():
            what = f"{name} response" if example.rejected is not None else "response"
            raise ValueError(f"empty {what}")
    if example.chosen == example.rejected:
        raise ValueError("chosen and rejected responses are identical")
    if example.is_chat:
        for name in names:
            roles = {m.role for m in getattr(example, name)}
            if roles != {"assistant"}:
                raise ValueError(f"{name} must consist of assistant messages only, got {roles}")
