"""Reddit TL;DR human comparisons (OpenAI "summarize from feedback", docs/data.md "Formats and
their prompt/response conventions").

Prompt: ``"SUBREDDIT: r/{subreddit}\\nTITLE: {title}\\nPOST: {post}\\nTL;DR:"``; the chosen
summary is ``summaries[choice]``, and responses start with a space (added when missing) so the
prompt/response boundary is a word boundary. CNN/DM rows (``info.article`` instead of
``info.post``) are left out and counted unless ``include_cnndm``; then the prompt is
``"ARTICLE: {article}\\nTL;DR:"``. The policies that wrote the summaries go to
``metadata["source_chosen"/"source_rejected"]``; ``extra.confidence`` is kept when present.
"""

from __future__ import annotations

from collections.abc import Iterator

from ropo_jax.data.example import PreferenceExample, stable_id
from ropo_jax.data.formats.common import ReadContext, field, optional_field

REDDIT_PROMPT = "SUBREDDIT: r/{subreddit}\nTITLE: {title}\nPOST: {post}\nTL;DR:"
CNNDM_PROMPT = "ARTICLE: {article}\nTL;DR:"


def _summary(summaries: list, i: int) -> tuple[str, str]:
    item = summaries[i]
    if not isinstance(item, dict):
        raise ValueError(f"field 'summaries[{i}]' must be an object")
    try:
        text = field(item, "text", str)
    except ValueError as e:
        raise ValueError(f"summaries[{i}]: {e}") from None
    policy = item.get("policy")
    return text if text[:1].isspace() or not text else " " + text, str(policy or "unknown")


def make_converter(include_cnndm: bool = False):
    def convert_row(row: dict, path: str, line: int, ctx: ReadContext):
        return _convert(row, ctx, include_cnndm)

    return convert_row


def _convert(row: dict, ctx: ReadContext, include_cnndm: bool) -> Iterator[PreferenceExample]:
    info = field(row, "info", dict)
    summaries = field(row, "summaries", list)
    if len(summaries) != 2:
        raise ValueError(f"field 'summaries' must hold 2 summaries, got {len(summaries)}")
    choice = field(row, "choice", int)
    if choice not in (0, 1):
        raise ValueError(f"field 'choice' must be 0 or 1, got {choice}")
    if info.get("article") is not None and info.get("post") is None:
        if not include_cnndm:
            ctx.dropped["tldr: CNN/DM rows left out"] += 1
            return
        prompt = CNNDM_PROMPT.format(article=field(info, "article", str).strip())
    else:
        try:
            prompt = REDDIT_PROMPT.format(
                subreddit=field(info, "subreddit", str),
                title=field(info, "title", str).strip(),
                post=field(info, "post", str).strip(),
            )
        except ValueError as e:
            raise ValueError(f"info: {e}") from None
    (chosen, source_chosen), (rejected, source_rejected) = (
        _summary(summaries, choice),
        _summary(summaries, 1 - choice),
    )
    extra = optional_field(row, "extra", dict) or {}
    metadata = {"source_chosen": source_chosen, "source_rejected": source_rejected}
    for key in ("worker", "batch", "split"):
        if row.get(key) is not None:
            metadata[key] = str(row[key])
    if isinstance(extra.get("confidence"), int | float):
        metadata["confidence"] = float(extra["confidence"])
    # One post is compared many times (other summaries, other workers): the id covers them all.
    digest = stable_id(prompt, chosen, rejected, metadata.get("worker"), metadata.get("batch"))
    yield PreferenceExample(
        id=f"{info.get('id', '')}-{digest[:10]}",
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        metadata=metadata,
    )
