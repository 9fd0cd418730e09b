"""``dynamics.collect``: the per-epoch records of metrics.jsonl as results.json["dynamics"]; the
noisy-validation pick; a round's end reusing the probe's log-probs."""

import importlib.util
import os

import numpy as np
import pytest

from ropo_jax.evaluation import dynamics
from ropo_jax.inference import scoring
from ropo_jax.run import pipeline

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _row(round_index, step, round_epoch, fit):
    return {
        "stage": f"round_{round_index}",
        "kind": "dynamics",
        "round": round_index,
        "step": step,
        "round_epoch": round_epoch,
        "flipped_fit_rate": fit,
    }


def test_collect_orders_dedupes_and_counts_steps_across_rounds():
    rows = [
        _row(1, 0, 0.0, 0.0),
        {"stage": "round_1", "step": 5, "loss": 0.7},  # a training row: not dynamics
        _row(1, 5, 1.0, 0.3),
        _row(1, 10, 2.0, 0.4),
        _row(1, 10, 2.0, 0.45),  # written again by a resumed run: the last one counts
        _row(2, 6, 1.0, 0.6),
        _row(2, 12, 2.0, 0.7),
    ]
    out = dynamics.collect(rows, epochs_per_round=2.0)
    assert [(r["round"], r["epoch"], r["step"]) for r in out] == [
        (1, 0.0, 0),
        (1, 1.0, 5),
        (1, 2.0, 10),
        (2, 3.0, 16),
        (2, 4.0, 22),
    ]
    assert [r["flipped_fit_rate"] for r in out] == pytest.approx([0.0, 0.3, 0.45, 0.6, 0.7])
    assert all("kind" not in r and "stage" not in r for r in out)


def test_selection_by_noisy_validation_keeps_the_best_trained_epoch():
    curve = [
        {"step": 0, "noisy_heldout_accuracy": 0.9, "gold_reward_mean": 0.0},  # untrained: never
        {"step": 5, "noisy_heldout_accuracy": 0.6, "gold_reward_mean": 0.1},
        {"step": 10, "noisy_heldout_accuracy": 0.7, "gold_reward_mean": 0.2},
        {"step": 15, "noisy_heldout_accuracy": 0.7, "gold_reward_mean": 0.3},
    ]
    assert dynamics.select_by_noisy_validation(curve)["step"] == 10  # the earliest of ties
    assert dynamics.select_by_noisy_validation(curve[:1]) is None


def test_a_round_end_reuses_the_log_probs_of_the_last_probe(tmp_path, monkeypatch):
    """With the dynamics probe on, a round's end (w-step scores, held-out accuracy) and the
    final evaluation use the log-probs the probe computed at the round's last step with the
    same parameters: the training and held-out pairs are scored once per epoch, not again."""
    spec = importlib.util.spec_from_file_location(
        "smoke", os.path.join(ROOT, "experiments", "smoke.py")
    )
    smoke = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(smoke)
    config = smoke.get_config()
    config.method = "ropo"
    config.ropo.num_rounds = 1
    config.synthetic.data.update(num_sft=64, num_train_pairs=64, num_test_pairs=32)
    config.synthetic.data.num_eval_prompts = 8
    config.eval.update(max_new_tokens=4, dynamics_prompts=4)
    config.compilation_cache_dir = ""
    calls = []
    real = scoring.sequence_logps_over

    def counting(model_config, params, data, **kwargs):
        calls.append((kwargs.get("desc"), len(data)))
        return real(model_config, params, data, **kwargs)

    monkeypatch.setattr(scoring, "sequence_logps_over", counting)
    results = pipeline.run(config, str(tmp_path / "run"))
    policy_calls = [c for c in calls if c[0] not in ("reference log-probs",)]
    # Per epoch boundary (the start and the end of the one epoch): train and held-out pairs.
    assert policy_calls.count(("dynamics", 64)) == 2 and policy_calls.count(("dynamics", 32)) == 2
    assert not [
        c for c in policy_calls if c[0] in ("round 1 scores", "eval log-probs", "train scores")
    ]
    # The reused numbers are the ones a fresh scoring gives.
    scores = np.load(tmp_path / "run" / "round_1" / "scores.npz")
    final = np.load(tmp_path / "run" / "final_scores.npz")
    np.testing.assert_array_equal(scores["margin"], final["margin"])
    assert results["eval"]["pref_accuracy_clean"] == results["rounds"][0]["pref_accuracy_clean"]
