"""Raw rows from the files users download: JSON Lines (optionally gzip), JSON arrays, Parquet,
and TFDS datasets already built elsewhere (``tfds:DIR[:SPLIT]``, e.g. a catalogue or
``huggingface:`` builder's output directory; read through its data source, no TensorFlow).

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
TFDS_PREFIX = "tfds:"  # tfds:DIR[:SPLIT]: a built TFDS dataset (its dataset_info.json in DIR)


def expand_inputs(spec: str) -> list[str]:
    """Files named by a comma-separated list of paths, globs and directories (searched
    recursively for known extensions), in sorted order so ids and order are reproducible."""
    files: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part.startswith(TFDS_PREFIX):
            files.append(part)
        elif os.path.isdir(part):
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


def split_tfds_input(spec: str) -> tuple[str, str]:
    """``tfds:DIR[:SPLIT]`` → (DIR, SPLIT); the split defaults to ``train``. DIR may itself be
    a URL (``gs://...``): the split is what follows its last colon, if that names no path."""
    rest = spec[len(TFDS_PREFIX) :]
    head, sep, tail = rest.rpartition(":")
    directory, split = (head, tail) if sep and tail and "/" not in tail else (rest, "train")
    return (directory if "://" in directory else os.path.expanduser(directory)), split


def _plain(value, feature=None):
    """A TFDS record's values as JSON would give them: text for bytes, lists for arrays, and a
    ``Sequence`` of dicts (which TFDS returns as a dict of lists) as a list of dicts, as the
    messages of a chat data set are in its JSON Lines form."""
    import numpy as np
    import tensorflow_datasets as tfds

    features = tfds.features
    if isinstance(feature, features.Sequence) and isinstance(
        feature.feature, features.FeaturesDict
    ):
        columns = {k: _plain(v, feature.feature[k]) for k, v in value.items()}
        count = len(next(iter(columns.values()), []))
        return [{k: column[i] for k, column in columns.items()} for i in range(count)]
    if isinstance(value, dict):
        sub = feature if isinstance(feature, features.FeaturesDict) else None
        return {
            k: _plain(v, sub[k] if sub is not None and k in sub else None) for k, v in value.items()
        }
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        if not value.ndim:
            return _plain(value.item())
        inner = feature.feature if isinstance(feature, features.Sequence) else None
        return [_plain(v, inner) for v in (value if value.dtype == object else value.tolist())]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def iter_tfds(spec: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    """Records of a built TFDS dataset's split, numbered from 1 (``spec``: ``tfds:DIR[:SPLIT]``),
    decoded to plain Python (text, lists, dicts) so the format readers see what a JSON Lines
    file of the same data would hold."""
    directory, split = split_tfds_input(spec)
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder_from_directory(directory)
        if split not in builder.info.splits:
            splits = ", ".join(sorted(builder.info.splits))
            log.add(spec, 0, f"no split {split!r}; this dataset has: {splits}", fatal=True)
            return
        source = builder.as_data_source(split)
    except Exception as e:  # TFDS raises several types for a missing or unreadable directory
        log.add(spec, 0, f"not a readable TFDS dataset directory ({e})", fatal=True)
        return
    if len(source) == 0:
        log.add(spec, 0, "split is empty (no records)", fatal=True)
        return
    features = builder.info.features
    for index in range(len(source)):
        yield index + 1, _plain(source[index], features)


def iter_rows(path: str, log: ProblemLog) -> Iterator[tuple[int, Any]]:
    """Rows of one file, dispatched on its extension (a ``.json`` file may also be JSON Lines),
    or of a TFDS split (``tfds:DIR[:SPLIT]``; the "line" is the record's 1-based index)."""
    if path.startswith(TFDS_PREFIX):
        yield from iter_tfds(path, log)
        return
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
