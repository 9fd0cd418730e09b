"""A prepared (tokenized) preference data set, on disk and in memory.

Directory layout written by ``python -m ropo_jax.data.prepare`` (format version 1):

- ``manifest.json``: token ids (``bos_id``, ``eos_id``, ``pad_id``), ``vocab_size``, limits, the
  source format/input, the ``encoding_version`` of the tokenization rules
  (``data.encode.ENCODING_VERSION``), the read/written/truncated/rejected counts and the
  ``fingerprint``;
- ``tokens.npy`` (int32, all examples' ``prompt | chosen | rejected`` back to back),
  ``offsets.npy`` (int64 [N], start of each example), ``lengths.npy`` (int32 [N, 3]: prompt,
  chosen, rejected after truncation), ``original_lengths.npy`` (int32 [N, 3], before);
- ``examples.jsonl``: ``{"id", "metadata"}`` per example, in the same order;
- ``skipped.jsonl`` (only with ``--on_error=skip``): the problems of the rows left out.

Chosen/rejected are stored as labelled in the input ("true" labels). Noise (docs/method.md §4.1) is
applied at load time: ``is_flipped`` marks pairs whose label the noise model flipped, and
:meth:`PreferenceData.pair` returns them in training (noisy) orientation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any

import numpy as np
from absl import logging

from ropo_jax.data.errors import DataError

FORMAT_VERSION = 1


@dataclasses.dataclass
class PreferenceData:
    ids: list[str]
    tokens: np.ndarray  # int32 [total]
    offsets: np.ndarray  # int64 [N]
    lengths: np.ndarray  # int32 [N, 3]
    original_lengths: np.ndarray  # int32 [N, 3]
    metadata: list[dict[str, Any]]
    manifest: dict[str, Any]
    is_flipped: np.ndarray | None = None  # bool [N]; None = no noise applied

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
        start = int(self.offsets[i])
        p, c, r = (int(x) for x in self.lengths[i])
        t = self.tokens
        return (
            t[start : start + p],
            t[start + p : start + p + c],
            t[start + p + c : start + p + c + r],
        )

    def pair(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Prompt, chosen, rejected in training orientation (swapped where noise flipped)."""
        prompt, chosen, rejected = self.parts(i)
        return (prompt, rejected, chosen) if self.is_flipped[i] else (prompt, chosen, rejected)

    def sequence_lengths(self) -> np.ndarray:
        """int32 [N, 2]: prompt+chosen and prompt+rejected token counts."""
        return self.lengths[:, :1] + self.lengths[:, 1:]

    def column(self, key: str, default=None) -> list:
        return [m.get(key, default) for m in self.metadata]

    def with_flips(self, is_flipped: np.ndarray) -> PreferenceData:
        return dataclasses.replace(self, is_flipped=np.asarray(is_flipped, dtype=bool))

    def subset(self, indices) -> PreferenceData:
        """The examples at ``indices`` (e.g. the kept set of a ROPO round), tokens shared."""
        idx = np.asarray(indices, dtype=np.int64)
        return dataclasses.replace(
            self,
            ids=[self.ids[i] for i in idx],
            offsets=self.offsets[idx],
            lengths=self.lengths[idx],
            original_lengths=self.original_lengths[idx],
            metadata=[self.metadata[i] for i in idx],
            is_flipped=self.is_flipped[idx],
        )

    def fingerprint(self) -> str:
        """sha256 over ids and token ids in example order (the reference-log-prob cache key)."""
        h = hashlib.sha256()
        for i in range(len(self)):
            h.update(self.ids[i].encode("utf-8") + b"\0")
            for part in self.parts(i):
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
        """Builds a data set from token id lists (e.g. rejection-sampled pairs of a round)."""
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
            tokens=tokens,
            offsets=offsets,
            lengths=lengths,
            original_lengths=lengths.copy() if original_lengths is None else original_lengths,
            metadata=metadata if metadata is not None else [{} for _ in range(n)],
            manifest=dict(manifest),
        )

    def save(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        np.save(os.path.join(directory, "tokens.npy"), np.asarray(self.tokens, np.int32))
        np.save(os.path.join(directory, "offsets.npy"), np.asarray(self.offsets, np.int64))
        np.save(os.path.join(directory, "lengths.npy"), np.asarray(self.lengths, np.int32))
        np.save(
            os.path.join(directory, "original_lengths.npy"),
            np.asarray(self.original_lengths, np.int32),
        )
        with open(os.path.join(directory, "examples.jsonl"), "w", encoding="utf-8") as f:
            for example_id, meta in zip(self.ids, self.metadata, strict=True):
                f.write(json.dumps({"id": example_id, "metadata": meta}, ensure_ascii=False) + "\n")
        manifest = dict(
            self.manifest,
            format_version=FORMAT_VERSION,
            num_examples=len(self),
            fingerprint=self.fingerprint(),
        )
        with open(os.path.join(directory, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, ensure_ascii=False)
        self.manifest = manifest


def load_prepared(directory: str, *, mmap: bool = True) -> PreferenceData:
    """Reads a directory written by ``ropo_jax.data.prepare`` (no noise applied)."""
    directory = os.path.expanduser(directory)
    manifest_path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(manifest_path):
        raise DataError(
            f"{directory}: not a prepared data set (no manifest.json); run "
            "`python -m ropo_jax.data.prepare` first"
        )
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{manifest_path}: format_version {manifest.get('format_version')} is not "
            f"{FORMAT_VERSION}; prepare the data again with this version"
        )
    if "encoding_version" not in manifest and manifest.get("tokenizer"):
        logging.warning(
            "%s was tokenized by an older encoder (BOS put first in every prompt, whatever the "
            "tokenizer and chat template do); prepare it again for the current rules",
            directory,
        )
    load = lambda name: np.load(os.path.join(directory, name), mmap_mode="r" if mmap else None)
    ids, metadata = [], []
    with open(os.path.join(directory, "examples.jsonl"), encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            ids.append(row["id"])
            metadata.append(row["metadata"])
    return PreferenceData(
        ids=ids,
        tokens=load("tokens.npy"),
        offsets=np.asarray(load("offsets.npy")),
        lengths=np.asarray(load("lengths.npy")),
        original_lengths=np.asarray(load("original_lengths.npy")),
        metadata=metadata,
        manifest=manifest,
    )
