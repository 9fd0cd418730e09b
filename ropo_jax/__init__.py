"""ropo_jax: robust preference optimization (ROPO, DPO and noise-robust baselines) in JAX.

Submodules are imported explicitly (``from ropo_jax import losses``); importing the package has
no side effects.
"""

__version__ = "0.1.0"
