"""Win rate vs noise rate: symmetric noise {0, 0.1, 0.2, 0.3, 0.4} × methods × 6 seeds.

ARG: ``[PRESET][,RATE...]``: the experiments/synthetic.py preset (default ``quick_v1``, the
earlier benchmark of docs/RESULTS.md) and the rates to run (default all of RATES), e.g.
``quick_v1,0.4``."""

METHODS = ("dpo", "cdpo", "rdpo", "ipo", "ropo", "ropo_full")
RATES = (0.0, 0.1, 0.2, 0.3, 0.4)
SEEDS = (0, 1, 2, 3, 4, 5)


def get_sweep(arg=None):
    preset, *rates = (arg or "quick_v1").split(",")
    rates = tuple(float(r) for r in rates) or RATES
    return [
        {
            "name": f"{method}_noise{rate}_seed{seed}",
            "config": f"experiments/synthetic.py:{preset or 'quick_v1'}",
            "overrides": {
                "method": method,
                "noise.kind": "symmetric",
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for method in METHODS
        for rate in rates
        for seed in SEEDS
    ]
