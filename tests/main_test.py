"""The command line end to end: the smoke run's artefacts, kill-and-resume equality, and the
refusal of a checkpoint written by another model."""

import json
import math
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from script_runner import kill_once_written, main_command

from ropo_jax.synthetic import task as synthetic_task

pytestmark = pytest.mark.e2e  # every test runs the command line in subprocesses

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One CPU device per run keeps these subprocesses light (the suite's 8 fake devices are for
# in-process sharding tests).
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
TIMING_KEYS = {"tokens_per_s", "mfu"}


def _command(workdir, *overrides):
    return main_command(workdir, *overrides)


def _run(workdir, *overrides, check=True):
    return subprocess.run(
        _command(workdir, *overrides),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
        check=check,
    )


def _metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _gold_reward_bounds(workdir):
    """The range the synthetic task's gold reward can take on this run's samples, from the
    run's own config.json. r = mean word score − λ·|n − L|/L − κ·[keyword missing]
    (ropo_jax/synthetic/task.py): a word scores in [−1, 1] and a sample has n ≤ max_new_tokens
    words (one word per token, the tokenizer being word-level), so r ≤ 1 (L on-topic words) and
    r ≥ −1 − λ·max |n − L|/L − κ over the sample lengths and targets the run allows; an empty
    sample scores −1 − λ, inside that range. A mean outside it is not a mean of gold rewards
    (a sum, a wrong sign, another scale)."""
    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    task = synthetic_task.TaskConfig(**config["synthetic"]["task"])
    longest = int(config["eval"]["max_new_tokens"])
    targets = range(task.min_length, task.max_length + 1)
    worst_length = max(abs(n - L) / L for n in range(1, longest + 1) for L in targets)
    keyword = task.keyword_weight if task.num_keywords else 0.0
    return -1.0 - task.length_weight * max(worst_length, 1.0) - keyword, 1.0


def _final_params(workdir, stage="round_1"):
    directory = os.path.join(workdir, "checkpoints", stage)
    manager = ocp.CheckpointManager(directory, item_names=("state", "record"))
    step = manager.latest_step()
    state = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return step, state["state"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("uninterrupted"))
    _run(
        workdir,
        "--config.ropo.epochs_per_round=3",
        "--config.ropo.num_rounds=1",
        "--config.train.checkpoint_every=2",
    )
    return workdir


def test_smoke_run_writes_every_artefact(uninterrupted):
    for name in ("config.json", "metrics.jsonl", "results.json", "final_scores.npz"):
        assert os.path.exists(os.path.join(uninterrupted, name)), name
    with open(os.path.join(uninterrupted, "results.json")) as f:
        results = json.load(f)
    assert results["method"] == "dpo" and results["seed"] == 0
    assert results["noise"]["kind"] == "symmetric" and results["noise"]["rate"] == 0.2
    evaluation = results["eval"]
    for key in ("pref_accuracy_clean", "gold_win_rate_vs_sft"):
        assert 0.0 <= evaluation[key] <= 1.0, key
    low, high = _gold_reward_bounds(uninterrupted)
    for key in ("gold_reward_mean", "sft_gold_reward_mean"):
        assert math.isfinite(evaluation[key]) and low <= evaluation[key] <= high, key
    assert 0.0 < evaluation["gold_reward_stderr"] < 0.5
    assert 0.0 < evaluation["gold_win_rate_stderr"] < 0.5
    # Training dynamics: before training and at each epoch boundary (3 epochs here).
    curve = results["dynamics"]
    assert [r["epoch"] for r in curve] == [0.0, 1.0, 2.0, 3.0]
    keys = {"epoch", "step", "flipped_fit_rate", "clean_fit_rate", "noise_auroc"}
    keys |= {"heldout_accuracy", "gold_reward_mean", "kl"}
    assert keys <= set(curve[-1])
    assert curve[0]["kl"] == pytest.approx(0.0, abs=1e-5) and curve[-1]["kl"] > 0
    assert all(
        math.isfinite(r["gold_reward_mean"]) and low <= r["gold_reward_mean"] <= high for r in curve
    )
    assert curve[-1]["clean_fit_rate"] > curve[-1]["flipped_fit_rate"]  # 20 % noise
    assert [r["step"] for r in curve] == sorted(r["step"] for r in curve)
    prompts = results["prompts"]
    assert prompts["train"] > 0 and prompts["eval"] > 0
    assert 0 <= prompts["overlap"] <= prompts["eval"]
    assert set(results["noise_identification"]) == {"precision", "recall", "f1", "auroc"}
    stages = {r["stage"] for r in _metrics(uninterrupted)}
    assert {"sft", "round_1", "final"} <= stages
    train_rows = [r for r in _metrics(uninterrupted) if r["stage"] == "round_1" and "loss" in r]
    assert train_rows[-1]["loss"] < train_rows[0]["loss"]  # preference training learns
    assert os.path.isdir(os.path.join(uninterrupted, "tensorboard"))
    # A baseline discards nothing; its suspects are the ⌊ρN⌋ pairs with the lowest margin h.
    scores = np.load(os.path.join(uninterrupted, "round_1", "scores.npz"))
    with open(os.path.join(uninterrupted, "round_1", "suspects.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    lowest = np.argsort(scores["margin"], kind="stable")[: int(0.2 * len(scores["margin"]))]
    assert [r["id"] for r in rows] == [str(scores["ids"][i]) for i in lowest]


def test_killed_and_rerun_equals_uninterrupted(uninterrupted, tmp_path):
    workdir = str(tmp_path / "killed")
    overrides = (
        "--config.ropo.epochs_per_round=3",
        "--config.ropo.num_rounds=1",
        "--config.train.checkpoint_every=2",
    )
    target = os.path.join(workdir, "checkpoints", "round_1", "4")
    kill_once_written(_command(workdir, *overrides), target, cwd=ROOT, env=ENV)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    _run(workdir, *overrides)
    step_a, params_a = _final_params(uninterrupted)
    step_b, params_b = _final_params(workdir)
    assert step_a == step_b
    # Parameters, optimizer state, step and RNG, leaf by leaf.
    flat_a = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(params_a)
    }
    flat_b = {
        jax.tree_util.keystr(k): np.asarray(v)
        for k, v in jax.tree_util.tree_leaves_with_path(params_b)
    }
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)  # bit-identical
    scores_a = np.load(os.path.join(uninterrupted, "final_scores.npz"))
    scores_b = np.load(os.path.join(workdir, "final_scores.npz"))
    np.testing.assert_array_equal(scores_a["loss"], scores_b["loss"])
    # The whole logged curve matches the uninterrupted one: records the killed run wrote past
    # its checkpoint are replaced, and a logging window cut by the kill resumes its sums.
    resumed = [r for r in _metrics(workdir) if r["stage"] == "round_1"]
    original = [r for r in _metrics(uninterrupted) if r["stage"] == "round_1"]
    assert resumed == original


def test_rerun_with_another_model_is_refused_clearly(uninterrupted, tmp_path):
    workdir = str(tmp_path / "copy")
    subprocess.run(["cp", "-r", uninterrupted, workdir], check=True)
    out = _run(workdir, "--config.model.preset=small", check=False)
    assert out.returncode == 2
    assert "written for another model_config" in out.stderr
    assert "Traceback" not in out.stderr


def test_noise_the_data_cannot_support_is_one_clear_error(tmp_path):
    # UltraFeedback Binarized records no response sources, so source-biased noise is impossible.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropo_jax.main",
            "--config=experiments/paper/ultrafeedback.py:smoke",
            f"--workdir={tmp_path}",
            "--config.noise.kind=source_biased",
        ],
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "source_biased noise: no strength for source(s)" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_completion_cap_below_the_data_is_one_clear_error(tmp_path):
    # The UltraFeedback fixture's responses are longer than 1 token: the LM head would miss
    # response tokens, so the train stage refuses before its first step, naming the key.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropo_jax.main",
            "--config=experiments/paper/ultrafeedback.py:smoke",
            f"--workdir={tmp_path}",
            "--config.train.max_completion_tokens=1",
        ],
        cwd=ROOT,
        env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "max_completion_tokens=1" in lines[-1]
    assert "config.train.*" in lines[-1] and "Traceback" not in out.stderr


def test_export_eval_and_round_keys_through_the_command_line(tmp_path):
    """The config keys of the export and the evaluation, through python -m ropo_jax.main: a
    bf16 export sharded with an index, two samples per evaluation prompt, dynamics off, a fresh
    optimizer per round."""
    workdir = str(tmp_path / "keys")
    _run(
        workdir,
        "--config.method=ropo",
        "--config.export.dtype=bfloat16",
        "--config.export.max_shard_gb=0.00005",  # ~54 kB: several shards for the tiny model
        "--config.eval.samples_per_prompt=2",
        "--config.eval.dynamics=False",
        "--config.ropo.restart_optimizer=True",
    )
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["dynamics"] == [] and results["selected_by_noisy_validation"] is None
    assert results["eval"]["gold_reward_stderr"] > 0
    model = os.path.join(workdir, "model")
    with open(os.path.join(model, "model.safetensors.index.json")) as f:
        shards = set(json.load(f)["weight_map"].values())
    assert len(shards) > 1
    with open(os.path.join(model, "config.json")) as f:
        assert json.load(f)["torch_dtype"] == "bfloat16"
    with open(os.path.join(model, "export.json")) as f:
        assert json.load(f)["dtype"] == "bfloat16"


def test_auto_rho_is_estimated_recorded_and_used(tmp_path):
    """ropo.filter_ratio=auto through the command line: the estimate is made at round 1's first
    epoch boundary, logged, written to results.json with the realised rate, and every round's
    w-step and the final noise identification use it."""
    workdir = str(tmp_path / "auto")
    _run(workdir, "--config.method=ropo_full", "--config.ropo.filter_ratio=auto")
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    estimate = results["filter_ratio_estimate"]
    assert 0.0 <= estimate["rate"] <= 0.49 and (estimate["round"], estimate["at"]) == (1, "epoch")
    assert estimate["realised_rate"] == results["noise"]["realised_rate"]
    assert [r["filter_ratio"] for r in results["rounds"]] == [estimate["rate"]] * 2
    n = results["rounds"][0]["trained_on"]
    assert results["rounds"][0]["num_discarded"] == int(np.floor(estimate["rate"] * n + 1e-6))
    logged = [r for r in _metrics(workdir) if "filter_ratio_estimate" in r]
    assert len(logged) == 1 and logged[0]["filter_ratio_estimate"] == estimate["rate"]


def test_rejection_sampling_variant_records_pair_quality_and_suspects(tmp_path):
    """A rejection-sampling variant through the command line (per-token ranking, originals among
    the candidates, samples as long as the data's longest response): round 1 reports the RS
    pairs' gold agreement and length gap, and its suspects list is the discarded set, as text
    with gold labels, printed by python -m ropo_jax.suspects."""
    workdir = str(tmp_path / "rs")
    _run(
        workdir,
        "--config.method=ropo_full",
        "--config.ropo.filter_ratio=0.3",
        "--config.ropo.rs.ranking=mean",
        "--config.ropo.rs.include_original=True",
        "--config.ropo.rs.max_new_tokens=0",
        "--config.eval.dynamics=False",
    )
    with open(os.path.join(workdir, "results.json")) as f:
        first = json.load(f)["rounds"][0]
    quality = first["rejection_sampling"]
    assert quality["pairs"] == first["num_rs_pairs"] > 0
    assert 0.0 <= quality["gold_agreement"] <= 1.0 and np.isfinite(quality["mean_length_gap"])
    with open(os.path.join(workdir, "round_1", "samples.jsonl")) as f:
        samples = [json.loads(line) for line in f]
    assert any(s["chosen_original"] or s["rejected_original"] for s in samples)
    with open(os.path.join(workdir, "round_1", "suspects.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert len(rows) == first["num_discarded"] == int(0.3 * 256)
    assert [r["margin"] for r in rows] == sorted(r["margin"] for r in rows)
    assert {"label_flipped_by_noise", "gold_chosen", "gold_rejected"} <= set(rows[0])
    assert rows[0]["prompt"].startswith("topic T")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ropo_jax.suspects",
            f"--workdir={workdir}",
            "--round=1",
            "--top=3",
        ],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert f"{len(rows)} discarded pairs" in out.stdout and f"| 1 | {rows[0]['id']} |" in out.stdout


@pytest.mark.slow
def test_auto_rho_with_in_batch_filtering_starts_in_round_2(tmp_path):
    """filter_granularity=batch with ρ=auto: round 1 trains unfiltered (ρ is not known before
    its first epoch boundary), round 2 drops ⌊ρ̂·B⌋ pairs of every mini-batch."""
    workdir = str(tmp_path / "batch_auto")
    _run(
        workdir,
        "--config.method=ropo_full",
        "--config.ropo.filter_ratio=auto",
        "--config.ropo.filter_granularity=batch",
        "--config.ropo.rs.enabled=False",
    )
    with open(os.path.join(workdir, "results.json")) as f:
        rate = json.load(f)["filter_ratio_estimate"]["rate"]
    steps = [r for r in _metrics(workdir) if "filtered_in_batch" in r]
    per_batch = int(np.floor(rate * 32 + 1e-6))  # the smoke preset's batch of 32 pairs
    assert per_batch > 0
    assert all(r["filtered_in_batch"] == 0 for r in steps if r["stage"] == "round_1")
    round_2 = [r for r in steps if r["stage"] == "round_2"]
    assert round_2 and all(r["filtered_in_batch"] == per_batch * 4 for r in round_2)
