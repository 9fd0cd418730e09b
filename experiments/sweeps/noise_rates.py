"""Win rate vs noise rate: symmetric noise {0, 0.1, 0.2, 0.3, 0.4} × methods × 6 seeds."""

METHODS = ("dpo", "cdpo", "rdpo", "ipo", "ropo", "ropo_full")
RATES = (0.0, 0.1, 0.2, 0.3, 0.4)
SEEDS = (0, 1, 2, 3, 4, 5)


def get_sweep(arg=None):
    preset = arg or "quick_v1"  # the earlier benchmark of docs/RESULTS.md
    return [
        {
            "name": f"{method}_noise{rate}_seed{seed}",
            "config": f"experiments/synthetic.py:{preset}",
            "overrides": {
                "method": method,
                "noise.kind": "symmetric",
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for method in METHODS
        for rate in RATES
        for seed in SEEDS
    ]
