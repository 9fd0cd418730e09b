"""Run configuration: the defaults every experiment file starts from (``defaults.base_config``),
the checks a config passes before any work (``validation``), and the command-line flag parser
of ``python -m ropo_jax.main`` (``flags``)."""
