"""Worker for tests/multiprocess_test.py: one SFT stage, in one of N local processes."""

import sys

import jax


def main(process_id: int, num_processes: int, port: str, data_dir: str, workdir: str):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if num_processes > 1:
        jax.distributed.initialize(
            coordinator_address=f"localhost:{port}",
            num_processes=num_processes,
            process_id=process_id,
        )
    from ropo_jax import models
    from ropo_jax.data.loader import load_preference_data
    from ropo_jax.parallel import sharding
    from ropo_jax.training import loop as trainer
    from ropo_jax.training import metrics
    from ropo_jax.training import step as train

    data, _ = load_preference_data(data_dir)
    config = models.ModelConfig.preset("tiny", vocab_size=64)
    mesh = sharding.make_mesh((-1, 1, 1))
    params = models.init_params(config, jax.random.key(0))
    params = jax.device_put(
        params, sharding.tree_shardings(mesh, models.param_logical_axes(config), params)
    )
    stage = trainer.StageConfig(
        name="sft", kind="sft", epochs=1, batch_size=16, learning_rate=1e-3, log_every=1
    )
    writer = metrics.MetricsWriter(workdir, tensorboard=False)
    trainer.run_stage(
        stage, train.StepConfig(), config, params, data, workdir=workdir, writer=writer, mesh=mesh
    )


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
