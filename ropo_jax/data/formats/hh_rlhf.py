"""Anthropic HH-RLHF transcripts (docs/data.md "Formats and their prompt/response conventions",
HH-RLHF).

The prompt is everything up to and including the **last** ``"\\n\\nAssistant:"`` of the chosen
transcript; the response is what follows (it starts with a space). Both transcripts must agree up
to that point, otherwise the row is reported — splitting at the first turn, as some code does,
would silently train on mismatched contexts. The subset (``helpful-base``, ...) is the name of
the file's directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ropo_jax.data.example import PreferenceExample, stable_id
from ropo_jax.data.formats.common import ReadContext, field

ASSISTANT = "\n\nAssistant:"


def split_transcripts(chosen: str, rejected: str) -> tuple[str, str, str]:
    cut = chosen.rfind(ASSISTANT)
    if cut < 0:
        raise ValueError(f"chosen transcript has no {ASSISTANT!r} turn")
    cut += len(ASSISTANT)
    prompt = chosen[:cut]
    if not rejected.startswith(prompt) or rejected.rfind(ASSISTANT) + len(ASSISTANT) != cut:
        raise ValueError("chosen and rejected transcripts diverge before the last assistant turn")
    return prompt, chosen[cut:], rejected[cut:]


def convert_row(row: dict, path: str, line: int, ctx: ReadContext) -> Iterator[PreferenceExample]:
    prompt, chosen, rejected = split_transcripts(
        field(row, "chosen", str), field(row, "rejected", str)
    )
    subset = os.path.basename(os.path.dirname(os.path.abspath(path)))
    yield PreferenceExample(
        id=stable_id(subset, prompt, chosen, rejected),
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        metadata={"subset": subset},
    )
