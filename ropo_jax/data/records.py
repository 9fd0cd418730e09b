"""Where a data set's token ids live, read by example index.

:class:`~ropo_jax.data.prepared.PreferenceData` keeps, for every process, the small per-example
table (ids, lengths, metadata, flips) and reads the token ids of an example only when a batch
needs it, through one of these record sources:

- :class:`ArrayRecords`: every example's ``prompt | chosen | rejected`` back to back in memory
  (pairs made during a run: rejection samples, the synthetic task, tests);
- :class:`TfdsRecords`: a prepared split's ArrayRecord shards, opened as a TFDS data source
  (``tfds.builder_from_directory(DIR).as_data_source(SPLIT)``): random access by index, so a
  process reads only the examples of its own part of each batch, from a local disk or a
  mounted bucket (prepare writes to ``gs://`` or any ``etils.epath`` path; array-record's
  reader opens local paths only);
- :class:`ConcatRecords`: several sources one after the other (a round's kept pairs plus its
  rejection-sampled ones).

``read(rows)`` returns ``[(prompt, chosen, rejected), ...]`` int32 arrays for record indices
``rows``; sources are immutable and shared by every subset of a data set.
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from typing import Any

import numpy as np
from etils import epath

from ropo_jax.data.errors import DataError

# The TFDS dataset a prepared split is (its name in dataset_info.json) and its features.
TFDS_NAME = "ropo_jax_prepared"
EXAMPLES_PER_SHARD = 4096
TOKEN_PARTS = ("prompt", "chosen", "rejected")


class ArrayRecords:
    """Token ids of all examples concatenated in memory, ``offsets[i]`` the start of record i."""

    def __init__(self, tokens, offsets, lengths):
        self.tokens = np.asarray(tokens, np.int32)
        self.offsets = np.asarray(offsets, np.int64)
        self.lengths = np.asarray(lengths, np.int32).reshape(-1, 3)

    def __len__(self) -> int:
        return len(self.offsets)

    def read(self, rows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for row in np.asarray(rows, np.int64).reshape(-1):
            start = int(self.offsets[row])
            p, c, r = (int(x) for x in self.lengths[row])
            t = self.tokens
            out.append(
                (
                    t[start : start + p],
                    t[start + p : start + p + c],
                    t[start + p + c : start + p + c + r],
                )
            )
        return out


class TfdsRecords:
    """A prepared split read through its TFDS data source (opened on first use, so a data set
    can be described, subset and noised without touching the shards)."""

    def __init__(self, directory: str, split: str, num_records: int):
        self.directory, self.split, self.num_records = str(directory), split, num_records

    def __len__(self) -> int:
        return self.num_records

    @functools.cached_property
    def source(self):
        return open_data_source(self.directory, self.split)

    def read(self, rows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rows = [int(r) for r in np.asarray(rows, np.int64).reshape(-1)]
        if not rows:
            return []
        records = self.source.__getitems__(rows)
        return [tuple(np.asarray(rec[k], np.int32) for k in TOKEN_PARTS) for rec in records]

    def __getstate__(self):  # the data source's file handles stay in their process
        return {k: v for k, v in self.__dict__.items() if k != "source"}


class ConcatRecords:
    """Sources one after the other: record ``len(a) + j`` is record j of ``b``."""

    def __init__(self, parts):
        self.parts = []
        for part in parts:  # flattened, so repeated concatenation stays one level deep
            self.parts.extend(part.parts if isinstance(part, ConcatRecords) else [part])
        self.starts = np.cumsum([0] + [len(p) for p in self.parts], dtype=np.int64)

    def __len__(self) -> int:
        return int(self.starts[-1])

    def read(self, rows) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        rows = np.asarray(rows, np.int64).reshape(-1)
        which = np.searchsorted(self.starts, rows, side="right") - 1
        out: list[Any] = [None] * len(rows)
        for k in np.unique(which):
            at = np.flatnonzero(which == k)
            for slot, parts in zip(at, self.parts[k].read(rows[at] - self.starts[k]), strict=True):
                out[slot] = parts
        return out


def tfds_features():
    """The features of one record: the three token-id parts, their lengths before and after
    truncation, the example's id and its metadata as JSON text."""
    import tensorflow_datasets as tfds

    ids = lambda: tfds.features.Tensor(shape=(None,), dtype=np.int32)
    return tfds.features.FeaturesDict(
        {
            "id": tfds.features.Text(),
            "prompt": ids(),
            "chosen": ids(),
            "rejected": ids(),
            "lengths": tfds.features.Tensor(shape=(3,), dtype=np.int32),
            "original_lengths": tfds.features.Tensor(shape=(3,), dtype=np.int32),
            "metadata": tfds.features.Text(),
        }
    )


def write_tfds_split(directory, split: str, examples, *, description: str, version: str) -> None:
    """Writes ``examples`` (dicts with the features' keys) as split ``split`` of a TFDS dataset
    in ``directory`` (an ``epath`` path): ArrayRecord shards of ``EXAMPLES_PER_SHARD`` records,
    ``dataset_info.json`` and ``features.json``. Writing ArrayRecord needs no TensorFlow. The
    ArrayRecord writer opens only local files (array-record 0.8.6), so for a remote directory
    (``gs://...``) the dataset is written to a local temporary directory, then copied there
    through ``epath`` (the dataset's files name no directory: it is relocatable)."""
    target = epath.Path(directory)
    if "://" not in os.fspath(directory):
        _write_tfds_split_locally(target, split, examples, description, version)
        return
    with tempfile.TemporaryDirectory(prefix="ropo_jax_prepared_") as local:
        _write_tfds_split_locally(epath.Path(local), split, examples, description, version)
        target.mkdir(parents=True, exist_ok=True)
        for file in sorted(epath.Path(local).iterdir()):
            (target / file.name).write_bytes(file.read_bytes())


def _write_tfds_split_locally(directory: epath.Path, split, examples, description, version):
    from tensorflow_datasets.core import dataset_info, sequential_writer

    info = dataset_info.DatasetInfo(
        builder=dataset_info.DatasetIdentity(
            name=TFDS_NAME, version=version, data_dir=str(directory), module_name=__name__
        ),
        description=description,
        features=tfds_features(),
    )
    writer = sequential_writer.SequentialWriter(
        ds_info=info, max_examples_per_shard=EXAMPLES_PER_SHARD, file_format="array_record"
    )
    writer.initialize_splits([split])
    chunk = []
    for example in examples:
        chunk.append(example)
        if len(chunk) == EXAMPLES_PER_SHARD:
            writer.add_examples({split: chunk})
            chunk = []
    if chunk:
        writer.add_examples({split: chunk})
    writer.close_splits([split])


def open_data_source(directory: str, split: str):
    """The split's TFDS data source: what any TFDS or grain program opens, without ropo_jax.
    The index files go through ``epath``; the shards through ArrayRecord's own reader, which
    in array-record 0.8.6 opens local paths only — a bucket is read through a FUSE mount
    (docs/data.md)."""
    import tensorflow_datasets as tfds

    if "://" in str(directory):
        # Refused before the reader exists: array-record 0.8.6's reader, given a ``gs://``
        # path, neither opens it nor raises — its constructor waits forever.
        raise DataError(
            f"{directory}: the ArrayRecord reader (array-record 0.8.6) cannot open remote "
            "paths; mount the bucket (e.g. gcsfuse) and give the mounted path — each process "
            "then reads only the records of its batches through the mount (docs/data.md)"
        )
    source = tfds.builder_from_directory(str(directory)).as_data_source(split)
    if len(source):
        source[0]  # the readers open lazily: fail here, not inside a batch
    return source


def record_example(example_id: str, parts, original_lengths, metadata) -> dict:
    """One record in the features' layout."""
    prompt, chosen, rejected = (np.asarray(x, np.int32) for x in parts)
    return {
        "id": example_id,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "lengths": np.array([len(prompt), len(chosen), len(rejected)], np.int32),
        "original_lengths": np.asarray(original_lengths, np.int32),
        "metadata": json.dumps(metadata, ensure_ascii=False, sort_keys=True),
    }
