"""Sweep tables and figures from run directories: seed folding, mean ± std, and every figure
script on a constructed sweep (no training; the values are chosen so the means are known)."""

import json
import os

import pytest
from script_runner import run_script

from ropo_jax import run_results


def _write_run(root, name, *, method, rate, seed, win, kind="symmetric", rounds=2, extra=None):
    results = {
        "method": method,
        "noise": {"kind": kind, "rate": rate},
        "seed": seed,
        "eval": {
            "gold_win_rate_vs_sft": win,
            "gold_reward_mean": win - 0.5,
            "pref_accuracy_clean": 0.8,
        },
        "noise_identification": {"precision": 0.6, "recall": 0.7, "f1": 0.65, "auroc": 0.9},
        "rounds": [
            {"round": r + 1, "noise_identification": {"auroc": 0.8 + 0.05 * r, "f1": 0.6}}
            for r in range(rounds)
        ],
    }
    results.update(extra or {})
    os.makedirs(root / name)
    with open(root / name / "results.json", "w") as f:
        json.dump(results, f)


@pytest.fixture
def noise_sweep(tmp_path):
    # cdpo sorts before dpo by name but after it in METHOD_ORDER: the tables must use the latter.
    for method, base in (("cdpo", 0.69), ("dpo", 0.7), ("ropo_full", 0.72)):
        for rate in (0.0, 0.2):
            for seed, delta in enumerate((-0.02, 0.0, 0.02)):
                _write_run(
                    tmp_path,
                    f"{method}_noise{rate}_seed{seed}",
                    method=method,
                    rate=rate,
                    seed=seed,
                    win=base - rate / 2 + delta,
                )
    (tmp_path / "unfinished_seed0").mkdir()  # no results.json: not a run yet, skipped
    return tmp_path


def test_seed_folding_and_statistics(noise_sweep):
    runs = run_results.load_runs(str(noise_sweep))
    assert len(runs) == 18  # 3 methods × 2 rates × 3 seeds; the unfinished run is skipped
    groups = run_results.group_by(runs, run_results.run_prefix)
    assert sorted(groups)[0] == "cdpo_noise0.0"
    mean, std = run_results.mean_std(
        run_results.values(groups["dpo_noise0.2"], run_results.win_rate)
    )
    assert mean == pytest.approx(0.6)
    assert std == pytest.approx(0.02)
    assert all(x != x for x in run_results.mean_std([]))  # NaN, NaN
    assert run_results.mean_std([0.5]) == (0.5, 0.0)
    assert run_results.run_prefix({"run": "no_seed_suffix"}) == "no_seed_suffix"
    # Paired by seed, ropo_full is +0.02 above dpo for every seed: no spread at all.
    deltas = run_results.paired_deltas(groups["ropo_full_noise0.2"], runs, run_results.win_rate)
    assert deltas == pytest.approx([0.02, 0.02, 0.02])


def test_per_run_table_lists_methods_in_method_order(noise_sweep):
    out = run_script("scripts/results_table.py", f"--root={noise_sweep}").stdout
    methods = [line.split(" | ")[1] for line in out.splitlines()[2:]]
    assert len(methods) == 18 and methods[0] == "dpo"
    assert methods == sorted(methods, key=run_results.method_rank)


def test_results_table_folds_seeds(noise_sweep):
    out = run_script("scripts/results_table.py", f"--root={noise_sweep}", "--seeds=mean").stdout
    row = next(line for line in out.splitlines() if line.startswith("| ropo_full_noise0.2 |"))
    assert "| 3 | 0.620 ± 0.020 |" in row
    paired = run_script(
        "scripts/results_table.py", f"--root={noise_sweep}", "--seeds=mean", "--baseline=dpo"
    ).stdout
    row = next(line for line in paired.splitlines() if line.startswith("| ropo_full_noise0.2 |"))
    assert row.endswith("| +0.020 [+0.020, +0.020] (3/3) | +0.020 [+0.020, +0.020] (3/3) |")
    baseline_row = next(line for line in paired.splitlines() if line.startswith("| dpo_noise0.2 |"))
    assert baseline_row.endswith("| – | – |")
    variants = [line.split(" | ")[0][2:] for line in paired.splitlines()[2:]]
    methods = [v.rpartition("_noise")[0] for v in variants]
    assert methods[0] == "dpo" and methods == sorted(methods, key=run_results.method_rank)
    assert (noise_sweep / "results.md").read_text().strip() == paired.strip()


def test_noise_figures(noise_sweep, tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("figures")
    for script in ("noise_sweep.py", "noise_id_rounds.py"):
        out = out_dir / script.replace(".py", ".png")
        args = (f"scripts/figures/{script}", f"--root={noise_sweep}", f"--out={out}")
        printed = run_script(*args).stdout
        assert out.stat().st_size > 10_000
        if script == "noise_id_rounds.py":  # the plotted values: every seed 0.80, then 0.85
            assert "| 0.2 | dpo | 0.800 ± 0.000 → 0.850 ± 0.000 |" in printed


def test_ablation_figure(tmp_path):
    for seed in range(2):
        for variant in (
            "alpha2",
            "alpha6",
            "alpha14",
            "alpha30",
            "rho0.1",
            "rho0.3",
            "rho0.4",
            "dpo",
            "no_rs",
            "no_filter",
        ):
            method = "dpo" if variant == "dpo" else "ropo_full"
            _write_run(
                tmp_path,
                f"{variant}_seed{seed}",
                method=method,
                rate=0.3,
                seed=seed,
                win=0.6 + 0.01 * seed,
            )
        for kind in ("bradley_terry", "length_biased", "source_biased"):
            for method in ("dpo", "ropo_full"):
                _write_run(
                    tmp_path,
                    f"{kind}_{method}_seed{seed}",
                    method=method,
                    rate=1.0,
                    seed=seed,
                    win=0.6,
                    kind=kind,
                )
    out = tmp_path / "ablations.png"
    run_script("scripts/figures/ablations.py", f"--root={tmp_path}", f"--out={out}")
    assert out.stat().st_size > 10_000


def test_missing_root_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such run root"):
        run_results.load_runs(str(tmp_path / "absent"))


def test_paired_confidence_interval_is_student_t():
    """Paired differences 0.01, 0.03, 0.05 over 3 seeds: mean 0.03, std 0.02, and the 95 %
    half-width t(0.975, 2)·0.02/√3 = 4.303·0.01155 = 0.0497."""
    mean, half = run_results.mean_ci([0.01, 0.03, 0.05])
    assert mean == pytest.approx(0.03)
    assert half == pytest.approx(4.302653 * 0.02 / 3**0.5, rel=1e-5)
    assert run_results.mean_ci([0.5])[1] != run_results.mean_ci([0.5])[1]  # NaN


def _curve(fit, kl, gold, noisy):
    keys = ("flipped_fit_rate", "kl", "gold_reward_mean", "noisy_heldout_accuracy")
    rows = [
        dict(zip(keys, values, strict=True)) for values in zip(fit, kl, gold, noisy, strict=True)
    ]
    for epoch, row in enumerate(rows):
        row.update(epoch=float(epoch), step=4 * epoch, clean_fit_rate=0.9, heldout_accuracy=0.7)
    return rows


def test_dynamics_and_reward_kl_figures(tmp_path):
    """Two methods × 2 seeds: the printed values are the seed means of the constructed curves
    (DPO fits the flipped pairs and drifts; ROPO does neither), and the noisy-validation pick
    is the epoch where noisy held-out accuracy peaks."""
    from ropo_jax import dynamics

    for seed in range(2):
        for method, fit, kl, gold in (
            ("dpo", (0.0, 0.6, 0.9 + 0.02 * seed), (0.0, 2.0, 8.0), (-0.8, -0.4, -0.6)),
            ("ropo", (0.0, 0.4, 0.5), (0.0, 1.0, 3.0), (-0.8, -0.3, -0.3)),
        ):
            curve = _curve(fit, kl, gold, (0.5, 0.6, 0.55))
            extra = {"dynamics": curve, "selected_by_noisy_validation": None}
            extra["selected_by_noisy_validation"] = dynamics.select_by_noisy_validation(curve)
            _write_run(
                tmp_path,
                f"{method}_noise0.4_seed{seed}",
                method=method,
                rate=0.4,
                seed=seed,
                win=0.6,
                extra=extra,
            )
    # An ablation of ropo in the same root: left out unless asked for by --variants.
    curve = _curve((0.0, 0.1, 0.2), (0.0, 1.0, 1.0), (-0.8, -0.1, -0.1), (0.5, 0.5, 0.5))
    _write_run(
        tmp_path,
        "ropo_nors_noise0.4_seed0",
        method="ropo",
        rate=0.4,
        seed=0,
        win=0.6,
        extra={"dynamics": curve, "selected_by_noisy_validation": None},
    )
    only = run_script(
        "scripts/figures/dynamics.py",
        f"--root={tmp_path}",
        "--rate=0.4",
        "--variants=ropo_nors",
        f"--out={tmp_path / 'ablation.png'}",
    ).stdout
    assert "| ropo_nors | 1 | 0.000 → 0.200 |" in only
    out = tmp_path / "dynamics.png"
    printed = run_script(
        "scripts/figures/dynamics.py", f"--root={tmp_path}", "--rate=0.4", f"--out={out}"
    ).stdout
    assert "| dpo | 2 | 0.000 → 0.910 |" in printed and "| ropo | 2 | 0.000 → 0.500 |" in printed
    assert out.stat().st_size > 10_000
    out = tmp_path / "reward_kl.png"
    printed = run_script(
        "scripts/figures/reward_kl.py", f"--root={tmp_path}", "--rate=0.4", f"--out={out}"
    ).stdout
    assert "| dpo | 2 | KL 8.00, gold -0.600 | KL 2.00, gold -0.400 | -0.400 |" in printed
    assert "| ropo | 2 | KL 3.00, gold -0.300 | KL 1.00, gold -0.300 | -0.300 |" in printed
    assert out.stat().st_size > 10_000
