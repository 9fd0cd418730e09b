"""Batches (padded, bucketed, packed), noise models, resume, sharding, TFDS builders.

Key: B pairs, R rows, T row length.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ropo_jax.data import batching
from ropo_jax.data.errors import DataError
from ropo_jax.data.loader import default_bucket_boundaries, make_loader
from ropo_jax.data.noise import NoiseConfig, apply_noise, example_uniforms, noise_data
from ropo_jax.data.prepared import PreferenceData, load_prepared

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "data")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def random_data(n=37, *, vocab=200, max_prompt=20, max_response=30, seed=0) -> PreferenceData:
    """Pairs with skewed (long-tailed) lengths; token 1 = BOS, 2 = EOS, 0 = pad."""
    rng = np.random.default_rng(seed)
    lengths = lambda hi: np.minimum(hi, 1 + rng.geometric(4.0 / hi, n))
    prompts = [[1, *rng.integers(3, vocab, k - 1)] for k in lengths(max_prompt)]
    chosen = [[*rng.integers(3, vocab, k - 1), 2] for k in lengths(max_response)]
    rejected = [[*rng.integers(3, vocab, k - 1), 2] for k in lengths(max_response)]
    manifest = {"bos_id": 1, "eos_id": 2, "pad_id": 0, "max_length": max_prompt + max_response}
    sources = ["strong", "medium", "weak"]
    metadata = [
        {
            "score_chosen": float(rng.normal()),
            "score_rejected": float(rng.normal()),
            "source_chosen": sources[i % 3],
            "source_rejected": sources[(i + 1) % 3],
        }
        for i in range(n)
    ]
    return PreferenceData.from_token_lists(
        [f"ex{i}" for i in range(n)],
        prompts,
        chosen,
        rejected,
        manifest=manifest,
        metadata=metadata,
    )


def check_batch(batch, data: PreferenceData):
    """Every pair's two sequences can be read back exactly from the rows."""
    num_pairs = batch["example_index"].shape[0]
    for key in batching.TOKEN_KEYS:
        assert batch[key].dtype == np.int32 and batch[key].shape == batch["tokens"].shape
    assert batch["weight"].dtype == np.float32 and batch["is_flipped"].dtype == bool
    seg, idx = batch["segment_ids"], batch["sequence_index"]
    for i, example in enumerate(batch["example_index"]):
        if example < 0:
            assert batch["weight"][i] == 0
            assert (
                not ((idx == i) & (seg > 0)).any()
                and not ((idx == num_pairs + i) & (seg > 0)).any()
            )
            continue
        assert batch["weight"][i] == 1
        prompt, chosen, rejected = data.pair(int(example))
        for slot, response in ((i, chosen), (num_pairs + i, rejected)):
            where = (idx == slot) & (seg > 0)
            rows = np.unique(np.nonzero(where)[0])
            assert rows.size == 1  # a sequence never spans rows
            row = rows[0]
            tokens = batch["tokens"][row][where[row]]
            np.testing.assert_array_equal(tokens, np.concatenate([prompt, response]))
            np.testing.assert_array_equal(
                batch["positions"][row][where[row]], np.arange(tokens.size)
            )
            mask = batch["loss_mask"][row][where[row]]
            np.testing.assert_array_equal(mask, [0] * len(prompt) + [1] * len(response))
            assert len(set(seg[row][where[row]])) == 1
        assert batch["chosen_lengths"][i] == len(chosen)
        assert batch["rejected_lengths"][i] == len(rejected)
    assert (batch["loss_mask"][seg == 0] == 0).all()


@pytest.mark.parametrize("mode", ["padded", "bucketed", "packed"])
def test_batches_hold_every_pair_exactly(mode):
    data = random_data()
    it = make_loader(
        data,
        batch_size=4,
        seed=3,
        shuffle=False,
        mode=mode,
        bucket_boundaries=[16, 32],
        shard_index=0,
        shard_count=1,
    )
    seen = []
    for batch in it:
        check_batch(batch, data)
        r, t = batch["tokens"].shape
        if mode != "packed":
            assert r == 8
        if mode == "padded":
            assert t == 50
        if mode == "bucketed":
            assert t in (16, 32, 50)
        if mode == "packed":
            assert t == 50 and r % 8 == 0 and r <= 8
        seen.extend(batch["example_index"][batch["example_index"] >= 0].tolist())
    assert sorted(seen) == list(range(37))  # not shuffled, no drop: every example once


def test_padded_rows_layout():
    data = random_data(4)
    batch = next(make_loader(data, batch_size=4, shuffle=False, shard_index=0, shard_count=1))
    # Row i = prompt + chosen of pair i, row B + i = prompt + rejected; sequence_index = row.
    for i in range(4):
        p, c, r = data.parts(i)
        assert batch["tokens"][i, : len(p) + len(c)].tolist() == [*p, *c]
        assert batch["tokens"][4 + i, : len(p) + len(r)].tolist() == [*p, *r]
        assert (batch["sequence_index"][i][batch["segment_ids"][i] > 0] == i).all()
        assert (batch["segment_ids"][4 + i] <= 1).all()


def test_padding_efficiency_orders_modes():
    data = random_data(400, max_prompt=60, max_response=120, seed=1)
    eff = {}
    for mode in ("padded", "bucketed", "packed"):
        it = make_loader(
            data,
            batch_size=16,
            seed=0,
            mode=mode,
            bucket_boundaries=[32, 64, 128],
            shard_index=0,
            shard_count=1,
            pack_row_multiple=4,
        )
        eff[mode] = batching.padding_efficiency(it)
    assert eff["padded"] < eff["bucketed"] < eff["packed"] <= 1.0


def test_packed_and_padded_logps_agree():
    """Per-example sequence log-probs from packed rows equal those from padded rows."""
    import jax
    import jax.numpy as jnp

    from ropo_jax import models
    from ropo_jax.losses import segment_logps, token_logps

    config = models.ModelConfig.preset("tiny")
    params = models.init_params(config, jax.random.key(0))
    data = random_data(12, vocab=config.vocab_size, max_prompt=10, max_response=14, seed=2)

    @jax.jit
    def pair_logps(batch):
        logits = models.forward(
            config,
            params,
            batch["tokens"],
            positions_BT=batch["positions"],
            segment_ids_BT=batch["segment_ids"],
        )
        logps_RT = token_logps(logits[:, :-1], batch["tokens"][:, 1:])
        num = batch["example_index"].shape[0]
        return segment_logps(
            logps_RT, batch["loss_mask"][:, 1:], batch["sequence_index"][:, 1:], 2 * num
        )

    results = {}
    for mode in ("padded", "packed"):
        batch = next(
            make_loader(data, batch_size=12, shuffle=False, mode=mode, shard_index=0, shard_count=1)
        )
        if mode == "packed":
            assert batch["tokens"].shape[0] < 24  # several sequences share rows
        results[mode] = np.asarray(pair_logps({k: jnp.asarray(v) for k, v in batch.items()}))
    # float32 forward passes over differently laid-out rows: rounding-level differences only.
    np.testing.assert_allclose(results["packed"], results["padded"], rtol=1e-5, atol=1e-4)
    assert np.all(results["padded"] < 0)


# --- noise ------------------------------------------------------------------------------------


def test_symmetric_rate_within_binomial_bounds():
    ids = [f"id-{i}" for i in range(20000)]
    for rate in (0.2, 0.4):
        result = apply_noise(NoiseConfig("symmetric", rate, seed=7), ids=ids)
        sd = np.sqrt(rate * (1 - rate) / len(ids))
        assert abs(result.realised_rate - rate) < 4 * sd  # P(fail) ≈ 6e-5
    zero = apply_noise(NoiseConfig("symmetric", 0.0, seed=7), ids=ids)
    assert zero.realised_rate == 0.0


def test_noise_keyed_by_seed_and_id_not_position():
    ids = [f"id-{i}" for i in range(1000)]
    config = NoiseConfig("symmetric", 0.3, seed=5)
    full = apply_noise(config, ids=ids).is_flipped
    reversed_ = apply_noise(config, ids=ids[::-1]).is_flipped
    np.testing.assert_array_equal(full, reversed_[::-1])
    other_seed = apply_noise(NoiseConfig("symmetric", 0.3, seed=6), ids=ids).is_flipped
    assert (full != other_seed).any()


def test_exact_noise_flips_the_nominal_count_keyed_by_id():
    ids = [f"id-{i}" for i in range(136)]
    for rate in (0.2, 0.4):
        drawn = apply_noise(NoiseConfig("symmetric", rate, seed=100), ids=ids)
        assert drawn.is_flipped.sum() != int(np.floor(rate * 136 + 0.5))  # seed 100 misses it
        exact = apply_noise(NoiseConfig("symmetric", rate, seed=100, exact=True), ids=ids)
        assert exact.is_flipped.sum() == int(np.floor(rate * 136 + 0.5))  # 27, 54
        # The flipped pairs are those of smallest uniform: every flipped uniform lies below
        # every kept one.
        u = example_uniforms(100, ids)
        assert u[exact.is_flipped].max() < u[~exact.is_flipped].min()
        # Keyed by id, not position.
        reversed_ = apply_noise(NoiseConfig("symmetric", rate, seed=100, exact=True), ids=ids[::-1])
        np.testing.assert_array_equal(exact.is_flipped, reversed_.is_flipped[::-1])
        assert abs(drawn.realised_rate - rate) < 0.15  # the draw is near, not at, the rate
    few = apply_noise(NoiseConfig("symmetric", 0.3, seed=1, exact=True), ids=ids[:5])
    assert few.is_flipped.sum() == 2  # round(1.5) → 2


def test_exact_noise_counts_only_eligible_pairs():
    ids = [f"e{i}" for i in range(10)]
    chosen = [5] * 10
    rejected = [9] * 4 + [1] * 6  # the first four have the longer response rejected
    result = apply_noise(
        NoiseConfig("length_biased", 0.5, exact=True),
        ids=ids,
        chosen_lengths=chosen,
        rejected_lengths=rejected,
    )
    assert result.is_flipped.sum() == 2 and not result.is_flipped[4:].any()
    with pytest.raises(DataError, match="bradley_terry"):
        NoiseConfig("bradley_terry", exact=True)


@pytest.mark.e2e
def test_noise_identical_across_processes():
    code = (
        "import numpy as np, sys; from ropo_jax.data.noise import NoiseConfig, apply_noise;"
        "ids = [f'id-{i}' for i in range(500)];"
        "r = apply_noise(NoiseConfig('symmetric', 0.25, seed=11), ids=ids);"
        "sys.stdout.write(''.join('1' if f else '0' for f in r.is_flipped))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed)
        out = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=REPO,
            env=env,
            check=True,
            timeout=60,
        ).stdout
        outputs.add(out)
    here = apply_noise(NoiseConfig("symmetric", 0.25, seed=11), ids=[f"id-{i}" for i in range(500)])
    assert outputs == {"".join("1" if f else "0" for f in here.is_flipped)}


def test_structured_noise_models():
    ids = ["a", "b", "c", "d"]
    bt = apply_noise(
        NoiseConfig("bradley_terry", temperature=2.0, seed=0),
        ids=ids,
        score_chosen=[3.0, 1.0, 0.0, 10.0],
        score_rejected=[1.0, 1.0, 2.0, 0.0],
    )
    np.testing.assert_allclose(bt.flip_probability, 1 / (1 + np.exp([1.0, 0.0, -1.0, 5.0])))
    lb = apply_noise(
        NoiseConfig("length_biased", 1.0),
        ids=ids,
        chosen_lengths=[5, 5, 9, 1],
        rejected_lengths=[9, 5, 5, 2],
    )
    assert lb.is_flipped.tolist() == [True, False, False, True]
    sb = apply_noise(
        NoiseConfig("source_biased", 1.0),
        ids=ids,
        source_chosen=["gpt4", "icm-1.3b", "text-davinci-003", "gpt4"],
        source_rejected=["icm-1.3b", "gpt4", "icm-1.3b", "gpt4"],
    )
    assert sb.is_flipped.tolist() == [False, True, False, False]
    with pytest.raises(DataError, match="no strength for source"):
        apply_noise(
            NoiseConfig("source_biased", 1.0),
            ids=["a"],
            source_chosen=["x"],
            source_rejected=["gpt4"],
        )
    with pytest.raises(DataError, match="needs 'score_chosen' for every example"):
        apply_noise(
            NoiseConfig("bradley_terry"), ids=["a"], score_chosen=[None], score_rejected=[1.0]
        )
    with pytest.raises(DataError, match="unknown"):
        NoiseConfig("asymmetric")


def test_loader_applies_noise_and_keeps_true_labels():
    data = random_data(64)
    noisy, result = noise_data(data, NoiseConfig("symmetric", 0.5, seed=1))
    assert 0 < result.is_flipped.sum() < 64
    batch = next(
        make_loader(
            data,
            batch_size=64,
            shuffle=False,
            shard_index=0,
            shard_count=1,
            noise=NoiseConfig("symmetric", 0.5, seed=1),
        )
    )
    np.testing.assert_array_equal(batch["is_flipped"], result.is_flipped)
    check_batch(batch, noisy)  # flipped pairs carry the stored rejected response as chosen
    i = int(np.flatnonzero(result.is_flipped)[0])
    np.testing.assert_array_equal(noisy.pair(i)[1], data.parts(i)[2])


# --- iteration: resume, sharding, epochs --------------------------------------------------------


@pytest.mark.parametrize("mode", ["bucketed", "packed"])
def test_resume_yields_exactly_the_next_batch(mode):
    data = random_data(50)
    kwargs = dict(
        batch_size=4,
        seed=9,
        mode=mode,
        num_epochs=None,
        bucket_boundaries=[20],
        shard_index=0,
        shard_count=1,
    )
    it = make_loader(data, **kwargs)
    for _ in range(14):  # crosses the epoch boundary (12 batches per epoch)
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # survives serialisation
    expected = [next(it) for _ in range(3)]
    resumed = make_loader(data, **kwargs)
    resumed.set_state(state)
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_epochs_reshuffle_and_cover():
    data = random_data(40)
    it = make_loader(data, batch_size=8, seed=0, num_epochs=2, shard_index=0, shard_count=1)
    batches = list(it)
    assert len(batches) == 10
    first = np.concatenate([b["example_index"] for b in batches[:5]])
    second = np.concatenate([b["example_index"] for b in batches[5:]])
    assert sorted(first) == sorted(second) == list(range(40))
    assert (first != second).any()


@pytest.mark.parametrize("mode", ["padded", "bucketed", "packed"])
def test_sharding_splits_global_batches(mode):
    data = random_data(48)
    common = dict(batch_size=8, seed=4, mode=mode, bucket_boundaries=[16, 32])
    single = list(make_loader(data, shard_index=0, shard_count=1, **common))
    shards = [list(make_loader(data, shard_index=k, shard_count=2, **common)) for k in range(2)]
    for step, whole in enumerate(single):
        parts = [shards[k][step] for k in range(2)]
        # Same shapes on both processes, together exactly the global batch.
        assert parts[0]["tokens"].shape == parts[1]["tokens"].shape
        np.testing.assert_array_equal(
            np.concatenate([p["example_index"] for p in parts]), whole["example_index"]
        )
        # The global batch the processes assemble (rows and pairs in process order, as
        # batches.put_batch lays them out) reads back every pair from its global slots: chosen of
        # global pair g in slot g, rejected in slot B + g.
        assembled = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        check_batch(assembled, data)


def test_loader_errors():
    data = random_data(10)
    with pytest.raises(DataError, match="multiple of the process count 4"):
        make_loader(data, batch_size=6, shard_index=0, shard_count=4)
    with pytest.raises(DataError, match="mode 'ragged' is unknown"):
        make_loader(data, batch_size=2, mode="ragged", shard_index=0, shard_count=1)
    with pytest.raises(DataError, match="more than max_length=8"):
        make_loader(data, batch_size=2, max_length=8, shard_index=0, shard_count=1)
    with pytest.raises(DataError, match="not a prepared data set"):
        make_loader("/nonexistent", batch_size=2, shard_index=0, shard_count=1)


def test_subset_and_prepared_roundtrip(tmp_path):
    data = random_data(20)
    data.save(str(tmp_path))
    loaded = load_prepared(str(tmp_path))
    assert loaded.fingerprint() == data.fingerprint() == loaded.manifest["fingerprint"]
    assert loaded.ids == data.ids and loaded.metadata == data.metadata
    for i in range(20):
        for a, b in zip(loaded.parts(i), data.parts(i), strict=True):
            np.testing.assert_array_equal(a, b)
    kept = [3, 5, 7, 11]
    batches = list(
        make_loader(
            str(tmp_path), batch_size=2, shuffle=False, indices=kept, shard_index=0, shard_count=1
        )
    )
    assert np.concatenate([b["example_index"] for b in batches]).tolist() == kept


@pytest.mark.e2e
def test_padding_efficiency_script_runs():
    out = subprocess.run(
        [
            sys.executable,
            "scripts/data_padding_efficiency.py",
            "--num_pairs=256",
            "--batch_size=16",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=True,
        timeout=120,
    ).stdout
    lines = out.splitlines()
    assert len(lines) == 4 and lines[0].startswith("256 pairs")
    values = [float(line.split("efficiency ")[1].split()[0]) for line in lines[1:]]
    assert [line.split()[0] for line in lines[1:]] == ["padded", "bucketed", "packed"]
    assert values[0] < values[1] < values[2] <= 1.0


def test_bucketed_without_boundaries_uses_multiples_of_128():
    assert default_bucket_boundaries(128) == ()
    assert default_bucket_boundaries(1024) == (128, 256, 384, 512, 640, 768, 896)
    assert default_bucket_boundaries(4096) == tuple(range(512, 4096, 512))  # at most 8 buckets
    rng = np.random.default_rng(0)
    lengths = rng.integers(20, 180, size=64)  # prompt + response ≤ 360 tokens
    data = PreferenceData.from_token_lists(
        [str(i) for i in range(64)],
        [[1, *rng.integers(3, 90, n).tolist()] for n in lengths],
        [[*rng.integers(3, 90, n).tolist(), 2] for n in lengths],
        [[*rng.integers(3, 90, n // 2).tolist(), 2] for n in lengths],
        manifest={"pad_id": 0, "max_length": 384},
    )
    loader = make_loader(
        data,
        batch_size=8,
        mode="bucketed",
        shuffle=False,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
    )
    widths = {batch["tokens"].shape[1] for batch in loader}
    # Short and long batches get their own row lengths instead of all being padded to 384.
    assert widths <= {128, 256, 384} and len(widths) >= 2, widths
