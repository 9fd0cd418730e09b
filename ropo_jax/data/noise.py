"""Label-noise models of docs/method.md §4.2, applied at load time and keyed by
``(seed, example id)``.

Every example draws one uniform ``u = hash(seed, id) / 2**64`` (BLAKE2b, so it is the same on every
process, machine and run, and independent of the example's position); the pair is flipped when
``u < p_i``, its flip probability under the model:

- ``symmetric``: ``p_i = rate`` (the paper's artificial noise);
- ``bradley_terry``: ``p_i = σ(−m_i / temperature)`` with the gold margin
  ``m_i = score_chosen − score_rejected`` (annotators err on close calls); needs both scores;
- ``length_biased``: with probability ``rate`` the annotator picks the longer response (in
  tokens, before truncation): ``p_i = rate`` when the rejected response is longer, else 0;
- ``source_biased``: the stronger generator's response is labelled chosen regardless of score:
  ``p_i = rate`` (default 1) when the rejected response's source is stronger; needs
  ``source_chosen``/``source_rejected`` and a strength for each source (``source_strengths``,
  the config key ``noise.source_strengths``; ``DEFAULT_SOURCE_STRENGTHS`` cover Alpaca
  Comparison's generators and the synthetic task's).

With ``exact`` (``config.noise.exact``) the number of flips is fixed instead of drawn: the
``round(rate · N_e)`` eligible pairs (``p_i > 0``; all N for symmetric noise) with the smallest
uniforms are flipped, so the realised rate is the nominal one (up to rounding) while the choice
stays keyed by ``(seed, id)``. At a few hundred pairs a Bernoulli draw at 40 % realises anywhere
from about 0.32 to 0.47; exact counts remove that spread from seed-to-seed comparisons. It needs
one flip probability shared by every eligible pair (symmetric, length_biased, source_biased).

The stored labels are kept; the result is the flip mask ``is_flipped`` (true label = stored,
noisy label = stored XOR flip) and the realised flip rate.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from ropo_jax.data.errors import DataError

KINDS = ("none", "symmetric", "bradley_terry", "length_biased", "source_biased")

# Generator strengths for source_biased noise: Alpaca Comparison's three generators and the
# synthetic task's three. Higher is stronger.
DEFAULT_SOURCE_STRENGTHS = (
    ("gpt4", 3.0),
    ("text-davinci-003", 2.0),
    ("icm-1.3b", 1.0),
    ("strong", 3.0),
    ("medium", 2.0),
    ("weak", 1.0),
)


@dataclasses.dataclass(frozen=True)
class NoiseConfig:
    kind: str = "none"
    rate: float = 0.0
    seed: int = 0
    temperature: float = 1.0  # bradley_terry
    exact: bool = False  # flip exactly round(rate · eligible) pairs (see the module docstring)
    source_strengths: tuple[tuple[str, float], ...] = DEFAULT_SOURCE_STRENGTHS

    def __post_init__(self):
        if self.kind not in KINDS:
            raise DataError(f"noise kind {self.kind!r} is unknown; expected one of {KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise DataError(f"noise rate {self.rate} must lie in [0, 1]")
        if self.temperature <= 0:
            raise DataError(f"noise temperature {self.temperature} must be positive")
        if self.exact and self.kind == "bradley_terry":
            raise DataError(
                "noise.exact needs one flip probability for every eligible pair; bradley_terry's "
                "differs per pair: use exact=False with it"
            )


@dataclasses.dataclass(frozen=True)
class NoiseResult:
    is_flipped: np.ndarray  # bool [N]
    flip_probability: np.ndarray  # float64 [N]

    @property
    def realised_rate(self) -> float:
        return float(self.is_flipped.mean()) if self.is_flipped.size else 0.0

    @property
    def expected_rate(self) -> float:
        return float(self.flip_probability.mean()) if self.flip_probability.size else 0.0


def example_uniforms(seed: int, ids, stream: str = "label_noise") -> np.ndarray:
    """float64 [N] in [0, 1): a pure function of (seed, stream, id)."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, example_id in enumerate(ids):
        digest = hashlib.blake2b(f"{seed}\0{stream}\0{example_id}".encode(), digest_size=8)
        out[i] = int.from_bytes(digest.digest(), "little") / 2.0**64
    return out


def flip_probabilities(
    config: NoiseConfig,
    *,
    ids,
    score_chosen=None,
    score_rejected=None,
    chosen_lengths=None,
    rejected_lengths=None,
    source_chosen=None,
    source_rejected=None,
) -> np.ndarray:
    n = len(ids)
    if config.kind == "none":
        return np.zeros(n)
    if config.kind == "symmetric":
        return np.full(n, config.rate)
    if config.kind == "bradley_terry":
        sc = _floats(score_chosen, n, "score_chosen", ids)
        sr = _floats(score_rejected, n, "score_rejected", ids)
        return 1.0 / (1.0 + np.exp((sc - sr) / config.temperature))
    if config.kind == "length_biased":
        longer = np.asarray(rejected_lengths) > np.asarray(chosen_lengths)
        return np.where(longer, config.rate, 0.0)
    strengths = dict(config.source_strengths)
    sc = _strengths(source_chosen, n, strengths, ids)
    sr = _strengths(source_rejected, n, strengths, ids)
    return np.where(sr > sc, config.rate, 0.0)


def _floats(values, n, name, ids) -> np.ndarray:
    array = np.array([np.nan if v is None else v for v in (values or [None] * n)], np.float64)
    missing = np.flatnonzero(np.isnan(array))
    if missing.size:
        raise DataError(
            f"bradley_terry noise needs '{name}' for every example; {missing.size} "
            f"lack it (first id {ids[missing[0]]!r}); use another noise kind"
        )
    return array


def _strengths(sources, n, strengths, ids) -> np.ndarray:
    sources = sources or [None] * n
    unknown = sorted({str(s) for s in sources if s not in strengths})
    if unknown:
        raise DataError(
            f"source_biased noise: no strength for source(s) {unknown} (e.g. example "
            f"{ids[[s not in strengths for s in sources].index(True)]!r}); the data "
            "needs source_chosen/source_rejected, and config.noise.source_strengths a strength "
            "for each source"
        )
    return np.array([strengths[s] for s in sources], dtype=np.float64)


def apply_noise(config: NoiseConfig, **fields) -> NoiseResult:
    """Flip mask for the examples described by ``fields`` (see :func:`flip_probabilities`)."""
    probability = flip_probabilities(config, **fields)
    if config.kind == "none":
        return NoiseResult(np.zeros(len(fields["ids"]), bool), probability)
    uniforms = example_uniforms(config.seed, fields["ids"])
    if config.exact:
        return NoiseResult(_exact_flips(uniforms, probability), probability)
    return NoiseResult(uniforms < probability, probability)


def _exact_flips(uniforms_N: np.ndarray, probability_N: np.ndarray) -> np.ndarray:
    """bool [N]: the ``round(p · N_e)`` eligible examples with the smallest uniforms, where
    ``p`` is the eligible examples' shared flip probability."""
    eligible_N = probability_N > 0
    is_flipped_N = np.zeros(len(uniforms_N), bool)
    if not eligible_N.any():
        return is_flipped_N
    (p,) = np.unique(probability_N[eligible_N])  # one value: checked by NoiseConfig
    eligible_idx = np.flatnonzero(eligible_N)
    count = int(np.floor(p * eligible_idx.size + 0.5))  # round half up, not to even
    # A stable sort, so ties (never met in practice with 64-bit hashes) go to the earlier index.
    order = np.argsort(uniforms_N[eligible_idx], kind="stable")
    is_flipped_N[eligible_idx[order[:count]]] = True
    return is_flipped_N


def noise_data(data, config: NoiseConfig):
    """``(data with is_flipped set, NoiseResult)`` for a :class:`PreferenceData`."""
    result = apply_noise(
        config,
        ids=data.ids,
        score_chosen=data.column("score_chosen"),
        score_rejected=data.column("score_rejected"),
        chosen_lengths=data.original_lengths[:, 1],
        rejected_lengths=data.original_lengths[:, 2],
        source_chosen=data.column("source_chosen"),
        source_rejected=data.column("source_rejected"),
    )
    return data.with_flips(result.is_flipped), result
