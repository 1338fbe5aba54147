"""One training run under a distribution strategy, for the replica-invariance tests (run as a subprocess).

``python replica_worker.py CASE STRATEGY REPLICAS OUT.npz`` with CASE:

- ``mlp``, ``linear``: the cases of `portable_wgangp.check` (the ones `portable-wgangp check` runs on
  users' machines); saves the final weights and every step's logged metrics.
- ``mlp_executions``: the ``mlp`` case compiled with ``steps_per_execution=2`` (its 3 steps: a call of 2
  and a short one of 1).
- ``features``: an MLP WGAN-GP on 8×8 images with a generator EMA, the lazy penalty on every 4th critic
  update (an ``ops.cond`` with n_critic 2) and DiffAugment; saves the weights (the EMA's too) and logs.
- ``stream``: an MLP WGAN-GP on 8×8 RGB images streamed from the folder ``STREAM_FOLDER`` (an environment
  variable) by `sources.ImageFolderSource` with 2 reader threads; also saves the sorted indices of the
  files this process read to ``OUT.reads.npy``.
- ``elastic_start``, ``elastic_resume``, ``elastic_whole``: the ``mlp`` case's 3 steps saved as a
  checkpoint to ``ELASTIC_CHECKPOINT`` (an environment variable); that checkpoint loaded and trained 3
  more steps (the second pass over the same data); the 6 steps without a break. Each saves its final
  weights to OUT as ``w0``, ``w1``, ….
- ``preempt``: the ``mlp`` run for 4 epochs with `PreemptionCheckpoint`; the LAST process sends itself
  SIGTERM at step 4. Writes ``{"steps": steps run}`` as JSON to OUT, process 0 the checkpoint to
  OUT.keras, and exits with 128 + the signal.

Set KERAS_BACKEND (and, for torch, the torchrun variables) in the environment. The JAX device count must
be forced before jax is imported, hence a separate process.
"""

import os
import sys

CASE, STRATEGY, REPLICAS, OUT = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if os.environ.get("KERAS_BACKEND") == "jax":
    os.environ["XLA_FLAGS"] = (
        f"--xla_force_host_platform_device_count={os.environ.get('JAX_DEVICES_PER_PROCESS', 4)}"
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402
from tiny_nets import image_mlps  # noqa: E402

import portable_wgangp as pw  # noqa: E402
from portable_wgangp.check import MLP_GLOBAL_BATCH, MLP_LATENT, MLP_N_CRITIC, MLP_STEPS, mlp_run, train_case  # noqa: E402  # noqa: E402


def devices(count):
    if keras.backend.backend() == "tensorflow":
        return [f"/cpu:{i}" for i in range(count)]
    if keras.backend.backend() == "jax":
        return keras.distribution.list_devices()[:count]
    return None


def mlp_executions_run():
    """The ``mlp`` case, 2 generator steps per compiled call."""
    gan, x, batch_size = mlp_run()
    gan.compile(
        generator_optimizer=keras.optimizers.SGD(0.01),
        critic_optimizer=keras.optimizers.SGD(0.01),
        steps_per_execution=2,
    )
    return gan, x, batch_size


def features_run():
    """``(gan, x, global_batch)``: the training features on tiny images; fixed initial weights and data,
    SGD."""
    rng = np.random.default_rng(1)
    x = np.tanh(rng.normal(size=(MLP_GLOBAL_BATCH * MLP_N_CRITIC * MLP_STEPS, 8, 8, 1))).astype("float32")
    generator, critic = image_mlps((8, 8, 1), MLP_LATENT, rng)
    gan = pw.WGANGP(
        generator,
        critic,
        MLP_LATENT,
        n_critic=MLP_N_CRITIC,
        gp_weight=1.0,
        seed=7,
        ema_decay=0.9,
        gp_every=4,
        augment="translation,cutout,color",
    )
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    return gan, x, MLP_GLOBAL_BATCH


STREAMED = []  # the stream case's source


class RecordedReads:
    """A sample source that records which samples were read (from any reader thread)."""

    def __init__(self, source):
        self.source, self.reads = source, []
        self.sample_shape, self.labels, self.name = source.sample_shape, source.labels, source.name
        self.workers = source.workers

    def __len__(self):
        return len(self.source)

    def read(self, indices):
        self.reads.extend(int(i) for i in indices)
        return self.source.read(indices)


def stream_run():
    """``(gan, source, global_batch)``: a tiny MLP WGAN-GP with fixed initial weights on the images of
    ``STREAM_FOLDER``, SGD; the source records what it read."""
    from portable_wgangp import sources

    source = RecordedReads(sources.ImageFolderSource(os.environ["STREAM_FOLDER"], size=8, workers=2))
    STREAMED.append(source)
    rng = np.random.default_rng(2)
    generator, critic = image_mlps((8, 8, 3), MLP_LATENT, rng)
    gan = pw.WGANGP(generator, critic, MLP_LATENT, n_critic=MLP_N_CRITIC, gp_weight=1.0, seed=7)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    return gan, source, MLP_GLOBAL_BATCH


def preempt():
    """Train the mlp case with `PreemptionCheckpoint`; the last process is sent SIGTERM at step 4."""
    import json
    import signal

    from portable_wgangp.callbacks import PreemptionCheckpoint

    gan, x, batch_size = mlp_run()
    last = pw.distribution.process_index() == REPLICAS - 1  # one replica per process here
    steps = []

    class Count(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            steps.append(batch)
            if last and len(steps) == 4:
                os.kill(os.getpid(), signal.SIGTERM)

    preemption = PreemptionCheckpoint(OUT + ".keras", exit=False)
    gan.fit(x, batch_size=batch_size, epochs=4, shuffle=False, verbose=0, callbacks=[Count(), preemption])
    with open(OUT, "w") as file:
        json.dump({"steps": len(steps)}, file)
    sys.exit(128 + (preemption.received or 0))


def elastic(case):
    """Train the ``mlp`` case in pieces: 3 steps then a checkpoint, 3 steps from a checkpoint, or 6."""
    from portable_wgangp.callbacks import save_checkpoint

    gan, x, batch_size = mlp_run()
    if case == "elastic_resume":
        gan = keras.models.load_model(os.environ["ELASTIC_CHECKPOINT"])
    epochs = 2 if case == "elastic_whole" else 1
    gan.fit(x, batch_size=batch_size, epochs=epochs, shuffle=False, verbose=0)
    if case == "elastic_start":
        save_checkpoint(gan, os.environ["ELASTIC_CHECKPOINT"])
    np.savez(OUT, **{f"w{i}": np.asarray(w) for i, w in enumerate(gan.get_weights())})
    sys.exit(0)


def main():
    multi_process = "KERAS_DISTRIBUTION_JOB_ADDRESSES" in os.environ  # all global devices, found after start
    strategy_devices = (
        devices(REPLICAS) if STRATEGY in ("mirrored", "data_parallel") and not multi_process else None
    )
    with pw.distribute(STRATEGY, strategy_devices) as dist:
        assert dist.num_replicas == REPLICAS, (dist.num_replicas, REPLICAS)
        if CASE == "preempt":
            preempt()
        if CASE.startswith("elastic"):
            elastic(CASE)
        builders = {"features": features_run, "stream": stream_run, "mlp_executions": mlp_executions_run}
        run = train_case(CASE, builders.get(CASE))
        if CASE == "stream":
            np.save(OUT + ".reads.npy", np.unique(STREAMED[0].reads))
        assert getattr(run.model, "ddp_model", None) is None  # Keras 3.16's torch DDP wrapper: opted out
        np.savez(
            OUT, names=np.array(run.names), logs=run.logs, **{f"w{i}": w for i, w in enumerate(run.weights)}
        )


if __name__ == "__main__":
    main()
