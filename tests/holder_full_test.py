"""Hölder-DPO as a framework baseline (``method=holder_full``, ``ropo.filter_ratio="holder"``):
ρ is Hölder's ε̂ of the trained policy's margins at the end of round 1, recorded like the
"auto" estimate and used by the w-steps; no rejection sampling; every round reports the rate
estimates side by side. In-process on the smoke config (experiments/smoke.py)."""

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.evaluation import final, run_results
from ropo_jax.losses import holder_contamination
from ropo_jax.ropo import noise_rate, rounds
from ropo_jax.ropo.options import RopoConfig
from ropo_jax.run import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _smoke_config():
    spec = importlib.util.spec_from_file_location(
        "smoke", os.path.join(ROOT, "experiments/smoke.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.method = "holder_full"
    config.ropo.filter_ratio = "holder"
    config.noise.update(kind="symmetric", rate=0.4)
    config.eval.update(dynamics=False)
    config.compilation_cache_dir = ""
    config.tensorboard = False
    return config


@pytest.fixture(scope="module")
def holder_run(tmp_path_factory):
    config, workdir = _smoke_config(), str(tmp_path_factory.mktemp("holder_full"))
    assert config.ropo.rs.enabled and config.ropo.num_rounds == 2  # RS on, yet none is made
    return config, workdir, pipeline.run(config, workdir)


def test_holder_full_filters_round_2_with_the_recorded_estimate(holder_run):
    config, workdir, results = holder_run
    estimate = results["filter_ratio_estimate"]
    with open(os.path.join(workdir, rounds.ESTIMATE_FILE)) as f:
        assert json.load(f) == estimate
    assert estimate["estimator"] == "holder" and (estimate["round"], estimate["at"]) == (1, "end")
    assert (estimate["beta"], estimate["gamma"]) == (config.loss.beta, config.loss.holder_gamma)
    assert 0.0 <= estimate["rate"] <= noise_rate.MAX_RATE
    assert estimate["realised_rate"] == results["noise"]["realised_rate"]
    # ε̂ of round 1's end margins, which the round then filtered with.
    scores = np.load(os.path.join(workdir, "round_1", "scores.npz"))
    beta, gamma = config.loss.beta, config.loss.holder_gamma
    epsilon = holder_contamination(scores["margin"], beta=beta, gamma=gamma)
    assert estimate["epsilon"] == pytest.approx(epsilon, abs=1e-9)
    r1, r2 = results["rounds"]
    n = r1["trained_on"]
    assert [r["filter_ratio"] for r in (r1, r2)] == [estimate["rate"]] * 2
    assert r1["num_discarded"] == math.floor(estimate["rate"] * n + 1e-6)
    # Round 2 trains on the originals round 1 kept: the ⌊ρN⌋ lowest-margin pairs are gone.
    assert r2["trained_on_original"] == n - r1["num_discarded"] == r2["trained_weight_sum"]
    dropped = ~scores["kept"]
    if dropped.any():
        assert scores["margin"][dropped].max() <= scores["margin"][~dropped].min()
    assert final.filter_ratio("holder", workdir) == estimate["rate"]
    assert run_results.estimated_filter_ratio(results) == estimate["rate"]
    assert run_results.filter_ratio_estimator(results) == "holder"


def test_holder_full_adds_no_rejection_sampled_pairs(holder_run):
    _, workdir, results = holder_run
    for r in results["rounds"]:
        assert r["num_rs_pairs"] == 0 and r["trained_on_rs"] == 0
        assert "rejection_sampling" not in r
    assert not os.path.exists(os.path.join(workdir, "round_1", "rs_pairs"))


def test_each_round_reports_the_rate_estimates(holder_run):
    _, workdir, results = holder_run
    realised = results["noise"]["realised_rate"]
    assert realised > 0
    for t, r in enumerate(results["rounds"], start=1):
        estimates = r["rate_estimates"]
        assert set(estimates) == {"holder", "tail_ratio", "realised"}
        assert estimates["realised"] == realised
        margin_N = np.load(os.path.join(workdir, f"round_{t}", "scores.npz"))["margin"]
        assert estimates["tail_ratio"] == noise_rate.estimate_flip_rate(margin_N)["rate"]
        assert 0.0 <= estimates["holder"] <= noise_rate.MAX_RATE
    # Round 1's holder estimate is the one its w-step used.
    assert (
        results["rounds"][0]["rate_estimates"]["holder"]
        == (results["filter_ratio_estimate"]["rate"])
    )
    with open(os.path.join(workdir, "round_2", "eval.json")) as f:
        assert json.load(f)["rate_estimates"] == results["rounds"][1]["rate_estimates"]


# --- the pieces, without a run ------------------------------------------------------------------


def _rounds_run(loss="dpo", hyperparams=None, *, flips=(True, False, False, False), noise=True):
    data = PreferenceData.from_token_lists(
        [f"e{i}" for i in range(len(flips))],
        [[1, 5]] * len(flips),
        [[6, 2]] * len(flips),
        [[7, 8, 2]] * len(flips),
        manifest={"pad_id": 0},
    ).with_flips(np.array(flips))
    return rounds.RoundsRun(
        workdir="",
        ropo=RopoConfig(),
        loss=loss,
        hyperparams=hyperparams or {"beta": 0.5},
        model_config=None,
        sft_params=None,
        train_data=data,
        reference=(None, None),
        writer=None,
        noise_applied=noise,
        holder_gamma=3.0,
    )


def test_holder_knobs_are_the_loss_knobs_else_the_configured_gamma():
    assert _rounds_run().holder_knobs() == {"beta": 0.5, "gamma": 3.0}
    holder = _rounds_run("holder_dpo", {"beta": 0.2, "holder_gamma": 4.0})
    assert holder.holder_knobs() == {"beta": 0.2, "gamma": 4.0}


def test_rate_estimates_side_by_side_and_a_failing_estimator_gives_none():
    run = _rounds_run()
    margin_N = np.array([-30.0, 20.0, 25.0, 40.0])
    estimates = rounds.rate_estimates(run, margin_N)
    assert estimates["holder"] == pytest.approx(
        noise_rate.estimate_holder_rate(margin_N, beta=0.5, gamma=3.0)["rate"]
    )
    assert estimates["tail_ratio"] == noise_rate.estimate_flip_rate(margin_N)["rate"]
    assert estimates["realised"] == 0.25
    nan_N = np.full(4, np.nan)
    failed = {"holder": None, "tail_ratio": None, "realised": 0.25}
    assert rounds.rate_estimates(run, nan_N) == failed
    # No noise applied: no realised rate; invalid knobs: the holder estimate is None.
    quiet = _rounds_run(hyperparams={"beta": -1.0}, noise=False)
    assert rounds.rate_estimates(quiet, margin_N)["holder"] is None
    assert rounds.rate_estimates(quiet, margin_N)["realised"] is None


def test_ropo_config_of_holder_full_filters_without_rejection_sampling():
    config = _smoke_config()
    options = pipeline.ropo_config(config)
    assert options.filtering and not options.rs_enabled and options.filter_ratio == "holder"
    assert RopoConfig(filter_ratio="holder").filter_ratio == "holder"
    with pytest.raises(ValueError, match=r"filter_ratio='half' must lie in \[0, 1\)"):
        RopoConfig(filter_ratio="half")
