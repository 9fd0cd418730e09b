"""The task objects (``ropo_jax.run.tasks``) that ``pipeline.make_task`` builds from
``config.task``: what each loads and returns on the tiny synthetic task and on the prepared
fixtures, with the model's generations replaced by fixed responses (no model runs here)."""

import dataclasses
import importlib.util
import json
import os

import numpy as np
import pytest

from ropo_jax.data.tokenizer import load_tokenizer
from ropo_jax.errors import ConfigValueError
from ropo_jax.evaluation import final, generations
from ropo_jax.run import pipeline, tasks
from ropo_jax.synthetic import task as synthetic_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "fixtures", "data")


def _config(path, arg=None):
    spec = importlib.util.spec_from_file_location("config_module", os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def synthetic_config():
    config = _config("experiments/smoke.py")
    config.synthetic.data.update(num_sft=32, num_train_pairs=32, num_test_pairs=16)
    config.synthetic.data.num_eval_prompts = 4
    config.eval.samples_per_prompt = 2
    return config


def _context(config, workdir, task):
    return pipeline.RunContext(config=config, workdir=workdir, task=task, mesh=None, writer=None)


def _load(config, workdir):
    task = pipeline.make_task(config)
    return task, task.load(str(workdir), pipeline.noise_config(config))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    config, workdir = synthetic_config(), str(tmp_path_factory.mktemp("synthetic"))
    task, data = _load(config, workdir)
    return config, workdir, task, data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    config, workdir = _config("experiments/paper/ultrafeedback.py", "smoke"), None
    workdir = str(tmp_path_factory.mktemp("prepared"))
    task, data = _load(config, workdir)
    return config, workdir, task, data


def _fixed_responses(calls, respond):
    """A stand-in for generations.generate_both: ``respond(prompt)`` per model, and the call's
    prompts and options recorded in ``calls``."""

    def generate_both(model_config, policy_params, sft_params, prompts, options):
        calls.append((prompts, options))
        return {name: [respond(name, p) for p in prompts] for name in ("policy", "sft")}

    return generate_both


def test_make_task_reads_each_kind_from_its_blocks():
    config = synthetic_config()
    task = pipeline.make_task(config)
    assert isinstance(task, tasks.SyntheticTask)
    block, defaults = config.synthetic.task, synthetic_task.TaskConfig()
    for field in dataclasses.fields(defaults):  # the block's keys, the rest at their defaults
        expected = block[field.name] if field.name in block else getattr(defaults, field.name)
        assert getattr(task.task, field.name) == expected, field.name
    assert (task.data.num_train_pairs, task.samples_per_prompt) == (32, 2)
    assert task.data_seed == config.synthetic.data_seed
    real = _config("experiments/paper/ultrafeedback.py", "smoke")
    prepared = pipeline.make_task(real)
    assert isinstance(prepared, tasks.PreparedTask)
    assert prepared.raw.format == "ultrafeedback"
    assert prepared.raw.max_length == real.data.raw.max_length
    assert prepared.files.eval_prompts.endswith("alpaca_eval.json") and not prepared.files.train
    config.task = "other"
    with pytest.raises(ConfigValueError, match=r"config\.task='other'"):
        pipeline.make_task(config)


def test_synthetic_task_generates_and_loads_its_data(synthetic):
    _, workdir, task, data = synthetic
    assert set(data.paths) == {"raw", "tokenizer", "train", "test", "sft", "eval_prompts"}
    assert (
        data.tokenizer_dir == data.paths["tokenizer"] == os.path.join(workdir, "data", "tokenizer")
    )
    assert (len(data.train), len(data.heldout), len(data.sft())) == (32, 16, 32)
    # Noise on the training pairs only, as the config's noise model draws it.
    assert data.noise is not None and np.array_equal(data.train.is_flipped, data.noise.is_flipped)
    assert 0 < data.train.is_flipped.sum() < 32 and not data.heldout.is_flipped.any()
    # The model is sized by the task's vocabulary, not by a manifest.
    assert task.vocab_size() == len(synthetic_task.vocabulary(task.task))
    assert task.vocab_size() == load_tokenizer(data.tokenizer_dir).vocab_size
    assert task.model_manifest(data) is None and task.chat_template() is None
    # A second run finds the data ready (process 0 prepared it once).
    stamp = os.path.getmtime(os.path.join(workdir, "data", "prepared.json"))
    assert task.data_paths(workdir) == data.paths
    assert os.path.getmtime(os.path.join(workdir, "data", "prepared.json")) == stamp


def test_synthetic_gold_reward_and_dynamics_probe(synthetic):
    config, workdir, task, data = synthetic
    prompt = "topic T1 length 3"
    for response in ("g1_0 g1_1 g1_2", "bad0 f1", ""):
        assert task.gold_reward(prompt, response) == synthetic_task.gold_reward(
            task.task, prompt, response
        )
    generation = pipeline.generation_eval(_context(config, workdir, task), data)
    probe = task.gold_probe(data, generation, 3)
    with open(data.paths["eval_prompts"]) as f:
        texts = [json.loads(line)["prompt"] for line in f]
    tokenizer = load_tokenizer(data.tokenizer_dir)
    assert len(probe.prompt_ids) == 3
    assert [tokenizer.decode(ids[1:]) for ids in probe.prompt_ids] == texts[:3]
    assert probe.sampling_config.pad_token_id == data.train.pad_id
    assert probe.sampling_config.max_new_tokens == config.eval.max_new_tokens
    answer = [*tokenizer.encode("g1_0 g1_1", continuation=True), tokenizer.eos_id]
    assert probe.reward(2, answer) == task.gold_reward(texts[2], "g1_0 g1_1")
    assert task.gold_probe(data, generation, 0) is None
    assert task.gold_probe(data, None, 3) is None


def test_synthetic_final_evaluation_is_the_gold_win_rate(synthetic, monkeypatch):
    config, workdir, task, data = synthetic
    generation = pipeline.generation_eval(_context(config, workdir, task), data)
    calls = []

    def respond(model, prompt):  # the policy answers perfectly, the SFT model badly
        parsed = synthetic_task.parse_prompt(prompt)
        return " ".join([f"g{parsed.topic}_0"] * parsed.length) if model == "policy" else "bad0"

    monkeypatch.setattr(final, "generate_both", _fixed_responses(calls, respond))
    added = task.final_evaluation(None, "policy params", "sft params", data, generation)
    assert set(added) == {"eval", "prompts"}
    assert added["eval"]["gold_win_rate_vs_sft"] == 1.0 and added["eval"]["gold_reward_mean"] == 1.0
    assert added["eval"]["sft_gold_reward_mean"] < 0
    assert added["prompts"]["eval"] == 4 and added["prompts"]["train"] > 0
    ((prompts, options),) = calls
    assert len(prompts) == 4 * 2 and prompts[0] == prompts[1]  # samples_per_prompt=2, in a row
    assert options is generation


def test_prepared_task_prepares_the_raw_fixtures(prepared):
    config, workdir, task, data = prepared
    assert set(data.paths) == {"train", "test", "tokenizer", "eval_prompts"}
    assert data.paths["train"] == os.path.join(workdir, "data", "train")
    assert data.tokenizer_dir == config.data.tokenizer
    assert len(data.train) == len(data.heldout) == 5  # the fixture, its own held-out split
    assert 0 < data.train.is_flipped.sum() < 5 and not data.heldout.is_flipped.any()
    assert task.vocab_size() is None and task.model_manifest(data) is data.train.manifest
    assert task.model_manifest(data)["vocab_size"] == 259  # the byte tokenizer's
    assert task.gold_reward is None and task.chat_template() is None
    assert task.gold_probe(data, None, 4) is None


def test_prepared_final_evaluation_writes_the_generations(prepared, monkeypatch):
    config, workdir, task, data = prepared
    generation = pipeline.generation_eval(_context(config, workdir, task), data)
    noise = config.noise
    assert generation.generator == f"{config.method}_{noise.kind}{noise.rate:g}_seed{config.seed}"
    assert generation.max_prompt_length == config.data.raw.max_prompt_length  # cut as in training
    assert generation.prompt_style == config.eval.prompt_style
    calls = []
    monkeypatch.setattr(
        generations, "generate_both", _fixed_responses(calls, lambda model, p: f"{model} says")
    )
    added = task.final_evaluation(None, "policy params", "sft params", data, generation)
    assert added["eval"] == {}  # no reward model configured
    files = added["generations"]["files"]
    assert set(files) == {"policy", "sft", "reference"}
    assert os.path.dirname(files["policy"]) == os.path.join(workdir, "eval")
    with open(files["policy"], encoding="utf-8") as f:
        rows = json.load(f)
    assert len(rows) == added["generations"]["num_prompts"] == len(calls[0][0])
    assert {r["output"] for r in rows} == {"policy says"}
    assert {r["generator"] for r in rows} == {generation.generator}


def test_prepared_task_reads_its_chat_template(tmp_path):
    template = os.path.join(DATA, "mistral_chat_template.jinja")
    task = tasks.PreparedTask(tasks.DataFiles(train="x", chat_template=template))
    with open(template, encoding="utf-8") as f:
        assert task.chat_template() == f.read()


def test_prepared_task_refuses_inconsistent_data_keys(tmp_path):
    raw = tasks.RawData(format="ultrafeedback", train=os.path.join(DATA, "ultrafeedback.jsonl"))
    for files, extra, match in (
        (tasks.DataFiles(), tasks.RawData(), "config.data.train is empty"),
        (tasks.DataFiles(train="prepared", tokenizer="t"), raw, "data.train and config.data.raw"),
        (tasks.DataFiles(), raw, "config.data.raw needs config.data.tokenizer"),
    ):
        with pytest.raises(ConfigValueError, match=match):
            tasks.PreparedTask(files, extra).prepare(str(tmp_path))


def test_source_strengths_reach_the_noise_model(tmp_path):
    """config.noise.source_strengths decides which pairs source-biased noise flips: with the
    strengths reversed, exactly the other pairs of the fixture are flipped."""
    config = _config("experiments/paper/alpaca_comparison.py", "smoke")
    config.noise.kind, config.noise.rate = "source_biased", 1.0
    _, default = _load(config, tmp_path)
    reversed_strengths = tuple(
        (name, -strength) for name, strength in config.noise.source_strengths
    )
    config.noise.source_strengths = reversed_strengths
    assert pipeline.noise_config(config).source_strengths == reversed_strengths
    _, reverse = _load(config, tmp_path)
    assert 0 < default.train.is_flipped.sum() < len(default.train)
    np.testing.assert_array_equal(reverse.train.is_flipped, ~default.train.is_flipped)
