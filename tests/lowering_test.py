"""scripts/bench/lowering.py lowers the tiny preset's DPO step for TPU and for CUDA GPUs on this
CPU host and reports custom calls, the attention kernel, LM-head rows, FLOPs and memory.

The runs start together (module fixture), each in its own process with one CPU device.
"""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # every test runs a script in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "bench", "lowering.py")
PAIRS, PROMPT, RESPONSE = 2, 8, 8
RUNS = {
    "tpu": ["--platform=tpu"],
    "cuda": ["--platform=cuda", "--remat=full"],
    "cuda_float32": ["--platform=cuda", "--dtype=float32"],  # auto: no cuDNN for float32
    # LoRA (docs/lora.md): adapters on every projection over a frozen bf16 base.
    "tpu_lora": ["--platform=tpu", "--lora_rank=4"],
    "cuda_lora": ["--platform=cuda", "--remat=full", "--lora_rank=4"],
}


@pytest.fixture(scope="module")
def rows():
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="", OMP_WAIT_POLICY="PASSIVE")
    common = ["--preset=tiny", f"--pairs={PAIRS}", f"--prompt_len={PROMPT}"]
    common.append(f"--response_len={RESPONSE}")
    procs = {
        name: subprocess.Popen(
            [sys.executable, SCRIPT, *common, *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, args in RUNS.items()
    }
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{name}: {stderr[-3000:]}"
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        assert len(lines) == 1, stdout
        out[name] = json.loads(lines[0])
    return out


@pytest.mark.parametrize("name", sorted(RUNS))
def test_fields(rows, name):
    row = rows[name]
    assert row["platform"] == name.split("_")[0]
    assert row["custom_calls"] == sorted(set(row["custom_calls"]))
    assert row["attention_kernel"] in ("cudnn_flash", "splash", "mosaic", "triton", "xla")
    # The LM head projects the response positions only: 2 rows per pair, RESPONSE each.
    assert row["lm_head_rows"] == 2 * PAIRS * RESPONSE < row["tokens_per_step"]
    flops = row["flops"]
    parts = flops["layers_matmul"] + flops["lm_head"] + flops["attention"]
    assert flops["analytic"] == pytest.approx(parts) and flops["analytic"] > 0
    assert flops["lm_head"] == 6 * 64 * 256 * row["lm_head_rows"]  # tiny: D = 64, V = 256
    assert flops["cost_analysis"] is None or flops["cost_analysis"] > 0
    assert row["memory"] is None  # no TPU or GPU compiler on a CPU host


def test_float32_keeps_xla_attention_on_cuda(rows):
    row = rows["cuda_float32"]
    assert row["attention_kernel"] == "xla"
    assert not any(t.startswith("__cudnn") for t in row["custom_calls"])


def test_tpu_uses_splash(rows):
    assert rows["tpu"]["attention_impl"] == "splash"
    assert "tpu_custom_call" in rows["tpu"]["custom_calls"]
    assert rows["tpu"]["attention_kernel"] == "splash"


def test_cuda_uses_cudnn_flash(rows):
    assert rows["cuda"]["attention_impl"] == "cudnn"
    assert any(t.startswith("__cudnn$fmha") for t in rows["cuda"]["custom_calls"])
    assert rows["cuda"]["attention_kernel"] == "cudnn_flash"


@pytest.mark.parametrize(("name", "kernel"), [("tpu_lora", "splash"), ("cuda_lora", "cudnn_flash")])
def test_lora_keeps_the_fused_attention(rows, name, kernel):
    """The adapters add to the projections around the attention kernel, never replace it; the
    step trains the adapters only (rank 4 on 7 projections of 2 layers: 8192 numbers)."""
    row = rows[name]
    assert row["attention_kernel"] == kernel
    assert row["trained_params"] == 8192 < row["num_params"] / 10
