"""The controlled benchmark on SmolLM2-135M-Instruct (experiments/real_model.py): DPO, the ROPO
loss, the ROPO loss + filtering without rejection sampling (``ropo_full_nors``) and ROPO-full at
exact symmetric noise rates × 3 seeds; every run reads the same sampled candidates (the preset's
``instructions.cache_dir``, keyed by the checkpoint and the settings) and shares the reference
log-probs and the starting model's evaluation samples (``cache_dir``).

ARG: ``[PRESET][,RATE...]``: the preset (default ``cpu``; ``smoke`` for a toy check, ``gpu``
for the full scale) and the rates (default 0.4 and 0.2), e.g. ``cpu,0.4``.

    python scripts/run_sweep.py --sweep=experiments/sweeps/real_model.py:cpu --root=runs/real \
        --records=results/real_model_cpu
"""

# name → (method, overrides)
METHODS = {
    "dpo": ("dpo", {}),
    "ropo": ("ropo", {}),
    "ropo_full_nors": ("ropo_full", {"ropo.rs.enabled": False}),
    "ropo_full": ("ropo_full", {}),
}
RATES = (0.4, 0.2)
SEEDS = (100, 101, 102)
TEST_ARGS = ("cpu", "smoke", "gpu")  # the presets tests/experiments_test.py checks


def get_sweep(arg=None):
    preset, *rates = (arg or "cpu").split(",")
    rates = tuple(float(r) for r in rates) or RATES
    return [
        {
            "name": f"{name}_noise{rate}_seed{seed}",
            "config": f"experiments/real_model.py:{preset or 'cpu'}",
            "overrides": {
                **extra,
                "method": method,
                "noise.kind": "symmetric" if rate else "none",
                "noise.rate": rate,
                "noise.seed": seed,
                "seed": seed,
            },
        }
        for rate in rates
        for seed in SEEDS
        for name, (method, extra) in METHODS.items()
    ]
