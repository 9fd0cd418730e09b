"""The benchmark scripts (scripts/bench/) run on the tiny preset and print sane JSON.

All the scripts start together (module fixture) and each test waits for its own: each run is
mostly single-threaded XLA compilation and PyTorch start-up, so running them side by side
roughly halves the file's wall time on a 2-core machine. Timings here are only checked for
sanity (positive, ordered, consistent with the token counts), never for speed.
"""

import json
import math
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e  # every test runs a script in a subprocess

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "scripts", "bench")
TIMEOUT_S = 300
# Smallest shapes: one config, a couple of steps.
PAIRS, PROMPT, RESPONSE = 2, 4, 4
SEQ = PROMPT + RESPONSE

RUNS = {
    "compare": [
        "compare.py",
        f"--configs=tiny:{PAIRS}:{PROMPT}:{RESPONSE}",
        "--steps=2",
        "--warmup=1",
    ],
    "train_step_online": [
        "train_step.py",
        "--preset=tiny",
        f"--pairs={PAIRS}",
        f"--prompt_len={PROMPT}",
        f"--response_len={RESPONSE}",
        "--steps=2",
        "--warmup=1",
        "--online_ref",
        "--micro_batches=2",
        "--loss=ropo",
    ],
    "scoring": [
        "scoring.py",
        "--preset=tiny",
        "--examples=4",
        "--batch_size=2",
        f"--prompt_len={PROMPT}",
        f"--response_len={RESPONSE}",
        "--repeats=1",
    ],
    "sampling": [
        "sampling.py",
        "--preset=tiny",
        "--batch=2",
        "--prompt_len=4",
        "--new_tokens=4",
        "--repeats=1",
    ],
    "breakdown": [
        "breakdown.py",
        "--preset=tiny",
        "--rows=2",
        f"--seq_len={SEQ}",
        f"--completion_len={RESPONSE}",
        "--repeats=2",
        "--torch_model",
    ],
}


@pytest.fixture(scope="module")
def outputs():
    # One CPU device (not conftest's 8 fake ones). XLA's backend optimisation off: it halves
    # compilation (most of each run) and only the speed of the code, unchecked here, suffers.
    # OpenMP workers that sleep instead of spin, since four processes share the cores.
    env = dict(
        os.environ,
        JAX_PLATFORMS="cpu",
        XLA_FLAGS="--xla_backend_optimization_level=0",
        OMP_WAIT_POLICY="PASSIVE",
    )
    procs = {
        name: subprocess.Popen(
            [sys.executable, os.path.join(BENCH, script), *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (script, *args) in RUNS.items()
    }
    results = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
            results[name] = (proc.returncode, stdout, stderr)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return results


def _json_lines(outputs, name):
    code, stdout, stderr = outputs[name]
    assert code == 0, stderr[-3000:]
    rows = []
    for line in stdout.splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # e.g. the Python dict transformers' Trainer prints
    assert rows, stdout
    return rows


def _check_step_row(row, impl):
    assert row["impl"] == impl
    assert row["device"].startswith("cpu")
    assert (row["preset"], row["pairs"], row["seq_len"]) == ("tiny", PAIRS, SEQ)
    assert len(row["step_times_s"]) == row["steps"]
    assert 0 < row["step_time_s_min"] <= row["step_time_s_median"] <= row["step_time_s_max"]
    tokens = 2 * PAIRS * SEQ
    assert row["tokens_per_step"] == tokens
    assert row["tokens_per_s"] == pytest.approx(tokens / row["step_time_s_median"])
    assert row["pairs_per_s"] == pytest.approx(PAIRS / row["step_time_s_median"])
    assert row["model_flops_per_step"] > 0
    assert row["mfu"] is None  # no CPU entry in the peak table
    assert row["peak_memory_bytes"] > 10 * 2**20
    assert row["peak_memory_source"].startswith("host_max_rss")


def test_compare_runs_both_and_reports_the_ratio(outputs):
    summary = _json_lines(outputs, "compare")[-1]
    (config,) = summary["configs"]
    ours, theirs = config["ropo_jax"], config["trl"]
    _check_step_row(ours["runs"][0], "ropo_jax")
    _check_step_row(theirs["runs"][0], "trl")
    assert ours["runs"][0]["compile_time_s"] > 0
    assert theirs["runs"][0]["compile_time_s"] is None
    assert not ours["runs"][0]["online_ref"] and not theirs["runs"][0]["online_ref"]
    assert theirs["runs"][0]["trl_loss_type"] == "sigmoid"
    # remat auto resolves to none for tiny, so TRL's checkpointing is off too.
    assert summary["trl_gradient_checkpointing"] == "auto"
    assert theirs["runs"][0]["gradient_checkpointing"] is False
    assert math.isfinite(theirs["runs"][0]["train_loss"])
    assert config["speedup"] == pytest.approx(
        theirs["step_time_s_median"] / ours["step_time_s_median"]
    )
    assert config["speedup"] == pytest.approx(ours["tokens_per_s"] / theirs["tokens_per_s"])
    assert "| tiny | 2 | 8 |" in outputs["compare"][1]  # the Markdown table


def test_train_step_online_reference_with_accumulation(outputs):
    (row,) = _json_lines(outputs, "train_step_online")
    _check_step_row(row, "ropo_jax")
    assert row["online_ref"] and row["micro_batches"] == 2 and row["loss"] == "ropo"
    assert row["loss_hyperparams"] == {"alpha": 14.0, "beta": 0.1}
    # The reference forward is counted: a third of the policy's forward + backward.
    assert row["reference_flops_per_step"] == pytest.approx(row["policy_flops_per_step"] / 3)
    assert math.isfinite(row["last_step_loss"])
    assert row["last_step_tokens"] == 2 * PAIRS * SEQ


def test_scoring_throughput_and_same_logps_as_transformers(outputs):
    ours, theirs, ratio = _json_lines(outputs, "scoring")
    assert (ours["impl"], theirs["impl"]) == ("ropo_jax", "transformers")
    for row in (ours, theirs):
        assert 0 < row["batch_time_s_min"] <= row["batch_time_s_median"]
        assert row["tokens_per_s"] == pytest.approx(row["pairs_per_s"] * 2 * SEQ)
    assert ours["pipeline_pairs_per_s"] > 0
    assert ratio["ratio_pairs_per_s"] == pytest.approx(ours["pairs_per_s"] / theirs["pairs_per_s"])
    # float32 on both sides; sums of 8 token log-probs agree to float32 rounding.
    assert ratio["max_abs_logp_diff"] < 1e-3


def test_sampling_decodes_the_same_tokens_as_generate(outputs):
    ours, theirs, ratio = _json_lines(outputs, "sampling")
    assert (ours["impl"], theirs["impl"]) == ("ropo_jax", "transformers.generate")
    for row in (ours, theirs):
        assert 0 < row["decode_time_s_min"] <= row["decode_time_s_median"]
        assert row["new_tokens_per_s"] == pytest.approx(2 * 4 / row["decode_time_s_median"])
    assert ratio["same_greedy_tokens"] is True


def test_breakdown_times_every_part(outputs):
    (row,) = _json_lines(outputs, "breakdown")
    assert (row["rows"], row["seq_len"], row["completion_len"]) == (2, SEQ, RESPONSE)
    for key in (
        "body_fwd_ms",
        "body_fwd_bwd_ms",
        "body_and_logps_fwd_bwd_ms",
        "lm_head_logps_fwd_ms",
        "lm_head_logps_fwd_bwd_ms",
        "optimizer_ms",
        "jax_attention_mask_fwd_bwd_ms",
        "jax_attention_causal_fwd_bwd_ms",
        "torch_sdpa_causal_fwd_bwd_ms",
        # --torch_model: the transformers model TRL trains, piece by piece
        "torch_body_fwd_ms",
        "torch_body_fwd_bwd_ms",
        "torch_lm_head_logps_fwd_bwd_ms",
        "torch_lm_head_logps_all_positions_fwd_bwd_ms",
        "torch_optimizer_ms",
    ):
        assert row[key] > 0


def test_accelerator_suite_names_real_scripts_and_flags_within_its_budget():
    """scripts/bench/accelerator_suite.sh, printed with DRY_RUN=1 (it needs a GPU to run):
    every command names a script of scripts/bench/ and only flags that script (or the shared
    step flags of common.py) defines, and the parts' time limits add up to ≤ 9 minutes on
    either branch (with or without TRL)."""
    import re

    out = subprocess.run(
        ["bash", os.path.join(BENCH, "accelerator_suite.sh"), "/tmp/unused"],
        env={**os.environ, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    parts = re.findall(r"^== (\w+) \(≤ (\d+) s\): \S+ (scripts/bench/\S+\.py)(.*)$", out, re.M)
    assert len(parts) >= 7, out
    with open(os.path.join(BENCH, "common.py")) as f:
        shared = f.read()
    for name, _, script, args in parts:
        path = os.path.join(ROOT, script)
        assert os.path.isfile(path), (name, script)
        with open(path) as f:
            text = f.read()
        for flag in re.findall(r"--(\w+)", args):
            defined = rf"DEFINE_\w+\(\s*\"{flag}\""
            uses_shared = "define_step_flags" in text and re.search(defined, shared)
            assert re.search(defined, text) or uses_shared, (name, flag)
    limits = {name: int(limit) for name, limit, _, _ in parts}
    with open(os.path.join(BENCH, "accelerator_suite.sh")) as f:
        fallback = int(re.search(r"run train_step_cudnn (\d+)", f.read()).group(1))
    assert sum(limits.values()) <= 540
    assert sum(limits.values()) - limits["vs_trl"] + fallback <= 540


def test_real_model_gpu_sweep_runs_the_whole_sweep_within_its_budget(tmp_path):
    """scripts/bench/real_model_gpu.sh, printed with DRY_RUN=1: the first run is the sweep's
    own first command, the sweep is the real-model sweep at the gpu preset (24 runs: 4 methods
    × 2 rates × 3 seeds), and the parts' limits add up to ≤ 8 minutes."""
    import re

    out = subprocess.run(
        ["bash", os.path.join(BENCH, "real_model_gpu.sh"), str(tmp_path / "root")],
        env={**os.environ, "DRY_RUN": "1", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    limits = {name: int(s) for name, s in re.findall(r"^== (\w+) \(≤ (\d+) s\):", out, re.M)}
    assert set(limits) == {"first_run", "sweep", "tables"}, out
    assert sum(limits.values()) <= 480
    printed = re.search(r"^== sweep \(≤ \d+ s\): (.*)$", out, re.M).group(1)
    assert "--sweep=experiments/sweeps/real_model.py:gpu" in printed
    listed = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "scripts", "run_sweep.py"),
            "--sweep=experiments/sweeps/real_model.py:gpu",
            f"--root={tmp_path / 'root'}",
            "--print_only",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    ).stdout.splitlines()
    assert len(listed) == 24  # 4 methods × 2 rates × 3 seeds
    assert all("--config=experiments/real_model.py:gpu" in line for line in listed)
    first = re.search(r"^== first_run \(≤ \d+ s\): bash -c (.*)$", out, re.M).group(1)
    assert first.split()[1:] == listed[0].split()[1:]  # the same run, whichever python
