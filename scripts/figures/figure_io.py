"""What the figure scripts share: reading runs and writing a figure (no JAX, run directories
only). The scripts run as ``python scripts/figures/NAME.py``, so this sits beside them."""

import os

from ropo_jax.evaluation import run_results


def save(fig, out: str) -> None:
    """Lays out ``fig``, writes it to ``out`` (creating its directory) and says so."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    fig.savefig(out)
    print(f"wrote {out}")


def variant(run: dict) -> str:
    """A run's variant: its name without ``_noiseR_seedS`` (``ropo_full_nors`` of
    ``ropo_full_nors_noise0.4_seed100``)."""
    return run_results.run_prefix(run).rsplit("_noise", 1)[0]


def of_variants(runs: list[dict], variants: str = "") -> list[dict]:
    """The runs of the comma-separated ``variants`` (default: the plain methods, whose variant
    is the method's name, so ablations and other noise models sharing the root are left out)."""
    wanted = set(filter(None, variants.split(",")))
    return [r for r in runs if (variant(r) in wanted if wanted else variant(r) == r["method"])]


def runs_with_dynamics(root: str, rate: float, variants: str = "") -> list[dict]:
    """The runs under ``root`` at noise rate ``rate`` that recorded training dynamics, of
    ``variants`` (``of_variants``)."""
    runs = [
        r
        for r in of_variants(run_results.load_runs(root), variants)
        if r["noise"]["rate"] == rate and r.get("dynamics")
    ]
    if not runs:
        raise SystemExit(f"no run at noise rate {rate} with dynamics under {root}")
    return runs
