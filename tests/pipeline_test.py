"""The pipeline in-process: the one conversion from config blocks to dataclasses
(``configs.to_dataclass``), the blocks the pipeline converts, ``loss.base``, and ``pipeline.run``
on the tiniest synthetic run with the files it writes and its named steps. (The command line
end to end is tests/main_test.py.)"""

import dataclasses
import importlib.util
import json
import math
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from ropo_jax.config import defaults as configs
from ropo_jax.config import validation as config_validation
from ropo_jax.data.noise import DEFAULT_SOURCE_STRENGTHS
from ropo_jax.errors import ConfigValueError
from ropo_jax.evaluation import final
from ropo_jax.losses import registry
from ropo_jax.run import pipeline
from ropo_jax.synthetic import task as synthetic_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Options:
    count: int
    scale: float
    on: bool
    name: str
    cap: int | None = None
    ratio: float | str = 0.5
    pairs: tuple[tuple[str, float], ...] = ()
    sub_size: int = 1
    extra: int = 7


BLOCK = dict(
    count=3,
    scale=2,  # an integer where a float is declared
    on=True,
    name="x",
    cap=0,
    ratio="auto",
    pairs=[["a", 1], ["b", 2.5]],  # lists, as config.json gives them back
    sub=dict(size=4),  # a sub-block: Options.sub_size
    unrelated="left alone",
)


def _convert(block, **kwargs):
    kwargs.setdefault("optional", ("extra",))
    return configs.to_dataclass(Options, block, "blk", **kwargs)


# --- configs.to_dataclass -----------------------------------------------------------------------


def test_to_dataclass_converts_every_field_to_its_type():
    out = _convert(BLOCK, none_when_unset=("cap",))
    assert out == Options(3, 2.0, True, "x", None, "auto", (("a", 1.0), ("b", 2.5)), 4, 7)
    assert type(out.scale) is float and type(out.pairs[0][1]) is float
    assert _convert({**BLOCK, "cap": 5}, none_when_unset=("cap",)).cap == 5
    assert _convert(BLOCK).cap == 0  # 0 is a value unless the field says otherwise
    assert _convert({**BLOCK, "ratio": 1}).ratio == 1.0  # float | str: the first that fits
    assert _convert(BLOCK, count=9, name="y").count == 9  # overrides win over the block
    # A ConfigDict block reads the same as a dict.
    assert _convert(ml_collections.ConfigDict(BLOCK), none_when_unset=("cap",)) == _convert(
        BLOCK, none_when_unset=("cap",)
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(count="3"), "config.blk.count='3': must be an integer"),
        (dict(count=True), "config.blk.count=True: must be an integer"),
        (dict(on=1), "config.blk.on=1: must be True or False"),
        (dict(scale="2"), "config.blk.scale='2': must be a number"),
        (dict(ratio=[1]), "config.blk.ratio=[1]: must be a number or a string"),
        (dict(pairs=[["a", "b"]]), "config.blk.pairs=[['a', 'b']]: must be a tuple of"),
        (dict(sub=dict(size=1.5)), "config.blk.sub.size=1.5: must be an integer"),
    ],
)
def test_to_dataclass_names_the_key_of_a_wrong_type(change, message):
    with pytest.raises(ConfigValueError) as error:
        _convert({**BLOCK, **change})
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("missing", "key"), [("name", "config.blk.name"), ("sub", "config.blk.sub_size")]
)
def test_to_dataclass_names_a_missing_key(missing, key):
    block = {k: v for k, v in BLOCK.items() if k != missing}
    with pytest.raises(ConfigValueError, match=rf"^{key} is missing \(Options\.") as error:
        _convert(block)
    assert "base_config()" in str(error.value)
    # A field with a default may be left out only where the caller says so.
    with pytest.raises(ConfigValueError, match=r"config\.blk\.extra is missing"):
        _convert(BLOCK, optional=())
    assert _convert({"count": 1, "on": False, "scale": 1, "name": ""}, optional=True).sub_size == 1
    with pytest.raises(TypeError, match="no field"):
        _convert(BLOCK, colour="red")


# --- the blocks the pipeline converts ---------------------------------------------------------


def test_pipeline_converts_each_block_from_the_base_config():
    config = configs.base_config()
    sft = pipeline.stage_config(config.sft, "sft", "sft", 3)
    assert (sft.name, sft.kind, sft.seed, sft.learning_rate) == ("sft", "sft", 3, 1e-5)
    assert sft.max_length is None and sft.max_completion_tokens is None  # 0: from the data
    config.train.max_length = 128
    stage = pipeline.stage_config(config.train, "round", "preference", 0, key="train")
    assert stage.max_length == 128 and stage.epochs == 1.0  # rounds set their epochs
    step = pipeline.step_config(config)
    assert (step.logps_chunk_size, step.nan_policy, step.loss) == (256, "skip", "dpo")
    config.method, config.ropo.rs.enabled, config.ropo.rs.num_candidates = "ropo", True, 6
    baseline = pipeline.ropo_config(config)
    assert not baseline.filtering and not baseline.rs_enabled and baseline.rs_num_candidates == 6
    config.method = "ropo_full"
    assert pipeline.ropo_config(config).filtering and pipeline.ropo_config(config).rs_enabled
    config.method = "holder_full"  # filters, never rejection-samples
    holder = pipeline.ropo_config(config)
    assert holder.filtering and not holder.rs_enabled
    config.method = "ropo_full"
    noise = pipeline.noise_config(config)
    assert noise.source_strengths == DEFAULT_SOURCE_STRENGTHS
    config.noise.source_strengths = (("ppo_xl", 2), ("sup2", 1))  # as --config.noise... gives it
    assert pipeline.noise_config(config).source_strengths == (("ppo_xl", 2.0), ("sup2", 1.0))
    del config.train["nan_policy"]
    with pytest.raises(ConfigValueError, match=r"config\.train\.nan_policy is missing"):
        pipeline.step_config(config)


def test_validation_checks_the_source_strengths():
    config = configs.base_config()
    config.data.train = "set"
    config.noise.source_strengths = (("a", 1), ("a", 2))
    with pytest.raises(ConfigValueError, match=r"config\.noise\.source_strengths=.*distinct"):
        config_validation.validate(config, device_count=1, process_count=1, check_files=False)


def test_loss_base_is_a_config_key_checked_by_the_registry():
    config = configs.base_config()
    config.data.train = "set"
    assert config.loss.base == registry.LOSSES["lcpo_em"].defaults["base"]
    assert "base" not in pipeline.loss_hyperparams(config, "dpo")  # only lcpo_em takes it
    config.method, config.loss.base = "lcpo_em", "hinge"
    config_validation.validate(config, device_count=1, process_count=1, check_files=False)
    hinge = pipeline.loss_hyperparams(config, "lcpo_em")
    config.loss.base = "dpo"
    dpo = pipeline.loss_hyperparams(config, "lcpo_em")
    assert (hinge["base"], dpo["base"]) == ("hinge", "dpo")
    # The key reaches the loss: the same pairs cost differently under the two bases.
    margin_B = jnp.asarray([-2.0, 0.5, 3.0])
    zeros_B = jnp.zeros_like(margin_B)
    logps = registry.PairLogps(margin_B, zeros_B, zeros_B, zeros_B)
    loss_hinge, _ = registry.preference_loss("lcpo_em", logps, **hinge)
    loss_dpo, _ = registry.preference_loss("lcpo_em", logps, **dpo)
    assert not np.allclose(loss_hinge, loss_dpo)
    config.loss.base = "simpo"
    with pytest.raises(ConfigValueError, match=r"^config\.loss\.base='simpo': must be one of"):
        config_validation.validate(config, device_count=1, process_count=1, check_files=False)


# --- pipeline.run, in-process ----------------------------------------------------------------


def tiny_config() -> ml_collections.ConfigDict:
    """experiments/smoke.py at the smallest size that still runs every step: one SFT step, one
    round of one step, four evaluation prompts."""
    spec = importlib.util.spec_from_file_location(
        "smoke", os.path.join(ROOT, "experiments/smoke.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.method = "dpo"
    config.synthetic.data.update(num_sft=32, num_train_pairs=32, num_test_pairs=16)
    config.synthetic.data.num_eval_prompts = 4
    config.ropo.num_rounds = 1
    config.eval.update(max_new_tokens=4, generate_batch_size=8, dynamics=False, dynamics_prompts=3)
    config.compilation_cache_dir = ""
    config.tensorboard = False
    return config


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    config, workdir = tiny_config(), str(tmp_path_factory.mktemp("run"))
    return config, workdir, pipeline.run(config, workdir)


def test_run_writes_the_results_and_its_files(finished):
    config, workdir, results = finished
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f) == results
    assert list(results) == [
        "method",
        "noise",
        "seed",
        "eval",
        "noise_identification",
        "prompts",  # the synthetic task's
        "rounds",
        "dynamics",
        "selected_by_noisy_validation",
    ]
    assert results["method"] == "dpo" and results["dynamics"] == []
    scores = np.load(os.path.join(workdir, "final_scores.npz"))
    assert scores["margin"].shape == scores["is_flipped"].shape == (32,)
    assert results["noise"] == {
        "kind": config.noise.kind,
        "rate": config.noise.rate,
        "realised_rate": float(scores["is_flipped"].mean()),
    }
    evaluation = results["eval"]
    assert (
        0 <= evaluation["pref_accuracy_clean"] <= 1 and 0 <= evaluation["gold_win_rate_vs_sft"] <= 1
    )
    assert all(math.isfinite(evaluation[k]) for k in ("gold_reward_mean", "sft_gold_reward_mean"))
    assert results["prompts"]["eval"] == 4
    assert results["noise_identification"]["auroc"] is not None
    assert [r["round"] for r in results["rounds"]] == [1]
    for name in ("export_info.json", "data/prepared.json", "round_1/scores.npz"):
        assert os.path.isfile(os.path.join(workdir, name)), name
    for name in ("model", "sft_model"):  # both trained policies, as Hugging Face directories
        with open(os.path.join(workdir, name, "export.json")) as f:
            assert json.load(f)["stage"] == ("sft" if name == "sft_model" else "dpo")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        stages = [json.loads(line)["stage"] for line in f]
    assert {"sft", "round_1"} <= set(stages) and stages[-1] == "final"
    assert not os.path.exists(os.path.join(workdir, "eval"))  # generations: real data only
    with open(os.path.join(workdir, "stage_times.json")) as f:
        times = json.load(f)  # what a run record's provenance carries
    assert list(times["stage_seconds"]) == [
        "data",
        "model",
        "sft",
        "reference_logps",
        "preference_training",
        "export",
        "evaluation",
    ]
    assert all(t >= 0 for t in times["stage_seconds"].values())
    assert times["total_seconds"] >= sum(times["stage_seconds"].values()) - 0.1
    assert times["devices"]["platform"] == "cpu" and times["devices"]["count"] >= 1


def test_the_named_steps_on_the_finished_run(finished):
    """The steps ``run`` is made of, from the finished run's config: the task, its data with
    the same noise, the evaluation options and the final evaluation's settings."""
    config, workdir, _ = finished
    task = pipeline.make_task(config)
    ctx = pipeline.RunContext(config=config, workdir=workdir, task=task, mesh=None, writer=None)
    data = task.load(workdir, pipeline.noise_config(config))
    scores = np.load(os.path.join(workdir, "final_scores.npz"))
    np.testing.assert_array_equal(data.train.is_flipped, scores["is_flipped"])
    assert task.vocab_size() == len(synthetic_task.vocabulary(task.task))
    generation = pipeline.generation_eval(ctx, data)
    assert generation.prompts_path == os.path.join(workdir, "data", "raw", "eval_prompts.jsonl")
    assert (generation.seed, generation.generate_batch_size) == (config.seed + 1000, 8)
    assert (generation.sampling.max_new_tokens, generation.sampling.length_bucket) == (4, 16)
    assert generation.output_dir == os.path.join(workdir, "eval")
    noise = config.noise
    assert generation.generator == f"dpo_{noise.kind}{noise.rate:g}_seed{config.seed}"
    assert generation.reward_model is None and generation.chat_template is None
    settings = pipeline.final_eval(ctx, "dpo")
    assert (settings.method, settings.seed) == ("dpo", config.seed)
    assert (settings.noise_kind, settings.noise_rate) == (noise.kind, noise.rate)
    assert settings.batch_size == config.eval.batch_size
    assert settings.filter_ratio == config.ropo.filter_ratio
    assert settings.scoring_hyperparams == {"beta": config.loss.beta}
    assert final.filter_ratio("auto", workdir) == final.DEFAULT_FILTER_RATIO  # no estimate made
    assert final.filter_ratio(0.3, workdir) == 0.3
    reference = pipeline.Reference(train=None, heldout=None, key="")
    probe = pipeline.dynamics_probe(ctx, None, None, data, reference, generation)
    assert len(probe.gold.prompt_ids) == 3  # eval.dynamics_prompts of the 4 prompts
    # The noisy validation labels: the run's noise model, an independent draw.
    assert probe.heldout_flips.shape == (16,) and probe.heldout_flips.any()
