"""Reading finished run directories (their ``results.json``, docs/method.md §5.6 keys) for tables
and figures. Imports neither JAX nor the models: figure scripts run anywhere the run directories
are.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

# The order (and so the colour) every figure gives the methods: the paper's comparison first.
METHOD_ORDER = (
    "dpo",
    "cdpo",
    "rdpo",
    "ipo",
    "ropo",
    "ropo_full",
    "holder_dpo",
    "holder_full",
    "hinge",
    "noise_aware",
)


def method_rank(method: str) -> int:
    """Position of ``method`` in METHOD_ORDER (methods not listed come after, all equal)."""
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


def load_runs(root: str) -> list[dict[str, Any]]:
    """Every ``ROOT/NAME/results.json``, sorted by NAME, each with ``"run": NAME`` added."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root}: no such run root (run the sweep first)")
    runs = []
    for name in sorted(os.listdir(root)):
        path = os.path.join(root, name, "results.json")
        if os.path.exists(path):
            with open(path) as f:
                runs.append({"run": name, **json.load(f)})
    return runs


def run_prefix(run: dict[str, Any]) -> str:
    """The run name without its ``_seedN`` suffix: the variant a set of seeds repeats."""
    name = run["run"]
    head, sep, tail = name.rpartition("_seed")
    return head if sep and tail.isdigit() else name


def group_by(
    runs: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]
) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return groups


def values(runs: Iterable[dict[str, Any]], get: Callable[[dict[str, Any]], Any]) -> list[float]:
    """``get(run)`` for each run, skipping runs where it is None (a metric the run lacks)."""
    out = []
    for run in runs:
        value = get(run)
        if value is not None:
            out.append(float(value))
    return out


def mean_std(xs: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value; NaN for none)."""
    if not xs:
        return math.nan, math.nan
    mean = sum(xs) / len(xs)
    if len(xs) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))


def mean_ci(xs: list[float], level: float = 0.95) -> tuple[float, float]:
    """Mean and the half-width of its Student-t confidence interval (NaN half-width for fewer
    than two values): for paired differences across seeds."""
    if not xs:
        return math.nan, math.nan
    mean, std = mean_std(xs)
    if len(xs) < 2:
        return mean, math.nan
    from scipy import stats  # scipy ships with jax; imported here to keep this module light

    return mean, float(stats.t.ppf(0.5 + level / 2, len(xs) - 1) * std / math.sqrt(len(xs)))


def paired_deltas(
    group: Iterable[dict[str, Any]],
    runs: Iterable[dict[str, Any]],
    get: Callable[[dict[str, Any]], Any],
    *,
    baseline_method: str = "dpo",
) -> list[float]:
    """``get(run) − get(baseline)`` for each run of ``group``, the baseline being the run of
    ``baseline_method`` with the same noise (kind, rate) and seed. Pairing by seed shares the
    SFT model, the noise draw and the data order, so the seed-to-seed spread, which is much
    larger than the differences between methods, cancels."""
    baselines = {
        (r["noise"]["kind"], r["noise"]["rate"], r["seed"]): r
        for r in runs
        if r["method"] == baseline_method
    }
    deltas = []
    for run in group:
        base = baselines.get((run["noise"]["kind"], run["noise"]["rate"], run["seed"]))
        if base is None or get(run) is None or get(base) is None:
            continue
        deltas.append(float(get(run)) - float(get(base)))
    return deltas


def win_rate(run: dict[str, Any]) -> float | None:
    return run["eval"].get("gold_win_rate_vs_sft")


def gold_reward(run: dict[str, Any]) -> float | None:
    return run["eval"].get("gold_reward_mean")


def clean_accuracy(run: dict[str, Any]) -> float | None:
    return run["eval"].get("pref_accuracy_clean")


def noise_auroc(run: dict[str, Any]) -> float | None:
    return run["noise_identification"].get("auroc")


def flipped_fit_first_epoch(run: dict[str, Any]) -> float | None:
    """The flipped-fit rate at the end of the first epoch: how fast the noise is memorised."""
    at_one = [r for r in run.get("dynamics") or [] if r.get("epoch") == 1.0]
    return at_one[0].get("flipped_fit_rate") if at_one else None


def _last_dynamics(run: dict[str, Any], key: str) -> float | None:
    curve = run.get("dynamics") or []
    return curve[-1].get(key) if curve else None


def flipped_fit(run: dict[str, Any]) -> float | None:
    """Fraction of flipped training pairs fit at the end of training (dynamics)."""
    return _last_dynamics(run, "flipped_fit_rate")


def final_kl(run: dict[str, Any]) -> float | None:
    return _last_dynamics(run, "kl")


def selected_gold_reward(run: dict[str, Any]) -> float | None:
    """Gold reward of samples at the epoch with the best noisy held-out accuracy."""
    selected = run.get("selected_by_noisy_validation")
    return selected.get("gold_reward_mean") if selected else None


def _rs_quality(run: dict[str, Any], key: str) -> float | None:
    """A rejection-sampling quality field, averaged over the rounds that added pairs weighted
    by their pair counts (rounds of older runs have no such record)."""
    records = [
        r["rejection_sampling"]
        for r in run.get("rounds") or []
        if r.get("rejection_sampling") and r["rejection_sampling"]["pairs"]
    ]
    pairs = [q["pairs"] for q in records if q.get(key) is not None]
    if not pairs:
        return None
    return sum(q["pairs"] * q[key] for q in records if q.get(key) is not None) / sum(pairs)


def rs_gold_agreement(run: dict[str, Any]) -> float | None:
    """Fraction of rejection-sampled pairs whose chosen response has the higher gold reward."""
    return _rs_quality(run, "gold_agreement")


def rs_length_gap(run: dict[str, Any]) -> float | None:
    """Mean length difference chosen − rejected of the rejection-sampled pairs, in tokens."""
    return _rs_quality(run, "mean_length_gap")


def estimated_filter_ratio(run: dict[str, Any]) -> float | None:
    """ρ estimated by ``filter_ratio="auto"`` or ``"holder"`` (``filter_ratio_estimator``)."""
    estimate = run.get("filter_ratio_estimate")
    return estimate.get("rate") if estimate else None


def _round_rate_estimate(run: dict[str, Any], name: str, round_index: int) -> float | None:
    rounds = run.get("rounds") or []
    if not rounds or abs(round_index) > len(rounds):
        return None
    return (rounds[round_index].get("rate_estimates") or {}).get(name)


def holder_estimate_round1(run: dict[str, Any]) -> float | None:
    """Hölder's ε̂ from the margins at the end of round 1 (the estimate ``holder_full`` uses)."""
    return _round_rate_estimate(run, "holder", 0)


def holder_estimate_end(run: dict[str, Any]) -> float | None:
    """Hölder's ε̂ from the margins at the end of the last round."""
    return _round_rate_estimate(run, "holder", -1)


def tail_ratio_estimate_round1(run: dict[str, Any]) -> float | None:
    """ROPO's tail-ratio estimate ρ̂ from the margins at the end of round 1."""
    return _round_rate_estimate(run, "tail_ratio", 0)


def filter_ratio_estimator(run: dict[str, Any]) -> str | None:
    """Which estimator made the run's ρ: "holder" (Hölder's ε̂, ``filter_ratio="holder"``),
    "tail_ratio" (``filter_ratio="auto"``, whose record names none) or None (no estimate)."""
    estimate = run.get("filter_ratio_estimate")
    return estimate.get("estimator", "tail_ratio") if estimate else None


def realised_noise_rate(run: dict[str, Any]) -> float | None:
    return run["noise"].get("realised_rate")
