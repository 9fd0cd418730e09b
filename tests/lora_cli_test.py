"""LoRA through the command line (docs/lora.md), on a checkpoint saved by transformers: SFT
with LoRA merged into WORKDIR/sft_model, which is the base of two ROPO rounds with filtering and
rejection sampling (the sampler runs the adapted policy); WORKDIR/model (merged) and
WORKDIR/adapter (PEFT's format) agree in transformers + PEFT; ``python -m ropo_jax.export``
writes both again from the checkpoints (``--adapter_only``); checkpoints hold the adapters
only; a run killed mid-round and re-run ends bit-identical to an uninterrupted one (LoRA
dropout on, so its RNG resumes too). Every method through the command line is ``slow``.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from hf_checkpoints import build_checkpoint
from script_runner import ROOT, kill_once_written, run_module

pytestmark = pytest.mark.e2e  # every test runs project commands in subprocesses
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
LORA = (
    "--config.model.lora.rank=4",
    "--config.model.lora.alpha=8",
    "--config.model.lora.dropout=0.1",
)


def _command(workdir, checkpoint, method="ropo_full", *extra):
    """The paper's UltraFeedback smoke experiment on ``checkpoint`` with SFT first and LoRA:
    4 steps per round (5 pairs, batch 4 in 2 micro-batches, 4 epochs), a checkpoint every 2."""
    return [
        sys.executable,
        "-m",
        "ropo_jax.main",
        "--config=experiments/paper/ultrafeedback.py:smoke",
        f"--workdir={workdir}",
        f"--config.model.hf_path={checkpoint}",
        f"--config.data.tokenizer={checkpoint}",
        f"--config.method={method}",
        "--config.sft.enabled=True",
        "--config.data.raw.sft=tests/fixtures/data/sft.jsonl",
        "--config.sft.batch_size=4",
        "--config.sft.micro_batches=1",
        "--config.ropo.epochs_per_round=4",
        "--config.train.checkpoint_every=2",
        *LORA,
        *extra,
    ]


def _run(workdir, checkpoint, method="ropo_full", *extra):
    out = subprocess.run(
        _command(workdir, checkpoint, method, *extra),
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return build_checkpoint(str(tmp_path_factory.mktemp("lora_cli") / "llama"), "llama")


@pytest.fixture(scope="module")
def uninterrupted(checkpoint, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("lora_uninterrupted"))
    _run(workdir, checkpoint)
    return workdir


def _state(workdir, stage="round_2"):
    manager = ocp.CheckpointManager(
        os.path.join(workdir, "checkpoints", stage), item_names=("state", "record")
    )
    step = manager.latest_step()
    args = ocp.args.Composite(state=ocp.args.StandardRestore())
    return step, manager.restore(step, args=args)["state"]


def _flat(tree):
    return {
        jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(tree)
    }


def _logits(model, ids):
    import torch

    with torch.no_grad():
        return model(ids).logits.numpy()


def _safetensors(path):
    from safetensors.numpy import load_file

    return load_file(path)


def test_lora_run_exports_a_merged_model_and_a_peft_adapter(uninterrupted, checkpoint, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    workdir = uninterrupted
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    assert results["method"] == "ropo_full" and [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["rounds"][0]["num_rs_pairs"] > 0  # the adapted policy sampled new pairs
    # The checkpoints hold the adapters (a, b per projection) and their moments only.
    for stage in ("sft", "round_1", "round_2"):
        _, state = _state(workdir, stage)
        kinds = {key.rsplit("'", 2)[-2] for key in _flat(state["params"])}
        assert set(state["params"]) == {"layers"} and kinds == {"a", "b"}, stage
    with open(os.path.join(workdir, "adapter", "adapter_config.json")) as f:
        adapter_config = json.load(f)
    sft_model = os.path.join(workdir, "sft_model")
    assert adapter_config["base_model_name_or_path"] == os.path.abspath(sft_model)
    assert adapter_config["r"] == 4 and adapter_config["lora_alpha"] == 8
    assert len(adapter_config["target_modules"]) == 7
    # SFT's adapters are merged into sft_model, the base of the preference rounds.
    before = _safetensors(os.path.join(checkpoint, "model.safetensors"))
    sft = _safetensors(os.path.join(sft_model, "model.safetensors"))
    changed = [k for k in before if "proj" in k and not np.array_equal(before[k], sft[k])]
    assert len(changed) == 7 * 2  # every adapted projection of both layers
    ids = torch.tensor(np.random.default_rng(0).integers(3, 300, (2, 24)))
    base = AutoModelForCausalLM.from_pretrained(sft_model, dtype=torch.float32)
    sft_BTV = _logits(base, ids)
    peft_BTV = _logits(PeftModel.from_pretrained(base, os.path.join(workdir, "adapter")), ids)
    model_BTV = _logits(AutoModelForCausalLM.from_pretrained(os.path.join(workdir, "model")), ids)
    # float32: the unmerged and merged sums differ by rounding only (~1e-7 of logits ~0.5).
    np.testing.assert_allclose(peft_BTV, model_BTV, atol=1e-5, rtol=0)
    assert np.abs(model_BTV - sft_BTV).max() > 1e-3  # preference training moved the policy
    # The export command, from the last round's checkpoint: the same adapter, the same model.
    for name, flags in (("adapter_only", ("--adapter_only",)), ("merged", ())):
        out = run_module(
            "ropo_jax.export",
            f"--workdir={workdir}",
            f"--output={tmp_path / name}",
            *flags,
            env=ENV,
            timeout=300,
        )
        assert out.returncode == 0, out.stderr[-3000:]
    for theirs, ours in (
        ("adapter_only/adapter_model.safetensors", "adapter/adapter_model.safetensors"),
        ("merged/model.safetensors", "model/model.safetensors"),
    ):
        exported, written = (
            _safetensors(tmp_path / theirs),
            _safetensors(os.path.join(workdir, ours)),
        )
        assert exported.keys() == written.keys()
        for key in written:
            np.testing.assert_array_equal(exported[key], written[key], err_msg=key)
    with open(tmp_path / "adapter_only" / "adapter_config.json") as f:
        assert json.load(f) == adapter_config


def test_killed_and_rerun_equals_uninterrupted(uninterrupted, checkpoint, tmp_path):
    workdir = str(tmp_path / "killed")
    target = os.path.join(workdir, "checkpoints", "round_1", "2")
    kill_once_written(_command(workdir, checkpoint), target, cwd=ROOT, env=ENV)
    assert not os.path.exists(os.path.join(workdir, "results.json"))
    _run(workdir, checkpoint)
    step_a, state_a = _state(uninterrupted)
    step_b, state_b = _state(workdir)
    assert step_a == step_b
    flat_a, flat_b = _flat(state_a), _flat(state_b)  # adapters, moments, step and RNG
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)  # bit-identical
    for name in ("adapter/adapter_model.safetensors", "model/model.safetensors"):
        a, b = (_safetensors(os.path.join(w, name)) for w in (uninterrupted, workdir))
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")


METHODS = (
    "dpo",
    "noise_aware",
    "ropo",
    "cdpo",
    "rdpo",
    "ipo",
    "hinge",
    "holder_dpo",
    "dpo_nll",
    "simpo",
    "dr_dpo",
    "lcpo_em",
    "holder_full",
    "sft",
)


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_with_lora_through_the_command_line(checkpoint, tmp_path, method):
    """The methods the default suite does not run with LoRA (it runs ropo_full above)."""
    extra = ("--config.ropo.filter_ratio=holder",) if method == "holder_full" else ()
    workdir = str(tmp_path / method)
    _run(workdir, checkpoint, method, *extra)
    with open(os.path.join(workdir, "results.json")) as f:
        assert json.load(f)["method"] == method
    assert os.path.isfile(os.path.join(workdir, "model", "model.safetensors"))
    if method != "sft":
        assert os.path.isfile(os.path.join(workdir, "adapter", "adapter_model.safetensors"))
