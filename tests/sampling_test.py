"""KV-cache sampler: greedy = step-by-step argmax of the full forward, EOS stops, determinism."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ropo_jax import models
from ropo_jax.inference import sampling

CONFIG = models.ModelConfig(
    vocab_size=61,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    eos_token_id=2,
)


@pytest.fixture(scope="module")
def params():
    return models.init_params(CONFIG, jax.random.key(0))


def _reference_greedy(params, prompt, steps, eos):
    tokens = list(prompt)
    out = []
    for _ in range(steps):
        logits = models.forward(CONFIG, params, jnp.asarray([tokens]))[0, -1]
        nxt = int(jnp.argmax(logits))
        out.append(nxt)
        tokens.append(nxt)
        if nxt == eos:
            break
    return out


def test_greedy_equals_argmax_of_the_full_forward(params):
    prompts = [[1, 5, 9], [1, 7, 8, 30, 41, 12, 3], [1, 22]]
    greedy = sampling.SamplingConfig(
        max_new_tokens=6, temperature=0.0, length_bucket=8, eos_token_id=-1
    )
    got = sampling.generate(CONFIG, params, prompts, greedy, rng=jax.random.key(0), batch_size=2)
    for prompt, out in zip(prompts, got, strict=True):
        assert out == _reference_greedy(params, prompt, 6, eos=-1)


def test_eos_stops_a_row_and_pads_after_it(params):
    prompts = [[1, 5, 9], [1, 7, 8]]
    first = sampling.generate(
        CONFIG,
        params,
        prompts,
        sampling.SamplingConfig(
            max_new_tokens=5, temperature=0.0, length_bucket=4, eos_token_id=-1
        ),
        rng=jax.random.key(0),
    )
    eos = first[0][1]  # make the second greedy token of row 0 the EOS
    stop = sampling.SamplingConfig(
        max_new_tokens=5, temperature=0.0, length_bucket=4, eos_token_id=eos
    )
    out = sampling.generate(CONFIG, params, prompts, stop, rng=jax.random.key(0))
    assert out[0] == first[0][:2]
    raw = sampling.generate_batch(
        CONFIG, stop, params, jnp.asarray([[1, 5, 9, 0]]), jnp.asarray([3]), jax.random.key(0)
    )
    assert bool(raw["finished"][0]) and int(raw["lengths"][0]) == 2
    np.testing.assert_array_equal(raw["tokens"][0, 2:], 0)


def test_sampling_is_deterministic_for_a_seed_and_varies_across_seeds(params):
    prompts = [[1, 3, 4, 5]] * 4 + [[1, 9]]
    config = sampling.SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.95, length_bucket=4)
    a = sampling.generate(CONFIG, params, prompts, config, rng=jax.random.key(1), batch_size=4)
    b = sampling.generate(CONFIG, params, prompts, config, rng=jax.random.key(1), batch_size=4)
    c = sampling.generate(CONFIG, params, prompts, config, rng=jax.random.key(2), batch_size=4)
    assert a == b and a != c
    assert len({tuple(x) for x in a[:4]}) > 1  # rows of one batch draw different samples


def test_empty_prompt_is_an_error(params):
    with pytest.raises(ValueError, match=r"prompts \[1\] are empty"):
        sampling.generate(
            CONFIG, params, [[1], []], sampling.SamplingConfig(), rng=jax.random.key(0)
        )
