"""Two processes on localhost (jax.distributed with gloo CPU collectives) give the same run as
one process: each process loads its half of every global batch, parameters are sharded across
both, and process 0 alone writes the run's files."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from hf_checkpoints import build_checkpoint
from safetensors.numpy import load_file
from script_runner import main_command

from ropo_jax.synthetic import dataset, prepare, task

pytestmark = pytest.mark.e2e  # every test starts worker processes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "multiprocess_worker.py")
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def _losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    paths = prepare.prepare_synthetic(
        str(tmp_path / "data"),
        task.TaskConfig(),
        dataset.DataConfig(num_sft=96, num_train_pairs=96, num_test_pairs=8, num_eval_prompts=4),
        seed=0,
    )
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    args = [sys.executable, WORKER]
    subprocess.run([*args, "0", "1", "0", paths["train"], one], env=ENV, check=True, timeout=600)
    port = _free_port()
    workers = [
        subprocess.Popen([*args, str(i), "2", port, paths["train"], two], env=ENV) for i in range(2)
    ]
    assert [w.wait(timeout=600) for w in workers] == [0, 0]
    # Same global batches, reduced across processes: equal up to summation order.
    np.testing.assert_allclose(_losses(two), _losses(one), rtol=1e-6)
    assert len(_losses(one)) == 6


def _main_command(workdir, *overrides):
    return main_command(
        workdir,
        "--config.method=ropo_full",  # filtering and rejection sampling
        "--config.mesh.shape=(1,-1,1)",  # FSDP over all 8 devices: across both processes
        *overrides,
    )


def run_main(workdir, *overrides, processes: int):
    """``python -m ropo_jax.main`` as 1 process × 8 CPU devices or 2 processes × 4."""
    devices = 8 // processes
    env = {**ENV, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    command = _main_command(workdir, *overrides)
    if processes > 1:
        port = _free_port()
        command += [f"--coordinator_address=localhost:{port}", f"--num_processes={processes}"]
    logs = [open(f"{workdir}.{i}.log", "w") for i in range(processes)]  # noqa: SIM115
    workers = [
        subprocess.Popen(
            [*command, f"--process_id={i}"] if processes > 1 else command,
            cwd=ROOT,
            env=env,
            stdout=logs[i],
            stderr=subprocess.STDOUT,
        )
        for i in range(processes)
    ]
    codes = [w.wait(timeout=900) for w in workers]
    for log in logs:
        log.close()
    if codes != [0] * processes:
        with open(f"{workdir}.0.log") as f:
            raise AssertionError(f"exit codes {codes}:\n{f.read()[-3000:]}")


def _flat(tree, prefix=""):
    if isinstance(tree, dict):
        return {k: v for key in tree for k, v in _flat(tree[key], f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, x in enumerate(tree) for k, v in _flat(x, f"{prefix}[{i}]").items()}
    return {prefix: tree}


def assert_same_run(one, two):
    """results.json, each round's scores and kept set, and the exported weights agree to float
    tolerance (the two runs reduce in different orders)."""
    with open(os.path.join(one, "results.json")) as f:
        results_one = _flat(json.load(f))
    with open(os.path.join(two, "results.json")) as f:
        results_two = _flat(json.load(f))
    assert results_one.keys() == results_two.keys()
    for key, value in results_one.items():
        if isinstance(value, float):
            np.testing.assert_allclose(results_two[key], value, rtol=1e-4, atol=1e-4, err_msg=key)
        else:
            assert results_two[key] == value, key
    rounds = sorted(d for d in os.listdir(one) if d.startswith("round_"))
    assert rounds == ["round_1", "round_2"]
    for name in rounds:
        a, b = (np.load(os.path.join(w, name, "scores.npz")) for w in (one, two))
        np.testing.assert_array_equal(a["kept"], b["kept"])
        np.testing.assert_allclose(a["margin"], b["margin"], rtol=1e-4, atol=1e-4)
    assert results_one["/rounds[0]/num_rs_pairs"] > 0
    for name in ("model", "sft_model"):
        a, b = (load_file(os.path.join(w, name, "model.safetensors")) for w in (one, two))
        assert a.keys() == b.keys()
        for key in a:
            # Adam divides by the gradient's running RMS, so an element whose gradient is near
            # zero moves by up to the learning rate (smoke: 1e-3) in either direction: summation
            # order alone can move such an element by that much. Everything else agrees to 1e-4.
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, atol=1e-3, err_msg=key)
            close = np.isclose(a[key], b[key], rtol=1e-4, atol=1e-5)
            assert close.mean() > 0.999, f"{key}: {(~close).sum()} elements differ"


def test_main_from_a_checkpoint_on_two_processes_matches_one(tmp_path):
    """The checkpoint path (a transformers-saved Llama streamed into FSDP shards that span both
    processes), SFT, ROPO rounds with filtering and rejection sampling, evaluation and export."""
    checkpoint = build_checkpoint(str(tmp_path / "llama"), "llama")
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    overrides = (f"--config.model.hf_path={checkpoint}",)
    run_main(one, *overrides, processes=1)
    run_main(two, *overrides, processes=2)
    assert_same_run(one, two)


@pytest.mark.slow
def test_main_with_a_preset_model_on_two_processes_matches_one(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    run_main(one, processes=1)
    run_main(two, processes=2)
    assert_same_run(one, two)
