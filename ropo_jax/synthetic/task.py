"""The synthetic "topic and length" task: prompts, a deterministic gold reward, and response
generators of tunable quality. NumPy only; text in, text out.

A prompt asks for a response on a topic with a target length, e.g. ``topic T2 length 6``. A
response is a sequence of words. Its gold reward is graded (not right/wrong):

    r(x, y) = mean_w score(w | topic) − λ · |len(y) − L| / L

with score +1 for the topic's own words, −1 for "bad" words, −0.25 for other topics' words and
0 for filler. The length term means that annotators who prefer longer responses (the
``length_biased`` noise model of docs/method.md) mislabel pairs in a way the gold reward can
detect. The best response is exactly L on-topic words (r = 1).

With ``num_keywords > 0`` a prompt also names a keyword, one of its topic's first
``num_keywords`` words (``topic T2 length 6 with g2_3``), and a response without it loses
``keyword_weight``: topics × lengths × keywords distinct prompts (hundreds), so a flipped pair
is not simply outvoted by many clean pairs on the very same prompt. The best response is still
L on-topic words, the keyword among them (r = 1).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    num_topics: int = 4
    words_per_topic: int = 6
    num_bad_words: int = 6
    num_filler_words: int = 6
    min_length: int = 3
    max_length: int = 8
    length_weight: float = 0.5  # λ
    off_topic_score: float = -0.25
    num_keywords: int = 0  # 0: prompts name no keyword
    keyword_weight: float = 0.5  # the penalty of a response without the prompt's keyword

    def __post_init__(self):
        if not 0 <= self.num_keywords <= self.words_per_topic:
            raise ValueError(
                f"num_keywords={self.num_keywords} must lie in [0, words_per_topic="
                f"{self.words_per_topic}]"
            )


@dataclasses.dataclass(frozen=True)
class Prompt:
    topic: int
    length: int
    keyword: int | None = None  # index of the topic word the response must contain

    @property
    def text(self) -> str:
        base = f"topic T{self.topic} length {self.length}"
        return base if self.keyword is None else f"{base} with g{self.topic}_{self.keyword}"

    @property
    def keyword_word(self) -> str | None:
        return None if self.keyword is None else f"g{self.topic}_{self.keyword}"


def topic_words(config: TaskConfig, topic: int) -> list[str]:
    return [f"g{topic}_{j}" for j in range(config.words_per_topic)]


def bad_words(config: TaskConfig) -> list[str]:
    return [f"bad{j}" for j in range(config.num_bad_words)]


def filler_words(config: TaskConfig) -> list[str]:
    return [f"f{j}" for j in range(config.num_filler_words)]


def vocabulary(config: TaskConfig) -> list[str]:
    """Every word of the task, specials first (ids 0..3), in a fixed order."""
    words = [*SPECIAL_TOKENS, "topic", "length"] + (["with"] if config.num_keywords else [])
    words += [f"T{k}" for k in range(config.num_topics)]
    words += [str(n) for n in range(1, config.max_length + 1)]
    for k in range(config.num_topics):
        words += topic_words(config, k)
    return words + bad_words(config) + filler_words(config)


def parse_prompt(text: str) -> Prompt:
    parts = text.split()
    if (
        len(parts) not in (4, 6)
        or parts[0] != "topic"
        or parts[2] != "length"
        or not parts[1].startswith("T")
        or (len(parts) == 6 and (parts[4] != "with" or "_" not in parts[5]))
    ):
        raise ValueError(
            f"not a task prompt (want 'topic T<k> length <n>[ with g<k>_<j>]'): {text!r}"
        )
    keyword = int(parts[5].rsplit("_", 1)[1]) if len(parts) == 6 else None
    return Prompt(topic=int(parts[1][1:]), length=int(parts[3]), keyword=keyword)


def word_score(config: TaskConfig, word: str, topic: int) -> float:
    if word.startswith("g") and "_" in word:
        return 1.0 if word.startswith(f"g{topic}_") else config.off_topic_score
    if word.startswith("bad"):
        return -1.0
    return 0.0


def gold_reward(config: TaskConfig, prompt: str | Prompt, response: str) -> float:
    """The deterministic gold reward r(x, y) of the module docstring. Empty responses get the
    worst possible value, −1 − λ."""
    prompt = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    words = response.split()
    if not words:
        return -1.0 - config.length_weight
    quality = float(np.mean([word_score(config, w, prompt.topic) for w in words]))
    length_penalty = config.length_weight * abs(len(words) - prompt.length) / prompt.length
    missing_keyword = prompt.keyword is not None and prompt.keyword_word not in words
    return quality - length_penalty - config.keyword_weight * missing_keyword


def all_prompts(config: TaskConfig) -> list[Prompt]:
    """Every distinct prompt of the task, in a fixed order."""
    keywords = range(config.num_keywords) if config.num_keywords else [None]
    return [
        Prompt(t, n, k)
        for t in range(config.num_topics)
        for n in range(config.min_length, config.max_length + 1)
        for k in keywords
    ]


def is_heldout(prompt: Prompt, fraction: float) -> bool:
    """A fixed, seed-independent split of the prompt space: about ``fraction`` of the distinct
    prompts are held out (evaluation only), by a hash of the prompt text."""
    digest = int(hashlib.sha1(prompt.text.encode()).hexdigest()[:8], 16)
    return digest / 0xFFFFFFFF < fraction


def sample_prompts(
    config: TaskConfig, rng: np.random.Generator, n: int, pool: list[Prompt] | None = None
) -> list[Prompt]:
    """``n`` prompts drawn uniformly from ``pool`` (default: every prompt of the task). Without
    keywords and a pool, the draw is the original one (topic, then length), so data sets of
    earlier presets are unchanged."""
    if pool is not None:
        return [pool[int(i)] for i in rng.integers(0, len(pool), size=n)]
    topics = rng.integers(0, config.num_topics, size=n)
    lengths = rng.integers(config.min_length, config.max_length + 1, size=n)
    if not config.num_keywords:
        return [Prompt(int(t), int(L)) for t, L in zip(topics, lengths, strict=True)]
    keywords = rng.integers(0, config.num_keywords, size=n)
    return [
        Prompt(int(t), int(L), int(k)) for t, L, k in zip(topics, lengths, keywords, strict=True)
    ]


def generate_response(
    config: TaskConfig, prompt: Prompt, quality: float, rng: np.random.Generator
) -> str:
    """A response of tunable quality q ∈ [0, 1]: each word is on-topic with probability q, else
    bad / filler / another topic's word in equal parts; the length misses the target by a
    normal error of standard deviation 3·(1 − q) words."""
    length_error = rng.normal(0.0, 3.0 * (1.0 - quality))
    length = int(np.clip(round(prompt.length + length_error), 1, config.max_length + 3))
    other_topics = [k for k in range(config.num_topics) if k != prompt.topic]
    words = []
    for _ in range(length):
        u = rng.random()
        if u < quality:
            pool = topic_words(config, prompt.topic)
        else:
            kind = rng.integers(0, 3)
            if kind == 0:
                pool = bad_words(config)
            elif kind == 1:
                pool = filler_words(config)
            else:
                pool = topic_words(config, int(rng.choice(other_topics)))
        words.append(str(rng.choice(pool)))
    if prompt.keyword is not None and rng.random() < quality:
        words[int(rng.integers(0, length))] = prompt.keyword_word  # a good generator obeys
    return " ".join(words)


def example_id(*parts) -> str:
    """A stable id from the parts that define an example (same on every machine and process)."""
    return hashlib.sha1("\x1f".join(map(str, parts)).encode()).hexdigest()[:16]
