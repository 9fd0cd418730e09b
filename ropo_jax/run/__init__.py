"""One run from a validated config to its results: the task that supplies the data and the
evaluation (``tasks``) and the stages in order — data, SFT, reference log-probs, the ROPO
rounds, evaluation, export (``pipeline``). ``ropo_jax.main`` is the command that calls it."""
