"""Parallelism: the device mesh and the logical-axis rules that shard parameters and batches
(``sharding``), and the coordination of processes on a multi-host run — who writes, barriers,
agreement (``processes``)."""
