"""The memorisation-regime benchmark (experiments/synthetic.py:regime): every method at
symmetric noise rates × 6 seeds that were not used to design the preset (100–105; the preset was
calibrated on seed 5).

ARG: ``RATE[,RATE...]`` restricts the rates (e.g. ``0.4``); default all of RATES.

    python scripts/run_sweep.py --sweep=experiments/sweeps/regime.py:0.4 --root=runs/regime
"""

METHODS = ("dpo", "cdpo", "rdpo", "ipo", "ropo", "ropo_full")
RATES = (0.0, 0.2, 0.4)
SEEDS = (100, 101, 102, 103, 104, 105)


def get_sweep(arg=None):
    rates = tuple(float(r) for r in arg.split(",")) if arg else RATES
    return [
        {
            "name": f"{method}_noise{rate}_seed{seed}",
            "config": "experiments/synthetic.py:regime",
            "overrides": {
                "method": method,
                "noise.kind": "symmetric" if rate else "none",
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for method in METHODS
        for rate in rates
        for seed in SEEDS
    ]
