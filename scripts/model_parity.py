"""Prints max |Δlogits| between ropo_jax and transformers (PyTorch, float32) per parity case,
on a right-padded batch (real tokens only), and after a save_hf → transformers round trip.

    python scripts/model_parity.py
"""

import tempfile

import jax.numpy as jnp
import numpy as np
from transformers import AutoModelForCausalLM

from ropo_jax import models
from ropo_jax.models import parity_cases


def main():
    print("| case | max abs Δlogits (load_hf) | max abs Δlogits (save_hf → transformers) |")
    print("|---|---|---|")
    tokens_BT, mask_BT = parity_cases.padded_batch()
    real = mask_BT.astype(bool)
    for case in parity_cases.CASES:
        with tempfile.TemporaryDirectory() as src, tempfile.TemporaryDirectory() as dst:
            model = parity_cases.build_hf_model(src, case)
            expected = parity_cases.hf_logits(model, tokens_BT, mask_BT)
            config, params = models.load_hf(src)
            ours = np.asarray(
                models.forward(
                    config, params, jnp.asarray(tokens_BT), segment_ids_BT=jnp.asarray(mask_BT)
                )
            )
            models.save_hf(config, params, dst)
            reloaded = AutoModelForCausalLM.from_pretrained(dst, attn_implementation="eager")
            round_trip = parity_cases.hf_logits(reloaded.eval(), tokens_BT, mask_BT)
            print(
                f"| {case} | {np.abs(expected - ours)[real].max():.2e} | "
                f"{np.abs(expected - round_trip)[real].max():.2e} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
