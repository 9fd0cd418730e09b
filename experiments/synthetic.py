"""The controlled noisy-preference benchmark: the synthetic topic-and-length task with a known
gold reward (ropo_jax/synthetic/), a tiny Llama, SFT on mediocre demonstrations, gold-labelled
pairs, label noise, preference training by ``method``, and evaluation (docs/RESULTS.md).

    python -m ropo_jax.main --config=experiments/synthetic.py:quick --workdir=runs/dpo \
        --config.method=dpo --config.noise.kind=symmetric --config.noise.rate=0.4 --config.seed=0

Presets (the ``:ARG``):

- ``regime``: the memorisation regime — 384 distinct prompts (a quarter held out), ~3 pairs
  per training prompt, 2 rounds × 4 epochs at a constant learning rate, where DPO fits most
  flipped labels (~30 s per run on a 2-core CPU); ROPO-full's rejection sampling as the paper
  describes it (K samples ranked by the summed implicit reward);
- ``quick`` (the quickstart's): ``regime`` with the rejection-sampling default chosen on it
  (re-orient the discarded pairs the model contradicts by β·h > 0.5; docs/ropo.md);
- ``quick_v1``: the earlier benchmark (24 prompts shared by training and evaluation, 2 × 1
  epoch with cosine decay; DPO fits few flipped labels), kept to reproduce docs/RESULTS.md's
  earlier tables;
- ``smoke`` (seconds, for tests): the one toy size every smoke run shares — experiments/smoke.py
  (this preset with frequent checkpoints), experiments/sft.py:smoke and the sweeps' ``smoke``
  variants all build on it;
- ``full`` (the earlier benchmark at 4× the data).
"""

import ml_collections

from ropo_jax.config.defaults import base_config

# The benchmark of the memorisation regime (see docs/RESULTS.md): hundreds of distinct prompts
# (8 topics × 6 lengths × 8 keywords = 384; a quarter held out for evaluation only), about three
# pairs per training prompt, and training long enough, at a constant learning rate, for DPO to
# fit most flipped labels.
REGIME_TASK = dict(num_topics=8, words_per_topic=8, min_length=3, max_length=8, num_keywords=8)
PRESETS = {
    "smoke": dict(sft=256, pairs=256, test=64, prompts=32, sft_epochs=1.0, epochs=1.0, rounds=2),
    # The earlier benchmark restarted the optimizer (warmup and decay) every round; pinned so
    # that its tables in docs/RESULTS.md reproduce.
    "quick_v1": dict(
        sft=1024,
        pairs=1024,
        test=256,
        prompts=128,
        sft_epochs=2.0,
        epochs=1.0,
        rounds=2,
        restart_optimizer=True,
    ),
    "full": dict(
        sft=4096,
        pairs=4096,
        test=512,
        prompts=256,
        sft_epochs=2.0,
        epochs=1.0,
        rounds=3,
        restart_optimizer=True,
    ),
    "regime": dict(
        sft=2048,
        pairs=1024,
        test=256,
        prompts=96,
        sft_epochs=2.0,
        epochs=4.0,
        rounds=2,
        task=REGIME_TASK,
        heldout=0.25,
        schedule="constant",
        samples=4,
    ),
}
# The quickstart's preset: the regime with the rejection-sampling default chosen by evidence,
# re-orienting the discarded pairs the model contradicts by β·h > 0.5, the one variant whose
# pairs agree with the gold reward ≥ 75 % on seeds not used to choose it (docs/RESULTS.md,
# experiments/sweeps/regime_rs.py). ``regime`` keeps the paper's reading (samples ranked by
# the summed implicit reward), which its sweeps measured.
PRESETS["quick"] = dict(
    PRESETS["regime"],
    rs=dict(include_original=True, selection="reorient_original", min_margin=0.5),
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    preset = arg or "quick"
    if preset not in PRESETS:
        raise ValueError(f"experiments/synthetic.py:{preset}: choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    c = base_config()
    c.task = "synthetic"
    c.method = "dpo"
    c.synthetic = ml_collections.ConfigDict(
        dict(
            data_seed=0,  # the data set is fixed across methods and seeds; seed varies training
            task=p.get("task", dict(num_topics=4, words_per_topic=6, min_length=3, max_length=8)),
            data=dict(
                num_sft=p["sft"],
                num_train_pairs=p["pairs"],
                num_test_pairs=p["test"],
                num_eval_prompts=p["prompts"],
                heldout_prompt_fraction=p.get("heldout", 0.0),
            ),
        )
    )
    c.noise.update(kind="symmetric", rate=0.2, seed=0)
    c.model.preset = "tiny"
    c.sft.update(epochs=p["sft_epochs"], batch_size=32, learning_rate=3e-3, warmup_ratio=0.05)
    c.sft.update(log_every=20, checkpoint_every=200)
    c.train.update(batch_size=32, learning_rate=1e-3, warmup_ratio=0.05, log_every=10)
    c.train.checkpoint_every = 200
    c.ropo.update(num_rounds=p["rounds"], epochs_per_round=p["epochs"], filter_ratio=0.2)
    c.ropo.restart_optimizer = p.get("restart_optimizer", False)
    c.ropo.rs.update(enabled=True, num_candidates=4, max_new_tokens=12, **p.get("rs", {}))
    c.eval.update(batch_size=128, max_new_tokens=12, generate_batch_size=64, temperature=0.7)
    c.train.schedule = p.get("schedule", "cosine")
    c.eval.samples_per_prompt = p.get("samples", 1)
    c.eval.dynamics_prompts = p["prompts"]  # every evaluation prompt, one sample each
    return c
