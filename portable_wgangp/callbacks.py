"""Keras callbacks for WGAN-GP training."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import pathlib
import socket
import sys
import tempfile
import threading
import time

import keras
import numpy as np

from portable_wgangp import files, host_memory


class EpochOrder(keras.callbacks.Callback):
    """Keeps an epoch-ordered dataset (`rounds.EpochRounds`) on the epoch `fit` is in, also when `fit`
    starts later than epoch 0 (``initial_epoch``, or a `keras.callbacks.BackupAndRestore` resume)."""

    def __init__(self, dataset):
        super().__init__()
        self.dataset = dataset

    def on_epoch_begin(self, epoch, logs=None):
        if self.dataset.epoch != epoch:
            self.dataset.set_epoch(epoch)


class StepByStep(keras.callbacks.Callback):
    """Hands ``callbacks`` every generator step's logs, one step at a time, also when one call of the
    compiled step ran N steps (`WGANGP.compile(steps_per_execution=N)`); what `WGANGP.fit` does with the
    callbacks it is given.

    Keras calls callbacks once per call of the compiled step. This one takes the call's per-step logs,
    already read to the host in one transfer (`WGANGP.step_logs`), and calls ``on_train_batch_end`` of each
    callback once per step, ``batch`` counting steps within the epoch. At the last step of a call, the
    only step whose weights the model holds, a callback with an ``on_execution_end(batch, logs)`` method
    has it called right after its ``on_train_batch_end``: checkpoints, evaluations and signal handling act
    there. Other hooks are passed on as Keras calls them.
    """

    def __init__(self, callbacks):
        super().__init__()
        self.callbacks = list(callbacks)
        self._batch = 0

    def set_model(self, model):
        super().set_model(model)
        for callback in self.callbacks:
            callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        for callback in self.callbacks:
            callback.set_params(params)

    def on_train_begin(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_begin(logs)

    def on_train_end(self, logs=None):
        for callback in self.callbacks:
            callback.on_train_end(logs)

    def on_epoch_begin(self, epoch, logs=None):
        self._batch = 0
        for callback in self.callbacks:
            callback.on_epoch_begin(epoch, logs)

    def on_epoch_end(self, epoch, logs=None):
        for callback in self.callbacks:
            callback.on_epoch_end(epoch, logs)

    def on_train_batch_begin(self, batch, logs=None):
        for callback in self.callbacks:
            callback.on_train_batch_begin(self._batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        steps = getattr(self._model, "step_logs", None) or [dict(logs or {})]
        for j, step_logs in enumerate(steps):
            last = j == len(steps) - 1
            for callback in self.callbacks:
                callback.on_train_batch_end(self._batch, step_logs)
                if last and hasattr(callback, "on_execution_end"):
                    callback.on_execution_end(self._batch, step_logs)
            self._batch += 1


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
    """Appends one JSON object per training step to ``path`` (JSON lines), whole lines per write.

    Each line holds ``step`` (generator steps, from 1) and every logged value. The lines of one call of
    the compiled step are written together at its end (`StepByStep`), so a crash loses nothing that a
    checkpoint holds; a failed write (a full disk) never leaves a torn line (see `files.append_line`).
    """

    def __init__(self, path, first_step: int = 0):
        super().__init__()
        self.path = pathlib.Path(path)
        self.step = first_step
        self._fd = None

    def on_train_begin(self, logs=None):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._lines: list[str] = []

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        record = {"step": self.step, **{name: float(value) for name, value in (logs or {}).items()}}
        self._lines.append(json.dumps(record))

    def on_execution_end(self, batch, logs=None):
        """The lines of a call's steps go out in one write (`StepByStep`)."""
        files.append_line(self._fd, "\n".join(self._lines), self.path)
        self._lines = []

    def on_train_end(self, logs=None):
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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
    "gradient_norm": "|grad|",
}


def check_finite(model: keras.Model, path) -> None:
    """Refuse to save a model holding a non-finite weight (`FloatingPointError`): the file keeps its last
    good state. (`NonFiniteGuard` stops on non-finite losses; this catches an update that diverged after
    them.)"""
    for weight in model.weights:
        if not np.isfinite(keras.ops.convert_to_numpy(weight)).all():
            raise FloatingPointError(
                f"Not saving {pathlib.Path(path).name}: {weight.path} holds non-finite values (the last "
                "update diverged); lower the learning rate and resume from the previous checkpoint."
            )


def save_atomically(model: keras.Model, path) -> pathlib.Path:
    """``model.save(path)`` through a temporary file and a rename: a crash or a full disk never leaves
    half a file, and the previous checkpoint stays intact (`files.atomic_path`); a non-finite model is not
    saved (`check_finite`)."""
    path = pathlib.Path(path)
    check_finite(model, path)
    with files.atomic_path(path) as temporary:
        model.save(temporary)
    return path


def save_checkpoint(model: keras.Model, path) -> None:
    """Process 0 saves ``model`` to ``path`` atomically; every other process of a multi-process run saves to
    a scratch file that is then deleted.

    Every process must save: under JAX multi-process Keras's saving runs collectives (as TF's
    multi-worker checkpointing does), so a save on process 0 alone would wait for the others forever.
    """
    from portable_wgangp import distribution

    if distribution.process_index() == 0:
        save_atomically(model, path)
        return
    with tempfile.TemporaryDirectory() as scratch:
        save_atomically(model, pathlib.Path(scratch) / pathlib.Path(path).name)


class UploadError(OSError):
    """A checkpoint could not be uploaded; the previous one on the store is intact."""


class CheckpointWriter:
    """Saves checkpoints without pausing training for the write.

    `save` serializes the model — both networks, both optimizers, the seed state — into a ``.keras``
    archive at the step (host memory and the page cache: ≈ 20 ms for the digits DCGAN, whose archive is
    0.9 MB); a thread then makes it durable (fsync), puts it under its name in one rename and runs
    ``publish`` (a remote run folder's upload, `runs.RemoteRunFolder.publish`), while training goes on.
    At most one write is in flight: a `save` waits for the previous one. A failed write is tried
    `TRIES` times in all, `BACKOFF` seconds apart, doubling; after that the next `save`, `wait` or
    `raise_failure` raises it (a `files.WriteError` naming where) and the previous checkpoint is intact.
    ``background=False`` writes inside `save` (for the measurement of what the thread saves).
    """

    TRIES = 2  # the client libraries retry each request themselves (s3fs ≈ 9 s, gcsfs ≈ 30 s to give up)
    BACKOFF = 1.0

    def __init__(self, publish=None, shown=str, background: bool = True):
        self.publish = publish
        self.shown = shown
        self.background = background
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def save(self, model: keras.Model, path) -> None:
        from portable_wgangp import distribution

        self.wait()
        path = pathlib.Path(path)
        if distribution.process_index() > 0:  # collectives: every process saves (`save_checkpoint`)
            save_checkpoint(model, path)
            return
        check_finite(model, path)
        temporary = files.partial_name(path)
        try:
            model.save(temporary)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise files.WriteError(self.shown(path), error) from error
        if self.background:
            self._thread = threading.Thread(target=self._write, args=(temporary, path), name="checkpoint")
            self._thread.start()
        else:
            self._write(temporary, path)
            self.raise_failure()

    def wait(self) -> None:
        """Wait for the write in flight; raise its failure, if it failed."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.raise_failure()

    def raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure

    def _write(self, temporary: pathlib.Path, path: pathlib.Path) -> None:
        try:
            with open(temporary, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except OSError as error:
            temporary.unlink(missing_ok=True)
            self._failure = files.WriteError(self.shown(path), error)
            return
        if self.publish is None:
            return
        delay = self.BACKOFF
        for attempt in range(1, self.TRIES + 1):
            try:
                self.publish()
                return
            except Exception as error:
                if attempt == self.TRIES:
                    self._failure = UploadError(
                        f"Uploading the checkpoint to {self.shown(path)} failed {self.TRIES} times, the "
                        f"last: {str(error).rstrip('.')}; the previous checkpoint there is intact: continue "
                        "with --resume once the store is reachable."
                    )
                    return
                time.sleep(delay)
                delay *= 2


class ReleaseFreeMemory(keras.callbacks.Callback):
    """Hands the heap's free memory back to the system at the end of a call of the compiled step, at most
    once every ``interval`` seconds (a trim costs ≈ 0.5 ms: on a toy net's 10 ms step, 5 % if done at every
    call), and at the end of training (`host_memory`)."""

    def __init__(self, interval: float = 1.0):
        super().__init__()
        self.interval = interval
        self._last = time.monotonic()

    def on_execution_end(self, batch, logs=None):
        if time.monotonic() - self._last >= self.interval:
            host_memory.release_free_memory()
            self._last = time.monotonic()

    def on_train_end(self, logs=None):
        host_memory.release_free_memory()


class AtExecutionEnd(keras.callbacks.Callback):
    """A callback that acts on the model every ``every`` generator steps: at the end of the call of the
    compiled step that reaches a multiple of ``every`` (`StepByStep`), the step the model then holds.

    With ``steps_per_execution`` N dividing ``every``, that is every ``every`` steps exactly; otherwise at
    the first call's end at or after each multiple. Subclasses implement ``act(logs)``; ``step`` is the
    generator step (from ``first_step``, a resumed run's). Touches the model only then, so JAX's training
    state is synced only then.
    """

    def __init__(self, every: int, first_step: int = 0):
        super().__init__()
        self.every = every
        self.step = first_step
        self._due = False

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        self._due = self._due or bool(self.every and self.step % self.every == 0)

    def on_execution_end(self, batch, logs=None):
        if self._due:
            self._due = False
            self.act(logs)

    def act(self, logs) -> None:
        raise NotImplementedError


class Every(AtExecutionEnd):
    """Calls ``action(model, step)`` every ``every`` generator steps (pictures during training, say); see
    `AtExecutionEnd` for where the steps of a call of several end."""

    def __init__(self, every: int, action, first_step: int = 0):
        super().__init__(every, first_step)
        self.action = action

    def act(self, logs) -> None:
        self.action(self.model, self.step)


class Checkpoint(AtExecutionEnd):
    """Saves the whole model (both networks, both optimizers, the seed state) every ``every`` steps,
    without pausing training for the write (`CheckpointWriter`; ``writer``: one shared with other savers,
    or a new one). A write that failed stops training at the end of the next call of the compiled step.

    The file is replaced atomically by process 0; the step is the generator optimizer's iteration count,
    so a run resumed from it knows where it stands. `NonFiniteGuard` runs first, so a non-finite state is
    never saved. Training ends with the last write done.
    """

    def __init__(self, path, every: int, first_step: int = 0, writer: CheckpointWriter | None = None):
        super().__init__(every, first_step)
        self.path = path
        self.writer = writer or CheckpointWriter()

    def act(self, logs) -> None:
        self.writer.save(self.model, self.path)

    def on_execution_end(self, batch, logs=None):
        self.writer.raise_failure()
        super().on_execution_end(batch, logs)

    def on_train_end(self, logs=None):
        self.writer.wait()


class Evaluation(AtExecutionEnd):
    """Every ``every`` generator steps (`AtExecutionEnd`): the quality figures ``measure(model) -> dict`` of
    the model, added to that step's logs as ``eval_NAME`` (so `MetricsLog` and `TensorBoardLog`, placed
    after it, record them), and the model saved to ``best_path`` whenever figure ``score`` is the lowest so
    far.

    ``best`` and ``best_step`` hold the best score and its step (None before the first evaluation; a
    resumed run passes those of its earlier evaluations).
    """

    def __init__(
        self, every: int, measure, score: str, best_path, first_step: int = 0, best=None, best_step=None
    ):
        super().__init__(every, first_step)
        self.measure = measure
        self.score = score
        self.best_path = best_path
        self.best: float | None = best
        self.best_step: int | None = best_step

    def act(self, logs) -> None:
        figures = self.measure(self.model)
        numbers = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float))}
        if logs is not None:
            logs.update({f"eval_{name}": value for name, value in numbers.items()})
        if self.best is None or numbers[self.score] < self.best:
            self.best, self.best_step = numbers[self.score], self.step
            save_checkpoint(self.model, self.best_path)


def tensorboard_available() -> bool:
    """Whether TensorBoard event files can be written (the tensorboard package is installed)."""
    return importlib.util.find_spec("tensorboard") is not None


class TensorBoardLog(keras.callbacks.Callback):
    """Writes every logged value as a TensorBoard scalar every ``every`` generator steps, and at every step
    that logs quality figures (``eval_*``, from `Evaluation`).

    Writes the event file itself (TensorBoard's record framing and protocol buffers, from the tensorboard
    package alone): no framework is imported, so a JAX or torch run never loads TensorFlow, and the model
    is never touched, so JAX's state is not synced each step. The events of one call of the compiled step
    are flushed together at its end.
    """

    def __init__(self, log_dir, every: int = 10, first_step: int = 0):
        super().__init__()
        self.log_dir = pathlib.Path(log_dir)
        self.every = every
        self.step = first_step
        self._records = None

    def on_train_begin(self, logs=None):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        self.log_dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}.v2"
        self._records = RecordWriter(open(self.log_dir / name, "wb"))  # closed at the end of training
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        if self.step % self.every == 0 or any(name.startswith("eval_") for name in logs or {}):
            values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in (logs or {}).items()]
            self._write(
                self._event(wall_time=time.time(), step=self.step, summary=self._summary(value=values))
            )

    def on_execution_end(self, batch, logs=None):
        self._records.flush()

    def on_train_end(self, logs=None):
        if self._records is not None:
            self._records.close()
            self._records = None


class PreemptionCheckpoint(keras.callbacks.Callback):
    """Ends training cleanly on SIGTERM or SIGINT: the current call of the compiled step finishes (one
    step, or N with ``steps_per_execution``), a checkpoint of its last step is saved atomically to
    ``path``, and training stops.

    SIGTERM is what preemptible TPU VMs, Kubernetes and Slurm send before they kill a job; SIGINT is
    Ctrl-C. A second signal aborts at once (the process dies by that signal). In a multi-process run every
    process stops at the same step: each call ends with an all-reduce of "a signal arrived here"
    (`distribution.any_process`), and process 0 writes the checkpoint (`CheckpointWriter`). Resuming from
    the checkpoint continues exactly where the run stopped.

    With ``exit=True`` (the default) training then ends the script with one line on stderr and exit
    status 128 + the signal's number (143 for SIGTERM, 130 for SIGINT); with ``exit=False`` `fit` just
    returns, and ``received`` (the signal's number, else None) and ``step`` tell what happened.
    Handlers are installed for the duration of `fit` (main thread only) and the previous ones restored.
    """

    SIGNALS = ("SIGTERM", "SIGINT")

    def __init__(
        self, path, *, exit: bool = True, first_step: int = 0, writer: CheckpointWriter | None = None
    ):
        super().__init__()
        self.path = pathlib.Path(path)
        self.writer = writer or CheckpointWriter()
        self.exit = exit
        self.step = first_step
        self.received: int | None = None
        self._pending: int | None = None
        self._previous: dict = {}

    def on_train_begin(self, logs=None):
        import signal
        import threading

        self.received = self._pending = None
        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                number = getattr(signal, name)
                self._previous[number] = signal.signal(number, self._on_signal)

    def _on_signal(self, number, frame):
        import signal

        if self._pending is not None:  # the second signal: abort at once, by that signal
            signal.signal(number, signal.SIG_DFL)
            os.kill(os.getpid(), number)
            return
        self._pending = number

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1

    def on_execution_end(self, batch, logs=None):
        """Signals are acted on where a call of the compiled step ends (`StepByStep`)."""
        from portable_wgangp import distribution

        if not distribution.any_process(self._pending is not None):
            return
        self.received = self._pending or _peer_signal()
        self.writer.save(self.model, self.path)
        self.writer.wait()
        self.model.stop_training = True

    def on_train_end(self, logs=None):
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous = {}
        if self.received is not None and self.exit:
            name = _signal_name(self.received)
            sys.stdout.flush()
            sys.stderr.write(
                f"stopped by {name} at step {self.step}; checkpoint saved to {self.path}; load it to resume\n"
            )
            sys.exit(128 + self.received)


def _peer_signal() -> int:
    """The signal reported for a process stopped because another process of the run got one: SIGTERM."""
    import signal

    return int(signal.SIGTERM)


def _signal_name(number: int) -> str:
    import signal

    return signal.Signals(number).name
