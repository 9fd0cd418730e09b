"""UltraFeedback Binarized (docs/data.md "Formats and their prompt/response conventions"): Parquet
rows with message-list responses.

``chosen``/``rejected`` are ``[user turn, assistant answer]``; the prompt is the shared message
prefix (checked against the ``prompt`` column), the responses the final assistant message(s).
The id is ``prompt_id``; ``score_chosen``/``score_rejected`` are kept for the noise models.
"""

from __future__ import annotations

from collections.abc import Iterator

from ropo_jax.data.example import PreferenceExample, parse_messages
from ropo_jax.data.formats.common import NUMBER, ReadContext, field
from ropo_jax.data.formats.generic import _implicit_messages


def convert_row(row: dict, path: str, line: int, ctx: ReadContext) -> Iterator[PreferenceExample]:
    prompt_text = field(row, "prompt", str)
    prompt_id = field(row, "prompt_id", str)
    chosen = parse_messages(field(row, "chosen", list), "chosen")
    rejected = parse_messages(field(row, "rejected", list), "rejected")
    prompt, chosen, rejected = _implicit_messages(chosen, rejected)
    users = [m.content for m in prompt if m.role == "user"]
    if not users or users[-1] != prompt_text:
        raise ValueError("field 'prompt' does not match the user turn of 'chosen'")
    yield PreferenceExample(
        id=prompt_id,
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        metadata={
            "score_chosen": float(field(row, "score_chosen", NUMBER)),
            "score_rejected": float(field(row, "score_rejected", NUMBER)),
        },
    )
