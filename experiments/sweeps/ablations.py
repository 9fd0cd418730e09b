"""ROPO ablations at 30 % symmetric noise (6 seeds each): α, ρ, rejection sampling on/off,
filtering on/off (method=ropo is the loss alone), and every noise model for DPO vs ROPO-full.

The defaults (α = 14, ρ = 0.2) are the ``alpha14`` runs, so ρ = 0.2 is not run twice; ``dpo`` is
the baseline the components are measured against."""

SEEDS = (0, 1, 2, 3, 4, 5)


def _run(name, preset, seed, **overrides):
    base = {"noise.kind": "symmetric", "noise.rate": 0.3, "noise.seed": seed, "seed": seed}
    base.update(overrides)
    return {
        "name": f"{name}_seed{seed}",
        "config": f"experiments/synthetic.py:{preset}",
        "overrides": base,
    }


def get_sweep(arg=None):
    preset = arg or "quick_v1"  # the earlier benchmark of docs/RESULTS.md
    runs = []
    for seed in SEEDS:
        for alpha in (2.0, 6.0, 14.0, 30.0):
            runs.append(
                _run(f"alpha{alpha:g}", preset, seed, method="ropo_full", **{"loss.alpha": alpha})
            )
        for rho in (0.1, 0.3, 0.4):  # 0.2: the alpha14 runs
            runs.append(
                _run(f"rho{rho:g}", preset, seed, method="ropo_full", **{"ropo.filter_ratio": rho})
            )
        runs.append(_run("dpo", preset, seed, method="dpo"))
        runs.append(_run("no_rs", preset, seed, method="ropo_full", **{"ropo.rs.enabled": False}))
        runs.append(_run("no_filter", preset, seed, method="ropo"))
        for kind, rate in (("bradley_terry", 1.0), ("length_biased", 0.3), ("source_biased", 1.0)):
            for method in ("dpo", "ropo_full"):
                runs.append(
                    _run(
                        f"{kind}_{method}",
                        preset,
                        seed,
                        method=method,
                        **{"noise.kind": kind, "noise.rate": rate},
                    )
                )
    return runs
