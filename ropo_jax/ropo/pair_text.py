"""Pairs as text, for the files people read: a tokenizer's decoding without BOS/EOS/padding,
and on the synthetic task the gold reward of a response (the suspects list and the quality
record of rejection-sampled pairs, docs/ropo.md "What each round writes")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class PairText:
    decode: Callable[[list[int]], str]
    special_ids: frozenset[int]
    # (prompt text, response text) -> gold reward; None off the synthetic task.
    gold_reward: Callable[[str, str], float] | None = None

    @classmethod
    def from_tokenizer(cls, tokenizer, gold_reward=None) -> PairText:
        specials = {tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id} - {None}
        return cls(tokenizer.decode, frozenset(int(i) for i in specials), gold_reward)

    def content(self, ids: Sequence[int]) -> list[int]:
        """The token ids without BOS, EOS and padding."""
        return [int(i) for i in ids if int(i) not in self.special_ids]

    def text(self, ids: Sequence[int]) -> str:
        return self.decode(self.content(ids)).strip()

    def gold(self, prompt_ids: Sequence[int], response_ids: Sequence[int]) -> float | None:
        if self.gold_reward is None:
            return None
        return float(self.gold_reward(self.text(prompt_ids), self.text(response_ids)))


def pair_quality(pair_text: PairText | None, pairs: Sequence[tuple]) -> dict:
    """``{"pairs", "gold_agreement", "mean_length_gap"}`` of (prompt, chosen, rejected) token
    lists: how many, the fraction whose chosen response has the higher gold reward (ties count
    ½; None without a gold reward) and the mean length difference chosen − rejected in tokens
    (BOS/EOS/padding not counted)."""
    if not pairs:
        return {"pairs": 0, "gold_agreement": None, "mean_length_gap": None}
    content = pair_text.content if pair_text is not None else list
    gaps = [len(content(c)) - len(content(r)) for _, c, r in pairs]
    agreement = None
    if pair_text is not None and pair_text.gold_reward is not None:
        wins = []
        for prompt, chosen, rejected in pairs:
            gold_c, gold_r = pair_text.gold(prompt, chosen), pair_text.gold(prompt, rejected)
            wins.append(1.0 if gold_c > gold_r else 0.5 if gold_c == gold_r else 0.0)
        agreement = float(np.mean(wins))
    return {
        "pairs": len(pairs),
        "gold_agreement": agreement,
        "mean_length_gap": float(np.mean(gaps)),
    }
