"""Alpaca Comparison (GPT-4-LLM ``comparison_data_v2.json``, docs/data.md "Formats and their
prompt/response conventions").

Each element holds one instruction and several responses scored 1–10 by GPT-4, with the
generator in ``source``. Pairing rules (``pairing``):

- ``best_vs_worst`` (default): the highest- against the lowest-scored response; an element whose
  responses all share one score yields no pair (counted as ``tied``);
- ``all_pairs``: every pair of responses with different scores, higher score chosen.

Ties between equal top (or bottom) scores are broken by position, so the result is stable. An
empty response is a problem (``PATH:LINE: ...``); with ``--on_error=skip`` it is left out of the
pairs and listed. The prompt is one user message (rendered with the chat template); the source
names go to ``metadata["source_chosen"/"source_rejected"]`` for the ``source_biased`` noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from ropo_jax.data.example import Message, PreferenceExample, stable_id
from ropo_jax.data.formats.common import NUMBER, ReadContext, field

PAIRINGS = ("best_vs_worst", "all_pairs")


def make_converter(pairing: str = "best_vs_worst"):
    if pairing not in PAIRINGS:
        raise ValueError(f"pairing={pairing!r}: expected one of {PAIRINGS}")

    def convert_row(row: dict, path: str, line: int, ctx: ReadContext):
        return _convert(row, path, line, ctx, pairing)

    return convert_row


def _convert(row, path, line, ctx, pairing) -> Iterator[PreferenceExample]:
    instruction = field(row, "user_input", str)
    if not instruction.strip():
        raise ValueError("field 'user_input' is empty")
    scored = []
    for i, item in enumerate(field(row, "responses_and_scores", list)):
        if not isinstance(item, dict):
            raise ValueError(f"field 'responses_and_scores[{i}]' must be an object")
        try:
            response = field(item, "response", str)
            score = float(field(item, "score", NUMBER))
            source = field(item, "source", str)
        except ValueError as e:
            raise ValueError(f"responses_and_scores[{i}]: {e}") from None
        if not response.strip():
            # Reported, and with on_error=skip the other responses still make pairs.
            ctx.log.add(path, line, f"responses_and_scores[{i}].response is empty")
            continue
        scored.append((i, response, score, source))
    prompt = (Message("user", instruction),)
    key = stable_id(instruction, [s[1] for s in scored])
    if pairing == "best_vs_worst":
        ranked = sorted(scored, key=lambda s: (-s[2], s[0]))
        candidates = [(ranked[0], ranked[-1])] if len(ranked) >= 2 else []
    else:
        candidates = [
            (a, b) if a[2] > b[2] else (b, a) for a, b in itertools.combinations(scored, 2)
        ]
    made = 0
    for better, worse in candidates:
        if better[2] == worse[2] or better[1] == worse[1]:
            continue
        made += 1
        yield PreferenceExample(
            id=key if pairing == "best_vs_worst" else f"{key}-{better[0]}-{worse[0]}",
            prompt=prompt,
            chosen=(Message("assistant", better[1]),),
            rejected=(Message("assistant", worse[1]),),
            metadata={
                "score_chosen": better[2],
                "score_rejected": worse[2],
                "source_chosen": better[3],
                "source_rejected": worse[3],
            },
        )
    if made == 0:
        ctx.dropped["alpaca: no two responses with different scores"] += 1
