"""``ropo_jax.data.prepare`` and exact duplicates: kept under ``ID#dupK`` (or dropped with
``--dedupe``) and counted; the same id with different content is still a problem."""

import json
import os

import pytest
from script_runner import run_module

from ropo_jax.data.errors import DataError
from ropo_jax.data.prepare import prepare, prepare_splits, summary_line
from ropo_jax.data.prepared import load_prepared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "data")
TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizers", "byte_bpe")


def _row(id, chosen=" a", **extra):
    return json.dumps({"id": id, "prompt": "q", "chosen": chosen, "rejected": " b", **extra})


def _write(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


def _run_cli(*args):
    return run_module("ropo_jax.data.prepare", *args, timeout=120)


def _prepare(fmt, path, output_dir, **options):
    return prepare(
        format=fmt,
        input=path,
        tokenizer=TOKENIZER,
        output_dir=str(output_dir),
        max_length=256,
        max_prompt_length=128,
        progress=False,
        **options,
    )


def _tokens(data, i):
    return [part.tolist() for part in data.parts(i)]


@pytest.fixture
def duplicated(tmp_path):
    # Rows 1, 2 and 4 are one example; row 3 already uses the id a first copy would get.
    return _write(
        tmp_path / "dup.jsonl", [_row("x"), _row("x"), _row("x#dup1", chosen=" c"), _row("x")]
    )


@pytest.mark.e2e
def test_cli_keeps_exact_duplicates_under_new_ids(tmp_path, duplicated):
    out = tmp_path / "out"
    result = _run_cli(
        "--format=jsonl", f"--input={duplicated}", f"--tokenizer={TOKENIZER}", f"--output_dir={out}"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"prepared {out}: 4 rows read, 4 examples written, 0 truncated (prompt 0, chosen 0, "
        "rejected 0), 0 rejected, 2 exact duplicates (0 dropped)"
    )
    data = load_prepared(str(out))
    assert data.ids == ["x", "x#dup2", "x#dup1", "x#dup3"]  # x#dup1 is taken by row 3
    assert _tokens(data, 1) == _tokens(data, 3) == _tokens(data, 0) != _tokens(data, 2)
    summary = data.manifest["summary"]
    assert (summary["duplicates"], summary["duplicates_dropped"], summary["rejected"]) == (2, 0, 0)
    assert data.manifest["dedupe"] is False
    assert not os.path.exists(out / "skipped.jsonl")


@pytest.mark.e2e
def test_cli_dedupe_drops_exact_duplicates(tmp_path, duplicated):
    out = tmp_path / "out"
    result = _run_cli(
        "--format=jsonl",
        f"--input={duplicated}",
        f"--tokenizer={TOKENIZER}",
        f"--output_dir={out}",
        "--dedupe",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(
        "4 rows read, 2 examples written, 0 truncated (prompt 0, chosen 0, rejected 0), "
        "0 rejected, 2 exact duplicates (2 dropped)"
    )
    data = load_prepared(str(out))
    assert data.ids == ["x", "x#dup1"]
    summary = data.manifest["summary"]
    assert (summary["duplicates"], summary["duplicates_dropped"]) == (2, 2)
    assert data.manifest["dedupe"] is True


@pytest.mark.e2e
def test_cli_same_id_different_content_fails_then_skips(tmp_path):
    path = _write(
        tmp_path / "conflict.jsonl",
        [
            _row("x", score_chosen=2),
            _row("x", chosen=" c", score_chosen=2),  # other text
            _row("x", score_chosen=2.0),  # exact duplicate of row 1 (scores are floats)
            _row("x", score_chosen=3),  # same text, other metadata
        ],
    )
    args = ["--format=jsonl", f"--input={path}", f"--tokenizer={TOKENIZER}"]
    failed = _run_cli(*args, f"--output_dir={tmp_path / 'a'}")
    assert failed.returncode == 2 and "Traceback" not in failed.stderr
    reported = [line for line in failed.stderr.splitlines() if line.startswith(path)]
    assert reported == [
        f"{path}:2: duplicate id 'x' with different content (first at {path}:1)",
        f"{path}:4: duplicate id 'x' with different content (first at {path}:1)",
    ]
    assert "--on_error=skip" in failed.stderr
    assert not os.path.exists(tmp_path / "a" / "manifest.json")

    out = tmp_path / "b"
    done = _run_cli(*args, f"--output_dir={out}", "--on_error=skip")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"prepared {out}: 4 rows read, 2 examples written, 0 truncated (prompt 0, chosen 0, "
        f"rejected 0), 2 rejected (listed in {out / 'skipped.jsonl'}), "
        "1 exact duplicates (0 dropped)"
    )
    with open(out / "skipped.jsonl", encoding="utf-8") as f:
        assert [(r["line"], r["reason"]) for r in map(json.loads, f)] == [
            (2, f"duplicate id 'x' with different content (first at {path}:1)"),
            (4, f"duplicate id 'x' with different content (first at {path}:1)"),
        ]
    data = load_prepared(str(out))
    assert data.ids == ["x", "x#dup1"]
    assert data.manifest["summary"]["rejected"] == 2


@pytest.mark.parametrize("fmt", ["hh_rlhf", "tldr", "jsonl"])
def test_exact_duplicates_with_content_ids(tmp_path, fmt):
    """hh_rlhf and tldr have no id field: the id is a content hash (tldr: ``info.id-hash``), as
    is a generic row's without ``id``; repeated rows give repeated ids and are kept or dropped."""
    # hh_rlhf: the subset is the directory name, and part of the id.
    name = {"hh_rlhf": "hh_rlhf/helpful-base/train.jsonl", "tldr": "tldr.jsonl"}
    source = os.path.join(FIXTURES, name.get(fmt, "generic_implicit.jsonl"))
    with open(source, encoding="utf-8") as f:
        rows = [line.rstrip("\n") for line in f if line.strip()]
    leaf = os.path.join(*source.split(os.sep)[-2:])  # keeps hh_rlhf's subset directory
    original = _write(tmp_path / "original" / leaf, rows)
    # Row 0 three times, row 1 twice (tldr's row 3 is CNN/DM, left out by default).
    repeated = _write(tmp_path / "repeated" / leaf, [rows[0], *rows, rows[1], rows[0]])

    base = _prepare(fmt, original, tmp_path / "base")
    assert base["duplicates"] == 0
    expected = load_prepared(str(tmp_path / "base"))
    assert all(len(i) >= 16 for i in expected.ids)  # content hashes

    kept = _prepare(fmt, repeated, tmp_path / "kept")
    assert (kept["duplicates"], kept["duplicates_dropped"], kept["rejected"]) == (3, 0, 0)
    assert kept["rows_read"] == len(rows) + 3
    assert kept["examples_written"] == base["examples_written"] + 3
    data = load_prepared(str(tmp_path / "kept"))
    first, second = expected.ids[0], expected.ids[1]
    tail = [f"{second}#dup1", f"{first}#dup2"]
    assert data.ids == [first, f"{first}#dup1", *expected.ids[1:], *tail]
    for copy in (1, len(data.ids) - 1):
        assert _tokens(data, copy) == _tokens(data, 0)
        assert data.metadata[copy] == data.metadata[0]

    dropped = _prepare(fmt, repeated, tmp_path / "dropped", dedupe=True)
    assert dropped["duplicates"] == dropped["duplicates_dropped"] == 3
    assert dropped["examples_written"] == base["examples_written"]
    deduped = load_prepared(str(tmp_path / "dropped"))
    assert deduped.ids == expected.ids
    assert deduped.fingerprint() == expected.fingerprint()
    assert [_tokens(deduped, i) for i in range(len(deduped))] == [
        _tokens(expected, i) for i in range(len(expected))
    ]


def test_summary_line_prints_duplicates(tmp_path):
    summary = {
        "rows_read": 5,
        "examples_written": 3,
        "truncated": {},
        "rejected": 0,
        "duplicates": 2,
        "duplicates_dropped": 2,
        "left_out": {"x": 1},
    }
    assert summary_line(summary, "out") == (
        "prepared out: 5 rows read, 3 examples written, 0 truncated (prompt 0, chosen 0, "
        "rejected 0), 0 rejected, 2 exact duplicates (2 dropped), 1 left out (x)"
    )


def test_prepare_splits_dedupe(tmp_path, duplicated):
    inputs = {"train": ("jsonl", duplicated)}
    options = dict(tokenizer=TOKENIZER, max_length=256, max_prompt_length=128)
    paths = prepare_splits(str(tmp_path / "run"), inputs, dedupe=True, **options)
    data = load_prepared(paths["train"])
    assert data.ids == ["x", "x#dup1"] and data.manifest["dedupe"] is True
    assert prepare_splits(str(tmp_path / "run"), inputs, dedupe=True, **options) == paths
    with pytest.raises(DataError, match="use a new run directory"):
        prepare_splits(str(tmp_path / "run"), inputs, **options)  # dedupe=False now
    # A split prepared before `dedupe` existed is reused whatever it is now.
    manifest_path = os.path.join(paths["train"], "manifest.json")
    with open(manifest_path, encoding="utf-8") as f:
        manifest = json.load(f)
    del manifest["dedupe"]
    with open(manifest_path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    assert prepare_splits(str(tmp_path / "run"), inputs, **options) == paths
    # Kept by default.
    kept = prepare_splits(str(tmp_path / "run2"), inputs, **options)
    assert load_prepared(kept["train"]).ids == ["x", "x#dup2", "x#dup1", "x#dup3"]
