"""config_validation.validate: every rule in process, every shipped config and sweep member
validates, and the command line refuses bad configs with one line and exit 2 before any work."""

import functools
import glob
import importlib.util
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ropo_jax.config import validation as config_validation
from ropo_jax.errors import ConfigValueError
from ropo_jax.models.config import PRESETS, to_hf_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKENIZER = os.path.join(ROOT, "tests", "fixtures", "tokenizers", "byte_bpe")


@functools.cache
def _module(path):
    spec = importlib.util.spec_from_file_location(f"config_{len(path)}_{hash(path)}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _config(spec):
    path, _, arg = spec.partition(":")
    return _module(os.path.join(ROOT, path)).get_config(arg or None)


def _validate(config, **kwargs):
    kwargs = {"device_count": 8, "process_count": 1, **kwargs}
    config_validation.validate(config, **kwargs)


def _set(config, key, value):
    block, _, leaf = key.rpartition(".")
    node = config
    for part in filter(None, block.split(".")):
        node = node[part]
    with node.ignore_type():
        node[leaf] = value


def _refused(config, match, **kwargs):
    with pytest.raises(ConfigValueError, match=match) as info:
        _validate(config, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith("config."), message
    return message


# --- shipped configs --------------------------------------------------------------------------

CONFIG_FILES = sorted(
    os.path.relpath(p, ROOT)
    for p in glob.glob(os.path.join(ROOT, "experiments", "**", "*.py"), recursive=True)
    if not os.path.basename(p).startswith("_") and "/sweeps/" not in p
)
SMOKE = [
    "experiments/smoke.py",
    "experiments/sft.py:smoke",
    "experiments/synthetic.py:smoke",
    "experiments/synthetic.py:quick",
    "experiments/synthetic.py:full",
] + [f"{p}:smoke" for p in CONFIG_FILES if "/paper/" in p]


@pytest.mark.parametrize("spec", SMOKE)
def test_runnable_configs_validate(spec):
    _validate(_config(spec))
    _validate(_config(spec), device_count=1)


@pytest.mark.parametrize("model", ["mistral_7b", "llama2_7b"])
@pytest.mark.parametrize("path", [p for p in CONFIG_FILES if "/paper/" in p])
def test_paper_configs_ask_for_their_inputs(path, model):
    """Full-size configs are valid but name the model and data the command line must add."""
    for noise in _module(os.path.join(ROOT, "experiments", "paper", "_common.py")).NOISES:
        try:
            config = _config(f"{path}:{model},{noise}")
        except ValueError:  # a noise model this data set does not offer
            continue
        _validate(config, check_files=False)
        _refused(config, r"config.data.train and config.model.hf_path must be set.*--config")


def test_sft_config_asks_for_its_data():
    config = _config("experiments/sft.py")
    _validate(config, check_files=False)
    _refused(config, r"config.data.train and config.data.sft must be set")


SWEEPS = sorted(glob.glob(os.path.join(ROOT, "experiments", "sweeps", "*.py")))
# Each sweep's TEST_ARGS, else the synthetic benchmark's presets.
SWEEP_ARGS = [
    pytest.param(path, arg, id=f"{os.path.basename(path)}-{arg}")
    for path in SWEEPS
    for arg in getattr(_module(path), "TEST_ARGS", ("quick", "smoke"))
]


@pytest.mark.filterwarnings("ignore:ropo alpha=2.0")  # the ablation's deliberate alpha <= 2
@pytest.mark.parametrize(("path", "arg"), SWEEP_ARGS)
def test_every_sweep_member_validates(path, arg):
    runs = _module(os.path.join(ROOT, "scripts", "run_sweep.py")).load_sweep(f"{path}:{arg}")
    assert runs
    for run in runs:
        config = _config(run["config"])
        for key, value in run["overrides"].items():
            _set(config, key, value)
        _validate(config)


# --- values -----------------------------------------------------------------------------------

BAD_VALUES = [
    # (key, value, the message names ...)
    ("seed", -1, "config.seed=-1: must be an integer >= 0"),
    ("method", "dpp", "did you mean 'dpo'"),
    ("task", "real", "config.task='real'"),
    ("tensorboard", "yes", "True or False"),
    ("train.batch_size", 0, "config.train.batch_size=0: must be a positive integer"),
    ("sft.batch_size", -4, "config.sft.batch_size=-4"),
    ("train.batch_size", "32", "config.train.batch_size='32'"),
    ("train.micro_batches", 3, "micro_batches=3: must divide config.train.batch_size=32"),
    ("sft.micro_batches", 0, "config.sft.micro_batches=0"),
    ("sft.epochs", 0.0, "config.sft.epochs=0.0"),
    ("train.learning_rate", -1e-3, "config.train.learning_rate=-0.001: must be a number >= 0"),
    ("train.learning_rate", float("nan"), "config.train.learning_rate=nan"),
    ("train.warmup_ratio", 1.5, r"warmup_ratio=1.5: must be a number in \[0, 1\]"),
    ("train.schedule", "cosin", "did you mean 'cosine'"),
    ("sft.batch_mode", "pad", "did you mean 'padded'"),
    ("train.weight_decay", -0.1, "weight_decay"),
    ("train.max_length", -1, "config.train.max_length=-1"),
    ("train.log_every", 0, "config.train.log_every=0"),
    ("sft.checkpoint_every", 0, "config.sft.checkpoint_every=0"),
    ("train.keep_checkpoints", 0, "config.train.keep_checkpoints=0"),
    ("train.logps_chunk_size", 0, "config.train.logps_chunk_size=0"),
    ("train.nan_policy", "halt", "config.train.nan_policy='halt'"),
    ("train.online_reference", 1, "config.train.online_reference=1"),
    ("eval.batch_size", 0, "config.eval.batch_size=0"),
    ("eval.generate_batch_size", 0, "config.eval.generate_batch_size=0"),
    ("eval.top_p", 0.0, r"config.eval.top_p=0.0: must be a number in \(0, 1\]"),
    ("eval.temperature", -1.0, "config.eval.temperature=-1.0"),
    ("eval.max_new_tokens", 0, "config.eval.max_new_tokens=0"),
    ("eval.prompts_format", "alpaca", "did you mean 'alpaca_eval'"),
    ("eval.prompt_style", "markdown", "config.eval.prompt_style='markdown'"),
    ("eval.num_prompts", -1, "config.eval.num_prompts=-1"),
    ("eval.reward_device", "tpu", "config.eval.reward_device='tpu'"),
    ("eval.reward_batch_size", 0, "config.eval.reward_batch_size=0"),
    ("model.dtype", "bf16", "config.model.dtype='bf16'"),
    ("model.param_dtype", "float64", "config.model.param_dtype='float64'"),
    ("model.remat_policy", "everything", "config.model.remat_policy='everything'"),
    ("model.preset", "tinyy", "did you mean 'tiny'"),
    ("noise.kind", "symetric", "did you mean 'symmetric'"),
    ("noise.rate", 0.5, r"config.noise.rate=0.5: symmetric noise needs a rate in \[0, 0.5\)"),
    ("noise.rate", 0.7, "most of them are inverted"),
    ("noise.rate", -0.1, r"config.noise.rate=-0.1: must be a number in \[0, 1\]"),
    ("noise.temperature", 0.0, "config.noise.temperature=0.0"),
    ("loss.beta", 0.0, r"config.loss.beta=0.0: beta must be > 0.*method 'dpo'"),
    ("ropo.num_rounds", 0, "config.ropo.num_rounds=0"),
    ("ropo.epochs_per_round", 0.0, "config.ropo.epochs_per_round=0.0"),
    ("ropo.filter_ratio", 1.0, r"config.ropo.filter_ratio=1.0: must be a number in \[0, 1\)"),
    ("ropo.filter_ratio", 1.5, "config.ropo.filter_ratio=1.5"),
    ("ropo.filter_ratio", -0.1, "config.ropo.filter_ratio=-0.1"),
    ("ropo.filter_ratio", "half", r"a number in \[0, 1\)"),
    ("ropo.filter_start_round", 0, "config.ropo.filter_start_round=0"),
    ("ropo.filter_mode", "cumulativ", "did you mean 'cumulative'"),
    ("ropo.filter_granularity", "example", "config.ropo.filter_granularity='example'"),
    ("ropo.rs.num_candidates", 1, "config.ropo.rs.num_candidates=1: must be an integer >= 2"),
    ("ropo.rs.top_p", 1.5, "config.ropo.rs.top_p=1.5"),
    ("ropo.rs.max_new_tokens", -1, "config.ropo.rs.max_new_tokens=-1"),
    ("ropo.rs.ranking", "median", "config.ropo.rs.ranking='median'"),
    ("ropo.rs.min_margin", -0.5, "config.ropo.rs.min_margin=-0.5"),
    ("ropo.rs.selection", "reorient", "did you mean 'reorient_original'"),
    ("ropo.rs.selection", "max_margn", "did you mean 'max_margin'"),
    ("data.raw.format", "jsonlines", "config.data.raw.format='jsonlines'"),
    ("data.raw.on_error", "ignore", "config.data.raw.on_error='ignore'"),
    ("data.raw.max_length", 0, "config.data.raw.max_length=0"),
    ("synthetic.data_seed", -1, "config.synthetic.data_seed=-1"),
    ("synthetic.task.num_topics", 1, "config.synthetic.task.num_topics=1"),
    ("synthetic.task.max_length", 2, "max_length=2: must be >= config.synthetic.task.min_length"),
    ("synthetic.data.num_train_pairs", 0, "config.synthetic.data.num_train_pairs=0"),
    ("synthetic.data.sft_quality", 1.5, "config.synthetic.data.sft_quality=1.5"),
    ("synthetic.task.num_topic", 4, "config.synthetic.task.num_topic: no such key; did you mean"),
]


@pytest.mark.parametrize(("key", "value", "match"), BAD_VALUES)
def test_bad_value_is_one_line_naming_key_and_value(key, value, match):
    config = _config("experiments/smoke.py")
    _set(config, key, value)
    _refused(config, match)


GOOD_VALUES = [
    ("ropo.filter_ratio", 0.0),
    ("noise.rate", 0.49),
    ("train.warmup_ratio", 1.0),
    ("train.max_grad_norm", 0.0),  # no clipping
    ("ropo.rs.temperature", 0.0),  # greedy
    ("eval.temperature", 0.0),
    ("train.learning_rate", 0.0),
    ("train.micro_batches", 4),
    ("model.dtype", "bfloat16"),
    ("method", "sft"),
    ("method", "ropo_full"),
    ("ropo.filter_ratio", "auto"),
    ("ropo.filter_ratio", "holder"),  # Hölder's ε̂, for any method
]


@pytest.mark.parametrize(("key", "value"), GOOD_VALUES)
def test_boundary_values_pass(key, value):
    config = _config("experiments/smoke.py")
    _set(config, key, value)
    _validate(config)


@pytest.mark.parametrize(
    ("kind", "rate"),
    [("length_biased", 1.0), ("source_biased", 1.0), ("bradley_terry", 1.0), ("none", 0.0)],
)
def test_noise_kinds_with_a_biased_rate_take_rates_up_to_one(kind, rate):
    config = _config("experiments/smoke.py")
    config.noise.update(kind=kind, rate=rate)
    _validate(config)
    config.noise.rate = 1.5
    _refused(config, r"config.noise.rate=1.5")


def test_a_rate_without_a_noise_kind_is_refused():
    config = _config("experiments/smoke.py")
    config.noise.update(kind="none", rate=0.2)
    _refused(config, r"no effect with config.noise.kind='none'.*--config.noise.kind=symmetric")


@pytest.mark.parametrize(
    ("method", "key", "value", "match"),
    [
        ("ropo", "alpha", -1.0, r"config.loss.alpha=-1.0: alpha must be > 0"),
        ("ropo_full", "beta", -0.1, r"config.loss.beta=-0.1.*method 'ropo_full'"),
        ("cdpo", "label_smoothing", 0.7, r"config.loss.label_smoothing=0.7: cdpo needs"),
        ("rdpo", "flip_rate", 0.5, r"config.loss.flip_rate=0.5: rdpo needs"),
        ("lcpo_em", "eta", 0.6, r"config.loss.eta=0.6: lcpo_em needs"),
        ("dpo_nll", "nll_weight", -1.0, r"config.loss.nll_weight=-1.0"),
        ("dr_dpo", "beta_prime", 0.0, r"config.loss.beta_prime=0.0"),
        ("ipo", "ipo_average", 1, r"config.loss.ipo_average=1: must be True or False"),
        ("holder_dpo", "holder_gamma", 0.0, r"config.loss.holder_gamma=0.0: holder_dpo needs"),
        ("sft", "beta", 0.0, r"config.loss.beta=0.0.*method 'sft'"),  # scored with dpo
    ],
)
def test_loss_hyperparameters_of_the_method(method, key, value, match):
    config = _config("experiments/smoke.py")
    config.method = method
    _validate(config)  # the defaults are valid for every method
    _set(config, f"loss.{key}", value)
    _refused(config, match)


def test_knobs_the_method_does_not_take_are_not_checked():
    config = _config("experiments/smoke.py")
    config.loss.alpha = -1.0  # dpo takes only beta
    _validate(config)


def test_oracle_label_smoothing_takes_the_noise_rate():
    config = _config("experiments/smoke.py")
    config.method, config.loss.label_smoothing = "cdpo", -1.0
    config.noise.update(kind="source_biased", rate=1.0)  # the oracle value is capped below 0.5
    _validate(config)


def test_rejection_sampling_rules_mirror_ropo_config():
    config = _config("experiments/smoke.py")
    config.ropo.rs.selection = "best_vs_worst_original"
    _refused(config, r"needs the original responses.*--config.ropo.rs.include_original=True")
    config.ropo.rs.include_original = True
    _validate(config)


def test_holder_full_needs_the_holder_estimate_of_rho():
    """holder_full removes the ⌊N·ε̂⌋ pairs Hölder flags: ρ must be "holder", not the base
    default 0.2 (ambiguous: left unset or chosen?) nor another estimate."""
    config = _config("experiments/smoke.py")
    config.method = "holder_full"
    message = _refused(config, r"^config.ropo.filter_ratio=0.2: method 'holder_full' filters")
    assert message.endswith("set --config.ropo.filter_ratio=holder")
    config.ropo.filter_ratio = "auto"
    _refused(config, r"config.ropo.filter_ratio='auto': method 'holder_full'")
    config.ropo.filter_ratio = "holder"
    _validate(config)
    config.loss.holder_gamma = 0.0  # holder_full trains with holder_dpo's knobs
    _refused(config, r"config.loss.holder_gamma=0.0: holder_dpo needs.*method 'holder_full'")


def test_holder_rho_checks_the_gamma_it_reads_for_any_method():
    config = _config("experiments/smoke.py")
    config.method, config.ropo.filter_ratio, config.loss.holder_gamma = "ropo_full", "holder", -1.0
    _refused(config, r"config.loss.holder_gamma=-1.0: .*ropo.filter_ratio='holder'")
    config.ropo.filter_ratio = 0.2  # the knob is unused: not checked
    _validate(config)


def test_sft_method_needs_sft_enabled():
    config = _config("experiments/smoke.py")
    config.method, config.sft.enabled = "sft", False
    _refused(config, r"config.method='sft' needs config.sft.enabled=True")


def test_synthetic_task_needs_its_block():
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    config.task = "synthetic"
    _refused(config, r"config.synthetic is missing")


# --- mesh and batch layout --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "devices", "sizes"),
    [
        ((-1, 1, 1), 8, (8, 1, 1)),
        ((1, -1, 1), 8, (1, 8, 1)),
        ((2, -1, 2), 8, (2, 2, 2)),
        ((2, 2, 2), 8, (2, 2, 2)),
        ((-1, 1, 1), 1, (1, 1, 1)),
    ],
)
def test_mesh_shapes_that_fit(shape, devices, sizes):
    assert config_validation.mesh_sizes(shape, devices) == sizes


@pytest.mark.parametrize(
    ("shape", "match"),
    [
        ((3, 1, 1), r"does not fit the 8 device\(s\).*must equal.*-1"),
        ((3, -1, 1), r"product 3\) must divide the device count"),
        ((4, 1, 1), "must equal the device count"),
        ((-1, -1, 1), "at most one axis may be -1"),
        ((2, 4), "must be 3 sizes"),
        ((0, -1, 1), "must be 3 sizes"),
        ((-2, 1, 1), "must be 3 sizes"),
    ],
)
def test_mesh_shapes_that_do_not_fit(shape, match):
    config = _config("experiments/smoke.py")
    _set(config, "mesh.shape", shape)
    _refused(config, match)


def test_batches_need_not_divide_the_mesh_on_one_process():
    # 4 pairs in 2 micro-batches over 8 devices: put_batch replicates what does not divide.
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    assert config.train.batch_size // config.train.micro_batches == 2
    _validate(config)


def test_batches_split_over_processes():
    config = _config("experiments/smoke.py")
    _validate(config, device_count=16, process_count=2)
    config.eval.batch_size = 63
    _refused(config, r"config.eval.batch_size: 63 .* 2 processes", device_count=16, process_count=2)
    config.eval.batch_size = 64
    config.train.micro_batches = 8  # 4 pairs per micro-batch over data x fsdp = 16 devices
    _refused(
        config, r"config.train.batch_size: 4 .*data x fsdp = 16", device_count=16, process_count=2
    )
    config.mesh.shape = (1, 1, -1)  # tensor parallelism only: the batch is not split
    _validate(config, device_count=16, process_count=2)


# --- inputs -----------------------------------------------------------------------------------


def _prepared(directory, *, kind="preference", tokenizer=TOKENIZER, vocab_size=300, n=16):
    os.makedirs(directory, exist_ok=True)
    manifest = dict(
        format_version=2, kind=kind, tokenizer=tokenizer, vocab_size=vocab_size, num_examples=n
    )
    with open(os.path.join(directory, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return str(directory)


def _model_dir(directory, *, vocab_size=256, weights="model.safetensors", architecture=None):
    os.makedirs(directory, exist_ok=True)
    hf = to_hf_config(PRESETS["tiny"].replace(vocab_size=vocab_size))
    if architecture:
        hf["architectures"] = [architecture]
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(hf, f)
    if weights:
        open(os.path.join(directory, weights), "wb").close()  # only its presence is checked
    return str(directory)


def _prepared_config(tmp_path, **manifest):
    """The UltraFeedback smoke config on a prepared directory instead of raw files."""
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    config.data.raw.update(train="", test="")
    config.data.train = _prepared(tmp_path / "train", **manifest)
    return config


def test_prepared_directories_are_checked(tmp_path):
    config = _prepared_config(tmp_path)
    _validate(config)
    config.data.test = str(tmp_path / "nowhere")
    _refused(config, r"config.data.test='.*nowhere': no such directory")
    os.makedirs(tmp_path / "empty")
    config.data.test = str(tmp_path / "empty")
    _refused(config, r"not a prepared data set \(no manifest.json\).*ropo_jax.data.prepare")
    config.data.test = _prepared(tmp_path / "sft_kind", kind="sft")
    _refused(config, r"config.data.test=.* holds 'sft' data")
    config.data.test = ""
    config.sft.enabled = True
    _refused(config, r"config.data.sft must be set.*--config.sft.enabled=False")
    config.data.sft = _prepared(tmp_path / "pairs", kind="preference")
    _refused(config, r"config.data.sft=.* holds 'preference' data; SFT needs --format=sft")
    config.data.sft = _prepared(tmp_path / "sft", kind="sft", n=128)  # sft.batch_size=64
    _validate(config)


def test_a_train_split_is_required(tmp_path):
    config = _prepared_config(tmp_path)
    config.data.train = ""
    _refused(config, r"config.data.train must be set for task='prepared'")


def test_too_few_examples_for_one_update(tmp_path):
    config = _prepared_config(tmp_path, n=3)
    config.train.update(batch_size=4, micro_batches=2)
    _refused(config, r"config.train.batch_size=4: config.data.train has 3 examples")
    config.train.update(batch_size=2, micro_batches=1)
    _validate(config)


def test_tokenizer_must_be_the_datas(tmp_path):
    config = _prepared_config(tmp_path, tokenizer=TOKENIZER)
    other = tmp_path / "other_tokenizer"
    os.makedirs(other)
    config.data.tokenizer = str(other)
    _refused(config, r"config.data.tokenizer=.* is not the tokenizer config.data.train was")
    config.data.tokenizer = TOKENIZER
    _validate(config)
    # Data prepared elsewhere: its tokenizer path does not exist here, data.tokenizer is used.
    config.data.train = _prepared(tmp_path / "moved", tokenizer="/elsewhere/tokenizer")
    config.data.tokenizer = str(other)
    _validate(config)
    config.data.test = _prepared(tmp_path / "test", tokenizer=TOKENIZER)
    _refused(config, r"config.data splits were prepared with different tokenizers")


@pytest.mark.parametrize(
    ("key", "match"),
    [
        ("tokenizer", r"config.data.tokenizer=.*: no such file or directory"),
        ("eval_prompts", r"config.data.eval_prompts=.*: no such file or directory"),
        ("chat_template", r"config.data.chat_template=.*: no such file or directory"),
    ],
)
def test_input_files_exist(key, match, tmp_path):
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    config.data[key] = str(tmp_path / "missing")
    _refused(config, match)


def test_raw_inputs(tmp_path):
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    train = config.data.raw.train
    config.data.raw.train = str(tmp_path / "missing.jsonl")
    _refused(config, r"config.data.raw.train=.*missing.jsonl': no such file")
    config.data.raw.train = str(tmp_path / "*.jsonl")
    _refused(config, r"config.data.raw.train=.*: no such file")
    config.data.raw.train = train
    config.data.train = _prepared(tmp_path / "train")
    _refused(config, r"config.data.train and config.data.raw.train are both set")
    config.data.train = ""
    config.data.raw.format = ""
    _refused(config, r"config.data.raw.train is set but config.data.raw.format is empty")
    config.data.raw.format = "ultrafeedback"
    config.data.tokenizer = ""
    _refused(config, r"config.data.raw needs config.data.tokenizer")
    config.data.tokenizer = TOKENIZER
    config.data.raw.max_prompt_length = config.data.raw.max_length
    _refused(config, r"max_prompt_length=256: must be smaller than config.data.raw.max_length")


def test_model_directory(tmp_path):
    config = _prepared_config(tmp_path, vocab_size=300)
    config.model.hf_path = str(tmp_path / "nowhere")
    _refused(config, r"config.model.hf_path='.*nowhere': no such directory")
    config.model.hf_path = str(tmp_path)
    _refused(config, r"config.model.hf_path=.*: no config.json")
    config.model.hf_path = _model_dir(tmp_path / "no_weights", weights=None)
    _refused(config, r"no model.safetensors or model.safetensors.index.json; the weights")
    config.model.hf_path = _model_dir(tmp_path / "pickled", weights="pytorch_model.bin")
    _refused(config, r"only pickled weights \(pytorch_model.bin\).*safe_serialization=True")
    config.model.hf_path = _model_dir(tmp_path / "gpt2", architecture="GPT2LMHeadModel")
    _refused(config, r"config.model.hf_path=.*GPT2LMHeadModel.*is not supported")
    config.model.hf_path = _model_dir(tmp_path / "small_vocab", vocab_size=256)
    _refused(config, r"config.data.train: its tokenizer has 300 tokens but .* embeds 256")
    config.model.hf_path = _model_dir(tmp_path / "ok", vocab_size=512)
    _validate(config)
    config.model.hf_path = "<set --config.model.hf_path=SFT_MODEL_DIR>"
    _refused(config, r"config.model.hf_path must be set .*--config.model.hf_path=DIR")


def test_model_directory_on_the_synthetic_task(tmp_path):
    config = _config("experiments/smoke.py")
    config.model.hf_path = str(tmp_path / "nowhere")
    _refused(config, r"config.model.hf_path=.*: no such directory")


def test_reward_model_directory(tmp_path):
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    config.eval.reward_model = str(tmp_path / "rm")
    _refused(config, r"config.eval.reward_model=.*: not a model directory \(no config.json\)")
    os.makedirs(tmp_path / "rm")
    with open(tmp_path / "rm" / "config.json", "w") as f:
        json.dump({"id2label": {"0": "LABEL_0", "1": "LABEL_1"}}, f)
    _refused(config, r"config.eval.reward_model=.*: no model.safetensors")
    open(tmp_path / "rm" / "model.safetensors", "wb").close()
    _refused(config, r"the model has 2 labels; a single-score head is needed")
    with open(tmp_path / "rm" / "config.json", "w") as f:
        json.dump({"id2label": {"0": "LABEL_0"}}, f)
    _validate(config)


def test_values_only_skips_the_files(tmp_path):
    config = _config("experiments/paper/ultrafeedback.py:smoke")
    config.data.raw.train = str(tmp_path / "missing.jsonl")
    _validate(config, check_files=False)


# --- the command line -------------------------------------------------------------------------

ENV = {
    **{k: v for k, v in os.environ.items() if k != "ROPO_JAX_TRACEBACK"},
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
}
# (name, config, overrides, what stderr says)
COMMANDS = [
    ("typo", "experiments/smoke.py", ["--config.methd=dpo"], "did you mean --config.method?"),
    ("zero_batch", "experiments/smoke.py", ["--config.train.batch_size=0"], "batch_size=0"),
    ("abc_batch", "experiments/smoke.py", ["--config.train.batch_size=abc"], "not a valid int"),
    ("method", "experiments/smoke.py", ["--config.method=dpp"], "did you mean 'dpo'"),
    ("ratio", "experiments/smoke.py", ["--config.ropo.filter_ratio=1.5"], "filter_ratio=1.5"),
    ("holder", "experiments/smoke.py", ["--config.method=holder_full"], "filter_ratio=holder"),
    ("rate", "experiments/smoke.py", ["--config.noise.rate=0.7"], "config.noise.rate=0.7"),
    ("model", "experiments/smoke.py", ["--config.model.hf_path=/no/model"], "no such directory"),
    ("mesh", "experiments/smoke.py", ["--config.mesh.shape=(3,1,1)"], "8 device(s)"),
    ("no_file", "experiments/nothing.py", [], "no such file 'experiments/nothing.py'"),
    ("bad_arg", "experiments/synthetic.py:huge", [], "choose one of"),
    ("paper", "experiments/paper/tldr.py", [], "config.data.train and config.model.hf_path"),
    (
        "loss_base",
        "experiments/smoke.py",
        ["--config.method=lcpo_em", "--config.loss.base=simpo"],
        "config.loss.base='simpo'",
    ),
]


def _command(config, workdir):
    return [sys.executable, "-m", "ropo_jax.main", f"--config={config}", f"--workdir={workdir}"]


@pytest.fixture(scope="module")
def refused_runs(tmp_path_factory):
    """Every command of COMMANDS, a few at a time: (completed process, seconds, workdir)."""
    root = tmp_path_factory.mktemp("refused")

    def run(case):
        name, config, overrides, _ = case
        workdir = root / name
        start = time.perf_counter()
        out = subprocess.run(
            [*_command(config, workdir), *overrides],
            cwd=ROOT,
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return name, (out, time.perf_counter() - start, workdir)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(run, COMMANDS))


@pytest.mark.e2e
@pytest.mark.parametrize("case", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_command_refuses_a_bad_config_with_one_line(case, refused_runs):
    name, _, _, says = case
    out, seconds, workdir = refused_runs[name]
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), out.stderr
    assert says in lines[0] and "Traceback" not in out.stderr
    assert not os.path.exists(workdir), "a refused command must not create its workdir"
    assert seconds < 60, seconds  # JAX import and validation only (~3 s on an idle CPU)


@pytest.mark.e2e
def test_traceback_env_keeps_the_traceback(tmp_path):
    out = subprocess.run(
        [*_command("experiments/smoke.py", tmp_path / "w"), "--config.noise.rate=0.7"],
        cwd=ROOT,
        env={**ENV, "ROPO_JAX_TRACEBACK": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1
    assert "Traceback" in out.stderr and "ConfigValueError" in out.stderr
