"""Verifiable instructions: natural-language prompts whose gold reward a program computes
(docs/method.md §4.4). Pure Python; text in, text out.

A prompt asks for a short answer on a topic and adds constraints a checker can verify, e.g.

    Write one sentence about the ocean. Use the word "blue". Use at most 12 words.

Each constraint scores a response in [0, 1] (graded where it can be, so two responses rarely
tie); the gold reward is their mean:

    r(x, y) = (1/|C(x)|) Σ_{c ∈ C(x)} s_c(y)

- ``topic``: the answer mentions the prompt's topic word (1 or 0) — every prompt has it;
- ``include``: ``Use the word "W".`` — W appears as a word (1 or 0);
- ``max_words``: ``Use at most N words.`` — 1 up to N words, then 1 − (n − N)/N, floored at 0;
- ``lowercase``: ``Write in lowercase letters only.`` — the fraction of letters in lower case;
- ``question``: ``End your answer with a question.`` — the last character is "?" (1 or 0);
- ``no_commas``: ``Do not use any commas.`` — 1 − ½ · commas, floored at 0;
- ``start_with``: ``Start your answer with the word "W".`` — the first word is W (1 or 0).

The constraints are read back from the prompt's text (``parse``), so the reward is a function of
the two strings alone and works on a prompt decoded from its tokens, chat template included.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

TOPICS = {
    # topic → (how the prompt names it, the word the answer must mention, words to include)
    "ocean": ("the ocean", "ocean", ("blue", "waves", "deep", "salt")),
    "coffee": ("coffee", "coffee", ("morning", "cup", "bitter", "warm")),
    "mountains": ("mountains", "mountain", ("snow", "climb", "peak", "high")),
    "cats": ("cats", "cat", ("soft", "sleep", "play", "quiet")),
    "rain": ("rain", "rain", ("clouds", "wet", "umbrella", "cool")),
    "books": ("books", "book", ("read", "story", "page", "library")),
    "music": ("music", "music", ("song", "dance", "sound", "happy")),
    "gardens": ("gardens", "garden", ("flowers", "green", "grow", "sun")),
    "trains": ("trains", "train", ("fast", "travel", "station", "track")),
    "bread": ("bread", "bread", ("bake", "fresh", "oven", "butter")),
    "winter": ("winter", "winter", ("cold", "ice", "snow", "fire")),
    "stars": ("the stars", "star", ("night", "bright", "sky", "light")),
}
TASKS = (
    "Write one sentence about {topic}.",
    "Describe {topic} in a few words.",
    "Tell me something about {topic}.",
    "Give a short fact about {topic}.",
)
START_WORDS = ("Yes", "Today", "Many", "The", "I")
MAX_WORDS = (6, 8, 10, 12)
KINDS = ("include", "max_words", "lowercase", "question", "no_commas", "start_with")


@dataclasses.dataclass(frozen=True)
class Constraint:
    kind: str  # "topic" or one of KINDS
    arg: str = ""  # the word (topic, include, start_with) or the word limit (max_words)

    @property
    def text(self) -> str:
        return {
            "topic": "",
            "include": f'Use the word "{self.arg}".',
            "max_words": f"Use at most {self.arg} words.",
            "lowercase": "Write in lowercase letters only.",
            "question": "End your answer with a question.",
            "no_commas": "Do not use any commas.",
            "start_with": f'Start your answer with the word "{self.arg}".',
        }[self.kind]


_PATTERNS = {
    "include": re.compile(r'Use the word "([^"]+)"\.'),
    "max_words": re.compile(r"Use at most (\d+) words\."),
    "lowercase": re.compile(r"Write in lowercase letters only\."),
    "question": re.compile(r"End your answer with a question\."),
    "no_commas": re.compile(r"Do not use any commas\."),
    "start_with": re.compile(r'Start your answer with the word "([^"]+)"\.'),
}
_WORD = re.compile(r"[A-Za-z']+")


@dataclasses.dataclass(frozen=True)
class Instruction:
    task: str  # one of TASKS, formatted
    topic: str  # a key of TOPICS
    constraints: tuple[Constraint, ...]  # without the implicit topic constraint

    @property
    def text(self) -> str:
        return " ".join([self.task, *(c.text for c in self.constraints)])


def sample_instructions(rng: np.random.Generator, count: int, *, per_prompt: int = 2):
    """``count`` distinct instructions, each a task on a topic with ``per_prompt`` constraints
    of different kinds (raises if the space has fewer than ``count``)."""
    seen: dict[str, Instruction] = {}
    topics = sorted(TOPICS)
    for _ in range(count * 50):
        if len(seen) == count:
            break
        topic = topics[rng.integers(len(topics))]
        name, _, words = TOPICS[topic]
        task = TASKS[rng.integers(len(TASKS))].format(topic=name)
        kinds = rng.choice(len(KINDS), size=per_prompt, replace=False)
        constraints = []
        for k in sorted(int(k) for k in kinds):
            kind = KINDS[k]
            if kind == "include":
                arg = words[rng.integers(len(words))]
            elif kind == "max_words":
                arg = str(MAX_WORDS[rng.integers(len(MAX_WORDS))])
            elif kind == "start_with":
                arg = START_WORDS[rng.integers(len(START_WORDS))]
            else:
                arg = ""
            constraints.append(Constraint(kind, arg))
        instruction = Instruction(task, topic, tuple(constraints))
        seen.setdefault(instruction.text, instruction)
    if len(seen) < count:
        raise ValueError(f"only {len(seen)} distinct instructions; ask for fewer than {count}")
    return list(seen.values())


def parse(prompt: str) -> list[Constraint]:
    """The constraints a prompt's text states, the topic's first (module docstring)."""
    constraints = []
    for name, word, _ in TOPICS.values():
        if any(task.format(topic=name) in prompt for task in TASKS):
            constraints.append(Constraint("topic", word))
            break
    for kind, pattern in _PATTERNS.items():
        match = pattern.search(prompt)
        if match:
            constraints.append(Constraint(kind, match.group(1) if match.groups() else ""))
    return constraints


def words(text: str) -> list[str]:
    return _WORD.findall(text)


def score(constraint: Constraint, response: str) -> float:
    """s_c(y) in [0, 1] (module docstring)."""
    kind, arg = constraint.kind, constraint.arg
    tokens = [w.lower() for w in words(response)]
    if kind == "topic":
        # "cat" also counts as "cats": a mention, not an exact form.
        return float(any(t.startswith(arg) for t in tokens))
    if kind == "include":
        return float(arg.lower() in tokens)
    if kind == "max_words":
        limit = int(arg)
        return float(max(0.0, 1.0 - max(0, len(tokens) - limit) / limit))
    if kind == "lowercase":
        letters = [ch for ch in response if ch.isalpha()]
        return sum(ch.islower() for ch in letters) / len(letters) if letters else 0.0
    if kind == "question":
        return float(response.rstrip().endswith("?"))
    if kind == "no_commas":
        return max(0.0, 1.0 - 0.5 * response.count(","))
    if kind == "start_with":
        return float(bool(tokens) and tokens[0] == arg.lower())
    raise ValueError(f"unknown constraint kind {kind!r}")


def gold_reward(prompt: str, response: str) -> float:
    """r(x, y): the mean constraint score; 0 for an empty response."""
    constraints = parse(prompt)
    if not constraints:
        raise ValueError(f"no verifiable instruction in the prompt {prompt[:80]!r}")
    if not response.strip():
        return 0.0
    return float(np.mean([score(c, response) for c in constraints]))
