"""The completion-only LM head: sequence log-probs from the gathered response positions equal
those of the head over every position (padded and packed rows, SFT, micro-batches), as do the
DPO/ROPO losses, their gradients and whole train steps; and the static bound on the number of
response positions holds for every batch the loader builds.

Shape key: K micro-batches, B pairs, R token rows, T length, C completion positions.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ropo_jax import losses, models
from ropo_jax.config import defaults as configs
from ropo_jax.data import batching
from ropo_jax.data.errors import DataError
from ropo_jax.data.loader import make_loader
from ropo_jax.data.prepared import PreferenceData
from ropo_jax.models import attention
from ropo_jax.run import pipeline
from ropo_jax.training import step as train

CONFIG = models.ModelConfig(
    vocab_size=96, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2
)
SEQ_LEN = 24
KEY = batching.COMPLETION_KEY


def _pairs(n, seed=0, max_prompt=8, max_response=8):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        prompt = [1, *rng.integers(3, 96, rng.integers(0, max_prompt)).tolist()]
        chosen = [*rng.integers(3, 96, rng.integers(0, max_response)).tolist(), 2]
        rejected = [*rng.integers(3, 96, rng.integers(0, max_response)).tolist(), 2]
        out.append((i, prompt, chosen, rejected, bool(i % 3 == 1)))
    return out


def _old(batch):
    """The same batch without completion positions: the head over every position."""
    return {k: v for k, v in batch.items() if k != KEY}


def _device(batch):
    return jax.tree.map(jnp.asarray, batch)


@pytest.fixture(scope="module")
def params():
    return models.init_params(CONFIG, jax.random.key(0))


_logps = jax.jit(lambda p, b: train.sequence_logps(CONFIG, p, b, 8))


def _batches():
    """Padded (with padding pairs, a tight bound and T − 1), packed, SFT and one-token prompts."""
    pairs = _pairs(6)
    longest = max(len(r) for p in pairs for r in p[2:4])
    yield "padded", batching.collate(pairs, num_pairs=8, seq_len=SEQ_LEN, pad_id=0)
    yield (
        "padded_tight",
        batching.collate(pairs, num_pairs=8, seq_len=SEQ_LEN, pad_id=0, completion_len=longest),
    )
    yield (
        "packed",
        batching.collate(
            pairs,
            num_pairs=8,
            seq_len=SEQ_LEN,
            pad_id=0,
            packed=True,
            num_rows=8,
            completion_len=20,
        ),
    )
    yield (
        "sft",
        batching.collate(pairs, num_pairs=8, seq_len=SEQ_LEN, pad_id=0, sft=True, completion_len=9),
    )
    short = [(i, [1], c, r, f) for i, _, c, r, f in _pairs(4, seed=1)]
    yield (
        "one_token_prompts",
        batching.collate(short, num_pairs=4, seq_len=SEQ_LEN, pad_id=0, packed=True),
    )


@pytest.mark.parametrize("name", [name for name, _ in _batches()])
def test_sequence_logps_match_the_full_head(params, name):
    batch = dict(_batches())[name]
    logps_S, counts_S = _logps(params, _device(batch))
    old_logps_S, old_counts_S = _logps(params, _device(_old(batch)))
    np.testing.assert_allclose(logps_S, old_logps_S, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(counts_S, old_counts_S)
    # Real slots have real log-probs; the counts are the response lengths.
    b = len(batch["weight"])
    real = batch["weight"] > 0
    np.testing.assert_array_equal(np.asarray(counts_S)[:b][real], batch["chosen_lengths"][real])
    assert np.all(np.asarray(logps_S)[:b][real] < 0)


def test_head_sees_only_the_completion_rows(params):
    """The head's matmul is [R, C, D] @ [D, V] with C the static bound, not [R, T − 1, D]."""
    pairs = _pairs(4)
    batch = batching.collate(pairs, num_pairs=4, seq_len=SEQ_LEN, pad_id=0, completion_len=8)
    text = jax.jit(lambda p, b: train.sequence_logps(CONFIG, p, b, 256)).lower(
        params, _device(batch)
    )
    hlo = text.as_text()
    assert f"tensor<8x8x{CONFIG.vocab_size}xf32>" in hlo
    assert f"tensor<8x{SEQ_LEN - 1}x{CONFIG.vocab_size}xf32>" not in hlo


@pytest.mark.parametrize("loss", ["dpo", "ropo"])
@pytest.mark.parametrize("packed", [False, True])
def test_loss_and_gradients_match(params, loss, packed):
    pairs = _pairs(6, seed=2)
    batch = batching.collate(
        pairs, num_pairs=8, seq_len=SEQ_LEN, pad_id=0, packed=packed, completion_len=16
    )
    rng = np.random.default_rng(0)
    batch["ref_chosen_logps"] = rng.normal(-20, 2, 8).astype(np.float32)
    batch["ref_rejected_logps"] = rng.normal(-20, 2, 8).astype(np.float32)
    hyperparams = {"alpha": 6.0} if loss == "ropo" else {}

    def loss_fn(p, b):
        logps_S, _ = train.sequence_logps(CONFIG, p, b, 8)
        chosen_B, rejected_B = jnp.split(logps_S, 2)
        logps = losses.PairLogps(
            chosen_B, rejected_B, b["ref_chosen_logps"], b["ref_rejected_logps"]
        )
        loss_B, _ = losses.preference_loss(loss, logps, **hyperparams)
        return losses.weighted_mean(loss_B, b["weight"])

    value_and_grad = jax.jit(jax.value_and_grad(loss_fn))
    new_loss, new_grads = value_and_grad(params, _device(batch))
    old_loss, old_grads = value_and_grad(params, _device(_old(batch)))
    np.testing.assert_allclose(new_loss, old_loss, rtol=1e-5, atol=1e-6)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), new_grads, old_grads
    )
    assert float(optax.tree.norm(new_grads)) > 0


@pytest.mark.parametrize("kind", ["preference", "sft"])
def test_train_step_with_micro_batches_matches(params, kind):
    """Two micro-batches of different row lengths and completion widths (stacked with −1
    padding): the same metric sums and updated parameters as the full head."""
    sft = kind == "sft"
    first = batching.collate(
        _pairs(4, seed=3), num_pairs=4, seq_len=20, pad_id=0, sft=sft, completion_len=8
    )
    second = batching.collate(
        _pairs(4, seed=4), num_pairs=4, seq_len=SEQ_LEN, pad_id=0, packed=not sft, sft=sft
    )
    stacked = batching.stack_micro_batches([first, second])
    assert stacked[KEY].shape[-1] == SEQ_LEN - 1
    assert np.all(stacked[KEY][0][:, 8:] == -1)
    if not sft:
        for key in ("ref_chosen_logps", "ref_rejected_logps"):
            stacked[key] = np.full((2, 4), -15.0, np.float32)
    optimizer = optax.adam(1e-2)
    step = train.make_train_step(kind, train.StepConfig(loss="dpo"), CONFIG, optimizer)
    results = []
    for batch in (stacked, _old(stacked)):
        copy = jax.tree.map(jnp.copy, params)  # the step donates the state
        state = train.init_state(CONFIG, optimizer, jax.random.key(1), params=copy)
        results.append(step(state, _device(batch), None))
    (new_state, new_sums), (old_state, old_sums) = results
    for key in new_sums:
        np.testing.assert_allclose(new_sums[key], old_sums[key], rtol=1e-4, atol=1e-5, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5),
        new_state.params,
        old_state.params,
    )


def test_completion_positions_layout():
    loss_mask = np.array([[0, 0, 1, 1, 0, 0, 1], [0, 1, 1, 1, 1, 1, 1], [0] * 7], np.int32)
    np.testing.assert_array_equal(
        batching.completion_positions(loss_mask, 6),
        [[1, 2, 5, -1, -1, -1], [0, 1, 2, 3, 4, 5], [-1] * 6],
    )
    assert batching.completion_positions(loss_mask).shape == (3, 6)
    with pytest.raises(DataError, match="completion bound 5"):
        batching.completion_positions(loss_mask, 5)


def test_completion_bound_holds_for_random_packings():
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 12))
        prompts = rng.integers(1, 20, n)
        responses = rng.integers(1, 20, n)
        seq_len = int((prompts + responses).max() + rng.integers(0, 30))
        for packed in (False, True):
            bound = batching.completion_bound(prompts, responses, seq_len, packed=packed)
            assert 1 <= bound <= seq_len - 1
            pairs = [
                (i, [1] * p, [5] * r, [5] * r, False)
                for i, (p, r) in enumerate(zip(prompts.tolist(), responses.tolist(), strict=True))
            ]
            # Raises if any row needs more than the bound.
            batching.collate(
                pairs, num_pairs=n, seq_len=seq_len, pad_id=0, packed=packed, completion_len=bound
            )
    # Short responses after long prompts: the longest response, rounded up to a multiple of 8;
    # packed, four sequences of 220 fit a row of 1024 (4 · 20); with a 30-token sequence,
    # min(⌊1024 / 30⌋ · 20 = 680, response share ⌊1024 · 20 / 30⌋ = 682) = 680.
    assert batching.completion_bound([200] * 4, [20] * 4, 256, packed=False) == 24
    assert batching.completion_bound([200] * 4, [20] * 4, 1024, packed=True) == 80
    assert batching.completion_bound([200, 10], [20, 20], 1024, packed=True) == 680
    assert batching.completion_bound([200] * 4, [20] * 4, 1024, packed=True, limit=40) == 40


@pytest.mark.parametrize("mode", ["padded", "bucketed", "packed"])
def test_loader_width_is_static_and_suffices(mode):
    pairs = _pairs(40, seed=5, max_prompt=12, max_response=10)
    data = PreferenceData.from_token_lists(
        [str(i) for i, *_ in pairs],
        [p for _, p, *_ in pairs],
        [c for _, _, c, *_ in pairs],
        [r for *_, r, _ in pairs],
        manifest={"pad_id": 0},
    )
    loader = make_loader(
        data,
        batch_size=8,
        mode=mode,
        shuffle=False,
        num_epochs=1,
        shard_index=0,
        shard_count=1,
        bucket_boundaries=(16, 24),
    )
    widths = {}
    for batch in loader:
        seq_len = batch["tokens"].shape[1]
        widths.setdefault(seq_len, set()).add(batch[KEY].shape[1])
        assert batch[KEY].shape[0] == batch["tokens"].shape[0]
        assert (batch[KEY] >= 0).sum() == batch["loss_mask"].sum()
        assert batch[KEY].shape[1] <= seq_len - 1
        if mode == "padded":  # responses of ≤ 10 tokens in rows of 22: C = 16
            assert batch[KEY].shape[1] == 16 < seq_len - 1
        # The trainer promises cuDNN one right-padded sequence per row unless rows are packed.
        if mode != "packed":
            assert attention.one_sequence_per_row(batch["positions"], batch["segment_ids"])
    assert all(len(w) == 1 for w in widths.values())


def _loader_data(max_response):
    pairs = _pairs(40, seed=5, max_prompt=12, max_response=max_response)
    return PreferenceData.from_token_lists(
        [str(i) for i, *_ in pairs],
        [p for _, p, *_ in pairs],
        [c for _, _, c, *_ in pairs],
        [r for *_, r, _ in pairs],
        manifest={"pad_id": 0},
    )


def test_max_completion_tokens_config_key_caps_the_head():
    block = configs.base_config().train
    assert block.max_completion_tokens == 0  # default: derived from the data
    assert pipeline.stage_config(block, "t", "preference", 0).max_completion_tokens is None
    block.max_completion_tokens = 8
    stage = pipeline.stage_config(block, "t", "preference", 0)
    assert stage.max_completion_tokens == 8

    def widths(data):
        loader = make_loader(
            data,
            batch_size=8,
            mode="padded",
            shuffle=False,
            num_epochs=1,
            shard_index=0,
            shard_count=1,
            max_completion_tokens=stage.max_completion_tokens,
        )
        return {batch[KEY].shape[1] for batch in loader}

    assert widths(_loader_data(max_response=7)) == {8}  # responses of ≤ 7 tokens fit
    with pytest.raises(DataError, match="max_completion_tokens"):
        widths(_loader_data(max_response=12))  # a row needs more: one clear error
