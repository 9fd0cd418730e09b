"""A two-process run on localhost (jax.distributed with gloo CPU collectives) gives the same
losses as one process: each process loads its half of every global batch."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from ropo_jax.synthetic import dataset, prepare, task

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
