"""A controlled preference task with a known gold reward (the embedded default benchmark)."""
