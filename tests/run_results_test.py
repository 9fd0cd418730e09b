"""Sweep tables and figures from run directories: seed folding, mean ± std, and every figure
script on a constructed sweep (no training; the values are chosen so the means are known)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from figure_runner import bars, errorbar_series, line_series, run_figure, scatter_points
from script_runner import ROOT, run_script

from ropo_jax.evaluation import run_results


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


@pytest.mark.e2e
def test_per_run_table_lists_methods_in_method_order(noise_sweep):
    out = run_script("scripts/results_table.py", f"--root={noise_sweep}").stdout
    methods = [line.split(" | ")[1] for line in out.splitlines()[2:]]
    assert len(methods) == 18 and methods[0] == "dpo"
    assert methods == sorted(methods, key=run_results.method_rank)


@pytest.mark.e2e
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


def test_noise_figures(noise_sweep, tmp_path, monkeypatch, capsys):
    """The constructed sweep's means are known: per method the seeds lie at −0.02, 0, +0.02
    around a win rate of base − rate/2 (cdpo 0.69, dpo 0.70, ropo_full 0.72), so every panel's
    line, its error bars (the seeds' sample std) and its seed dots are exact."""
    fig = run_figure(
        monkeypatch, "noise_sweep.py", f"--root={noise_sweep}", f"--out={tmp_path / 'a.png'}"
    )
    win, delta, gold, accuracy = fig.axes
    base = {"dpo": 0.70, "cdpo": 0.69, "ropo_full": 0.72}
    assert win.get_legend_handles_labels()[1] == ["dpo", "cdpo", "ropo_full"]  # METHOD_ORDER
    for method, b in base.items():
        x, y, err = errorbar_series(win)[method]
        assert x == pytest.approx([0.0, 0.2], abs=0.01)  # a small offset per method
        assert y == pytest.approx([b, b - 0.1]) and err == pytest.approx([0.02, 0.02])
        # Paired by seed, each method's difference to DPO is the same for every seed.
        _, y, err = errorbar_series(delta)[method]
        assert y == pytest.approx([b - 0.70] * 2, abs=1e-9) and err == pytest.approx([0, 0])
        assert errorbar_series(gold)[method][1] == pytest.approx([b - 0.5, b - 0.6])
        assert errorbar_series(accuracy)[method][1] == pytest.approx([0.8, 0.8])
    dots = scatter_points(win)[:, 1]
    wins = [b - rate / 2 + d for b in base.values() for rate in (0, 0.2) for d in (-0.02, 0, 0.02)]
    assert sorted(dots) == pytest.approx(sorted(wins))

    fig = run_figure(
        monkeypatch, "noise_id_rounds.py", f"--root={noise_sweep}", f"--out={tmp_path / 'b.png'}"
    )
    (ax,) = fig.axes  # one panel per noisy rate: 0.2 only
    assert ax.get_title() == "symmetric noise 0.2"
    series = errorbar_series(ax)
    assert list(series) == ["dpo", "cdpo", "ropo_full"]
    for x, y, err in series.values():  # every seed 0.80 in round 1, then 0.85
        assert (
            list(x) == [1, 2] and y == pytest.approx([0.8, 0.85]) and err == pytest.approx([0, 0])
        )
    assert "| 0.2 | dpo | 0.800 ± 0.000 → 0.850 ± 0.000 |" in capsys.readouterr().out


ABLATION_NOISE_MODELS = ("bradley_terry", "length_biased", "source_biased")
# Win rates of the ablation sweep's variants (seed 1 adds 0.01): distinct, so a panel that plots
# one variant in another's place shows.
ABLATION_WINS = {
    "alpha2": 0.55,
    "alpha6": 0.60,
    "alpha14": 0.65,
    "alpha30": 0.62,
    "rho0.1": 0.58,
    "rho0.3": 0.63,
    "rho0.4": 0.61,
    "dpo": 0.50,
    "no_rs": 0.60,
    "no_filter": 0.57,
    "bradley_terry_dpo": 0.52,
    "bradley_terry_ropo_full": 0.60,
    "length_biased_dpo": 0.45,
    "length_biased_ropo_full": 0.58,
    "source_biased_dpo": 0.40,
    "source_biased_ropo_full": 0.55,
}


def test_ablation_figure(tmp_path, monkeypatch):
    for seed in range(2):
        for variant, win in ABLATION_WINS.items():
            kind = next((k for k in ABLATION_NOISE_MODELS if variant.startswith(k)), None)
            _write_run(
                tmp_path,
                f"{variant}_seed{seed}",
                method="dpo" if variant.endswith("dpo") else "ropo_full",
                rate=1.0 if kind else 0.3,
                seed=seed,
                win=win + 0.01 * seed,
                kind=kind or "symmetric",
            )
    fig = run_figure(
        monkeypatch, "ablations.py", f"--root={tmp_path}", f"--out={tmp_path / 'ablations.png'}"
    )
    alpha, rho, components, noise_models = fig.axes
    mean = lambda variant: ABLATION_WINS[variant] + 0.005
    series = errorbar_series(alpha)
    assert list(series) == ["gold win rate", "noise AUROC", "noise F1 of the dropped ρ"]
    x, y, err = series["gold win rate"]
    assert list(x) == [2, 6, 14, 30]
    assert y == pytest.approx([mean(f"alpha{a}") for a in (2, 6, 14, 30)])
    assert err == pytest.approx([0.01 / 2**0.5] * 4)  # sample std of w and w + 0.01
    assert series["noise AUROC"][1] == pytest.approx([0.9] * 4)
    assert series["noise F1 of the dropped ρ"][1] == pytest.approx([0.65] * 4)
    x, y, _ = errorbar_series(rho)["gold win rate"]
    assert x == pytest.approx([0.1, 0.2, 0.3, 0.4])  # ρ = 0.2 is the default run, alpha14
    assert y == pytest.approx([mean(v) for v in ("rho0.1", "alpha14", "rho0.3", "rho0.4")])
    want = [(i, mean(v)) for i, v in enumerate(("dpo", "no_filter", "no_rs", "alpha14"))]
    assert bars(components) == pytest.approx(np.array(want))
    want = [(i - 0.2, mean(f"{k}_dpo")) for i, k in enumerate(ABLATION_NOISE_MODELS)]
    want += [(i + 0.2, mean(f"{k}_ropo_full")) for i, k in enumerate(ABLATION_NOISE_MODELS)]
    assert bars(noise_models) == pytest.approx(np.array(want))


def test_score_distribution_figure(tmp_path, monkeypatch):
    """One panel per run: the margin histograms of clean and flipped pairs (densities) and the
    AUROC of −h for "flipped" in the title, here against a brute-force count over all pairs."""
    margin = np.concatenate([np.linspace(0.5, 3.0, 80), np.linspace(-2.0, 1.0, 20)])
    flipped = np.arange(100) >= 80
    runs = []
    for method in ("dpo", "ropo"):
        run = tmp_path / method
        run.mkdir()
        np.savez(run / "final_scores.npz", margin=margin, is_flipped=flipped)
        results = {"method": method, "noise": {"kind": "symmetric", "rate": 0.2}}
        (run / "results.json").write_text(json.dumps(results))
        runs.append(str(run))
    fig = run_figure(
        monkeypatch,
        "score_distributions.py",
        f"--runs={','.join(runs)}",
        f"--out={tmp_path / 'scores.png'}",
    )
    assert len(fig.axes) == 2
    # P(−h of a flipped pair > −h of a clean one), ties counting half.
    f, c = -margin[flipped][:, None], -margin[~flipped][None, :]
    auroc = np.mean((f > c) + 0.5 * (f == c))
    for ax, method in zip(fig.axes, ("dpo", "ropo"), strict=True):
        assert ax.get_title() == f"{method} (symmetric 0.2)\nAUROC(−h → flipped) = {auroc:.3f}"
        patches = ax.patches
        assert len(patches) == 2 * 39  # two histograms over the same 40 bin edges
        clean, noisy = patches[:39], patches[39:]
        for histogram in (clean, noisy):  # densities: each integrates to 1
            assert sum(p.get_height() * p.get_width() for p in histogram) == pytest.approx(1.0)
        centre = lambda hist: sum(
            (p.get_x() + p.get_width() / 2) * p.get_height() * p.get_width() for p in hist
        )
        assert centre(noisy) < centre(clean)  # flipped pairs have the lower margins


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


def test_dynamics_and_reward_kl_figures(tmp_path, monkeypatch, capsys):
    """Two methods × 2 seeds: the printed values are the seed means of the constructed curves
    (DPO fits the flipped pairs and drifts; ROPO does neither), and the noisy-validation pick
    is the epoch where noisy held-out accuracy peaks."""
    from ropo_jax.evaluation import dynamics

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
    fig = run_figure(
        monkeypatch,
        "dynamics.py",
        f"--root={tmp_path}",
        "--rate=0.4",
        "--variants=ropo_nors",
        f"--out={tmp_path / 'ablation.png'}",
    )
    assert "| ropo_nors | 1 | 0.000 → 0.200 |" in capsys.readouterr().out
    series = line_series(fig.axes[0])
    assert list(series) == ["ropo_nors (1)"]
    assert series["ropo_nors (1)"] == pytest.approx(np.array([[0, 1, 2], [0, 0.1, 0.2]]))
    fig = run_figure(
        monkeypatch,
        "dynamics.py",
        f"--root={tmp_path}",
        "--rate=0.4",
        f"--out={tmp_path / 'd.png'}",
    )
    printed = capsys.readouterr().out
    assert "| dpo | 2 | 0.000 → 0.910 |" in printed and "| ropo | 2 | 0.000 → 0.500 |" in printed
    flipped_fit, clean_fit, heldout, gold = fig.axes
    epochs = [0.0, 1.0, 2.0]
    for ax, want in (
        (flipped_fit, {"dpo (2)": [0.0, 0.6, 0.91], "ropo (2)": [0.0, 0.4, 0.5]}),  # seed means
        (clean_fit, {"dpo (2)": [0.9] * 3, "ropo (2)": [0.9] * 3}),
        (heldout, {"dpo (2)": [0.7] * 3, "ropo (2)": [0.7] * 3}),
        (gold, {"dpo (2)": [-0.8, -0.4, -0.6], "ropo (2)": [-0.8, -0.3, -0.3]}),
    ):
        series = line_series(ax)
        assert list(series) == list(want), ax.get_title()
        for label, values in want.items():
            assert series[label] == pytest.approx(np.array([epochs, values])), ax.get_title()
    # The band is ± one std over seeds: DPO's last epoch spans its seeds' 0.90 and 0.92.
    band = flipped_fit.collections[0].get_paths()[0].vertices
    last = band[np.isclose(band[:, 0], 2.0), 1]
    assert (last.min(), last.max()) == pytest.approx((0.90, 0.92))

    fig = run_figure(
        monkeypatch,
        "reward_kl.py",
        f"--root={tmp_path}",
        "--rate=0.4",
        f"--out={tmp_path / 'r.png'}",
    )
    printed = capsys.readouterr().out
    assert "| dpo | 2 | KL 8.00, gold -0.600 | KL 2.00, gold -0.400 | -0.400 |" in printed
    assert "| ropo | 2 | KL 3.00, gold -0.300 | KL 1.00, gold -0.300 | -0.300 |" in printed
    (ax,) = fig.axes
    series = line_series(ax)  # x: KL, y: gold reward, per epoch (seed means)
    assert list(series) == ["dpo", "ropo"]
    assert series["dpo"] == pytest.approx(np.array([[0.0, 2.0, 8.0], [-0.8, -0.4, -0.6]]))
    assert series["ropo"] == pytest.approx(np.array([[0.0, 1.0, 3.0], [-0.8, -0.3, -0.3]]))
    # Per method a square at the end of training, then a star at the noisy-validation pick
    # (noisy held-out accuracy peaks at epoch 1).
    want = [(8.0, -0.6), (2.0, -0.4), (3.0, -0.3), (1.0, -0.3)]
    assert scatter_points(ax) == pytest.approx(np.array(want))


@pytest.mark.e2e
def test_generated_blocks_are_checked_against_their_records(noise_sweep, tmp_path):
    """A Markdown file's marked blocks re-render from the records: --write fills them, --check
    passes on the written file and fails, with a diff, when one digit inside a block changes;
    text outside the blocks is never touched."""
    doc = tmp_path / "RESULTS.md"
    marker = f"--root={noise_sweep} --match=noise0.2 --seeds=mean --spread=stderr --baseline=dpo"
    doc.write_text(
        f"# Results\n\nSeed 1.5 of prose stays.\n\n<!-- results_table {marker} -->\n"
        "stale\n<!-- /results_table -->\n\nAfter.\n"
    )

    def table(*args):
        cmd = [sys.executable, "scripts/results_table.py", *args]
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)

    assert table(f"--check={doc}").returncode == 1  # "stale" is not what the records give
    assert table(f"--write={doc}").returncode == 0
    written = doc.read_text()
    assert written.startswith("# Results\n\nSeed 1.5 of prose stays.\n") and "stale" not in written
    assert written.endswith("<!-- /results_table -->\n\nAfter.\n")
    row = next(line for line in written.splitlines() if line.startswith("| ropo_full_noise0.2 |"))
    # Three seeds at 0.62 ± 0.02 (sample std): the standard error is 0.02 / √3.
    assert "| 3 | 0.620 ± 0.012 |" in row
    assert "noise0.0" not in written  # --match kept the 20 % runs only
    passed = table(f"--check={doc}")
    assert passed.returncode == 0 and "1 generated blocks match" in passed.stdout
    doc.write_text(written.replace("0.620 ± 0.012", "0.621 ± 0.012", 1))
    failed = table(f"--check={doc}")
    assert failed.returncode == 1
    assert "-| ropo_full_noise0.2 | ropo_full | symmetric 0.2 | 3 | 0.621" in failed.stdout
