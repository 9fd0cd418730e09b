"""Evaluation metrics of docs/method.md §5, in NumPy (they run once per round, outside any jitted
step).

Every function returns plain Python floats (or None where the metric is undefined, e.g. AUROC
when no pair was flipped), ready for ``metrics.jsonl`` and ``results.json``.

Shape key: N examples.
"""

from __future__ import annotations

import numpy as np
from scipy import stats  # a dependency of jax


def auroc(scores_N, positive_N) -> float | None:
    """P(score of a random positive > score of a random negative), ties counting ½.

    Here: how well a per-example score (e.g. the ROPO loss) ranks flipped pairs above clean ones.
    None when either class is empty; NaN scores are an error (they would make the rank arbitrary).
    """
    scores_N = np.asarray(scores_N, np.float64)
    positive_N = np.asarray(positive_N, bool)
    if np.isnan(scores_N).any():
        raise ValueError("auroc: scores contain NaN; score every example before evaluating")
    num_pos, num_neg = int(positive_N.sum()), int((~positive_N).sum())
    if num_pos == 0 or num_neg == 0:
        return None
    # 1-based ranks, ties given their average rank (the Mann–Whitney U statistic's convention).
    ranks_N = stats.rankdata(scores_N, method="average")
    u_statistic = ranks_N[positive_N].sum() - num_pos * (num_pos + 1) / 2
    return float(u_statistic / (num_pos * num_neg))


def noise_identification(flipped_N, discarded_N, scores_N=None) -> dict[str, float | None]:
    """Precision, recall and F1 of the discarded set against the true flip mask, and the AUROC
    of the score (docs/method.md §5.2). Undefined entries are None (no discards → precision, no
    flips → recall, either → f1)."""
    flipped_N = np.asarray(flipped_N, bool)
    discarded_N = np.asarray(discarded_N, bool)
    if flipped_N.shape != discarded_N.shape:
        raise ValueError(f"flip mask {flipped_N.shape} and discard mask {discarded_N.shape} differ")
    true_positives = int(np.sum(flipped_N & discarded_N))
    precision = true_positives / discarded_N.sum() if discarded_N.any() else None
    recall = true_positives / flipped_N.sum() if flipped_N.any() else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "precision": None if precision is None else float(precision),
        "recall": None if recall is None else float(recall),
        "f1": None if f1 is None else float(f1),
        "auroc": None if scores_N is None else auroc(scores_N, flipped_N),
    }


def agreement_N(margin_N) -> np.ndarray:
    """float64 [N]: 1 where the margin h agrees with the label (h > 0), ½ on a tie (h = 0, as
    every pair is before training: the policy is the reference), 0 otherwise."""
    margin_N = np.asarray(margin_N, np.float64)
    return (margin_N > 0) + 0.5 * (margin_N == 0)


def preference_accuracy(margin_N) -> float | None:
    """``pref_accuracy_clean`` (docs/method.md §5.1): fraction of pairs, with their true labels,
    where h > 0, a tie (h = 0) counting ½."""
    margin_N = np.asarray(margin_N, np.float64)
    return None if margin_N.size == 0 else float(np.mean(agreement_N(margin_N)))


def win_rate(policy_rewards_N, baseline_rewards_N) -> float | None:
    """Fraction of prompts where the policy's response has the higher reward, ties counting ½
    (``gold_win_rate_vs_sft`` with gold rewards, docs/method.md §5.4)."""
    policy_N = np.asarray(policy_rewards_N, np.float64)
    baseline_N = np.asarray(baseline_rewards_N, np.float64)
    if policy_N.shape != baseline_N.shape:
        raise ValueError(
            f"win_rate: {policy_N.shape} policy vs {baseline_N.shape} baseline rewards"
        )
    if policy_N.size == 0:
        return None
    return float(np.mean((policy_N > baseline_N) + 0.5 * (policy_N == baseline_N)))


def mean_and_stderr(values_N, group_size: int = 1) -> tuple[float | None, float | None]:
    """The mean of ``values_N`` and its standard error over groups of ``group_size`` consecutive
    values (e.g. the samples of one prompt): the std (ddof 1) of the group means / √groups."""
    values_N = np.asarray(values_N, np.float64)
    if values_N.size == 0:
        return None, None
    if values_N.size % group_size:
        raise ValueError(f"{values_N.size} values do not form groups of {group_size}")
    groups_G = values_N.reshape(-1, group_size).mean(axis=1)
    stderr = float(groups_G.std(ddof=1) / np.sqrt(len(groups_G))) if len(groups_G) > 1 else None
    return float(values_N.mean()), stderr


def margin_statistics(margin_N, prefix: str = "margin") -> dict[str, float]:
    """Mean, std and quantiles of reward margins, for per-round logging."""
    margin_N = np.asarray(margin_N, np.float64)
    if margin_N.size == 0:
        return {}
    q10, q50, q90 = np.quantile(margin_N, [0.1, 0.5, 0.9])
    return {
        f"{prefix}/mean": float(margin_N.mean()),
        f"{prefix}/std": float(margin_N.std()),
        f"{prefix}/p10": float(q10),
        f"{prefix}/p50": float(q50),
        f"{prefix}/p90": float(q90),
    }
