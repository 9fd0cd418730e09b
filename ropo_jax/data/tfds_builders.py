"""TFDS builders for the preference data sets, from files the user downloaded (``manual_dir``).

Written as ``array_record`` and read with ``builder.as_data_source(split)``, so no TensorFlow is
needed (``tfds.load``/``as_dataset``/TFRecord would need it)::

    builder = HhRlhf(data_dir=DIR, file_format="array_record")
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=RAW))
    source = builder.as_data_source("train")   # random access, grain-compatible

Every builder stores the normalised example of :mod:`ropo_jax.data.example`: ``id``, ``prompt``,
``chosen``, ``rejected`` (text; for chat examples the JSON of the message list, ``is_chat``
true), ``score_chosen``/``score_rejected`` (NaN when unknown), ``source_chosen``/
``source_rejected`` ("" when unknown) and the rest of the metadata as JSON. A bad row stops the
build with the ``PATH:LINE: reason`` report. Note that TFDS shuffles examples on write.
"""

from __future__ import annotations

import glob
import json
import math
import os
from typing import ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ropo_jax.data import formats
from ropo_jax.data.errors import DataError, ProblemLog
from ropo_jax.data.example import PreferenceExample, to_jsonable


def example_features() -> tfds.features.FeaturesDict:
    text = tfds.features.Text
    return tfds.features.FeaturesDict(
        {
            "id": text(),
            "prompt": text(),
            "chosen": text(),
            "rejected": text(),
            "is_chat": tfds.features.Scalar(dtype=np.bool_),
            "score_chosen": tfds.features.Scalar(dtype=np.float32),
            "score_rejected": tfds.features.Scalar(dtype=np.float32),
            "source_chosen": text(),
            "source_rejected": text(),
            "metadata": text(),
        }
    )


def to_features(example: PreferenceExample) -> dict:
    encode = lambda t: t if isinstance(t, str) else json.dumps(to_jsonable(t), ensure_ascii=False)
    meta = dict(example.metadata)
    score = lambda key: float(meta.pop(key)) if key in meta else math.nan
    return {
        "id": example.id,
        "prompt": encode(example.prompt),
        "chosen": encode(example.chosen),
        "rejected": encode(example.rejected),
        "is_chat": example.is_chat,
        "score_chosen": score("score_chosen"),
        "score_rejected": score("score_rejected"),
        "source_chosen": str(meta.pop("source_chosen", "")),
        "source_rejected": str(meta.pop("source_rejected", "")),
        "metadata": json.dumps(meta, ensure_ascii=False, sort_keys=True),
    }


class _PreferenceBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared machinery; subclasses set FORMAT, SPLITS (split → globs under manual_dir)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {
        "1.0.0": "Normalised preference pairs (id, prompt, chosen, rejected)."
    }
    FORMAT = ""
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {}
    CITATION = ""
    HOMEPAGE = ""
    DESCRIPTION = ""
    READ_OPTIONS: ClassVar[dict] = {}

    # TFDS derives the code path through `importlib_resources` (not installed: a backport it
    # only needs for zipped packages); a plain file path is what it would compute anyway.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.DESCRIPTION,
            features=example_features(),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
        )

    def _split_generators(self, dl_manager):
        manual_dir = os.fspath(dl_manager.manual_dir)
        splits = {}
        for split, patterns in self.SPLITS.items():
            files = sorted(
                {
                    f
                    for p in patterns
                    for f in glob.glob(os.path.join(manual_dir, p), recursive=True)
                }
            )
            if files:
                splits[split] = self._generate_examples(files, split)
        if not splits:
            raise DataError(
                f"{manual_dir}: none of the expected files {dict(self.SPLITS)} found. "
                + self.MANUAL_DOWNLOAD_INSTRUCTIONS
            )
        return splits

    def _keep(self, example: PreferenceExample, split: str) -> bool:
        return True

    def _generate_examples(self, files, split):
        log = ProblemLog("fail")
        located, _ = formats.read_examples(self.FORMAT, ",".join(files), log, **self.READ_OPTIONS)
        log.raise_if_failed()
        for _, _, example in located:
            if self._keep(example, split):
                yield example.id, to_features(example)


class HhRlhf(_PreferenceBuilder, skip_registration=True):
    FORMAT = "hh_rlhf"
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {
        "train": ("**/train.jsonl.gz", "**/train.jsonl"),
        "test": ("**/test.jsonl.gz", "**/test.jsonl"),
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the Anthropic/hh-rlhf files (helpful-base/train.jsonl.gz, ...) into manual_dir, "
        "keeping the subset directories."
    )
    HOMEPAGE = "https://github.com/anthropics/hh-rlhf"
    DESCRIPTION = "Anthropic HH-RLHF; prompt up to and including the last 'Assistant:' turn."
    CITATION = """@article{bai2022training,
  title={Training a Helpful and Harmless Assistant with Reinforcement Learning from Human Feedback},
  author={Bai, Yuntao and others}, journal={arXiv preprint arXiv:2204.05862}, year={2022}}"""


class UltrafeedbackBinarized(_PreferenceBuilder, skip_registration=True):
    FORMAT = "ultrafeedback"
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {
        "train_prefs": ("**/train_prefs*.parquet", "**/train_prefs*.jsonl"),
        "test_prefs": ("**/test_prefs*.parquet", "**/test_prefs*.jsonl"),
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download HuggingFaceH4/ultrafeedback_binarized's data/train_prefs-*.parquet and "
        "data/test_prefs-*.parquet into manual_dir."
    )
    HOMEPAGE = "https://huggingface.co/datasets/HuggingFaceH4/ultrafeedback_binarized"
    DESCRIPTION = "UltraFeedback Binarized preference pairs (chat messages)."
    CITATION = """@article{cui2023ultrafeedback,
  title={UltraFeedback: Boosting Language Models with High-quality Feedback},
  author={Cui, Ganqu and others}, journal={arXiv preprint arXiv:2310.01377}, year={2023}}"""


class AlpacaComparison(_PreferenceBuilder, skip_registration=True):
    FORMAT = "alpaca_comparison"
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {"train": ("**/comparison_data*.json",)}
    READ_OPTIONS: ClassVar[dict] = {"pairing": "best_vs_worst"}
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download data/comparison_data_v2.json from Instruction-Tuning-with-GPT-4/GPT-4-LLM into "
        "manual_dir."
    )
    HOMEPAGE = "https://github.com/Instruction-Tuning-with-GPT-4/GPT-4-LLM"
    DESCRIPTION = "GPT-4-LLM comparison data; best vs worst response by GPT-4 score."
    CITATION = """@article{peng2023instruction,
  title={Instruction Tuning with GPT-4}, author={Peng, Baolin and others},
  journal={arXiv preprint arXiv:2304.03277}, year={2023}}"""


class TldrComparisons(_PreferenceBuilder, skip_registration=True):
    FORMAT = "tldr"
    # The original release marks each row's split; valid1/valid2 are the validation/test sets.
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {
        s: ("**/*.json", "**/*.jsonl") for s in ("train", "validation", "test")
    }
    ROW_SPLITS: ClassVar[dict[str, str]] = {
        "train": "train",
        "validation": "valid1",
        "test": "valid2",
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Download the openai/summarize-from-feedback 'comparisons' batch files (JSON Lines) into "
        "manual_dir."
    )
    HOMEPAGE = "https://github.com/openai/summarize-from-feedback"
    DESCRIPTION = "Reddit TL;DR human comparisons (CNN/DM rows left out)."
    CITATION = """@inproceedings{stiennon2020learning,
  title={Learning to summarize with human feedback}, author={Stiennon, Nisan and others},
  booktitle={NeurIPS}, year={2020}}"""

    def _keep(self, example: PreferenceExample, split: str) -> bool:
        return example.metadata.get("split", "train") == self.ROW_SPLITS[split]


class GenericPreferences(_PreferenceBuilder, skip_registration=True):
    FORMAT = "jsonl"
    SPLITS: ClassVar[dict[str, tuple[str, ...]]] = {
        s: (f"**/{s}*.jsonl", f"**/{s}*.jsonl.gz", f"**/{s}*.parquet") for s in ("train", "test")
    }
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put train*.jsonl / test*.jsonl (or .parquet) files in the generic preference format "
        "into manual_dir."
    )
    DESCRIPTION = "Preference pairs in the generic prompt/chosen/rejected format."


BUILDERS = {
    "jsonl": GenericPreferences,
    "hh_rlhf": HhRlhf,
    "ultrafeedback": UltrafeedbackBinarized,
    "alpaca_comparison": AlpacaComparison,
    "tldr": TldrComparisons,
}


def build(format: str, manual_dir: str, data_dir: str) -> tfds.core.DatasetBuilder:
    """Builds (once) and returns the builder for ``format``; read splits with
    ``as_data_source``."""
    builder = BUILDERS[format](data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder
