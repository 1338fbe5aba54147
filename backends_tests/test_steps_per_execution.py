"""`steps_per_execution`: N generator steps per call of the compiled step give the weights and the logs of
N single steps, every step's logs reach the callbacks, and the logs cross to the host once per call.
(Two replicas: test_distribution.py.)"""

import json
import math

import keras
import numpy as np
import pytest
from tiny_nets import labelled_mlp

import portable_wgangp as pw
from portable_wgangp import cli, files, runs

STEPS = 7


def trained(n: int, *, conditional: bool = False, epochs: int = 1):
    """A small WGAN-GP trained for STEPS steps an epoch at ``n`` steps per call: (weights, every step's logs
    as the callbacks saw them, the model)."""
    keras.utils.set_random_seed(0)
    classes = 3 if conditional else None
    if conditional:
        generator, critic = labelled_mlp(2, 2, classes), labelled_mlp(2, 1, classes)
    else:
        generator, critic = pw.nets.mlp(2, 2, width=16, depth=2), pw.nets.mlp(2, 1, width=16, depth=2)
    gan = pw.WGANGP(
        generator,
        critic,
        2,
        n_critic=2,
        seed=1,
        num_classes=classes,
        ema_decay=0.9 if conditional else None,
        gp_every=3 if conditional else 1,  # not dividing n_critic: the penalty's ops.cond inside the loop
    )
    gan.compile(steps_per_execution=n)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 * 2 * STEPS, 2)).astype("float32")
    y = rng.integers(0, 3, size=len(x)).astype("int32") if conditional else None
    seen = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append((batch, dict(logs)))

    gan.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[Record()])
    return gan.get_weights(), seen, gan


@pytest.mark.parametrize(("n", "conditional"), [(3, False), (4, True)], ids=["3-plain", "4-conditional"])
def test_n_steps_per_call_give_the_weights_and_logs_of_single_steps(n, conditional):
    weights, seen, gan = trained(n, conditional=conditional, epochs=2)
    expected_weights, expected_seen, _ = trained(1, conditional=conditional, epochs=2)
    assert (
        int(gan.generator_optimizer.iterations) == 2 * STEPS
    )  # the short call of each epoch trained no more
    assert [batch for batch, _ in seen] == [batch for batch, _ in expected_seen] == [*range(STEPS)] * 2
    for (_, logs), (_, expected) in zip(seen, expected_seen):
        assert logs.keys() == expected.keys()
        for name in expected:
            assert logs[name] == pytest.approx(expected[name], rel=1e-6, abs=1e-6), name
            assert type(logs[name]) is float  # read to the host already: no callback reads the device
    for w, e in zip(weights, expected_weights):
        np.testing.assert_allclose(w, e, rtol=1e-6, atol=1e-6)


def test_the_non_finite_guard_names_the_first_non_finite_step_inside_a_call():
    linear_critic = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])  # passes a NaN on (no ReLU)
    gan = pw.WGANGP(pw.nets.mlp(2, 2, width=8, depth=1), linear_critic, 2, n_critic=1)
    gan.compile(steps_per_execution=4)

    def minibatches():  # step 6's minibatch (the second of the second call) holds a NaN
        for step in range(1, 100):
            batch = np.ones((8, 2), "float32")
            batch[0, 0] = np.nan if step == 6 else 1.0
            yield batch

    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(batch))
    with pytest.raises(FloatingPointError, match="at training step 6;"):
        gan.fit(minibatches(), steps_per_epoch=12, verbose=0, callbacks=[record])
    assert seen == [0, 1, 2, 3, 4]  # the guard runs first: no later callback saw step 6


SHORT = ["--steps", "10", "--batch-size", "16", "--width", "8", "--depth", "1", "--lr-decay", "constant"]


def _train(out, *extra) -> None:
    assert cli.main(["train", "--out", str(out), "--quiet", *SHORT, *extra]) == 0


def _weights(path) -> list:
    return keras.models.load_model(path).get_weights()


def test_cli_logs_every_step_checkpoints_at_call_ends_and_resumes_with_another_n(tmp_path):
    _train(tmp_path / "single", "--checkpoint-every", "4")
    _train(tmp_path / "calls", "--checkpoint-every", "4", "--steps-per-execution", "3")
    single = files.read_records(tmp_path / "single" / "metrics.jsonl")
    calls = files.read_records(tmp_path / "calls" / "metrics.jsonl")
    assert [r["step"] for r in calls] == [r["step"] for r in single] == list(range(1, 11))
    for record, expected in zip(calls, single):
        assert record == pytest.approx(expected, rel=1e-6, abs=1e-6)
    config = json.loads((tmp_path / "calls" / "config.json").read_text())
    assert config["steps_per_execution"] == 3
    for w, e in zip(
        _weights(tmp_path / "calls" / "checkpoint.keras"), _weights(tmp_path / "single" / "checkpoint.keras")
    ):
        np.testing.assert_allclose(w, e, rtol=1e-6, atol=1e-6)

    # Stopped at step 5 (a call of 3, then a short one of 2), resumed with 4 steps per call to step 10.
    _train(tmp_path / "resumed", "--steps", "5", "--steps-per-execution", "3")
    assert cli.main(
        ["train", "--resume", "--out", str(tmp_path / "resumed"), "--quiet", "--steps", "10",
         "--steps-per-execution", "4"]
    ) == 0  # fmt: skip
    resumed = files.read_records(tmp_path / "resumed" / "metrics.jsonl")
    assert [r["step"] for r in resumed] == list(range(1, 11))
    for w, e in zip(
        _weights(tmp_path / "resumed" / "checkpoint.keras"),
        _weights(tmp_path / "single" / "checkpoint.keras"),
    ):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)


class CountedReads:
    """Counts Keras's reads of device values to the host (`keras.ops.convert_to_numpy`, and Keras's own
    conversion of logged tensors, both go through ``keras.src.backend.convert_to_numpy``)."""

    def __init__(self, monkeypatch):
        import keras.src.backend as keras_backend

        self.count = 0
        read = keras_backend.convert_to_numpy

        def counted(x):
            self.count += 1
            return read(x)

        monkeypatch.setattr(keras_backend, "convert_to_numpy", counted)


@pytest.mark.parametrize("n", [1, 8])
def test_a_fit_with_every_cli_callback_reads_the_device_once_per_call(n, tmp_path, monkeypatch):
    from portable_wgangp import config as settings
    from portable_wgangp import tasks

    steps = 64
    config = settings.resolve(
        {"steps": steps, "batch_size": 16, "width": 8, "depth": 1, "steps_per_execution": n}, None
    )
    task = tasks.make_task(config)
    gan = tasks.build_gan(config, task)
    folder = runs.RunFolder(tmp_path)
    fit_callbacks = runs.training_callbacks(config, task, folder, done=0, best={}, quiet=False)
    reads = CountedReads(monkeypatch)
    counted = []
    boundaries = keras.callbacks.LambdaCallback(
        on_train_begin=lambda logs: counted.append(reads.count),
        on_train_end=lambda logs: counted.append(reads.count),
    )
    gan.fit(task.rounds(0, steps), steps_per_epoch=steps, verbose=0, callbacks=[boundaries, *fit_callbacks])
    assert len(files.read_records(tmp_path / "metrics.jsonl")) == steps
    assert counted[1] - counted[0] <= math.ceil(steps / n) + 2
