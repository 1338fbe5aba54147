"""Keras callbacks for WGAN-GP training."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import sys
import time

import keras
import numpy as np


class EpochOrder(keras.callbacks.Callback):
    """Keeps an epoch-ordered dataset (`data.ArrayRounds`) on the epoch `fit` is in, also when `fit`
    starts later than epoch 0 (``initial_epoch``, or a `keras.callbacks.BackupAndRestore` resume)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)


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

    def __init__(self, path, first_step: int = 0):
        super().__init__()
        self.path = pathlib.Path(path)
        self.step = first_step

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


class ProgressBar(keras.callbacks.Callback):
    """One line of live progress: step, steps/s, ETA and the logged losses.

    Redrawn in place at most ``interval`` seconds apart on a terminal; elsewhere (a log file, CI) a new
    line every tenth of the run. ``first_step`` counts steps already done (a resumed run). The speed is
    measured from the end of the first step, which includes compilation.
    """

    def __init__(self, total_steps: int, first_step: int = 0, interval: float = 0.2, stream=None):
        super().__init__()
        self.total = total_steps
        self.step = first_step
        self.first_step = first_step
        self.interval = interval
        self.stream = stream or sys.stdout
        self._started = self._shown = 0.0
        self._tty = self.stream.isatty()
        self._next_line = first_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        now = time.perf_counter()
        if self.step == self.first_step + 1 and self.step < self.total:
            self._started = now
            self._next_line = self.step + max(1, self.total // 10)
            return
        due = now - self._shown >= self.interval if self._tty else self.step >= self._next_line
        if due or self.step == self.total:
            self._shown = now
            self._next_line = self.step + max(1, self.total // 10)
            self._show(now, logs or {})

    def _show(self, now, logs):
        done = self.step - self.first_step - 1
        rate = done / max(now - self._started, 1e-9)
        eta = (self.total - self.step) / rate if rate else 0.0
        width = 20
        filled = int(width * self.step / self.total)
        names = sorted(logs, key=lambda k: list(_SHORT).index(k) if k in _SHORT else len(_SHORT))
        values = "  ".join(f"{_SHORT.get(k, k)} {float(logs[k]):+.4f}" for k in names)
        line = (
            f"[{'#' * filled}{'.' * (width - filled)}] {self.step}/{self.total}  {rate:.0f} steps/s  "
            f"ETA {int(eta) // 60}:{int(eta) % 60:02d}  {values}"
        )
        end = "" if self._tty and self.step < self.total else "\n"
        self.stream.write(("\r" if self._tty else "") + line + end)
        self.stream.flush()


_SHORT = {
    "critic_loss": "critic",
    "gradient_penalty": "gp",
    "wasserstein_estimate": "W",
    "generator_loss": "gen",
}


def save_atomically(model: keras.Model, path) -> pathlib.Path:
    """``model.save(path)`` through a temporary file and a rename: a crash never leaves half a file.

    A model holding a non-finite weight is not saved (`FloatingPointError`): the file keeps its last good
    state. (`NonFiniteGuard` stops on non-finite losses; this catches an update that diverged after them.)
    """
    path = pathlib.Path(path)
    for weight in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
            raise FloatingPointError(
                f"Not saving {path.name}: {weight.path} holds non-finite values (the last update diverged); "
                "lower the learning rate and resume from the previous checkpoint."
            )
    temporary = path.with_name(f".{path.stem}.partial.keras")
    model.save(temporary)
    os.replace(temporary, path)
    return path


class Every(keras.callbacks.Callback):
    """Calls ``action(model, step)`` every ``every`` generator steps (pictures during training, say).

    Touches the model only then, so JAX's training state is synced only then.
    """

    def __init__(self, every: int, action, first_step: int = 0):
        super().__init__()
        self.every = every
        self.action = action
        self.step = first_step

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.every and self.step % self.every == 0:
            self.action(self.model, self.step)


class Checkpoint(Every):
    """Saves the whole model (both networks, both optimizers, the seed state) every ``every`` steps.

    The file is replaced atomically; the step is the generator optimizer's iteration count, so a run
    resumed from it knows where it stands. `NonFiniteGuard` runs first, so a non-finite state is never
    saved.
    """

    def __init__(self, path, every: int, first_step: int = 0):
        super().__init__(every, lambda model, step: save_atomically(model, path), first_step)
        self.path = path


def tensorboard_available() -> bool:
    """Whether TensorBoard event files can be written (tensorflow and tensorboard are installed)."""
    return all(importlib.util.find_spec(name) for name in ("tensorflow", "tensorboard"))


class TensorBoardLog(keras.callbacks.Callback):
    """Writes every logged value as a TensorBoard scalar every ``every`` generator steps.

    Works on every backend (it writes with `tf.summary`, so tensorflow and tensorboard must be installed)
    and, unlike Keras's `TensorBoard`, never touches the model, so JAX's state is not synced each step.
    """

    def __init__(self, log_dir, every: int = 10, first_step: int = 0):
        super().__init__()
        self.log_dir = str(log_dir)
        self.every = every
        self.step = first_step

    def on_train_begin(self, logs=None):
        from portable_wgangp._startup import import_quietly

        self._tf = import_quietly("tensorflow")
        self._writer = self._tf.summary.create_file_writer(self.log_dir)

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0:
            with self._writer.as_default(step=self.step):
                for name, value in (logs or {}).items():
                    self._tf.summary.scalar(name, float(value))

    def on_train_end(self, logs=None):
        self._writer.close()
