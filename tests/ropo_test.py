"""The iterative ROPO framework: per-round artefacts, counts, resume equality, options."""

import json
import os
import signal
import subprocess
import time

import numpy as np
import pytest
from script_runner import main_command, run_script

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.ropo import framework as ropo
from ropo_jax.ropo.options import RopoConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}
SMALL = (
    "--config.method=ropo_full",
    "--config.synthetic.data.num_sft=128",
    "--config.synthetic.data.num_train_pairs=128",
    "--config.synthetic.data.num_test_pairs=32",
    "--config.synthetic.data.num_eval_prompts=16",
    "--config.ropo.rs.max_new_tokens=8",
    "--config.eval.max_new_tokens=8",
    "--config.train.checkpoint_every=1",
)


def _command(workdir):
    return main_command(workdir, *SMALL)


def _read(*parts):
    with open(os.path.join(*parts)) as f:
        return f.read()


def _results(workdir):
    with open(os.path.join(workdir, "results.json")) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("ropo_full"))
    subprocess.run(
        _command(workdir), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=900
    )
    return workdir


@pytest.mark.e2e
def test_two_rounds_write_every_artefact(full_run):
    for t in (1, 2):
        for name in ("done.json", "eval.json", "kept_ids.json", "samples.jsonl", "scores.npz"):
            assert os.path.exists(os.path.join(full_run, f"round_{t}", name)), (t, name)
    results = _results(full_run)
    r1, r2 = results["rounds"]
    n = 128
    assert r1["num_discarded"] == int(np.floor(0.2 * n)) == r2["num_discarded"]
    assert r1["trained_weight_sum"] == n  # round 1 trains on everything (w = 1)
    assert r1["num_rs_pairs"] > 0  # replacement pairs for the discarded prompts
    assert r2["trained_on"] == n + r1["num_rs_pairs"]
    assert r2["trained_weight_sum"] == n - r1["num_discarded"] + r1["num_rs_pairs"]
    # Each round says what it trained on: round 2 the kept originals and round 1's RS pairs.
    assert (r1["trained_on_original"], r1["trained_on_rs"]) == (n, 0)
    assert r2["trained_on_original"] == n - r1["num_discarded"]
    assert r2["trained_on_rs"] == r1["num_rs_pairs"]
    kept = json.loads(_read(full_run, "round_1", "kept_ids.json"))
    assert len(kept["kept"]) + len(kept["discarded"]) == n and kept["applied_next_round"]
    scores = np.load(os.path.join(full_run, "round_1", "scores.npz"))
    # The discarded pairs are exactly the highest-loss ones (the w-step).
    assert scores["loss"][~scores["kept"]].min() >= scores["loss"][scores["kept"]].max()
    sample = json.loads(_read(full_run, "round_1", "samples.jsonl").splitlines()[0])
    assert sample["margin"] > 0 and sample["source_id"] in kept["discarded"]
    assert sample["chosen_reward"] == max(sample["candidate_rewards"])
    assert set(results["noise_identification"]) == {"precision", "recall", "f1", "auroc"}
    rows = [json.loads(line) for line in _read(full_run, "metrics.jsonl").splitlines()]
    assert any(r.get("round") == 2 for r in rows)


@pytest.mark.e2e
def test_killed_between_rounds_and_rerun_gives_the_same_results(full_run, tmp_path):
    workdir = str(tmp_path / "killed")
    process = subprocess.Popen(
        _command(workdir), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    target = os.path.join(workdir, "round_1", "done.json")
    deadline = time.time() + 600
    while not os.path.exists(target) and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed_mid_run = process.poll() is None
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert killed_mid_run
    subprocess.run(
        _command(workdir), cwd=ROOT, env=ENV, check=True, capture_output=True, timeout=900
    )
    assert _results(workdir) == _results(full_run)
    for t in (1, 2):
        a = np.load(os.path.join(full_run, f"round_{t}", "scores.npz"))
        b = np.load(os.path.join(workdir, f"round_{t}", "scores.npz"))
        np.testing.assert_array_equal(a["loss"], b["loss"])


def _data(n, offset=0):
    return PreferenceData.from_token_lists(
        [f"e{offset + i}" for i in range(n)],
        [[1, 5]] * n,
        [[6, 2]] * n,
        [[7, 8, 2]] * n,
        manifest={"pad_id": 0},
    )


def test_concat_keeps_every_example_and_flip():
    a = _data(3).with_flips(np.array([True, False, False]))
    b = _data(2, offset=3)
    both = ropo.concat(a, b)
    assert len(both) == 5 and both.ids[3] == "e3"
    assert both.is_flipped.tolist() == [True, False, False, False, False]
    assert [x.tolist() for x in both.parts(4)] == [[1, 5], [6, 2], [7, 8, 2]]


def test_w_step_modes():
    scores = np.array([5.0, 4.0, 3.0, 2.0, 1.0, 0.0, 0.5, 0.7, 0.9, 1.1])
    config = RopoConfig(filter_ratio=0.2)
    first = ropo.w_step(scores, ropo=config)
    assert first.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    recompute = ropo.w_step(-scores, ropo=config, previous_keep_N=first > 0)
    assert recompute[0] == 1  # recompute re-admits
    cumulative = ropo.w_step(
        -scores, ropo=RopoConfig(filter_mode="cumulative"), previous_keep_N=first > 0
    )
    assert cumulative[0] == 0 and cumulative.sum() == 7  # never re-admitted; ⌊0.2·8⌋ more dropped


def test_rejection_sampled_pairs_are_stored_chosen_over_rejected(tmp_path):
    """The pairs rejection sampling adds are stored with the higher-r̂ candidate as chosen: the
    policy and reference log-probs of the new data, scored as any training data is, give every
    pair the margin h > 0 its record reports, and the stored responses are the recorded ones.
    Stored the other way round, round 2 would train the policy away from its own best sample.
    (The command-line run checks only the records, which keep their orientation either way.)"""
    import jax

    from ropo_jax import models
    from ropo_jax.data.loader import load_preference_data
    from ropo_jax.inference import scoring
    from ropo_jax.synthetic import dataset, prepare, task

    paths = prepare.prepare_synthetic(
        str(tmp_path),
        task.TaskConfig(),
        dataset.DataConfig(num_sft=8, num_train_pairs=8, num_test_pairs=4, num_eval_prompts=2),
        seed=0,
    )
    data, _ = load_preference_data(paths["train"])
    config = models.ModelConfig.preset("tiny", vocab_size=int(data.manifest["vocab_size"]))
    policy = models.init_params(config, jax.random.key(1))
    reference = models.init_params(config, jax.random.key(2))  # r̂ differs between candidates
    options = RopoConfig(num_rounds=2, rs_enabled=True, rs_num_candidates=4, rs_max_new_tokens=6)
    new, records = ropo.rejection_sample(
        config,
        policy,
        reference,
        data,
        np.arange(6),
        ropo=options,
        beta=0.1,
        round_index=1,
        seed=0,
        batch_size=8,
    )
    assert len(new) == len(records) >= 4
    for i, record in enumerate(records):
        assert new.ids[i] == record["id"] and record["margin"] > 0
        _, chosen, rejected = new.pair(i)
        assert chosen.tolist() == record["chosen_tokens"]
        assert rejected.tolist() == record["rejected_tokens"]
        assert record["chosen_reward"] > record["rejected_reward"]
    policy_chosen, policy_rejected = scoring.sequence_logps_over(config, policy, new, batch_size=8)
    ref_chosen, ref_rejected = scoring.sequence_logps_over(config, reference, new, batch_size=8)
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    np.testing.assert_allclose(margin, [r["margin"] for r in records], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(num_rounds=0), "num_rounds=0"),
        (dict(filter_ratio=1.0), "filter_ratio=1.0"),
        (dict(filter_mode="sometimes"), "filter_mode='sometimes'"),
        (dict(filter_granularity="token"), "filter_granularity='token'"),
        (dict(rs_selection="best"), "rs.selection='best'"),
        (dict(rs_selection="best_vs_worst_original"), "needs rs.include_original=True"),
        (dict(rs_num_candidates=1), "num_candidates=1"),
    ],
)
def test_invalid_options_fail_clearly(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        RopoConfig(**kwargs)


@pytest.mark.e2e
def test_rs_pair_quality_reads_the_run(full_run):
    out = run_script(
        "scripts/rs_pair_quality.py", f"--runs={full_run}", env=ENV, timeout=120
    ).stdout
    row = json.loads(out.splitlines()[0])
    assert row["rs_pairs"] == sum(r["num_rs_pairs"] for r in _results(full_run)["rounds"])
    assert 0.0 <= row["gold_agreement"] <= 1.0 and row["chosen_words_mean"] > 0
