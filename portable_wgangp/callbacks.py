"""Keras callbacks for WGAN-GP training."""

from __future__ import annotations

import json
import math
import pathlib

import keras


class NonFiniteGuard(keras.callbacks.Callback):
    """Stops training with `FloatingPointError` at the first step that logs a non-finite value.

    `WGANGP.fit` puts it first among the callbacks, so no later callback (a checkpoint, say) ever sees
    the non-finite state. Steps are counted from 1 across epochs.
    """

    def __init__(self):
        super().__init__()
        self.step = 0

    def on_train_begin(self, logs=None):
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        for name, value in (logs or {}).items():
            if not math.isfinite(float(value)):
                raise FloatingPointError(
                    f"{name} is {float(value)} at training step {self.step}; lower the learning rate or "
                    "check the data for NaN/inf values."
                )


class MetricsLog(keras.callbacks.Callback):
    """Appends one JSON object per training step to ``path`` (JSON lines), flushed at once.

    Each line holds ``step`` (generator steps, from 1) and every logged value, so a crash loses nothing
    that was logged.
    """

    def __init__(self, path):
        super().__init__()
        self.path = pathlib.Path(path)
        self.step = 0

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a")

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        record = {"step": self.step, **{name: float(value) for name, value in (logs or {}).items()}}
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def on_train_end(self, logs=None):
        self._file.close()
