"""``python -m ropo_jax.suspects --workdir=DIR [--round=T] [--top=N]``: the pairs a run set aside
as suspected label noise, most contradicted first (the command; the listing itself is
``ropo_jax.ropo.suspects``)."""

import sys

from ropo_jax.ropo.suspects import main

if __name__ == "__main__":
    sys.exit(main())
