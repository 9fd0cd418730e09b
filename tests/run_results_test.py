"""Sweep tables and figures from run directories: seed folding, mean ± std, and every figure
script on a constructed sweep (no training; the values are chosen so the means are known)."""

import json
import os

import pytest
from script_runner import run_script

from ropo_jax import run_results


def _write_run(root, name, *, method, rate, seed, win, kind="symmetric", rounds=2):
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
    assert row.endswith("| +0.020 ± 0.000 (3/3 > 0) | +0.020 ± 0.000 (3/3 > 0) |")
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
