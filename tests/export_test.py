"""Export as a Hugging Face model directory: transformers loads model and tokenizer as they are,
logits match ours, shards and bf16, a sharded export is byte-identical, provenance, the checkpoint
restore, and the command line (success and its one-line errors).

Shape key: B batch, T length.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from safetensors import safe_open
from script_runner import run_module
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from ropo_jax import export, models
from ropo_jax.data.loader import load_preference_data
from ropo_jax.export import __main__ as export_command
from ropo_jax.parallel import sharding
from ropo_jax.synthetic import dataset, prepare, task
from ropo_jax.training import loop as trainer
from ropo_jax.training import metrics
from ropo_jax.training import step as train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "byte_bpe")
VOCAB = 259  # len(the byte_bpe tokenizer); BOS 1, EOS 2, PAD 0
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def _config(**overrides):
    return models.ModelConfig.preset("tiny", vocab_size=VOCAB, **overrides)


@pytest.fixture(scope="module")
def tiny():
    config = _config()
    return config, models.init_params(config, jax.random.key(0))


def _tokens_BT(length=12):
    return np.random.default_rng(0).integers(3, VOCAB, size=(2, length))


def _load_model(directory):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warnings about missing/unexpected weights
        model, info = AutoModelForCausalLM.from_pretrained(
            directory, output_loading_info=True, attn_implementation="eager"
        )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    return model.eval()


def _assert_logits_match(model, config, params, atol=1e-4):
    tokens_BT = _tokens_BT()
    with torch.no_grad():
        expected = model(torch.tensor(tokens_BT)).logits.float().numpy()
    got = np.asarray(models.forward(config, params, jnp.asarray(tokens_BT)))
    np.testing.assert_allclose(got, expected, atol=atol)


def _safetensors_bytes(directory):
    return {
        f: (directory / f).read_bytes()
        for f in sorted(os.listdir(directory))
        if f.endswith((".safetensors", ".index.json"))
    }


def test_export_loads_in_transformers_with_matching_logits(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "model")
    assert export.export_model(
        config, params, out, tokenizer_dir=TOKENIZER, chat_template=TEMPLATE
    ) == os.path.abspath(out)
    files = set(os.listdir(out))
    assert {"config.json", "model.safetensors", "generation_config.json", "export.json"} <= files
    assert not [f for f in os.listdir(tmp_path) if f != "model"]  # no temporary directory left
    model = _load_model(out)
    assert type(model).__name__ == "LlamaForCausalLM"
    _assert_logits_match(model, config, params)
    generated = model.generate(torch.tensor(_tokens_BT(4)[:1]), max_new_tokens=3, do_sample=False)
    assert generated.shape == (1, 7)
    generation = GenerationConfig.from_pretrained(out)
    assert (generation.bos_token_id, generation.eos_token_id, generation.pad_token_id) == (1, 2, 0)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert len(tokenizer) == VOCAB and tokenizer.chat_template == TEMPLATE
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=False
    )
    assert rendered == "<|user|>hi"
    # Our own loader reads the export back exactly.
    # (scan_layers is how this process runs the layers — the CPU presets unroll them — not
    # part of the checkpoint, so the reload takes the library default.)
    config2, params2 = models.load_hf(out, scan_layers=config.scan_layers)
    assert config2 == config.replace(pad_token_id=0)
    jax.tree.map(np.testing.assert_array_equal, params2, params)


def test_small_shards_write_an_index_and_bf16_loads(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "sharded")
    export.export_model(config, params, out, tokenizer_dir=TOKENIZER, max_shard_bytes=40_000)
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert sorted(f for f in os.listdir(out) if f.endswith(".safetensors")) == shards
    sizes = [os.path.getsize(os.path.join(out, s)) for s in shards]
    # A shard holds ≤ 40 kB, or one larger tensor alone (the 66 kB embedding); plus its header.
    assert max(sizes) <= VOCAB * 64 * 4 + 4096
    assert index["metadata"]["total_size"] == 4 * config.num_params()
    assert "model.safetensors" not in os.listdir(out)
    _assert_logits_match(_load_model(out), config, params)

    out16 = str(tmp_path / "bf16")
    export.export_model(config, params, out16, tokenizer_dir=TOKENIZER, dtype="bfloat16")
    with safe_open(os.path.join(out16, "model.safetensors"), framework="numpy") as f:
        names = f.keys()
        assert {f.get_tensor(k).dtype for k in names} == {jnp.dtype(jnp.bfloat16)}
    model16 = AutoModelForCausalLM.from_pretrained(out16)
    assert next(model16.parameters()).dtype == torch.bfloat16
    _config16, params16 = models.load_hf(out16, dtype=jnp.bfloat16)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16)), params16, params
    )


def test_sharded_parameters_export_byte_identical_files(tiny, tmp_path):
    config, params = tiny
    mesh = sharding.make_mesh((1, 8, 1))
    sharded = jax.device_put(
        params, sharding.tree_shardings(mesh, models.param_logical_axes(config), params)
    )
    assert not sharded["embed"]["embedding"].sharding.is_fully_replicated
    for kwargs in ({}, {"max_shard_bytes": 40_000, "dtype": "bfloat16"}):
        plain, split = str(tmp_path / "plain"), str(tmp_path / "split")
        export.export_model(config, params, plain, tokenizer_dir=TOKENIZER, **kwargs)
        export.export_model(config, sharded, split, tokenizer_dir=TOKENIZER, **kwargs)
        assert _safetensors_bytes(tmp_path / "split") == _safetensors_bytes(tmp_path / "plain")


@pytest.mark.parametrize(
    "overrides, architecture",
    [
        (dict(tie_word_embeddings=True), "LlamaForCausalLM"),
        (dict(architecture="mistral", sliding_window=4), "MistralForCausalLM"),
    ],
)
def test_tied_and_mistral_configs_export(overrides, architecture, tmp_path):
    config = _config(**overrides)
    params = models.init_params(config, jax.random.key(1))
    out = str(tmp_path / "model")
    export.export_model(config, params, out, tokenizer_dir=TOKENIZER)
    model = _load_model(out)
    assert type(model).__name__ == architecture
    _assert_logits_match(model, config, params)
    with safe_open(os.path.join(out, "model.safetensors"), framework="numpy") as f:
        names = f.keys()
    assert ("lm_head.weight" in names) != config.tie_word_embeddings


def test_provenance_and_replacing_an_export(tiny, tmp_path):
    config, params = tiny
    out = str(tmp_path / "model")
    provenance = {"source": "checkpoints/round_2", "step": 64, "dtype": "float32"}
    assert not export.is_exported(out, provenance)
    export.export_model(config, params, out, tokenizer_dir=TOKENIZER, provenance=provenance)
    assert export.is_exported(out, provenance)
    assert not export.is_exported(out, {**provenance, "step": 65})
    # A second export replaces the first, shards of the old layout included.
    export.export_model(
        config, params, out, tokenizer_dir=TOKENIZER, max_shard_bytes=40_000, provenance={"a": 1}
    )
    assert export.is_exported(out, {"a": 1}) and not export.is_exported(out, provenance)
    assert "model.safetensors" not in os.listdir(out)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(export.ExportError, match="is not an export"):
        export.export_model(config, params, str(tmp_path / "mine"), tokenizer_dir=TOKENIZER)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_model_config_from_record_round_trips():
    config = models.ModelConfig.preset("llama3_8b", num_layers=2, sliding_window=None)
    record = json.loads(json.dumps(dataclasses.asdict(config)))
    assert models.ModelConfig.from_record(record) == config
    with pytest.raises(models.ConfigError, match="unknown keys"):
        models.ModelConfig.from_record({**record, "nope": 1})


def test_export_info_and_stage_selection(tmp_path):
    with pytest.raises(export.ExportError, match=r"export_info\.json not found"):
        export.read_export_info(str(tmp_path))
    export.write_export_info(str(tmp_path), tokenizer_dir=TOKENIZER, chat_template_path=None)
    assert export.read_export_info(str(tmp_path)) == {"tokenizer": TOKENIZER, "chat_template": None}
    found = {"sft": [4], "round_2": [3], "round_10": [1, 2]}
    assert export.default_stage(found) == "round_10"
    assert export.default_stage({"sft": [4]}) == "sft"
    assert export.default_stage({}) is None
    with pytest.raises(export.ExportError, match="not both"):
        export_command.stage_from_flags(1, "sft")
    assert export_command.stage_from_flags(3, None) == "round_3"


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """A workdir with an SFT checkpoint of 2 steps (as trainer.run_stage writes it)."""
    root = tmp_path_factory.mktemp("run")
    paths = prepare.prepare_synthetic(
        str(root / "data"),
        task.TaskConfig(),
        dataset.DataConfig(num_sft=16, num_train_pairs=16, num_test_pairs=4, num_eval_prompts=2),
        seed=0,
    )
    data, _ = load_preference_data(paths["train"])
    config = _config()
    workdir = str(root / "workdir")
    stage = trainer.StageConfig(
        name="sft", kind="sft", epochs=1, batch_size=8, learning_rate=1e-3, log_every=1
    )
    writer = metrics.MetricsWriter(workdir, tensorboard=False)
    params = models.init_params(config, jax.random.key(0))
    trained = trainer.run_stage(
        stage, train.StepConfig(), config, params, data, workdir=workdir, writer=writer
    )
    writer.close()
    template = root / "template.jinja"
    template.write_text(TEMPLATE)
    export.write_export_info(workdir, tokenizer_dir=TOKENIZER, chat_template_path=str(template))
    return workdir, config, jax.device_get(trained)


def test_restore_params_reads_the_checkpoint(trained_workdir):
    workdir, config, trained = trained_workdir
    restored = export.restore_params(workdir)
    assert (restored.stage, restored.step, restored.model_config) == ("sft", 2, config)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored.params), trained)
    with pytest.raises(export.ExportError, match=r"no checkpoint of stage 'round_1'.*sft \(steps"):
        export.restore_params(workdir, stage="round_1")
    with pytest.raises(export.ExportError, match=r"no checkpoint of step 7; steps \[2\]"):
        export.restore_params(workdir, step=7)


def _cli(*args):
    return run_module("ropo_jax.export", *args, env=ENV)


@pytest.mark.e2e
def test_command_line_exports_a_run(trained_workdir, tmp_path):
    workdir, config, trained = trained_workdir
    out = str(tmp_path / "exported")
    result = _cli(f"--workdir={workdir}", f"--output={out}", "--stage=sft", "--dtype=bfloat16")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines() == [
        f"exported llama model of sft step 2 ({config.num_params():,} parameters, bfloat16) "
        f"to {out}"
    ]
    provenance = json.loads((tmp_path / "exported" / "export.json").read_text())
    assert provenance["source"] == "checkpoints/sft" and provenance["step"] == 2
    assert export.is_exported(out, provenance)
    assert AutoTokenizer.from_pretrained(out).chat_template == TEMPLATE
    _config, params = models.load_hf(out)
    jax.tree.map(
        lambda a, b: np.testing.assert_array_equal(a, b.astype(jnp.bfloat16).astype(np.float32)),
        params,
        trained,
    )


@pytest.mark.e2e
@pytest.mark.parametrize(
    "args, message",
    [
        (["--workdir={tmp}/missing"], "missing does not exist"),
        (["--workdir={workdir}", "--round=3"], "no checkpoint of stage 'round_3'"),
    ],
)
def test_command_line_errors_are_one_line(trained_workdir, tmp_path, args, message):
    workdir = trained_workdir[0]
    args = [a.format(tmp=tmp_path, workdir=workdir) for a in args]
    result = _cli(*args, f"--output={tmp_path / 'out'}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not os.path.exists(tmp_path / "out")


_WORKER = """
import sys
import jax
jax.config.update("jax_cpu_collectives_implementation", "gloo")
jax.distributed.initialize(
    coordinator_address="localhost:" + sys.argv[2], num_processes=2, process_id=int(sys.argv[1])
)
from ropo_jax import export, models
from ropo_jax.parallel import sharding
config = models.ModelConfig.preset("tiny", vocab_size=int(sys.argv[4]))
params = models.init_params(config, jax.random.key(0))
mesh = sharding.make_mesh((1, -1, 1))
shardings = sharding.tree_shardings(mesh, models.param_logical_axes(config), params)
params = jax.tree.map(
    lambda x, s: jax.make_array_from_callback(x.shape, s, lambda index: x[index]),
    params,
    shardings,
)
assert not params["embed"]["embedding"].is_fully_addressable
export.export_model(
    config, params, sys.argv[3], tokenizer_dir=sys.argv[5], max_shard_bytes=40_000
)
"""


@pytest.mark.e2e
@pytest.mark.slow
def test_two_processes_export_the_same_files(tiny, tmp_path):
    """Parameters sharded across processes (not fully addressable): both processes call
    export_model, process 0 writes, and the files equal a one-process export."""
    config, params = tiny
    export.export_model(
        config, params, str(tmp_path / "one"), tokenizer_dir=TOKENIZER, max_shard_bytes=40_000
    )
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = str(s.getsockname()[1])
    env = {**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    args = [port, str(tmp_path / "two"), str(VOCAB), TOKENIZER]
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(i), *args], env=env, cwd=ROOT)
        for i in range(2)
    ]
    assert [w.wait(timeout=300) for w in workers] == [0, 0]
    assert _safetensors_bytes(tmp_path / "two") == _safetensors_bytes(tmp_path / "one")
    assert sorted(os.listdir(tmp_path)) == ["one", "two"]
