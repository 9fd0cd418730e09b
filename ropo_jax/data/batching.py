"""Collating pairs into the batch row format (padded and packed rows) — pure NumPy.

``loss_mask`` selects the response tokens whose log-probs make the sequence log-probs of
docs/method.md §1 (prompt and padding masked out).

Key: B pairs in the batch, R token rows, T row length.

Token rows ``[R, T]`` (int32): ``tokens``; ``positions`` (0.. within each sequence);
``segment_ids`` (0 = padding, 1..k = the sequences of a row); ``loss_mask`` (1 on response
tokens: the log-prob of ``tokens[t]`` comes from ``logits[t-1]``, and the first token of every
sequence is a prompt token, so no target crosses a segment boundary); ``sequence_index`` (the
sequence slot of each token: chosen of pair i → i, rejected → B + i; padding → 0).

Pairs ``[B]``: ``example_index`` (int32, −1 for padding pairs), ``weight`` (float32, 0 for padding
pairs), ``is_flipped`` (bool, noise flipped this pair's label — metrics only),
``chosen_lengths``/``rejected_lengths`` (int32 response tokens, i.e. ``loss_mask`` counts).

Completion positions ``[R, C]`` (int32): ``completion_positions`` lists, per row and in order,
the columns t whose next token ``tokens[t + 1]`` is a response token (``loss_mask[t + 1] = 1``),
then −1. They are the only positions whose logits enter a sequence log-prob, so the LM head runs
on the gathered ``[R, C, D]`` hidden states instead of all ``[R, T, D]``. C is a static bound
(``completion_bound``: the data's longest response, or its largest response share of a row when
rows are packed), so shapes stay fixed across steps; −1 entries carry weight 0.

Padded rows are the special case R = 2B: row i holds prompt+chosen of pair i, row B + i
prompt+rejected. Packed rows hold several sequences each, placed first-fit-decreasing.
"""

from __future__ import annotations

import numpy as np

from ropo_jax.data.errors import DataError

TOKEN_KEYS = ("tokens", "positions", "segment_ids", "loss_mask", "sequence_index")
PAIR_KEYS = ("example_index", "weight", "is_flipped", "chosen_lengths", "rejected_lengths")
COMPLETION_KEY = "completion_positions"
COMPLETION_MULTIPLE = 8  # C is rounded up to a multiple of this (capped at T − 1)


def completion_bound(
    prompt_lengths, response_lengths, seq_len: int, *, packed: bool, limit: int | None = None
) -> int:
    """A static C for ``completion_positions``: the most response tokens any row of ``seq_len``
    can hold, for sequences of these prompt/response lengths (all sequences the batches may
    draw from: the bound, and thus the batch shape, then depends only on ``seq_len``).

    One sequence per row: its response, at most the longest response ``max r``. Packed rows:
    Σ r ≤ ρ·T with ρ the largest response share r / (p + r) of any sequence, and at most
    ⌊T / shortest sequence⌋ responses of ``max r``. Rounded up to a multiple of
    ``COMPLETION_MULTIPLE``, capped at T − 1 (a row's first token is a prompt token), at least 1.
    ``limit`` (optional) caps the bound further, e.g. a configured ``max_completion_tokens``;
    ``collate`` raises when a row then needs more.
    """
    prompts = np.asarray(prompt_lengths, np.int64).reshape(-1)
    responses = np.asarray(response_lengths, np.int64).reshape(-1)
    cap = max(1, seq_len - 1)
    if responses.size == 0:
        return 1
    totals = np.maximum(prompts + responses, 1)
    by_share = int(np.max(responses * seq_len // totals))
    longest = int(responses.max())
    if packed:
        bound = min(by_share, (seq_len // int(totals.min())) * longest)
    else:
        bound = min(by_share, longest)
    bound = -(-max(bound, 1) // COMPLETION_MULTIPLE) * COMPLETION_MULTIPLE
    if limit is not None:
        bound = min(bound, int(limit))
    return max(1, min(bound, cap))


def completion_positions(loss_mask_RT: np.ndarray, width: int | None = None) -> np.ndarray:
    """int32 [R, width]: per row, the columns t with ``loss_mask[t + 1] = 1`` in order, then −1.

    ``width`` None: T − 1 (every position; a shape fixed by T alone, but no saving in the LM
    head), so callers pass a tighter static bound: ``completion_bound``'s, or the longest
    response when they know it. Raises DataError when a row has more response tokens.
    """
    target_mask_RT = np.asarray(loss_mask_RT)[:, 1:] != 0
    counts_R = target_mask_RT.sum(axis=1)
    need = int(counts_R.max()) if counts_R.size else 0
    width = max(1, target_mask_RT.shape[1]) if width is None else int(width)
    if need > width:
        raise DataError(
            f"a row holds {need} response tokens, more than the completion bound {width}; "
            "raise the stage's max_completion_tokens (config.train.* or config.sft.*), or set it "
            "to 0 to derive it from the data"
        )
    out = np.full((target_mask_RT.shape[0], width), -1, np.int32)
    rows, cols = np.nonzero(target_mask_RT)  # row-major: columns ascend within each row
    starts = np.concatenate([[0], np.cumsum(counts_R)[:-1]])
    out[rows, np.arange(rows.size) - np.repeat(starts, counts_R)] = cols
    return out


def pack_rows(lengths, capacity: int) -> list[list[int]]:
    """First-fit-decreasing bin packing: lists of item indices per row (deterministic)."""
    order = sorted(range(len(lengths)), key=lambda i: (-int(lengths[i]), i))
    rows: list[list[int]] = []
    space: list[int] = []
    for i in order:
        length = int(lengths[i])
        if length > capacity:
            raise ValueError(f"sequence of {length} tokens does not fit rows of {capacity}")
        for r, free in enumerate(space):
            if length <= free:
                rows[r].append(i)
                space[r] -= length
                break
        else:
            rows.append([i])
            space.append(capacity - length)
    return rows


def empty_batch(num_pairs: int, num_rows: int, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    batch = {key: np.zeros((num_rows, seq_len), np.int32) for key in TOKEN_KEYS}
    batch["tokens"][:] = pad_id
    batch["example_index"] = np.full(num_pairs, -1, np.int32)
    batch["weight"] = np.zeros(num_pairs, np.float32)
    batch["is_flipped"] = np.zeros(num_pairs, bool)
    batch["chosen_lengths"] = np.zeros(num_pairs, np.int32)
    batch["rejected_lengths"] = np.zeros(num_pairs, np.int32)
    return batch


def _place(batch, row: int, start: int, segment: int, slot: int, prompt, response) -> int:
    p, r = len(prompt), len(response)
    end = start + p + r
    batch["tokens"][row, start : start + p] = prompt
    batch["tokens"][row, start + p : end] = response
    batch["positions"][row, start:end] = np.arange(p + r)
    batch["segment_ids"][row, start:end] = segment
    batch["loss_mask"][row, start + p : end] = 1
    batch["sequence_index"][row, start:end] = slot
    return end


def collate(
    pairs: list,
    *,
    num_pairs: int,
    seq_len: int,
    pad_id: int,
    packed: bool = False,
    num_rows: int | None = None,
    sft: bool = False,
    completion_len: int | None = None,
) -> dict[str, np.ndarray]:
    """``pairs``: ``(example_index, prompt, chosen, rejected, is_flipped)`` tuples (≤ num_pairs;
    the rest become padding pairs). Padded: ``num_rows`` = 2·num_pairs; packed: the rows needed,
    or ``num_rows`` when given (must suffice). ``sft``: one sequence per example (prompt +
    chosen, slot i; ``rejected`` is ignored) and padded R = B rows. ``completion_len``: the
    width C of ``completion_positions`` (a static bound such as ``completion_bound``'s or the
    longest response; None: T − 1)."""
    if len(pairs) > num_pairs:
        raise ValueError(f"{len(pairs)} pairs do not fit a batch of {num_pairs}")
    # Sequence slots: chosen of pair i → i, rejected → B + i.
    sequences = {}
    for i, (_, prompt, chosen, rejected, _) in enumerate(pairs):
        sequences[i] = (prompt, chosen)
        if not sft:
            sequences[num_pairs + i] = (prompt, rejected)
    if packed:
        slots = sorted(sequences)
        layout = pack_rows([sum(map(len, sequences[s])) for s in slots], seq_len)
        rows = [[slots[j] for j in row] for row in layout]
        num_rows = len(rows) if num_rows is None else num_rows
        if len(rows) > num_rows:
            raise ValueError(f"{len(rows)} packed rows needed, only {num_rows} allowed")
    else:
        num_rows = num_pairs if sft else 2 * num_pairs
        rows = [[s] if s in sequences else [] for s in range(num_rows)]
    batch = empty_batch(num_pairs, num_rows, seq_len, pad_id)
    for r, slots_in_row in enumerate(rows):
        start = 0
        for segment, slot in enumerate(slots_in_row, start=1):
            prompt, response = sequences[slot]
            if start + len(prompt) + len(response) > seq_len:
                raise ValueError(
                    f"sequence of {len(prompt) + len(response)} tokens does not fit "
                    f"rows of {seq_len}"
                )
            start = _place(batch, r, start, segment, slot, prompt, response)
    for i, (example_index, _, chosen, rejected, flipped) in enumerate(pairs):
        batch["example_index"][i] = example_index
        batch["weight"][i] = 1.0
        batch["is_flipped"][i] = flipped
        batch["chosen_lengths"][i] = len(chosen)
        batch["rejected_lengths"][i] = len(rejected)
    batch[COMPLETION_KEY] = completion_positions(batch["loss_mask"], completion_len)
    return batch


def padding_efficiency(batches) -> float:
    """Real tokens / total tokens over an iterable of batches."""
    real = total = 0
    for batch in batches:
        real += int(np.count_nonzero(batch["segment_ids"]))
        total += batch["segment_ids"].size
    return real / total if total else 0.0


def stack_micro_batches(batches: list[dict[str, np.ndarray]], pad_id: int = 0) -> dict:
    """[K, ...] arrays from K loader batches, padding rows R and length T to the largest (padding
    rows/tokens carry segment 0 and loss_mask 0, so they contribute nothing), and the width C of
    ``completion_positions`` to the largest with −1 (column indices do not move when T grows)."""
    if len(batches) == 1:
        return {k: v[None] for k, v in batches[0].items()}
    rows = max(b["tokens"].shape[0] for b in batches)
    length = max(b["tokens"].shape[1] for b in batches)
    out = {}
    for key in batches[0]:
        parts = []
        width = length
        if key == COMPLETION_KEY:
            width = max(b[key].shape[1] for b in batches)
        for b in batches:
            x = b[key]
            if x.ndim == 2:  # token rows
                fill = -1 if key == COMPLETION_KEY else pad_id if key == "tokens" else 0
                x = np.pad(
                    x, ((0, rows - x.shape[0]), (0, width - x.shape[1])), constant_values=fill
                )
            parts.append(x)
        out[key] = np.stack(parts)
    return out
