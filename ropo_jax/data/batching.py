"""Collating pairs into the batch row format (padded and packed rows) — pure NumPy.

``loss_mask`` selects the response tokens whose log-probs make the sequence log-probs of SPEC §1
(prompt and padding masked out).

Key: B pairs in the batch, R token rows, T row length.

Token rows ``[R, T]`` (int32): ``tokens``; ``positions`` (0.. within each sequence);
``segment_ids`` (0 = padding, 1..k = the sequences of a row); ``loss_mask`` (1 on response
tokens: the log-prob of ``tokens[t]`` comes from ``logits[t-1]``, and the first token of every
sequence is a prompt token, so no target crosses a segment boundary); ``sequence_index`` (the
sequence slot of each token: chosen of pair i → i, rejected → B + i; padding → 0).

Pairs ``[B]``: ``example_index`` (int32, −1 for padding pairs), ``weight`` (float32, 0 for padding
pairs), ``is_flipped`` (bool, noise flipped this pair's label — metrics only),
``chosen_lengths``/``rejected_lengths`` (int32 response tokens, i.e. ``loss_mask`` counts).

Padded rows are the special case R = 2B: row i holds prompt+chosen of pair i, row B + i
prompt+rejected. Packed rows hold several sequences each, placed first-fit-decreasing.
"""

from __future__ import annotations

import numpy as np

TOKEN_KEYS = ("tokens", "positions", "segment_ids", "loss_mask", "sequence_index")
PAIR_KEYS = ("example_index", "weight", "is_flipped", "chosen_lengths", "rejected_lengths")


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
) -> dict[str, np.ndarray]:
    """``pairs``: ``(example_index, prompt, chosen, rejected, is_flipped)`` tuples (≤ num_pairs;
    the rest become padding pairs). Padded: ``num_rows`` = 2·num_pairs; packed: the rows needed,
    or ``num_rows`` when given (must suffice). ``sft``: one sequence per example (prompt +
    chosen, slot i; ``rejected`` is ignored) and padded R = B rows."""
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
    return batch


def padding_efficiency(batches) -> float:
    """Real tokens / total tokens over an iterable of batches."""
    real = total = 0
    for batch in batches:
        real += int(np.count_nonzero(batch["segment_ids"]))
        total += batch["segment_ids"].size
    return real / total if total else 0.0
