"""The quickstart: six methods at 40 % symmetric noise on the quick synthetic benchmark (the
memorisation regime)."""

METHODS = ("dpo", "cdpo", "rdpo", "ipo", "ropo", "ropo_full")


def get_sweep(arg=None):
    preset = arg or "quick"
    return [
        {
            "name": method,
            "config": f"experiments/synthetic.py:{preset}",
            "overrides": {
                "method": method,
                "noise.kind": "symmetric",
                "noise.rate": 0.4,
                "seed": 0,
            },
        }
        for method in METHODS
    ]
