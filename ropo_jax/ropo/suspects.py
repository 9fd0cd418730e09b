"""Suspected mislabels: the pairs a round's w-step discards, most contradicted first.

Every round of a run writes ``round_t/suspects.jsonl``: one line per discarded pair (the
⌊ρN⌋ highest ROPO losses, docs/ropo.md "The loop"), sorted by the margin h the policy gives the
pair's label (most negative first: the model prefers the response labelled rejected most
strongly), with the prompt, the response labelled chosen and the one labelled rejected as text,
h, the loss, and, where the run knows them, whether the label was flipped by the controlled
noise and the gold rewards of both responses (synthetic task). It is the list to review when
cleaning a preference data set, whatever it is then trained with.

    python -m ropo_jax.suspects --workdir=W [--round=T] [--top=50]

prints one round's list (default: the last round that wrote one) as a table.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

import numpy as np

from ropo_jax.errors import UserError

FILE = "suspects.jsonl"


def records(train_data, margin_N, loss_N, keep_N, pair_text, *, noise_applied: bool) -> list:
    """The discarded pairs of ``train_data`` as dicts, sorted by margin (ascending; ties by
    position). Texts are in the label's orientation: ``chosen`` is what the training label
    calls chosen (after any controlled noise)."""
    if pair_text is None:  # no tokenizer at hand: the token ids

        def show(ids):
            return [int(t) for t in ids]
    else:
        show = pair_text.text
    discarded = np.flatnonzero(~np.asarray(keep_N, bool))
    order = discarded[np.argsort(np.asarray(margin_N)[discarded], kind="stable")]
    rows = []
    for rank, i in enumerate(order, start=1):
        prompt, chosen, rejected = train_data.pair(int(i))  # training orientation
        flipped = bool(train_data.is_flipped[i])
        row = {
            "rank": rank,
            "id": train_data.ids[i],
            "margin": float(margin_N[i]),
            "loss": float(loss_N[i]),
            "prompt": show(prompt),
            "chosen": show(chosen),
            "rejected": show(rejected),
        }
        if noise_applied:
            row["label_flipped_by_noise"] = flipped
        if pair_text is not None and pair_text.gold_reward is not None:
            row["gold_chosen"] = pair_text.gold(prompt, chosen)
            row["gold_rejected"] = pair_text.gold(prompt, rejected)
        rows.append(row)
    return rows


def write(path: str, rows: list) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class SuspectsError(UserError):
    pass


def find(workdir: str, round_index: int | None = None) -> str:
    """The suspects file of ``round_index``, or of the last round that wrote one."""
    if round_index is not None:
        path = os.path.join(workdir, f"round_{round_index}", FILE)
        if not os.path.isfile(path):
            raise SuspectsError(f"{path} not found: round {round_index} has not finished")
        return path
    found = []
    for path in glob.glob(os.path.join(workdir, "round_*", FILE)):
        match = re.fullmatch(r"round_(\d+)", os.path.basename(os.path.dirname(path)))
        if match:
            found.append((int(match.group(1)), path))
    if not found:
        raise SuspectsError(
            f"no round_*/{FILE} under {workdir}: not a run directory, or no round has finished"
        )
    return max(found)[1]


def _clip(text: str, width: int) -> str:
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list, *, width: int = 48) -> str:
    """A Markdown table of suspects rows (the columns the rows have)."""
    columns = ["rank", "id", "margin", "loss"]
    columns += [
        c
        for c in ("label_flipped_by_noise", "gold_chosen", "gold_rejected")
        if rows and c in rows[0]
    ]
    columns += ["prompt", "chosen", "rejected"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if isinstance(value, float):
                cells.append(f"{value:.3g}")
            elif c in ("prompt", "chosen", "rejected", "id"):
                cells.append(_clip(str(value), width))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def read(path: str) -> list:
    rows = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise SuspectsError(f"{path}:{number}: not JSON ({error.msg})") from None
    return rows


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, help="a run directory")
    parser.add_argument("--round", type=int, default=None, help="round (default: the last)")
    parser.add_argument("--top", type=int, default=50, help="rows to print (0: all)")
    parser.add_argument("--width", type=int, default=48, help="characters per text cell")
    args = parser.parse_args(argv)
    try:
        path = find(args.workdir, args.round)
        rows = read(path)
    except SuspectsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    shown = rows[: args.top] if args.top > 0 else rows
    print(f"{path}: {len(rows)} discarded pairs, most contradicted first; showing {len(shown)}")
    print(table(shown, width=args.width))
    return 0


if __name__ == "__main__":
    sys.exit(main())
