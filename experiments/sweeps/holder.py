"""ROPO against Hölder-DPO in the memorisation regime (experiments/synthetic.py:regime), under
every noise model: DPO, rDPO, the ROPO loss, ROPO-full, Hölder-DPO (``holder_dpo``) and Hölder +
removal (``holder_full``: ε̂ at the end of round 1, the ⌊N·ε̂⌋ lowest-margin pairs removed for
round 2). Symmetric noise uses exact counts (``noise.exact``), so the realised rate is the
nominal one; seeds 100–105 as every regime sweep. Neither method is tuned here: γ = 2 (the
paper's default) and α = 14 (ROPO's paper default), the regime preset's β = 0.1.

ARG: ``[PRESET][,NOISE...][/METHOD...]`` — the preset (default ``regime``), the noise settings
(default all of NOISES: ``sym0.2``, ``sym0.4``, ``bradley_terry``, ``source_biased``,
``length_biased``) and the methods (default all of METHODS), e.g. ``regime,sym0.4/holder_dpo``.

    python scripts/run_sweep.py --sweep=experiments/sweeps/holder.py:regime,sym0.4 \\
        --root=runs/holder --records=results/holder
"""

SEEDS = (100, 101, 102, 103, 104, 105)
METHODS = ("dpo", "rdpo", "ropo", "ropo_full", "holder_dpo", "holder_full")
# name → (noise.kind, noise.rate, exact counts)
NOISES = {
    "sym0.2": ("symmetric", 0.2, True),
    "sym0.4": ("symmetric", 0.4, True),
    "bradley_terry": ("bradley_terry", 1.0, False),
    "source_biased": ("source_biased", 1.0, False),
    "length_biased": ("length_biased", 0.4, True),
}
TEST_ARGS = ("regime", "smoke,sym0.4/holder_full")


def _parse(arg):
    spec, _, methods = (arg or "regime").partition("/")
    preset, *noises = spec.split(",")
    unknown = [n for n in noises if n not in NOISES]
    methods = tuple(methods.split(",")) if methods else METHODS
    unknown += [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"experiments/sweeps/holder.py: unknown {unknown}; see the docstring")
    return preset or "regime", tuple(noises) or tuple(NOISES), methods


def get_sweep(arg=None):
    preset, noises, methods = _parse(arg)
    runs = []
    for noise in noises:
        kind, rate, exact = NOISES[noise]
        for method in methods:
            for seed in SEEDS:
                overrides = {
                    "method": method,
                    "noise.kind": kind,
                    "noise.rate": rate,
                    "noise.exact": exact,
                    "noise.seed": seed,
                    "seed": seed,
                }
                if method == "holder_full":
                    overrides["ropo.filter_ratio"] = "holder"
                runs.append(
                    {
                        "name": f"{method}_{noise}_seed{seed}",
                        "config": f"experiments/synthetic.py:{preset}",
                        "overrides": overrides,
                    }
                )
    return runs
