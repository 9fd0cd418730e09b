"""Readers of every input format, the prepare command, and malformed-input reports."""

import gzip
import json
import os
import shutil

import pytest
from script_runner import run_module

from ropo_jax.data import formats
from ropo_jax.data.errors import DataError, ProblemLog
from ropo_jax.data.example import Message
from ropo_jax.data.prepare import prepare
from ropo_jax.data.prepared import load_prepared

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATE = os.path.join(FIXTURES, "mistral_chat_template.jinja")


def read(fmt, path, on_error="fail", **options):
    log = ProblemLog(on_error)
    located, ctx = formats.read_examples(fmt, path, log, **options)
    return [e for _, _, e in located], log, ctx


def fixture(name):
    return os.path.join(FIXTURES, name)


def build_byte_tokenizer(directory):
    """A byte-level BPE tokenizer.json with no merges (vocab 259) and a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", *sorted(alphabet)])}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    with open(TEMPLATE, encoding="utf-8") as f:
        tok.chat_template = f.read()
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def word_tokenizer(tmp_path_factory):
    return build_byte_tokenizer(str(tmp_path_factory.mktemp("byte_tokenizer")))


# --- readers on the fixtures -------------------------------------------------------------------


def test_generic_explicit_rows():
    examples, log, _ = read("jsonl", fixture("generic_explicit.jsonl"))
    assert not log.problems
    by_id = {e.id: e for e in examples}
    assert by_id["g1"].prompt == "What is the capital of France?"
    assert by_id["g1"].chosen == " The capital of France is Paris."
    assert by_id["g1"].metadata == {"score_chosen": 9.0, "score_rejected": 2.5}
    assert by_id["g2"].chosen.startswith(" こんにちは")
    assert by_id["g2"].metadata["source_chosen"] == "strong"
    # A system message stays in the prompt; responses are assistant messages.
    assert by_id["g3"].prompt[0] == Message("system", "You are terse.")
    assert by_id["g3"].chosen == (Message("assistant", "7"),)
    # Multi-turn prompt, string responses become assistant messages.
    assert len(by_id["g4"].prompt) == 3 and by_id["g4"].rejected == (Message("assistant", "No."),)
    # Integer id; responses repeating the prompt message have it removed.
    assert by_id["5"].prompt == (Message("user", "Write a haiku about rain."),)
    assert by_id["5"].rejected == (Message("assistant", "Rain is wet."),)
    # No id: a stable content hash, identical on a second read.
    again, _, _ = read("jsonl", fixture("generic_explicit.jsonl"))
    assert [e.id for e in examples] == [e.id for e in again]
    assert len(examples[-1].id) == 16


def test_generic_implicit_rows():
    examples, log, _ = read("jsonl", fixture("generic_implicit.jsonl"))
    assert not log.problems
    assert (examples[0].prompt, examples[0].chosen) == (
        "Q: Is the sky blue? A:",
        " Yes, on a clear day.",
    )
    assert (examples[1].prompt, examples[1].chosen, examples[1].rejected) == (
        "The",
        " cat sat on the mat.",
        " car sat on the mat.",
    )
    assert examples[2].prompt == (Message("user", "Say hi"),)
    assert examples[3].prompt[-1] == Message("user", "C") and len(examples[3].prompt) == 4
    assert examples[4].prompt.endswith("What's 1+1?\n\nAssistant:") and examples[4].chosen == " 2."


def test_hh_rlhf_splits_at_last_assistant_turn(tmp_path):
    # gzip as in the upstream release.
    directory = tmp_path / "helpful-base"
    directory.mkdir()
    with open(fixture("hh_rlhf/helpful-base/train.jsonl"), "rb") as f:
        (directory / "train.jsonl.gz").write_bytes(gzip.compress(f.read()))
    examples, log, _ = read("hh_rlhf", str(tmp_path))
    assert not log.problems and len(examples) == 5
    multi = next(e for e in examples if "Recommend a book" in e.prompt)
    assert multi.prompt.endswith("Recommend a book.\n\nAssistant:")
    assert multi.prompt.count("\n\nAssistant:") == 2
    assert multi.chosen.startswith(' Try "The Left Hand')
    assert multi.metadata["subset"] == "helpful-base"
    assert any("Tōkyō" in e.prompt for e in examples)


def test_ultrafeedback_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(fixture("ultrafeedback.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    for row in rows:
        row["messages"] = row["chosen"]
    path = tmp_path / "train_prefs-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    examples, log, _ = read("ultrafeedback", str(path))
    assert not log.problems
    assert [e.id for e in examples] == [f"uf-000{i}" for i in range(1, 6)]
    assert examples[1].prompt == (Message("user", "Écris un poème court sur la mer."),)
    assert examples[1].chosen == (Message("assistant", "La mer respire,\nbleue et sans fin."),)
    assert examples[0].metadata == {"score_chosen": 9.0, "score_rejected": 3.0}


def test_alpaca_comparison_pairing():
    examples, log, ctx = read("alpaca_comparison", fixture("alpaca_comparison.json"), "skip")
    # The element with an empty response is reported; its other two responses still pair.
    assert [str(p) for p in log.problems] == [
        f"{fixture('alpaca_comparison.json')}:18: responses_and_scores[1].response is empty"
    ]
    assert ctx.dropped == {"alpaca: no two responses with different scores": 1}
    assert len(examples) == 5
    first = examples[0]
    assert (
        first.chosen[0].content.startswith("Eat vegetables")
        and first.rejected[0].content == "Be healthy."
    )
    assert first.metadata == {
        "score_chosen": 9.0,
        "score_rejected": 2.0,
        "source_chosen": "gpt4",
        "source_rejected": "icm-1.3b",
    }
    blue = examples[2]
    assert blue.rejected[0].content == "It is the color of the sky."
    all_pairs, _, _ = read(
        "alpaca_comparison", fixture("alpaca_comparison.json"), "skip", pairing="all_pairs"
    )
    # 3 + 3 + 1 (empty left out) + 0 (tie) + 3 + 3 pairs with different scores.
    assert len(all_pairs) == 13 and len({e.id for e in all_pairs}) == 13


def test_tldr_prompt_and_cnndm():
    examples, log, ctx = read("tldr", fixture("tldr.jsonl"))
    assert not log.problems and len(examples) == 5
    assert ctx.dropped == {"tldr: CNN/DM rows left out": 1}
    first = examples[0]
    assert first.prompt == (
        "SUBREDDIT: r/relationships\nTITLE: Lonely after moving\nPOST: I (24F) moved to a new city "
        "and I don't know anyone. Work is remote. How do I make friends?\nTL;DR:"
    )
    assert first.chosen == " Moved to a new city, work remotely, how do I make friends?"
    # choice=1 picks the second summary; a summary without a leading space gets one.
    assert (
        examples[1].chosen.startswith(" Landlord wants")
        and examples[1].rejected == " Landlord raising rent."
    )
    assert (
        examples[0].metadata["confidence"] == 8.0
        and examples[0].metadata["source_chosen"] == "sup2"
    )
    with_cnndm, _, _ = read("tldr", fixture("tldr.jsonl"), include_cnndm=True)
    assert with_cnndm[3].prompt.startswith("ARTICLE: (CNN) A rare comet")


# --- malformed input: each case's exact reason ------------------------------------------------

BAD_JSONL = [
    ("jsonl", b'{"prompt": "a", "chosen": " b", "rejected": " c"\n', "malformed JSON"),
    ("jsonl", b'["a", "b"]\n', "expected a JSON object, got list"),
    ("jsonl", b'{"prompt": "a", "rejected": " c"}\n', "missing field 'chosen'"),
    (
        "jsonl",
        b'{"prompt": "a", "chosen": 3, "rejected": " c"}\n',
        "field 'chosen' must be a string or a list, got int",
    ),
    ("jsonl", b'{"prompt": "a", "chosen": " ", "rejected": " c"}\n', "empty chosen response"),
    ("jsonl", b'{"prompt": "a", "chosen": " b", "rejected": ""}\n', "empty rejected response"),
    (
        "jsonl",
        b'{"prompt": "a", "chosen": " b", "rejected": " b"}\n',
        "chosen and rejected responses are identical",
    ),
    (
        "jsonl",
        b'{"prompt": "a", "chosen": " b", "rejected": " c", "score_chosen": "high"}\n',
        "field 'score_chosen' must be an integer or a number, got str",
    ),
    (
        "jsonl",
        b'{"prompt": [{"role": "robot", "content": "x"}], "chosen": "b", "rejected": "c"}\n',
        "field 'prompt[0].role' is 'robot'",
    ),
    (
        "jsonl",
        b'{"prompt": [{"role": "user"}], "chosen": "b", "rejected": "c"}\n',
        "field 'prompt[0]' must be an object with 'role' and 'content'",
    ),
    ("jsonl", b'{"chosen": "abc", "rejected": "xyz"}\n', "chosen and rejected share no prefix"),
    ("jsonl", b'{"prompt": "caf\xe9", "chosen": " b", "rejected": " c"}\n', "invalid UTF-8"),
    (
        "jsonl",
        b'{"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],'
        b' "rejected": [{"role": "user", "content": "DIFFERENT"},'
        b' {"role": "assistant", "content": "c"}]}\n',
        "chosen and rejected conversations differ before the final assistant turn",
    ),
    (
        "hh_rlhf",
        b'{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b\\n\\nHuman: c\\n\\nAssistant: d",'
        b' "rejected": "\\n\\nHuman: a\\n\\nAssistant: X\\n\\nHuman: c\\n\\nAssistant: e"}\n',
        "chosen and rejected transcripts diverge before the last assistant turn",
    ),
    (
        "hh_rlhf",
        b'{"chosen": "\\n\\nHuman: a b c", "rejected": "\\n\\nHuman: a b d"}\n',
        "chosen transcript has no '\\n\\nAssistant:' turn",
    ),
    (
        "ultrafeedback",
        b'{"prompt": "q", "prompt_id": "1", "chosen": [{"role": "user", "content": "q"},'
        b' {"role": "assistant", "content": "a"}], "rejected": [{"role": "user", "content": "q"},'
        b' {"role": "assistant", "content": "b"}], "score_chosen": 1.0}\n',
        "missing field 'score_rejected'",
    ),
    (
        "tldr",
        b'{"info": {"id": "1", "post": "p", "title": "t", "subreddit": "s"}, "summaries":'
        b' [{"text": " a"}, {"text": " b"}], "choice": 2}\n',
        "field 'choice' must be 0 or 1, got 2",
    ),
    (
        "tldr",
        b'{"info": {"id": "1", "post": "p", "title": "t", "subreddit": "s"}, "summaries":'
        b' [{"text": " a"}], "choice": 0}\n',
        "field 'summaries' must hold 2 summaries, got 1",
    ),
    (
        "alpaca_comparison",
        b'[{"user_input": "q", "responses_and_scores": [{"response": "a",'
        b' "score": "9", "source": "gpt4"}]}]',
        "responses_and_scores[0]: field 'score' must be an integer or a number, got str",
    ),
]


@pytest.mark.parametrize("fmt,content,reason", BAD_JSONL)
def test_malformed_row_is_reported_with_line(tmp_path, fmt, content, reason):
    suffix = ".json" if fmt == "alpaca_comparison" else ".jsonl"
    path = tmp_path / f"bad{suffix}"
    good = b'{"prompt": "q", "chosen": " yes", "rejected": " no"}\n' if fmt == "jsonl" else b""
    path.write_bytes(good + content)
    _, log, _ = read(fmt, str(path), "skip")
    assert len(log.problems) == 1, log.problems
    problem = log.problems[0]
    assert problem.path == str(path)
    assert problem.line == (2 if good else 1)
    assert reason in problem.reason, problem.reason


@pytest.mark.parametrize(
    "content,reason",
    [(b"", "file is empty (no rows)"), (b"\n\n", "file is empty (no rows)")],
)
def test_empty_file_is_fatal(tmp_path, content, reason):
    path = tmp_path / "empty.jsonl"
    path.write_bytes(content)
    _, log, _ = read("jsonl", str(path), "skip")
    assert [str(p) for p in log.fatal] == [f"{path}:0: {reason}"]
    with pytest.raises(DataError, match="file is empty"):
        log.raise_if_failed()


def test_report_lists_first_20_then_count(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("{bad\n" * 25)
    _, log, _ = read("jsonl", str(path))
    with pytest.raises(DataError) as info:
        log.raise_if_failed()
    lines = str(info.value).splitlines()
    reason = "malformed JSON: Expecting property name enclosed in double quotes at column 2"
    assert lines[0] == f"{path}:1: {reason}"
    assert len(lines) == 22 and lines[20] == "... and 5 more problems (25 in total)"
    assert lines[21] == "fix these rows, or pass --on_error=skip to leave them out"


# --- the prepare command -----------------------------------------------------------------------


ALL_FORMATS = [
    ("jsonl", "generic_explicit.jsonl", 6),
    ("jsonl", "generic_implicit.jsonl", 5),
    ("hh_rlhf", "hh_rlhf", 5),
    ("ultrafeedback", "ultrafeedback.jsonl", 5),
    ("tldr", "tldr.jsonl", 5),
]


@pytest.mark.parametrize("fmt,name,count", ALL_FORMATS)
def test_prepare_every_format(tmp_path, word_tokenizer, fmt, name, count):
    summary = prepare(
        format=fmt,
        input=fixture(name),
        tokenizer=word_tokenizer,
        output_dir=str(tmp_path),
        max_length=256,
        max_prompt_length=128,
        progress=False,
    )
    assert summary["examples_written"] == count and summary["rejected"] == 0
    data = load_prepared(str(tmp_path))
    assert len(data) == count and data.manifest["fingerprint"] == data.fingerprint()
    assert (data.sequence_lengths() <= 256).all() and (data.lengths[:, 0] <= 128).all()
    # BOS where the tokenizer or its template puts it: the Mistral template renders it for chat
    # prompts; this tokenizer adds none to text.
    is_chat = {e.id: e.is_chat for e in read(fmt, fixture(name))[0]}
    for i in range(count):
        prompt, _, _ = data.parts(i)
        chat = is_chat[data.ids[i].split("#dup")[0]]
        assert (prompt[0] == data.manifest["bos_id"]) == chat
        assert int((prompt == data.manifest["bos_id"]).sum()) == chat


def _run_cli(*args):
    return run_module("ropo_jax.data.prepare", *args, timeout=120)


@pytest.mark.e2e
def test_cli_alpaca_fails_then_skips(tmp_path, word_tokenizer):
    args = [
        "--format=alpaca_comparison",
        f"--input={fixture('alpaca_comparison.json')}",
        f"--tokenizer={word_tokenizer}",
        "--max_length=256",
        "--max_prompt_length=128",
    ]
    failed = _run_cli(*args, f"--output_dir={tmp_path / 'a'}")
    assert failed.returncode == 2
    assert "Traceback" not in failed.stderr
    assert (
        f"{fixture('alpaca_comparison.json')}:18: responses_and_scores[1].response is empty"
        in failed.stderr
    )
    assert "--on_error=skip" in failed.stderr
    assert not os.path.exists(tmp_path / "a" / "manifest.json")
    done = _run_cli(*args, f"--output_dir={tmp_path / 'b'}", "--on_error=skip")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"prepared {tmp_path / 'b'}: 6 rows read, 5 examples written, 0 truncated (prompt 0, "
        f"chosen 0, rejected 0), 1 rejected (listed in {tmp_path / 'b' / 'skipped.jsonl'}), "
        "0 exact duplicates (0 dropped), 1 left out (alpaca: no two responses with different "
        "scores)"
    )
    with open(tmp_path / "b" / "skipped.jsonl", encoding="utf-8") as f:
        skipped = [json.loads(line) for line in f]
    assert skipped == [
        {
            "path": fixture("alpaca_comparison.json"),
            "line": 18,
            "reason": "responses_and_scores[1].response is empty",
        }
    ]


@pytest.mark.e2e
def test_cli_missing_tokenizer_and_input(tmp_path):
    result = _run_cli(
        "--format=jsonl",
        f"--input={fixture('generic_explicit.jsonl')}",
        f"--tokenizer={tmp_path / 'nope'}",
        f"--output_dir={tmp_path / 'o'}",
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (
        f"{tmp_path / 'nope'}: tokenizer not found; pass "
        "--tokenizer=a model directory with tokenizer.json or tokenizer.model"
    )


def test_missing_input_file_and_chat_template(tmp_path, word_tokenizer):
    with pytest.raises(DataError, match=r"nope.jsonl:0: no such file; check --input"):
        prepare(
            format="jsonl",
            input=str(tmp_path / "nope.jsonl"),
            tokenizer=word_tokenizer,
            output_dir=str(tmp_path / "o"),
            progress=False,
        )
    bare = tmp_path / "bare"
    shutil.copytree(word_tokenizer, bare)
    config = json.loads((bare / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(config))
    for name in os.listdir(bare):
        if name.startswith("chat_template"):
            os.remove(bare / name)
    with pytest.raises(DataError, match="chat examples need a chat template"):
        prepare(
            format="ultrafeedback",
            input=fixture("ultrafeedback.jsonl"),
            tokenizer=str(bare),
            output_dir=str(tmp_path / "o"),
            progress=False,
        )


def test_duplicate_ids_are_reported(tmp_path, word_tokenizer):
    # Exact duplicates are kept (tests/data_prepare_test.py); the same id with other content is not.
    path = tmp_path / "dup.jsonl"
    path.write_text(
        '{"id": "x", "prompt": "q", "chosen": " a", "rejected": " b"}\n'
        '{"id": "x", "prompt": "q", "chosen": " a", "rejected": " c"}\n'
    )
    with pytest.raises(
        DataError,
        match=r"dup.jsonl:2: duplicate id 'x' with different content \(first at .*dup.jsonl:1\)",
    ):
        prepare(
            format="jsonl",
            input=str(path),
            tokenizer=word_tokenizer,
            output_dir=str(tmp_path / "o"),
            progress=False,
        )


def test_sft_rows_prepare_and_load(tmp_path, word_tokenizer):
    from ropo_jax.data.loader import make_loader

    examples, log, _ = read("sft", fixture("sft.jsonl"))
    assert not log.problems and [e.rejected for e in examples] == [None] * 5
    assert examples[3].prompt[-1] == Message("user", "Bye")
    assert examples[3].chosen == (Message("assistant", "Goodbye."),)
    summary = prepare(
        format="sft",
        input=fixture("sft.jsonl"),
        tokenizer=word_tokenizer,
        output_dir=str(tmp_path),
        max_length=256,
        max_prompt_length=128,
        progress=False,
    )
    assert summary["examples_written"] == 5
    data = load_prepared(str(tmp_path))
    assert data.manifest["kind"] == "sft" and (data.lengths[:, 2] == 0).all()
    for mode in ("padded", "packed"):
        batch = next(
            make_loader(
                data,
                batch_size=5,
                shuffle=False,
                mode=mode,
                shard_index=0,
                shard_count=1,
                pack_row_multiple=1,
            )
        )
        rows = batch["tokens"].shape[0]
        assert rows == 5 if mode == "padded" else rows < 5
        for i in range(5):
            prompt, response, _ = data.parts(i)
            where = (batch["sequence_index"] == i) & (batch["segment_ids"] > 0)
            assert batch["tokens"][where].tolist() == [*prompt, *response]
            assert batch["loss_mask"][where].sum() == len(response) == batch["chosen_lengths"][i]
    _, log, _ = read(
        "sft", str(_write(tmp_path / "bad.jsonl", '{"prompt": "q", "response": " "}')), "skip"
    )
    assert [p.reason for p in log.problems] == ["empty response"]


def test_prepare_splits_reuses_and_refuses(tmp_path, word_tokenizer):
    from ropo_jax.data.prepare import prepare_splits

    inputs = {
        "train": ("ultrafeedback", fixture("ultrafeedback.jsonl")),
        "sft": ("sft", fixture("sft.jsonl")),
    }
    options = dict(tokenizer=word_tokenizer, max_length=256, max_prompt_length=128)
    paths = prepare_splits(str(tmp_path), inputs, **options)
    assert paths == {split: str(tmp_path / split) for split in inputs}
    assert load_prepared(paths["train"]).manifest["source_format"] == "ultrafeedback"
    assert load_prepared(paths["sft"]).manifest["kind"] == "sft"
    stamp = os.path.getmtime(tmp_path / "train" / "manifest.json")
    assert prepare_splits(str(tmp_path), inputs, **options) == paths  # a re-run reuses them
    assert os.path.getmtime(tmp_path / "train" / "manifest.json") == stamp
    other = {"train": ("tldr", fixture("tldr.jsonl"))}
    with pytest.raises(DataError, match="use a new run directory"):
        prepare_splits(str(tmp_path), other, **options)
    with pytest.raises(DataError, match="use a new run directory"):
        prepare_splits(str(tmp_path), inputs, **{**options, "max_length": 512})


def _write(path, text):
    path.write_text(text + "\n", encoding="utf-8")
    return path


def test_bom_and_broken_gzip(tmp_path):
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"prompt": "q", "chosen": " a", "rejected": " b"}\n')
    examples, log, _ = read("jsonl", str(bom))
    assert not log.problems and examples[0].prompt == "q"
    broken = tmp_path / "train.jsonl.gz"
    broken.write_bytes(b"this is not gzip")
    _, log, _ = read("jsonl", str(broken), "skip")
    assert len(log.fatal) == 1 and "not a valid gzip file" in log.fatal[0].reason
