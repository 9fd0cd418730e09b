"""Suspected mislabels (ropo_jax/ropo/suspects.py) and the quality record of rejection-sampled pairs
(ropo_jax/ropo/pair_text.py): orientation, order, the command's output and its errors."""

import subprocess
import sys

import numpy as np
import pytest

from ropo_jax.data.prepared import PreferenceData
from ropo_jax.ropo import pair_text, suspects

# A word per token id: 0 pad, 1 bos, 2 eos; prompts "p<k>", responses of "good"/"bad" words.
WORDS = ["<pad>", "<bos>", "<eos>", "p1", "p2", "p3", "good", "bad"]


def _texts(gold=True):
    def decode(ids):
        return " ".join(WORDS[i] for i in ids)

    def reward(prompt, response):  # the gold reward: how many "good" words
        return float(response.split().count("good"))

    return pair_text.PairText(decode, frozenset({0, 1, 2}), reward if gold else None)


def _data(flips):
    prompts = [[1, 3], [1, 4], [1, 5]]
    chosen = [[6, 6, 2], [6, 2], [6, 6, 6, 2]]  # stored: chosen is the better response
    rejected = [[7, 2], [7, 7, 2], [7, 2]]
    data = PreferenceData.from_token_lists(["a", "b", "c"], prompts, chosen, rejected, manifest={})
    data.is_flipped = np.asarray(flips)
    return data


def test_records_are_the_discarded_pairs_most_contradicted_first_in_label_orientation():
    data = _data([False, True, False])
    margin_N, loss_N = np.array([-1.0, -3.0, 2.0]), np.array([1.5, 3.5, 0.1])
    rows = suspects.records(
        data, margin_N, loss_N, np.array([False, False, True]), _texts(), noise_applied=True
    )
    assert [r["id"] for r in rows] == ["b", "a"] and [r["rank"] for r in rows] == [1, 2]
    # "b" was flipped: its label calls the bad response chosen, and the gold reward says so.
    assert rows[0]["chosen"] == "bad bad" and rows[0]["rejected"] == "good"
    assert rows[0]["label_flipped_by_noise"] is True and rows[1]["label_flipped_by_noise"] is False
    assert (rows[0]["gold_chosen"], rows[0]["gold_rejected"]) == (0.0, 1.0)
    assert rows[0]["prompt"] == "p2" and rows[0]["margin"] == -3.0 and rows[0]["loss"] == 3.5
    plain = suspects.records(
        data,
        margin_N,
        loss_N,
        np.array([True, False, True]),
        _texts(gold=False),
        noise_applied=False,
    )
    assert set(plain[0]) == {"rank", "id", "margin", "loss", "prompt", "chosen", "rejected"}


@pytest.mark.e2e
def test_the_command_prints_the_last_round_and_refuses_what_is_not_there(tmp_path):
    data = _data([False, False, True])
    for t, keep in ((1, [True, False, False]), (2, [False, True, True])):
        (tmp_path / f"round_{t}").mkdir()
        rows = suspects.records(
            data,
            np.array([0.5, -2.0, -1.0]),
            np.zeros(3),
            np.array(keep),
            _texts(),
            noise_applied=True,
        )
        suspects.write(str(tmp_path / f"round_{t}" / suspects.FILE), rows)

    def command(*args):
        return subprocess.run(
            [sys.executable, "-m", "ropo_jax.suspects", f"--workdir={tmp_path}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    out = command("--top=1")
    assert out.returncode == 0, out.stderr
    assert "round_2/suspects.jsonl: 1 discarded pairs" in out.stdout and "showing 1" in out.stdout
    assert "| 1 | a | 0.5 |" in out.stdout and "| True |" not in out.stdout
    out = command("--round=1")
    assert "2 discarded pairs" in out.stdout and "| 1 | b | -2 |" in out.stdout
    assert "| 2 | c | -1 | 0 | True |" in out.stdout  # flipped by the noise
    missing = command("--round=3")
    assert missing.returncode == 2 and "round_3/suspects.jsonl not found" in missing.stderr
    empty = subprocess.run(
        [sys.executable, "-m", "ropo_jax.suspects", f"--workdir={tmp_path / 'round_1'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert empty.returncode == 2 and "no round_*/suspects.jsonl" in empty.stderr


def test_pair_quality_counts_gold_agreement_and_the_length_gap():
    texts = _texts()
    pairs = [
        ([1, 3], [6, 6, 2], [7, 2]),  # agrees, +1 token
        ([1, 3], [7, 7, 7, 2], [6, 2]),  # disagrees, +2
        ([1, 3], [7, 2], [7, 2]),  # a tie: ½
    ]
    quality = pair_text.pair_quality(texts, pairs)
    assert quality == {"pairs": 3, "gold_agreement": 0.5, "mean_length_gap": 1.0}
    assert pair_text.pair_quality(_texts(gold=False), pairs)["gold_agreement"] is None
    assert pair_text.pair_quality(texts, [])["pairs"] == 0
