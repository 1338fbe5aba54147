"""A run folder (``train --out DIR``) and its rules, and the training run that fills it.

Rules, in the order a `train` command meets them:

1. Everything is validated first (settings, config file, data, networks, a resumed run's checkpoint);
   nothing in the folder is created or changed until all of it passes.
2. A folder that already holds a run (``config.json``, ``checkpoint.keras`` or ``metrics.jsonl``) is never
   replaced unless the user says so: ``--resume`` continues it, ``--overwrite`` replaces it.
3. One writer at a time: the writer holds an OS file lock on ``DIR/.portable-wgangp.lock`` (released by
   the kernel when the process dies, however it dies); a second writer is refused with the holder's pid.
   On object storage (``--out gs://…``, `RemoteRunFolder`) the lock is a lock object (`object_lock`).
4. Every file is replaced atomically or appended one whole line at a time (`portable_wgangp.files`); on
   object storage every object is put whole (`storage`).
5. SIGTERM / SIGINT end the run with a checkpoint at the current step (`callbacks.PreemptionCheckpoint`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import shutil
import socket
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator

from portable_wgangp import files, object_lock, storage
from portable_wgangp.config import TrainConfig, check_resume, load_saved, resolve, saved_form
from portable_wgangp.errors import UserError

RUN_FILES = (
    "checkpoint.keras",
    "config.json",
    "metrics.jsonl",
    "quality.json",
    "samples.png",
    "losses.png",
    "best.keras",
)
RUN_FOLDERS = ("tensorboard",)
MARKERS = ("config.json", "checkpoint.keras", "metrics.jsonl")  # any of them makes a folder a run
LOCK_NAME = object_lock.NAME  # the lock file here, the lock object on a store


class Stopped(Exception):
    """A run stopped by SIGTERM/SIGINT after saving its checkpoint; ``status`` is 128 + the signal."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class RunFolder:
    """The output folder of a run on a local path: its files, whether it holds a run, and the one-writer
    lock. ``path`` is where this process writes the run's files; ``location`` is what messages name."""

    def __init__(self, path):
        if not str(path).strip():
            raise UserError("--out must name a folder, got an empty string.")
        self.path = pathlib.Path(path)
        self.location = str(path)
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out {str(path)!r} is a file, not a folder; choose a folder.")
        self._lock_fd: int | None = None

    def __truediv__(self, name: str) -> pathlib.Path:
        return self.path / name

    def shown(self, name: str) -> str:
        """How messages name the run file ``name``."""
        return str(self.path / name)

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def run_files(self) -> list[str]:
        """The run files present (those that make the folder a run)."""
        return [name for name in MARKERS if self.has(name)]

    def fetch(self, names) -> None:
        """Make the run files ``names`` readable at ``self / name`` (a local folder holds them already)."""

    def publish(self) -> None:
        """Make what was written at ``self / name`` the folder's content (a local folder already is it)."""

    def holder(self) -> str | None:
        """Who holds the folder's lock (``pid N on HOST``), or None when nobody does. Writes nothing."""
        try:
            import fcntl
        except ImportError:  # no POSIX locks (Windows): a second writer is not detected
            return None
        try:
            fd = os.open(self.path / LOCK_NAME, os.O_RDONLY)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.read(fd, 200).decode(errors="replace").strip() or "an unknown process"
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return None
        finally:
            os.close(fd)

    def check(self, mode: str, *, locked: bool = False) -> None:
        """Refuse ``mode`` ("new", "resume" or "overwrite") when the folder's state forbids it. Writes
        nothing, so a refused command leaves the folder as it was. ``locked``: this process holds the lock."""
        if not locked:
            holder = self.holder()
            if holder:
                raise object_lock.busy(self.location, holder)
        present = self.run_files()
        if mode == "new" and present:
            raise UserError(
                f"{self.location} already holds a run ({', '.join(present)}); continue it with --resume, "
                "replace it with --overwrite, or choose another --out."
            )
        if mode == "resume" and not self.has("config.json"):
            raise UserError(f"Nothing to resume in {self.location!r}: it has no config.json of a run.")
        if mode == "resume" and not self.has("checkpoint.keras"):
            raise UserError(
                f"Nothing to resume in {self.location!r}: the run stopped before its first checkpoint; "
                "start it again with --overwrite."
            )

    @contextlib.contextmanager
    def claim(self, mode: str) -> Iterator[RunFolder]:
        """Hold the folder for writing: create it, take the lock, check ``mode`` again under the lock (a
        writer may have started meanwhile) and, for "overwrite", remove the old run's files."""
        self.check(mode)
        self._create()
        self._lock()
        try:
            self.check(mode, locked=True)
            if mode == "overwrite":
                self._clear()
            yield self
        finally:
            self._unlock()

    def _create(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise UserError(
                f"Cannot create the output folder {str(self.path)!r}: {error.strerror}; choose another --out."
            ) from error

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:
            return
        fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise object_lock.busy(self.location, self.holder() or "an unknown process") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        self._lock_fd = fd

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing releases the lock
            self._lock_fd = None

    def _clear(self) -> None:
        for name in RUN_FILES:
            (self.path / name).unlink(missing_ok=True)
            files.partial_name(self.path / name).unlink(missing_ok=True)
        for name in RUN_FOLDERS:
            shutil.rmtree(self.path / name, ignore_errors=True)


class RemoteRunFolder(RunFolder):
    """A run folder on object storage (``--out gs://…``, ``s3://…``): the same rules as a local one.

    The run's files are written to a local staging folder (``path``) as for a local run, and `publish`
    uploads those that changed since the last upload — each in one PUT, so an object is never seen half
    written; ``metrics.jsonl`` is uploaded whole (object stores have no append), up to its last complete
    line; ``checkpoint.keras`` goes last, so the objects beside a checkpoint are at least as new as it.
    The background checkpoint writer publishes after every checkpoint, the end of the run after its
    results. The lock is a lock object (`object_lock`). `fetch` downloads run files for a resume.
    """

    def __init__(self, url: str):
        self.remote = storage.RemoteFolder(url)
        self.location = self.remote.shown()
        self.path = pathlib.Path(tempfile.mkdtemp(prefix="portable-wgangp-"))
        weakref.finalize(self, shutil.rmtree, self.path, ignore_errors=True)
        self._object_lock = object_lock.ObjectLock(self.remote)
        self._published: dict[str, tuple[int, int]] = {}
        self._publishing = threading.Lock()

    def shown(self, name: str) -> str:
        return self.remote.shown(name)

    def has(self, name: str) -> bool:
        return self.remote.exists(name)

    def holder(self) -> str | None:
        return self._object_lock.holder()

    def fetch(self, names) -> None:
        for name in names:
            data = self.remote.read(name)
            if data is not None:
                (self.path / name).write_bytes(data)
                self._published[name] = _signature(self.path / name)

    def publish(self) -> None:
        with self._publishing:
            staged = sorted(
                (p for p in self.path.rglob("*") if p.is_file() and not p.name.startswith(".")),
                key=lambda p: p.name == "checkpoint.keras",
            )
            for file in staged:
                name = file.relative_to(self.path).as_posix()
                signature = _signature(file)
                if self._published.get(name) == signature:
                    continue
                data = file.read_bytes()
                if name.endswith(".jsonl"):
                    data = data[: data.rfind(b"\n") + 1]  # whole lines only: a line may be half appended
                self.remote.write(name, data)
                self._published[name] = signature

    def _create(self) -> None:
        """Nothing: an object store has no folders, and `check` has already reached the store (a missing
        bucket or refused credentials fail there, before anything is written)."""

    def _lock(self) -> None:
        self._object_lock.acquire()

    def _unlock(self) -> None:
        self._object_lock.release()

    def _clear(self) -> None:
        for name in (*RUN_FILES, *RUN_FOLDERS):
            self.remote.remove(name)


def run_folder(out: str) -> RunFolder:
    """The run folder ``--out`` names: a local path or an object-store URL."""
    return RemoteRunFolder(out) if storage.is_url(out) else RunFolder(out)


def _signature(path: pathlib.Path) -> tuple[int, int]:
    status = path.stat()
    return status.st_mtime_ns, status.st_size


# -- a training run ----------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainRequest:
    """What ``train`` was asked: the settings given (without defaults) and how to treat ``out``."""

    requested: dict
    out: str
    preset: str | None = None
    resume: bool = False
    overwrite: bool = False
    quiet: bool = False


def train(request: TrainRequest) -> int:
    """Validate everything, claim the folder, train, write the results; returns the exit status 0.

    Raises `Stopped` when SIGTERM/SIGINT stopped the run (after its checkpoint was saved)."""
    from portable_wgangp import backend, distribution, tasks

    if request.resume and request.overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; pass one of them.")
    folder = run_folder(request.out)
    mode = "resume" if request.resume else "overwrite" if request.overwrite else "new"
    folder.check(mode)
    if request.resume:
        folder.fetch(("config.json", "checkpoint.keras", "metrics.jsonl"))
        saved = load_saved(folder / "config.json", resuming=True)
        config = check_resume(saved, request.requested, folder / "config.json")
    else:
        config = resolve(request.requested, request.preset)
    task = tasks.make_task(config)
    with distribution.distribute(config.strategy):
        gan = _resumed_gan(config, folder, task) if request.resume else tasks.build_gan(config, task)
        backend.drop_compiled()  # what building compiled is not needed for training (host_memory)
        done = _step(gan)
        best = _earlier_best(folder / "metrics.jsonl", task.score, done) if request.resume else {}
        if distribution.process_index() > 0:  # the others do what process 0 does (collectives), in scratch
            refusal = distribution.first_process_says(None)
            if refusal:
                raise UserError(refusal)
            with tempfile.TemporaryDirectory() as scratch:
                return _fit_and_finish(config, task, gan, RunFolder(scratch), done, best, quiet=True)
        with _claimed_by_all(folder, mode):
            files.write_json(folder / "config.json", saved_form(config))
            _keep_records_until(folder / "metrics.jsonl", done)
            folder.publish()
            return _fit_and_finish(config, task, gan, folder, done, best, request.quiet)


@contextlib.contextmanager
def _claimed_by_all(folder: RunFolder, mode: str) -> Iterator[RunFolder]:
    """Process 0 claims ``folder`` (`RunFolder.claim`) and tells every other process whether it could:
    a refusal (a held lock, a folder that cannot be created) is the same one line in every process."""
    from portable_wgangp import distribution

    claimed = contextlib.ExitStack()
    try:
        claimed.enter_context(folder.claim(mode))
    except UserError as error:
        distribution.first_process_says(str(error))
        raise
    distribution.first_process_says(None)
    with claimed:
        yield folder


def _resumed_gan(config: TrainConfig, folder: RunFolder, task):
    """The checkpoint's model, checked against ``config`` and the data; its learning-rate schedule
    re-planned when ``--steps`` changed."""
    from portable_wgangp import checkpoints, tasks

    gan = checkpoints.load(folder / "checkpoint.keras")
    checkpoints.check_matches(gan, config, task, folder.shown("checkpoint.keras"))
    gan.execution_steps = config.steps_per_execution
    if config.jit_compile:  # a checkpoint loads compiled as Keras's "auto" (torch: eager)
        gan.jit_compile = True
    done = _step(gan)
    if done > config.steps:
        raise UserError(
            f"The run in {folder.location} is at step {done}, past --steps {config.steps}; pass --steps "
            f"{done} or more."
        )
    planned = gan.generator_optimizer.get_config()["learning_rate"]
    if config.lr_decay == "linear" and planned.get("config", {}).get("decay_steps") != config.steps:
        gan.generator_optimizer.learning_rate = tasks.linear_decay(config.lr_generator, config.steps)
        gan.critic_optimizer.learning_rate = tasks.linear_decay(
            config.lr_critic, config.steps * config.n_critic
        )
    return gan


def _keep_records_until(path: pathlib.Path, done: int) -> None:
    """Keep the metrics of steps up to ``done`` (a run that died logged steps after its checkpoint);
    torn lines are dropped. Rewritten atomically."""
    if path.is_file():
        import json

        kept = [r for r in files.read_records(path) if isinstance(r.get("step"), int) and r["step"] <= done]
        files.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))


def _fit_and_finish(config, task, gan, folder: RunFolder, done: int, best: dict, quiet: bool) -> int:
    import keras

    from portable_wgangp import callbacks

    print(
        f"portable-wgangp: {config.dataset}, {config.steps} steps, {keras.backend.backend()} backend "
        f"-> {folder.location}",
        flush=True,
    )
    started = time.perf_counter()
    writer = callbacks.CheckpointWriter(folder.publish, lambda path: folder.shown(pathlib.Path(path).name))
    fit_callbacks = training_callbacks(config, task, folder, done, best, quiet, writer)
    preemption, evaluation = fit_callbacks[0], fit_callbacks[1]
    if done < config.steps:
        gan.fit(
            task.rounds(first_step=done, steps=config.steps - done),
            steps_per_epoch=config.steps - done,
            epochs=1,
            verbose=0,
            callbacks=fit_callbacks,
        )
    if preemption.received is not None:
        import signal

        folder.publish()  # the metrics of the last call were logged after the checkpoint was put

        raise Stopped(
            128 + preemption.received,
            f"stopped by {signal.Signals(preemption.received).name} at step {preemption.step}; checkpoint "
            f"saved to {folder.shown('checkpoint.keras')}; continue with: portable-wgangp train --resume "
            f"--out {folder.location}",
        )
    seconds = time.perf_counter() - started
    writer.save(gan, folder / "checkpoint.keras")
    quality = _write_results(gan, config, task, folder, evaluation)
    writer.wait()
    folder.publish()
    print(f"done in {seconds:.1f} s: " + ", ".join(f"{k} {_fmt(v)}" for k, v in quality.items()))
    for name in RUN_FILES:
        if (folder / name).is_file():
            print(f"  {folder.shown(name)}")
    return 0


def training_callbacks(
    config, task, folder: RunFolder, done: int, best: dict, quiet: bool, writer=None
) -> list:
    """What a ``train`` run hands `WGANGP.fit`, in order: the preemption checkpoint, the evaluation (these
    two first), the metrics log, checkpoints, pictures, TensorBoard, the heap release and the progress bar.
    ``done``: the steps a resumed run has done; ``best``: its earlier best evaluation (`_earlier_best`);
    ``writer``: the `callbacks.CheckpointWriter` both checkpoints share (default: a new one)."""
    from portable_wgangp import callbacks

    writer = writer or callbacks.CheckpointWriter()
    path = folder / "checkpoint.keras"
    return [
        callbacks.PreemptionCheckpoint(path, exit=False, first_step=done, writer=writer),
        callbacks.Evaluation(
            config.eval_every,
            lambda model: task.quality(model, initial=False),
            task.score,
            folder / "best.keras",
            first_step=done,
            **best,
        ),
        callbacks.MetricsLog(folder / "metrics.jsonl", first_step=done),
        callbacks.Checkpoint(path, config.checkpoint_every, first_step=done, writer=writer),
        callbacks.Every(
            config.checkpoint_every,
            lambda model, step: _picture(task, model, folder / "samples.png", config, step),
            first_step=done,
        ),
        *(
            [callbacks.TensorBoardLog(folder / "tensorboard", first_step=done)]
            if callbacks.tensorboard_available()
            else []
        ),
        callbacks.ReleaseFreeMemory(),
        *([] if quiet else [callbacks.ProgressBar(config.steps, first_step=done)]),
    ]


def _earlier_best(path: pathlib.Path, score: str, done: int) -> dict:
    """``best`` and ``best_step`` of the evaluations a resumed run logged up to step ``done`` (none: {})."""
    records = [
        r for r in files.read_records(path) if f"eval_{score}" in r and r.get("step", done + 1) <= done
    ]
    scored = [(r[f"eval_{score}"], r["step"]) for r in records]
    return dict(zip(("best", "best_step"), min(scored))) if scored else {}


def _picture(task, gan, path, config: TrainConfig, step: int) -> None:
    with files.atomic_path(path) as temporary:
        task.picture(gan, temporary, f"{config.dataset}, {step} steps")


def _write_results(gan, config: TrainConfig, task, folder: RunFolder, evaluation) -> dict:
    """quality.json, samples.png and losses.png of a finished run; returns the quality figures (with the
    best evaluated score and its step when ``--eval-every`` ran)."""
    from portable_wgangp import plots

    quality = task.quality(gan)
    if evaluation.best is not None:
        quality.update({f"best_{task.score}": evaluation.best, "best_step": evaluation.best_step})
    files.write_json(folder / "quality.json", quality)
    step = _step(gan)
    _picture(task, gan, folder / "samples.png", config, step)
    with files.atomic_path(folder / "losses.png") as temporary:
        plots.loss_curves(
            temporary, files.read_records(folder / "metrics.jsonl"), title=f"{config.dataset}, {step} steps"
        )
    return quality


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _step(gan) -> int:
    """The generator steps ``gan`` has done (its optimizer's iterations, also a TF distributed variable)."""
    import keras

    return int(keras.ops.convert_to_numpy(gan.generator_optimizer.iterations))
