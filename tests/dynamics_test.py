"""``dynamics.collect``: the per-epoch records of metrics.jsonl as results.json["dynamics"]."""

import pytest

from ropo_jax import dynamics


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
