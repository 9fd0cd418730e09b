"""Raw rows from the files users download: JSON Lines (optionally gzip), JSON arrays, Parquet.

Every row comes with its location (1-based line for JSON Lines and for the start of a JSON-array
element, 1-based row for Parquet) so that problems read ``PATH:LINE: reason``. Unreadable files
(missing, empty, not UTF-8 JSON arrays, broken Parquet) are fatal problems; a bad JSON Lines line
is an ordinary one that ``--on_error=skip`` may skip.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
from collections.abc import Iterator
from typing import Any

from ropo_jax.data.errors import ProblemLog

EXTENSIONS = (".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet")


def expand_inputs(spec: str) -> list[str]:
    """Files named by a comma-separated list of paths, globs and directories (searched
    recursively for known extensions), in sorted order so ids and order are reproducible."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if os.path.isdir(part):
            for root, _, names in os.walk(part):
                files.extend(os.path.join(root, n) for n in names if n.endswith(EXTENSIONS))
        elif any(ch in part for ch in "*?["):
            files.extend(glob.glob(part, recursive=True))
        else:
            files.append(part)
    return sorted(dict.fromkeys(files))


def _open_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    if path.endswith(".gz"):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise ValueError(f"not a valid gzip file ({e})") from None
    return data


def _json_error(e: json.JSONDecodeError) -> str:
    return f"malformed JSON: {e.msg} at column {e.colno}"


def iter_jsonl(path: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    """Streams the lines (large HH/TL;DR files need not fit in memory twice)."""
    opener = gzip.open if path.endswith(".gz") else open
    rows = 0
    line_no = 0
    try:
        with opener(path, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                rows += 1
                try:
                    # utf-8-sig: a byte-order mark at the start of the file is not an error.
                    text = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    log.add(
                        path,
                        line_no,
                        f"invalid UTF-8 (byte {e.start + 1} of the line); re-encode the file "
                        "as UTF-8",
                    )
                    continue
                try:
                    yield line_no, json.loads(text)
                except json.JSONDecodeError as e:
                    log.add(path, line_no, _json_error(e))
    except (OSError, EOFError) as e:  # a truncated or non-gzip .gz file
        log.add(path, line_no + 1, f"not a valid gzip file ({e})", fatal=True)
        return
    if rows == 0:
        log.add(path, 0, "file is empty (no rows)", fatal=True)


def iter_json_array(path: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    """Elements of one top-level JSON array, each with the line it starts on."""
    data = _open_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        log.add(path, line, "invalid UTF-8; re-encode the file as UTF-8", fatal=True)
        return
    decoder = json.JSONDecoder()
    pos = _skip_ws(text, 0)
    if pos == len(text):
        log.add(path, 0, "file is empty (no rows)", fatal=True)
        return
    if text[pos] != "[":
        log.add(path, text.count("\n", 0, pos) + 1, "expected a JSON array '[...]'", fatal=True)
        return
    pos = _skip_ws(text, pos + 1)
    count = 0
    while pos < len(text) and text[pos] != "]":
        line = text.count("\n", 0, pos) + 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            # Inside an array there is no safe place to resume, so this ends the file.
            log.add(
                path, e.lineno, _json_error(e) + " (the rest of the file is unreadable)", fatal=True
            )
            return
        count += 1
        yield line, value
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        elif pos < len(text) and text[pos] != "]":
            log.add(
                path,
                text.count("\n", 0, pos) + 1,
                "malformed JSON: expected ',' or ']'",
                fatal=True,
            )
            return
    if count == 0:
        log.add(path, 0, "file is empty (the array has no elements)", fatal=True)


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def iter_parquet(path: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq  # Only Parquet inputs need pyarrow.

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises several types for a corrupt file
        log.add(path, 0, f"not a readable Parquet file ({e})", fatal=True)
        return
    row = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for record in batch.to_pylist():
            row += 1
            yield row, record
    if row == 0:
        log.add(path, 0, "file is empty (no rows)", fatal=True)


def iter_rows(path: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    """Rows of one file, dispatched on its extension (a ``.json`` file may also be JSON Lines)."""
    if not os.path.isfile(path):
        log.add(path, 0, "no such file; check --input", fatal=True)
        return
    try:
        if path.endswith(".parquet"):
            yield from iter_parquet(path, log)
        elif path.endswith((".json", ".json.gz")) and _starts_with_bracket(path):
            yield from iter_json_array(path, log)
        else:
            yield from iter_jsonl(path, log)
    except ValueError as e:  # unreadable gzip
        log.add(path, 0, str(e), fatal=True)


def _starts_with_bracket(path: str) -> bool:
    head = _open_bytes(path)[:4096].lstrip()
    return head.startswith(b"[")
