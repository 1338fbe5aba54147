"""Keras callbacks for WGAN-GP training."""

from __future__ import annotations

import math

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
