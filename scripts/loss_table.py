"""Every preference loss's value and gradient weight −∂ℓ/∂(βh) over a grid of margins.

Writes ``loss_table.json`` (a dense βh grid for figures plus a few table points) to --out_dir
and prints the table. The figure ``scripts/figures/gradient_weights.py`` reads that file.

    python scripts/loss_table.py --out_dir=runs/losses
"""

import json
import os

import jax.numpy as jnp
import numpy as np
from absl import app, flags

from ropo_jax import losses

_OUT_DIR = flags.DEFINE_string("out_dir", "runs/losses", "Run directory to write into.")
_BETA = flags.DEFINE_float("beta", 0.1, "β for every loss.")

# The curves of the paper's motivating figure, and the table's rows (docs/method.md §2.1
# hyper-parameters).
CURVES = {
    "DPO": ("dpo", {}),
    "cDPO (ε=0.1)": ("cdpo", {"label_smoothing": 0.1}),
    "rDPO (ε=0.2)": ("rdpo", {"flip_rate": 0.2}),
    "IPO": ("ipo", {}),
    "hinge": ("hinge", {}),
    "noise-aware ℓ_na": ("noise_aware", {}),
    "ROPO (α=6)": ("ropo", {"alpha": 6.0}),
    "ROPO (α=14)": ("ropo", {"alpha": 14.0}),
    "ROPO (α=30)": ("ropo", {"alpha": 30.0}),
    "LCPO-EM (η=0.2)": ("lcpo_em", {"eta": 0.2}),
}
TABLE_POINTS = (-10.0, -3.0, -1.0, 0.0, 1.0, 3.0, 10.0)  # values of βh


def compute(beta: float) -> dict:
    scaled_grid = np.linspace(-10.0, 10.0, 801)
    result = {"beta": beta, "beta_margin_grid": scaled_grid.tolist(), "curves": {}}
    for label, (name, hp) in CURVES.items():
        hp = {"beta": beta, **hp}
        curve = {}
        for key, points in (("grid", scaled_grid), ("table", np.asarray(TABLE_POINTS))):
            margin = jnp.asarray(points / beta, jnp.float32)
            zeros = jnp.zeros_like(margin)
            loss_B, _ = losses.preference_loss(
                name, losses.PairLogps(margin, zeros, zeros, zeros), **hp
            )
            curve[f"{key}_loss"] = np.asarray(loss_B).tolist()
            curve[f"{key}_weight"] = np.asarray(losses.gradient_weight(name, margin, **hp)).tolist()
        result["curves"][label] = {"loss": name, "hyperparams": hp, **curve}
    result["table_points"] = list(TABLE_POINTS)
    return result


def format_table(result: dict) -> str:
    header = f"{'loss':<18}" + "".join(f"{'βh=' + format(p, 'g'):>17}" for p in TABLE_POINTS)
    lines = ["loss value ℓ  |  gradient weight −∂ℓ/∂(βh)", header]
    for label, curve in result["curves"].items():
        cells = "".join(
            f"{v:>9.4g} |{w:>6.3g}"
            for v, w in zip(curve["table_loss"], curve["table_weight"], strict=True)
        )
        lines.append(f"{label:<18}{cells}")
    return "\n".join(lines)


def main(argv):
    del argv
    result = compute(_BETA.value)
    os.makedirs(_OUT_DIR.value, exist_ok=True)
    path = os.path.join(_OUT_DIR.value, "loss_table.json")
    with open(path, "w") as f:
        json.dump(result, f)
    print(format_table(result))
    print(f"wrote {path}")


if __name__ == "__main__":
    app.run(main)
