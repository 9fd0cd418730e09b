"""Components and ρ of the full framework in the memorisation regime, at 40 % symmetric noise,
seeds 100–105 (the seeds of experiments/sweeps/regime.py, so every variant pairs with that
sweep's DPO runs in the same run root):

- ``ropo_full_norsN``: the ROPO loss + filtering, no rejection sampling (``ropo`` in the regime
  sweep is the loss alone, ``ropo_full`` everything);
- ``ropo_full_rho0.4`` / ``ropo_full_rho0.4_nors``: ρ equal to the true noise rate;
- ``ropo_alphaA`` / ``ropo_full_alphaA``: α = 2, 6, 30 for the loss alone and the full framework
  (α = 14, the default, is the regime sweep's ``ropo`` and ``ropo_full``);
- ``ropo_full_reorient_conf``: the benchmark's current RS default (re-orient the pairs the
  model contradicts by β·h > 0.5, experiments/sweeps/regime_rs.py); ``ropo_full`` in the regime
  sweeps ran the earlier one (samples ranked by the summed implicit reward).

ARG: the experiments/synthetic.py preset (default ``regime``).

    python scripts/run_sweep.py --sweep=experiments/sweeps/regime_ablations.py --root=runs/regime
"""

SEEDS = (100, 101, 102, 103, 104, 105)
ALPHAS = (2.0, 6.0, 30.0)
VARIANTS = {
    "ropo_full_nors": {"ropo.rs.enabled": False},
    "ropo_full_rho0.4": {"ropo.filter_ratio": 0.4},
    "ropo_full_rho0.4_nors": {"ropo.filter_ratio": 0.4, "ropo.rs.enabled": False},
    "ropo_full_reorient_conf": {
        "ropo.rs.include_original": True,
        "ropo.rs.selection": "reorient_original",
        "ropo.rs.min_margin": 0.5,
    },
    **{
        f"{method}_alpha{alpha:g}": {"method": method, "loss.alpha": alpha}
        for method in ("ropo", "ropo_full")
        for alpha in ALPHAS
    },
}


def get_sweep(arg=None):
    return [
        {
            "name": f"{variant}_noise0.4_seed{seed}",
            "config": f"experiments/synthetic.py:{arg or 'regime'}",
            "overrides": {
                "method": "ropo_full",
                "noise.kind": "symmetric",
                "noise.rate": 0.4,
                "noise.seed": seed,
                "seed": seed,
                **overrides,
            },
        }
        for variant, overrides in VARIANTS.items()
        for seed in SEEDS
    ]
