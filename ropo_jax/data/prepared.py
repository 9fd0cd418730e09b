"""A prepared (tokenized) preference data set, on disk and in memory.

A prepared directory (``python -m ropo_jax.data.prepare``; format version 2) is a TFDS dataset
with one split, readable by any TFDS or grain program without ropo_jax and without TensorFlow
(``tfds.builder_from_directory(DIR).as_data_source(manifest["split"])``), plus the small index
every process reads. Every file goes through ``etils.epath``, so DIR may be ``gs://...``:

- ``dataset_info.json``, ``features.json``, ``ropo_jax_prepared-SPLIT.array_record-NNNNN``: one
  record per example: ``id``, ``prompt`` / ``chosen`` / ``rejected`` token ids (int32),
  ``lengths`` and ``original_lengths`` (int32 [3]: after and before truncation) and
  ``metadata`` (JSON text) — see ``records.tfds_features``;
- ``manifest.json``: token ids (``bos_id``, ``eos_id``, ``pad_id``), ``vocab_size``, limits, the
  source format/input, the ``encoding_version`` of the tokenization rules
  (``data.encode.ENCODING_VERSION``), the TFDS ``split``, the read/written/truncated/rejected
  counts and the ``fingerprint``; written last, so a directory with a manifest is complete;
- the index, for planning batches, noise and reports on every process without reading the
  shards: ``lengths.npy``, ``original_lengths.npy`` (int32 [N, 3]) and ``examples.jsonl``
  (``{"id", "metadata"}`` per example, in record order);
- ``skipped.jsonl`` (only with ``--on_error=skip``): the problems of the rows left out.

Token ids are read by example index (``records.TfdsRecords``), so each process reads only the
records of its own batches. Format 1 (``tokens.npy`` / ``offsets.npy``, before TFDS) is refused
with the command that converts it (``python -m ropo_jax.data.convert``).

Chosen/rejected are stored as labelled in the input ("true" labels). Noise (docs/method.md §4.1) is
applied at load time: ``is_flipped`` marks pairs whose label the noise model flipped, and
:meth:`PreferenceData.pair` returns them in training (noisy) orientation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
from typing import Any

import numpy as np
from absl import logging
from etils import epath

from ropo_jax.data import records as records_lib
from ropo_jax.data.errors import DataError

FORMAT_VERSION = 2
INDEX_FILES = ("lengths.npy", "original_lengths.npy", "examples.jsonl")
# Format 1's files: removed when a directory is converted or prepared again.
FORMAT_1_FILES = ("tokens.npy", "offsets.npy")


@dataclasses.dataclass
class PreferenceData:
    """``len(ids)`` examples: example i is record ``rows[i]`` of ``records`` (shared by every
    subset), with its lengths, metadata and flip in the arrays and lists below."""

    ids: list[str]
    records: Any  # a records.ArrayRecords / TfdsRecords / ConcatRecords
    rows: np.ndarray  # int64 [N]: example i's record index in ``records``
    lengths: np.ndarray  # int32 [N, 3]
    original_lengths: np.ndarray  # int32 [N, 3]
    metadata: list[dict[str, Any]]
    manifest: dict[str, Any]
    is_flipped: np.ndarray | None = None  # bool [N]; None = no noise applied
    # The manifest's fingerprint while the examples are exactly the prepared split's.
    known_fingerprint: str | None = None

    def __post_init__(self):
        if self.is_flipped is None:
            self.is_flipped = np.zeros(len(self.ids), dtype=bool)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pad_id(self) -> int:
        return int(self.manifest["pad_id"])

    def parts(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompt, chosen, rejected token ids as labelled in the input."""
        return self.records.read([self.rows[i]])[0]

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompt, chosen, rejected in training orientation (swapped where noise flipped)."""
        return self.pairs([i])[0]

    def pairs(self, indices) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """:meth:`pair` of each of ``indices``, read in one call (one batch of records)."""
        idx = np.asarray(indices, np.int64).reshape(-1)
        out = []
        for i, (prompt, chosen, rejected) in zip(
            idx, self.records.read(self.rows[idx]), strict=True
        ):
            out.append(
                (prompt, rejected, chosen) if self.is_flipped[i] else (prompt, chosen, rejected)
            )
        return out

    def sequence_lengths(self) -> np.ndarray:
        """int32 [N, 2]: prompt+chosen and prompt+rejected token counts."""
        return self.lengths[:, :1] + self.lengths[:, 1:]

    def column(self, key: str, default=None) -> list:
        return [m.get(key, default) for m in self.metadata]

    def with_flips(self, is_flipped: np.ndarray) -> PreferenceData:
        return dataclasses.replace(self, is_flipped=np.asarray(is_flipped, dtype=bool))

    def subset(self, indices) -> PreferenceData:
        """The examples at ``indices`` (e.g. the kept set of a ROPO round), records shared."""
        idx = np.asarray(indices, dtype=np.int64)
        same = idx.size == len(self) and bool(np.all(idx == np.arange(len(self))))
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in idx],
            rows=self.rows[idx],
            lengths=self.lengths[idx],
            original_lengths=self.original_lengths[idx],
            metadata=[self.metadata[i] for i in idx],
            is_flipped=self.is_flipped[idx],
            known_fingerprint=self.known_fingerprint if same else None,
        )

    def concat(self, other: PreferenceData | None) -> PreferenceData:
        """These examples then ``other``'s (same tokenizer), flip masks included."""
        if other is None or len(other) == 0:
            return self
        return dataclasses.replace(
            self,
            ids=list(self.ids) + list(other.ids),
            records=records_lib.ConcatRecords([self.records, other.records]),
            rows=np.concatenate([self.rows, other.rows + len(self.records)]),
            lengths=np.concatenate([self.lengths, other.lengths]),
            original_lengths=np.concatenate([self.original_lengths, other.original_lengths]),
            metadata=list(self.metadata) + list(other.metadata),
            is_flipped=np.concatenate([self.is_flipped, other.is_flipped]),
            known_fingerprint=None,
        )

    def fingerprint(self) -> str:
        """sha256 over ids and token ids in example order (the reference-log-prob cache key).
        A prepared split's is its manifest's, so no process reads the shards to compute it."""
        if self.known_fingerprint:
            return self.known_fingerprint
        h = hashlib.sha256()
        for start in range(0, len(self), 1024):
            stop = min(start + 1024, len(self))
            for i, parts in zip(
                range(start, stop), self.records.read(self.rows[start:stop]), strict=True
            ):
                h.update(self.ids[i].encode("utf-8") + b"\0")
                for part in parts:
                    h.update(np.ascontiguousarray(part, dtype=np.int32).tobytes() + b"\1")
        return h.hexdigest()

    @classmethod
    def from_token_lists(
        cls,
        ids: list[str],
        prompts: list,
        chosen: list,
        rejected: list,
        *,
        manifest: dict[str, Any],
        metadata: list[dict] | None = None,
        original_lengths: np.ndarray | None = None,
    ) -> PreferenceData:
        """Builds a data set in memory from token id lists (e.g. a round's rejection samples)."""
        n = len(ids)
        if len(set(ids)) != n:
            raise DataError("example ids must be unique")
        lengths = np.array(
            [[len(p), len(c), len(r)] for p, c, r in zip(prompts, chosen, rejected, strict=True)],
            dtype=np.int32,
        ).reshape(n, 3)
        pieces = [
            np.asarray(x, dtype=np.int32)
            for row in zip(prompts, chosen, rejected, strict=True)
            for x in row
        ]
        tokens = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
        offsets = np.zeros(n, dtype=np.int64)
        if n:
            offsets[1:] = np.cumsum(lengths.sum(axis=1), dtype=np.int64)[:-1]
        return cls(
            ids=list(ids),
            records=records_lib.ArrayRecords(tokens, offsets, lengths),
            rows=np.arange(n, dtype=np.int64),
            lengths=lengths,
            original_lengths=lengths.copy() if original_lengths is None else original_lengths,
            metadata=metadata if metadata is not None else [{} for _ in range(n)],
            manifest=dict(manifest),
        )

    def save(self, directory: str) -> None:
        """Writes the examples as a prepared directory (module docstring), replacing whatever
        prepared set was there; the manifest goes last."""
        path = _path(directory)
        split = self.manifest.get("split", "train")
        if (
            isinstance(self.records, records_lib.TfdsRecords)
            and _path(self.records.directory) == path
        ):
            raise DataError(f"{directory}: a data set cannot be saved over its own records")
        path.mkdir(parents=True, exist_ok=True)
        _remove_prepared(path)
        examples = (
            records_lib.record_example(
                self.ids[i], parts, self.original_lengths[i], self.metadata[i]
            )
            for start in range(0, len(self), 1024)
            for i, parts in zip(
                range(start, min(start + 1024, len(self))),
                self.records.read(self.rows[start : start + 1024]),
                strict=True,
            )
        )
        records_lib.write_tfds_split(
            path,
            split,
            examples,
            description="ropo_jax prepared preference pairs (docs/data.md)",
            version=f"{FORMAT_VERSION}.0.0",
        )
        _write_npy(path / "lengths.npy", np.asarray(self.lengths, np.int32))
        _write_npy(path / "original_lengths.npy", np.asarray(self.original_lengths, np.int32))
        lines = (
            json.dumps({"id": example_id, "metadata": meta}, ensure_ascii=False)
            for example_id, meta in zip(self.ids, self.metadata, strict=True)
        )
        (path / "examples.jsonl").write_text("".join(line + "\n" for line in lines))
        fingerprint = self.fingerprint()
        manifest = dict(
            self.manifest,
            format_version=FORMAT_VERSION,
            split=split,
            num_examples=len(self),
            fingerprint=fingerprint,
        )
        (path / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
        self.manifest = manifest


def _path(directory) -> epath.Path:
    """An ``epath`` path; ``~`` expanded for local paths (flags reach us unexpanded)."""
    text = os.fspath(directory)
    return epath.Path(text if "://" in text else os.path.expanduser(text))


def _write_npy(path: epath.Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    path.write_bytes(buffer.getvalue())


def _read_npy(path: epath.Path) -> np.ndarray:
    return np.load(io.BytesIO(path.read_bytes()))


def _remove_prepared(path: epath.Path) -> None:
    """Deletes a prepared set's files from ``path`` (the manifest first: a directory cut off
    while being rewritten has none, so it is never taken for complete)."""
    names = (
        "manifest.json",
        "dataset_info.json",
        "features.json",
        "skipped.jsonl",
        *INDEX_FILES,
        *FORMAT_1_FILES,
    )
    for name in names:
        if (path / name).exists():
            (path / name).unlink()
    for shard in path.glob(f"{records_lib.TFDS_NAME}-*"):
        shard.unlink()


def read_manifest(directory) -> dict[str, Any]:
    """The manifest of a prepared directory; DataError when there is none."""
    path = _path(directory) / "manifest.json"
    if not path.exists():
        raise DataError(
            f"{directory}: not a prepared data set (no manifest.json); run "
            "`python -m ropo_jax.data.prepare` first"
        )
    return json.loads(path.read_text())


def format_1_error(directory) -> DataError:
    return DataError(
        f"{directory} holds a data set in the old prepared format (format_version 1: "
        "tokens.npy/offsets.npy), which TFDS and grain cannot open; convert it in place with "
        f"`python -m ropo_jax.data.convert {directory}` (same examples and fingerprint), or "
        "prepare it again with `python -m ropo_jax.data.prepare`"
    )


def load_prepared(directory: str) -> PreferenceData:
    """Opens a directory written by ``ropo_jax.data.prepare`` (no noise applied): the index is
    read now, the token ids when batches need them."""
    path = _path(directory)
    manifest = read_manifest(directory)
    version = manifest.get("format_version")
    if version == 1:
        raise format_1_error(directory)
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path / 'manifest.json'}: format_version {version} is not {FORMAT_VERSION}; "
            "prepare the data again with this version"
        )
    if "encoding_version" not in manifest and manifest.get("tokenizer"):
        logging.warning(
            "%s was tokenized by an older encoder (BOS put first in every prompt, whatever the "
            "tokenizer and chat template do); prepare it again for the current rules",
            directory,
        )
    ids, metadata = [], []
    for line in (path / "examples.jsonl").read_text().splitlines():
        row = json.loads(line)
        ids.append(row["id"])
        metadata.append(row["metadata"])
    n = len(ids)
    return PreferenceData(
        ids=ids,
        records=records_lib.TfdsRecords(path, manifest["split"], n),
        rows=np.arange(n, dtype=np.int64),
        lengths=_read_npy(path / "lengths.npy"),
        original_lengths=_read_npy(path / "original_lengths.npy"),
        metadata=metadata,
        manifest=manifest,
        known_fingerprint=manifest.get("fingerprint"),
    )
