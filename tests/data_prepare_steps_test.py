"""The steps of ``ropo_jax.data.prepare`` in-process: the chat template file, duplicates,
tokenizing with its problems, the summary counts and the written directory
(tests/data_prepare_test.py runs the whole command)."""

import collections
import json
import os

import numpy as np
import pytest

from ropo_jax.data import prepare as prepare_lib
from ropo_jax.data.encode import Encoder, Limits
from ropo_jax.data.errors import DataError, ProblemLog
from ropo_jax.data.example import PreferenceExample
from ropo_jax.data.formats.common import ReadContext
from ropo_jax.data.prepared import load_prepared
from ropo_jax.data.tokenizer import load_tokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "data")
TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizers", "byte_bpe")


def _example(id, chosen=" a", **metadata):
    return PreferenceExample(id, "q", chosen, " b", metadata)


@pytest.fixture(scope="module")
def encoder():
    return Encoder(load_tokenizer(TOKENIZER), Limits(max_length=12, max_prompt_length=6))


def test_chat_template_file_is_read_or_named_in_the_error(tmp_path):
    assert prepare_lib._read_chat_template(None) is None
    path = os.path.join(FIXTURES, "mistral_chat_template.jinja")
    with open(path, encoding="utf-8") as f:
        assert prepare_lib._read_chat_template(path) == f.read()
    missing = str(tmp_path / "none.jinja")
    with pytest.raises(DataError, match=f"{missing}: chat template file not found.*--chat_t"):
        prepare_lib._read_chat_template(missing)


def test_duplicates_are_copied_under_free_ids_dropped_or_reported():
    log = ProblemLog("skip")
    duplicates = prepare_lib._Duplicates(dedupe=False, taken={"x", "x#dup1"})
    assert duplicates.resolve("f", 1, _example("x"), log) == _example("x")
    copy = duplicates.resolve("f", 2, _example("x"), log)
    assert copy == _example("x#dup2")  # x#dup1 is an id of the input
    assert duplicates.resolve("f", 3, _example("x", score_chosen=1.0), log) is None
    assert [str(p) for p in log.problems] == [
        "f:3: duplicate id 'x' with different content (first at f:1)"
    ]
    assert (duplicates.found, duplicates.dropped) == (1, 0)
    dedupe = prepare_lib._Duplicates(dedupe=True, taken={"x"})
    assert dedupe.resolve("f", 1, _example("x"), log) == _example("x")
    assert dedupe.resolve("f", 2, _example("x"), log) is None
    assert (dedupe.found, dedupe.dropped) == (1, 1)


def test_encoding_keeps_good_rows_and_logs_bad_ones(encoder):
    located = [
        ("f", 1, _example("a")),
        ("f", 2, _example("b", chosen=" b")),  # identical responses: a problem of its row
        ("f", 3, _example("a")),  # exact repeat of row 1
    ]
    log = ProblemLog("skip")
    kept, encoded, duplicates = prepare_lib._encode_examples(
        located, encoder, log, dedupe=False, progress=False
    )
    assert [x.id for x in kept] == ["a", "a#dup1"] and duplicates.found == 1
    assert [str(p) for p in log.problems] == [
        "f:2: chosen and rejected are identical after tokenization"
    ]
    assert encoded[0].prompt.tolist() == encoded[1].prompt.tolist()
    with pytest.raises(DataError, match="f:2: chosen and rejected are identical"):
        prepare_lib._encode_examples(
            located, encoder, ProblemLog("fail"), dedupe=False, progress=False
        )


def test_summary_counts_truncations_per_part(encoder):
    long_prompt = PreferenceExample("p", "q " * 20, " a", " b")
    long_response = PreferenceExample("r", "q", " a" * 20, " b")
    log = ProblemLog("skip")
    located = [("f", 1, long_prompt), ("f", 2, long_response), ("f", 3, _example("s"))]
    kept, encoded, duplicates = prepare_lib._encode_examples(
        located, encoder, log, dedupe=False, progress=False
    )
    log.add("f", 4, "bad row")
    ctx = ReadContext(log=log, dropped=collections.Counter({"tie": 2}), rows=6)
    assert prepare_lib._summary(ctx, kept, encoded, log, duplicates) == {
        "rows_read": 6,
        "examples_written": 3,
        "truncated": {"prompt": 1, "chosen": 1, "rejected": 0, "examples": 2},
        "rejected": 1,
        "duplicates": 0,
        "duplicates_dropped": 0,
        "left_out": {"tie": 2},
    }


def test_written_directory_round_trips_and_lists_skipped_rows(tmp_path, encoder):
    located = [("f", 1, _example("a", note="n")), ("f", 2, _example("b", chosen=" c b a"))]
    log = ProblemLog("skip")
    kept, encoded, _ = prepare_lib._encode_examples(
        located, encoder, log, dedupe=False, progress=False
    )
    log.add("f", 3, "bad row")
    manifest = {"pad_id": 0, "summary": {"rows_read": 3}}
    out = str(tmp_path / "out")
    summary = prepare_lib._write_prepared(out, kept, encoded, manifest, log)
    assert summary == {"rows_read": 3, "problems": ["f:3: bad row"]}
    data = load_prepared(out)
    assert data.ids == ["a", "b"] and data.metadata == [{"note": "n"}, {}]
    for i, e in enumerate(encoded):
        for part, expected in zip(data.parts(i), (e.prompt, e.chosen, e.rejected), strict=True):
            np.testing.assert_array_equal(part, expected)
    np.testing.assert_array_equal(data.original_lengths, [e.original_lengths for e in encoded])
    with open(os.path.join(out, "skipped.jsonl"), encoding="utf-8") as f:
        assert [json.loads(line) for line in f] == [{"path": "f", "line": 3, "reason": "bad row"}]
    clean = str(tmp_path / "clean")
    prepare_lib._write_prepared(clean, kept, encoded, manifest, ProblemLog("skip"))
    assert not os.path.exists(os.path.join(clean, "skipped.jsonl"))
