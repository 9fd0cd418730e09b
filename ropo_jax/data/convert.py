"""``python -m ropo_jax.data.convert DIR [DIR ...]``: rewrites prepared directories of format 1
(``tokens.npy`` / ``offsets.npy``) in place as format 2 TFDS datasets (``data/prepared.py``).

The examples, their order, ids, metadata and token ids stay exactly as they were: the data set's
fingerprint (the reference-log-prob cache key) is checked to be the old manifest's, so cached
reference log-probs and resumed runs stay valid. Exit 0 with one line per directory; exit 2
with the reason on a directory that is not format 1 or fails the check.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
from absl import app

from ropo_jax.data import prepared, records
from ropo_jax.data.errors import DataError


def read_format_1(directory: str) -> prepared.PreferenceData:
    """A format 1 directory in memory (its files are local: format 1 never supported gs://)."""
    directory = os.path.expanduser(directory)
    manifest = prepared.read_manifest(directory)
    if manifest.get("format_version") != 1:
        raise DataError(
            f"{directory}: format_version {manifest.get('format_version')!r}, not 1; "
            "nothing to convert"
        )
    load = lambda name: np.load(os.path.join(directory, name))
    ids, metadata = [], []
    with open(os.path.join(directory, "examples.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["id"])
            metadata.append(row["metadata"])
    lengths = load("lengths.npy")
    return prepared.PreferenceData(
        ids=ids,
        records=records.ArrayRecords(load("tokens.npy"), load("offsets.npy"), lengths),
        rows=np.arange(len(ids), dtype=np.int64),
        lengths=lengths,
        original_lengths=load("original_lengths.npy"),
        metadata=metadata,
        manifest={k: v for k, v in manifest.items() if k not in ("format_version", "fingerprint")},
    )


def convert(directory: str) -> prepared.PreferenceData:
    """Converts one directory in place; returns the data as written."""
    data = read_format_1(directory)
    old = prepared.read_manifest(directory).get("fingerprint")
    new = data.fingerprint()
    if old and old != new:
        raise DataError(
            f"{directory}: its token files do not match its manifest's fingerprint "
            f"({new[:12]} != {old[:12]}); prepare it again with python -m ropo_jax.data.prepare"
        )
    data.manifest.setdefault("split", os.path.basename(os.path.normpath(directory)))
    if data.manifest["split"] not in ("train", "test", "sft"):
        data.manifest["split"] = "train"
    data.save(directory)
    return data


def main(argv):
    directories = argv[1:]
    if not directories:
        sys.stderr.write("usage: python -m ropo_jax.data.convert DIR [DIR ...]\n")
        sys.exit(2)
    for directory in directories:
        try:
            data = convert(directory)
        except DataError as e:
            sys.stderr.write(f"{e}\n")
            sys.exit(2)
        sys.stdout.write(
            f"converted {directory}: {len(data)} examples, TFDS split "
            f"{data.manifest['split']!r}, fingerprint {data.manifest['fingerprint'][:12]}\n"
        )


if __name__ == "__main__":
    app.run(main)
