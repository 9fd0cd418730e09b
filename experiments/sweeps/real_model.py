"""The controlled benchmark on SmolLM2-135M-Instruct (experiments/real_model.py): DPO, the ROPO
loss and ROPO-full at symmetric noise rates × 3 seeds; every run reads the same sampled
candidates (the preset's ``instructions.cache_dir``, keyed by the checkpoint and the settings).

ARG: ``[PRESET][,RATE...]``: the preset (default ``cpu``; ``smoke`` for a toy check, ``gpu``
for the full scale) and the rates (default 0.4 and 0.2), e.g. ``cpu,0.4``.

    python scripts/run_sweep.py --sweep=experiments/sweeps/real_model.py:cpu --root=runs/real
"""

METHODS = ("dpo", "ropo", "ropo_full")
RATES = (0.4, 0.2)
SEEDS = (100, 101, 102)
TEST_ARGS = ("cpu", "smoke", "gpu")  # the presets tests/experiments_test.py checks


def get_sweep(arg=None):
    preset, *rates = (arg or "cpu").split(",")
    rates = tuple(float(r) for r in rates) or RATES
    return [
        {
            "name": f"{method}_noise{rate}_seed{seed}",
            "config": f"experiments/real_model.py:{preset or 'cpu'}",
            "overrides": {
                "method": method,
                "noise.kind": "symmetric" if rate else "none",
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for rate in rates
        for seed in SEEDS
        for method in METHODS
    ]
