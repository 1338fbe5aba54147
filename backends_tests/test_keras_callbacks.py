"""Our callbacks beside Keras's own: ModelCheckpoint, BackupAndRestore and TensorBoard."""

import json

import keras
import numpy as np
import pytest

import portable_wgangp as pw
from portable_wgangp import files
from portable_wgangp.callbacks import MetricsLog, TensorBoardLog, tensorboard_available
from portable_wgangp.nets import mlp


def gan_and_data(seed=0):
    gan = pw.WGANGP(mlp(2, 2, width=16, depth=1), mlp(2, 1, width=16, depth=1), 2, n_critic=2, seed=seed)
    gan.compile()
    return gan, (np.random.default_rng(seed).normal(size=(256, 2)) + 1.0).astype("float32")


def test_model_checkpoint_and_metrics_log(tmp_path):
    gan, x = gan_and_data()
    gan.fit(
        x,
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(tmp_path / "epoch{epoch}.keras"),
            MetricsLog(tmp_path / "m.jsonl"),
        ],
    )
    restored = keras.models.load_model(tmp_path / "epoch2.keras")
    np.testing.assert_array_equal(restored.sample(8, seed=0), gan.sample(8, seed=0))
    assert len((tmp_path / "m.jsonl").read_text().splitlines()) == 8
    assert json.loads((tmp_path / "m.jsonl").read_text().splitlines()[-1])["step"] == 8


class InterruptAfterEpoch2(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt


def test_backup_and_restore_resume_equals_the_uninterrupted_fit(tmp_path):
    """Interrupted after epoch 2 of 4 and resumed from the backup by a fresh process-like model: the
    weights and both optimizers' states equal those of one uninterrupted fit (data order, noise and
    optimizer state all continue where they stopped)."""

    keras.utils.set_random_seed(0)  # the same initial weights
    uninterrupted, x = gan_and_data()
    uninterrupted.fit(x, batch_size=32, epochs=4, verbose=0)
    keras.utils.set_random_seed(0)  # the same initial weights
    interrupted, _ = gan_and_data()
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(
            x,
            batch_size=32,
            epochs=4,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "backup"), InterruptAfterEpoch2()],
        )
    keras.utils.set_random_seed(0)  # the same initial weights
    resumed, _ = gan_and_data()
    history = resumed.fit(
        x,
        batch_size=32,
        epochs=4,
        verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(tmp_path / "backup")],
    )
    assert history.epoch == [2, 3]  # epochs 3 and 4 only
    assert int(resumed.generator_optimizer.iterations) == 4 * 4
    assert int(resumed.critic_optimizer.iterations) == 2 * 4 * 4
    ours = resumed.variables + resumed.optimizer.variables
    theirs = uninterrupted.variables + uninterrupted.optimizer.variables
    assert [tuple(v.shape) for v in ours] == [tuple(v.shape) for v in theirs]
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7, err_msg=a.path
        )


def test_tensorboard_logs_the_four_metrics(tmp_path):
    pytest.importorskip(
        "tensorflow", reason="Keras's TensorBoard callback writes through tf.summary (TF only)"
    )
    gan, x = gan_and_data()
    gan.fit(
        x,
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[keras.callbacks.TensorBoard(tmp_path / "tb", update_freq=1)],
    )
    assert list((tmp_path / "tb").rglob("events.out.tfevents.*"))


def test_our_tensorboard_log_works_on_every_backend(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert tensorboard_available()  # the dev extra installs tensorboard in every session
    gan, x = gan_and_data()
    gan.compile(steps_per_execution=3)
    metrics = MetricsLog(tmp_path / "metrics.jsonl")
    tensorboard = TensorBoardLog(tmp_path / "tb", every=2)
    gan.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=[metrics, tensorboard])
    records = files.read_records(tmp_path / "metrics.jsonl")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert set(events.Tags()["scalars"]) >= {"critic_loss", "gradient_penalty", "generator_loss"}
    scalars = events.Scalars("critic_loss")
    assert [s.step for s in scalars] == [r["step"] for r in records if r["step"] % 2 == 0]
    for scalar in scalars:
        assert scalar.value == pytest.approx(records[scalar.step - 1]["critic_loss"], rel=1e-6)
