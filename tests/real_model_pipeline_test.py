"""The real checkpoint through the command line: SmolLM2-135M-Instruct (scripts/fetch_smollm2.py,
which ./scripts/test.sh runs) goes through docs/training.md's round trip — prepare the
UltraFeedback fixture with its ChatML tokenizer (BOS at every turn, EOS = PAD), SFT, two ROPO
rounds with filtering and rejection sampling at experiments/chat.py's settings, generations, an
export — and transformers loads what comes out, which still answers a simple question right.
The one real-model end-to-end case of the default run; the real-model benchmark's smoke run is
``slow`` (tests/experiments_test.py)."""

import json
import os

import pytest
from hf_pipeline_test import _results, check_trained_model, run_documented_commands
from script_runner import ROOT

pytestmark = pytest.mark.e2e
SMOLLM2 = os.environ.get(
    "ROPO_JAX_SMOLLM2", os.path.join(ROOT, ".venv", "share", "ropo_jax", "smollm2-135m-instruct")
)
needs_smollm2 = pytest.mark.skipif(
    not os.path.isfile(os.path.join(SMOLLM2, "config.json")),
    reason=f"{SMOLLM2} is missing: run scripts/fetch_smollm2.py (./scripts/test.sh does)",
)


@needs_smollm2
def test_smollm2_round_trip_through_the_documented_commands(tmp_path):
    workdir = str(tmp_path / "run")
    printed = run_documented_commands(
        "docs/training.md", "hf_roundtrip", MODEL=SMOLLM2, RUN=workdir
    )
    assert "model LlamaForCausalLM" in printed and "round1_bf16 LlamaForCausalLM" in printed
    # Every fixture row was prepared: none refused for the ChatML BOS that starts each turn.
    for split in ("train", "test", "sft"):
        with open(os.path.join(workdir, "data", split, "manifest.json")) as f:
            manifest = json.load(f)
        summary = manifest["summary"]
        assert summary["rejected"] == 0 and summary["examples_written"] > 0, (split, summary)
    results = _results(workdir)
    assert [r["round"] for r in results["rounds"]] == [1, 2]
    assert results["rounds"][0]["num_rs_pairs"] > 0
    check_trained_model(workdir, SMOLLM2, name="sft_model")
    model = check_trained_model(workdir, SMOLLM2, name="model")
    # experiments/chat.py's learning rate leaves the model answering sensibly (the toy configs'
    # 1e-3 made it answer "Name a fruit." with "1.1.11 a1").
    answer = _greedy_answer(model, os.path.join(workdir, "model"), "What is the capital of France?")
    assert "Paris" in answer, answer


def _greedy_answer(model, tokenizer_dir, question, max_new_tokens=16):
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
    )
    ids = prompt["input_ids"] if hasattr(prompt, "keys") else prompt
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
