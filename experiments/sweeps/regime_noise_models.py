"""The structured noise models in the memorisation regime: DPO, the ROPO loss and ROPO-full under
Bradley–Terry noise (annotators err on close calls), length-biased noise at rate 0.4 (only pairs
whose rejected response is longer can flip) and source-biased noise (the stronger generator's
response is labelled chosen), seeds 100–105 as in experiments/sweeps/regime.py. Every run pairs
with the DPO run of the same noise model and seed.

ARG: the experiments/synthetic.py preset (default ``regime``).

    python scripts/run_sweep.py --sweep=experiments/sweeps/regime_noise_models.py --root=runs/regime
"""

SEEDS = (100, 101, 102, 103, 104, 105)
METHODS = ("dpo", "ropo", "ropo_full")
NOISE_MODELS = (("bradley_terry", 1.0), ("length_biased", 0.4), ("source_biased", 1.0))


def get_sweep(arg=None):
    return [
        {
            "name": f"{method}_{kind}{rate:g}_seed{seed}",
            "config": f"experiments/synthetic.py:{arg or 'regime'}",
            "overrides": {
                "method": method,
                "noise.kind": kind,
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for kind, rate in NOISE_MODELS
        for method in METHODS
        for seed in SEEDS
    ]
