"""The memorisation-regime benchmark: every method at symmetric noise rates × 6 seeds that were
not used to design the preset (100–105; experiments/synthetic.py:regime was calibrated on seed 5).

ARG: ``[PRESET][,RATE...]``: the experiments/synthetic.py preset (default ``regime``; ``smoke``
for a toy check) and the rates to run (default all of RATES), e.g. ``regime,0.4``.

    python scripts/run_sweep.py --sweep=experiments/sweeps/regime.py:regime,0.4 --root=runs/regime
"""

METHODS = ("dpo", "cdpo", "rdpo", "ipo", "ropo", "ropo_full")
RATES = (0.0, 0.2, 0.4)
SEEDS = (100, 101, 102, 103, 104, 105)


def get_sweep(arg=None):
    preset, *rates = (arg or "regime").split(",")
    rates = tuple(float(r) for r in rates) or RATES
    return [
        {
            "name": f"{method}_noise{rate}_seed{seed}",
            "config": f"experiments/synthetic.py:{preset or 'regime'}",
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
