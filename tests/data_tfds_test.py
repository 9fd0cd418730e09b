"""Prepared splits are TFDS datasets (ArrayRecord): written by ``python -m ropo_jax.data.prepare``,
opened by plain TFDS + grain without ropo_jax or TensorFlow, read record by record by the loader
(each process only its own part of every batch), through ``etils.epath`` paths; the old
``.npy`` format is refused with the converter's command, and the converter keeps every example.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from etils import epath
from script_runner import run_module

from ropo_jax.data import records
from ropo_jax.data.errors import DataError
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepare import prepare
from ropo_jax.data.prepared import PreferenceData, load_prepared

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(REPO, "tests", "fixtures", "data")
TOKENIZER = os.path.join(REPO, "tests", "fixtures", "tokenizers", "byte_bpe")


def _prepare(output_dir, **options):
    return prepare(
        format="ultrafeedback",
        input=os.path.join(FIXTURES, "ultrafeedback.jsonl"),
        tokenizer=TOKENIZER,
        output_dir=str(output_dir),
        max_length=256,
        max_prompt_length=128,
        progress=False,
        **options,
    )


def _parts(data, i):
    return [part.tolist() for part in data.parts(i)]


@pytest.fixture(scope="module")
def prepared_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tfds") / "train"
    _prepare(directory)
    return directory


# Run by a fresh interpreter in which neither ropo_jax nor tensorflow can be imported.
PLAIN_READER = r"""
import importlib.abc, importlib.util, json, sys

# TensorFlow is not installed at all (etils and TFDS probe for it, and must find nothing).
assert importlib.util.find_spec("tensorflow") is None, "tensorflow is installed"

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "ropo_jax":
            raise ImportError(f"{name} is not allowed here")

sys.meta_path.insert(0, Refuse())
import grain
import tensorflow_datasets as tfds

directory, split = sys.argv[1], sys.argv[2]
source = tfds.builder_from_directory(directory).as_data_source(split)
also = tfds.data_source  # the public entry point exists without TensorFlow
rows = list(grain.MapDataset.source(source).map(
    lambda r: {"id": r["id"].decode(), "prompt": r["prompt"].tolist(),
               "chosen": r["chosen"].tolist(), "rejected": r["rejected"].tolist(),
               "lengths": r["lengths"].tolist(), "metadata": json.loads(r["metadata"])}))
assert "tensorflow" not in sys.modules and not any(m.startswith("ropo_jax") for m in sys.modules)
print(json.dumps(rows))
"""


@pytest.mark.e2e
def test_a_prepared_split_is_a_tfds_dataset_read_without_ropo_jax_or_tensorflow(prepared_dir):
    names = set(os.listdir(prepared_dir))
    assert {"dataset_info.json", "features.json", "manifest.json"} <= names
    assert any(n.startswith(f"{records.TFDS_NAME}-train.array_record-") for n in names)
    assert not {"tokens.npy", "offsets.npy"} & names
    manifest = json.loads((prepared_dir / "manifest.json").read_text())
    assert (manifest["format_version"], manifest["split"]) == (2, "train")
    out = subprocess.run(
        [sys.executable, "-c", PLAIN_READER, str(prepared_dir), "train"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    rows = json.loads(out.stdout.splitlines()[-1])
    data = load_prepared(str(prepared_dir))
    assert [r["id"] for r in rows] == data.ids
    for i, row in enumerate(rows):
        assert [row["prompt"], row["chosen"], row["rejected"]] == _parts(data, i)
        assert row["lengths"] == data.lengths[i].tolist()
        assert row["metadata"] == data.metadata[i]


def test_the_loader_reads_only_this_process_records(prepared_dir, monkeypatch):
    data = load_prepared(str(prepared_dir))
    read = []
    original = records.TfdsRecords.read
    monkeypatch.setattr(
        records.TfdsRecords, "read", lambda self, rows: read.extend(rows) or original(self, rows)
    )
    kwargs = dict(batch_size=4, seed=3, shuffle=True, num_epochs=1, shard_count=2)
    batches = {k: list(make_loader(data, shard_index=k, num_threads=0, **kwargs)) for k in (0, 1)}
    pairs = {k: {int(i) for b in batches[k] for i in b["example_index"] if i >= 0} for k in (0, 1)}
    assert not pairs[0] & pairs[1]
    assert len(read) == len(pairs[0]) + len(pairs[1])  # each pair read once, by its process
    # And the same batches as the data held in memory (the format does not change a batch).
    memory = PreferenceData.from_token_lists(
        data.ids,
        *zip(*(data.parts(i) for i in range(len(data))), strict=True),
        manifest=data.manifest,
        metadata=data.metadata,
        original_lengths=data.original_lengths,
    )
    for k in (0, 1):
        again = list(make_loader(memory, shard_index=k, num_threads=0, **kwargs))
        for a, b in zip(batches[k], again, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def _format_1(directory, data: PreferenceData):
    """The directory format 1 wrote (tokens.npy / offsets.npy), for the refusal and converter."""
    os.makedirs(directory, exist_ok=True)
    parts = [data.parts(i) for i in range(len(data))]
    lengths = np.array([[len(p) for p in row] for row in parts], np.int32)
    offsets = np.concatenate([[0], np.cumsum(lengths.sum(1))[:-1]]).astype(np.int64)
    np.save(os.path.join(directory, "tokens.npy"), np.concatenate([x for r in parts for x in r]))
    np.save(os.path.join(directory, "offsets.npy"), offsets)
    np.save(os.path.join(directory, "lengths.npy"), lengths)
    np.save(os.path.join(directory, "original_lengths.npy"), data.original_lengths)
    with open(os.path.join(directory, "examples.jsonl"), "w") as f:
        for i in range(len(data)):
            f.write(json.dumps({"id": data.ids[i], "metadata": data.metadata[i]}) + "\n")
    manifest = {k: v for k, v in data.manifest.items() if k != "split"}
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(dict(manifest, format_version=1), f)


@pytest.mark.e2e
def test_the_old_format_is_refused_with_the_converter_which_keeps_every_example(
    prepared_dir, tmp_path
):
    data = load_prepared(str(prepared_dir))
    old = tmp_path / "train"
    _format_1(old, data)
    with pytest.raises(DataError, match=rf"python -m ropo_jax.data.convert {old}"):
        load_prepared(str(old))
    result = run_module("ropo_jax.data.convert", str(old), timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"converted {old}: {len(data)} examples" in result.stdout
    converted = load_prepared(str(old))
    assert converted.fingerprint() == data.fingerprint() == data.manifest["fingerprint"]
    assert converted.ids == data.ids and converted.metadata == data.metadata
    assert [_parts(converted, i) for i in range(len(data))] == [
        _parts(data, i) for i in range(len(data))
    ]
    assert not (old / "tokens.npy").exists()
    again = run_module("ropo_jax.data.convert", str(old), timeout=120)
    assert again.returncode == 2 and "not 1; nothing to convert" in again.stderr


def test_a_format_1_run_input_is_refused_at_validation(prepared_dir, tmp_path):
    from ropo_jax.config.defaults import base_config
    from ropo_jax.config.validation import validate
    from ropo_jax.errors import ConfigValueError

    _format_1(tmp_path / "old", load_prepared(str(prepared_dir)))
    config = base_config()
    config.data.train = str(tmp_path / "old")
    config.sft.enabled = False
    with pytest.raises(ConfigValueError, match=r"ropo_jax\.data\.convert"):
        validate(config)


def test_prepare_and_load_go_through_epath(tmp_path):
    """A ``gs://`` output directory, with epath's backend redirected to a local directory: every
    file prepare writes and load reads goes through epath (no GCS needed); the shards are
    written locally and copied through epath, as ArrayRecord writes local files only."""
    bucket = tmp_path / "bucket"
    bucket.mkdir()
    seen = set()

    def local(path):
        text = os.fspath(path)
        if text.startswith("gs://bucket"):
            seen.add(text)
            return text.replace("gs://bucket", str(bucket), 1)
        return text

    def redirect(fn, path, *args, **kwargs):
        return fn(local(path), *args, **kwargs)

    def redirect_two(fn, path, dst, *args, **kwargs):
        return fn(local(path), local(dst), *args, **kwargs)

    def glob(fn, pattern):
        return [p.replace(str(bucket), "gs://bucket", 1) for p in fn(local(pattern))]

    mocks = dict(
        open=redirect,
        exists=redirect,
        isdir=redirect,
        listdir=redirect,
        makedirs=redirect,
        mkdir=redirect,
        remove=redirect,
        rmtree=redirect,
        stat=redirect,
        walk=redirect,
        glob=glob,
        rename=redirect_two,
        replace=redirect_two,
        copy=redirect_two,
    )
    with epath.testing.mock_epath(**mocks):
        summary = _prepare("gs://bucket/uf/train")
        data = load_prepared("gs://bucket/uf/train")
        # The shards themselves: ArrayRecord's reader opens local paths only (array-record
        # 0.8.6), which the error says, with the fix.
        with pytest.raises(DataError, match="mount the bucket"):
            data.parts(0)
    assert summary["examples_written"] == len(data) > 0
    assert {"manifest.json", "examples.jsonl", "lengths.npy", "dataset_info.json"} <= set(
        os.listdir(bucket / "uf" / "train")
    )
    assert "gs://bucket/uf/train/manifest.json" in seen
    assert data.records.directory == "gs://bucket/uf/train"
    local_copy = load_prepared(str(bucket / "uf" / "train"))  # the shards it wrote, read locally
    assert local_copy.fingerprint() == data.fingerprint() == data.manifest["fingerprint"]
    assert [_parts(local_copy, i) for i in range(len(data))][:3] == [
        [p.tolist() for p in parts] for parts in local_copy.records.read([0, 1, 2])
    ]


@pytest.mark.e2e
def test_no_tensorflow_in_a_run(tmp_path):
    """A whole run (prepare inside the run, train, score, evaluate) imports no TensorFlow."""
    script = (
        "import sys, runpy\n"
        "sys.argv = ['ropo_jax.main', '--config=experiments/smoke.py', "
        f"'--workdir={tmp_path / 'run'}']\n"
        "try:\n"
        "    runpy.run_module('ropo_jax.main', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "assert 'tensorflow_datasets' in sys.modules  # the prepared data went through TFDS\n"
        "print('no tensorflow')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "no tensorflow" in out.stdout


def test_a_built_tfds_dataset_is_an_input(tmp_path):
    """``--input=tfds:DIR[:SPLIT]``: a TFDS dataset built elsewhere (here: the UltraFeedback
    fixture written with the features a ``huggingface:`` builder gives it — messages as a
    ``Sequence`` of dicts) prepares to exactly what its JSON Lines file prepares to."""
    import tensorflow_datasets as tfds

    messages = lambda: tfds.features.Sequence(
        tfds.features.FeaturesDict({"content": tfds.features.Text(), "role": tfds.features.Text()})
    )
    features = tfds.features.FeaturesDict(
        {
            "prompt": tfds.features.Text(),
            "prompt_id": tfds.features.Text(),
            "chosen": messages(),
            "rejected": messages(),
            "messages": messages(),
            "score_chosen": np.float32,
            "score_rejected": np.float32,
        }
    )
    with open(os.path.join(FIXTURES, "ultrafeedback.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    built = tmp_path / "hf_ultrafeedback"
    built.mkdir()
    from tensorflow_datasets.core import dataset_info, sequential_writer

    info = dataset_info.DatasetInfo(
        builder=dataset_info.DatasetIdentity(
            name="ultrafeedback", version="1.0.0", data_dir=str(built), module_name=""
        ),
        features=features,
    )
    writer = sequential_writer.SequentialWriter(info, 100, file_format="array_record")
    writer.initialize_splits(["train_prefs"])
    writer.add_examples({"train_prefs": rows})
    writer.close_splits(["train_prefs"])

    from_jsonl = load_prepared(
        _prepared_at(tmp_path / "a", os.path.join(FIXTURES, "ultrafeedback.jsonl"))
    )
    from_tfds = load_prepared(_prepared_at(tmp_path / "b", f"tfds:{built}:train_prefs"))
    assert from_tfds.ids == from_jsonl.ids
    assert from_tfds.metadata == from_jsonl.metadata
    assert from_tfds.fingerprint() == from_jsonl.fingerprint()
    with pytest.raises(DataError, match="no split 'test'; this dataset has: train_prefs"):
        _prepared_at(tmp_path / "c", f"tfds:{built}:test")


def _prepared_at(output_dir, input):
    prepare(
        format="ultrafeedback",
        input=input,
        tokenizer=TOKENIZER,
        output_dir=str(output_dir),
        max_length=256,
        max_prompt_length=128,
        progress=False,
    )
    return str(output_dir)
