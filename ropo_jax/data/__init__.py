"""The preference data pipeline: readers, tokenization, prepared data sets, noise, batches.

- ``python -m ropo_jax.data.prepare`` (:mod:`.prepare`): files → prepared directory;
- :func:`load_prepared` / :func:`load_preference_data`: a prepared data set in memory (with
  label noise applied, docs/method.md §4.1), for scoring every example;
- :func:`make_loader`: checkpointable grain iterator over batches in the row format of
  :mod:`.batching` (padded, bucketed or packed);
- :mod:`.noise`: the noise models.
"""

from ropo_jax.data.batching import PAIR_KEYS, TOKEN_KEYS, collate, pack_rows, padding_efficiency
from ropo_jax.data.errors import DataError, Problem, ProblemLog
from ropo_jax.data.example import Message, PreferenceExample
from ropo_jax.data.loader import MODES, BatchPlan, load_preference_data, make_loader
from ropo_jax.data.noise import KINDS as NOISE_KINDS
from ropo_jax.data.noise import NoiseConfig, NoiseResult, apply_noise, noise_data
from ropo_jax.data.prepared import PreferenceData, load_prepared

__all__ = [
    "MODES",
    "NOISE_KINDS",
    "PAIR_KEYS",
    "TOKEN_KEYS",
    "BatchPlan",
    "DataError",
    "Message",
    "NoiseConfig",
    "NoiseResult",
    "PreferenceData",
    "PreferenceExample",
    "Problem",
    "ProblemLog",
    "apply_noise",
    "collate",
    "load_preference_data",
    "load_prepared",
    "make_loader",
    "noise_data",
    "pack_rows",
    "padding_efficiency",
]
