"""`pw.distribute`: the one place that knows distribution strategies.

A context manager that sets up data parallelism for the active Keras backend; build, compile and fit the
model inside it. Batch sizes stay GLOBAL: every loss, penalty, gradient and logged metric is that of the
global batch, whatever the number of replicas (see the backend modules for how each backend does it).

| backend    | strategies                                  | replicas                                  |
| ---------- | ------------------------------------------- | ----------------------------------------- |
| tensorflow | ``tpu``, ``mirrored``, ``multi_worker``     | `tf.distribute` strategy, in its scope    |
| jax        | ``data_parallel`` (TPU pods, multi-host)    | `keras.distribution.DataParallel`         |
| torch      | ``ddp`` (processes started by ``torchrun``) | a `torch.distributed` process group       |

Every backend also takes ``"auto"`` (TPU if present, else all local accelerators, else one device) and
``"none"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
from collections.abc import Iterator, Sequence

import keras

from portable_wgangp import backend as backend_ops
from portable_wgangp import rounds

STRATEGIES = {
    "tensorflow": ("auto", "none", "tpu", "mirrored", "multi_worker"),
    "jax": ("auto", "none", "data_parallel"),
    "torch": ("auto", "none", "ddp"),
}


@dataclasses.dataclass(frozen=True)
class Distribution:
    """What `distribute` yields: the strategy in force and its number of data-parallel replicas."""

    strategy: str
    num_replicas: int
    backend: str
    native: object = None  # the tf.distribute.Strategy or keras.distribution.DataParallel, if any


def check_strategy(strategy: str) -> None:
    """Refuse a strategy the active backend does not take, naming the backend and its choices."""
    name = keras.backend.backend()
    choices = STRATEGIES[name]
    if strategy not in choices:
        raise ValueError(
            f"Strategy {strategy!r} does not fit the {name} backend; choose one of {', '.join(choices)}."
        )


def any_process(flag: bool) -> bool:
    """Whether ``flag`` is set in any process of a multi-process run (``flag`` itself in one process).

    Every process must call it at the same point (it is a collective): torch all-reduces with MAX over
    the process group, JAX gathers across processes (`multihost_utils.process_allgather`), TensorFlow
    sums across the workers of a `MultiWorkerMirroredStrategy`.
    """
    name = keras.backend.backend()
    if name == "torch":
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            import torch

            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            value = torch.tensor([int(flag)], device=device)
            dist.all_reduce(value, op=dist.ReduceOp.MAX)
            return bool(value.item())
    elif name == "jax":
        import jax

        if jax.process_count() > 1:
            import numpy as np
            from jax.experimental import multihost_utils

            return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))
    else:
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            flags = strategy.run(lambda: tf.constant(int(flag)))
            return bool(strategy.reduce(tf.distribute.ReduceOp.SUM, flags, axis=None) > 0)
    return flag


MESSAGE_BYTES = 2048  # what `first_process_says` carries at most (UTF-8)


def first_process_says(message: str | None) -> str | None:
    """Process 0's ``message`` in every process of a multi-process run (``message`` itself in one
    process): how a refusal that only process 0 can see (the run folder's) reaches every process, so all
    exit with the same line instead of the others failing in their next collective.

    A collective: every process calls it at the same point. torch broadcasts from rank 0; JAX broadcasts
    process 0's bytes (`multihost_utils.broadcast_one_to_all`); TensorFlow sums across the workers of a
    `MultiWorkerMirroredStrategy`, where only worker 0 contributes.
    """
    name = keras.backend.backend()
    if name == "torch":
        import torch.distributed as dist

        if dist.is_initialized() and dist.get_world_size() > 1:
            carried = [message]
            dist.broadcast_object_list(carried, src=0)
            return carried[0]
    elif name == "jax":
        import jax

        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            return _decode(multihost_utils.broadcast_one_to_all(_encode(message)))
    else:
        import tensorflow as tf

        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
            import numpy as np

            mine = _encode(message if process_index() == 0 else None).astype("int32")
            summed = strategy.reduce(
                tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(mine)), axis=None
            )
            return _decode(np.asarray(summed))
    return message


def _encode(message: str | None):
    """``message`` as `MESSAGE_BYTES` uint8 (zeros for None), cut at a character boundary."""
    import numpy as np

    data = (message or "").encode()[:MESSAGE_BYTES].decode(errors="ignore").encode()
    array = np.zeros(MESSAGE_BYTES, dtype="uint8")
    array[: len(data)] = np.frombuffer(data, dtype="uint8")
    return array


def _decode(array) -> str | None:
    import numpy as np

    data = np.asarray(array).astype("uint8").tobytes().rstrip(b"\0")
    return data.decode() if data else None


def num_replicas() -> int:
    """Data-parallel replicas of the run in force (1 when none), seen from outside the training step."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        return tf.distribute.get_strategy().num_replicas_in_sync
    if name == "jax":
        layout = keras.distribution.distribution()
        if layout is None:
            return 1
        mesh = layout.device_mesh
        return mesh.shape[mesh.axis_names.index(layout.batch_dim_name)]
    return backend_ops.num_replicas()


def process_index() -> int:
    """This process's index in a multi-process run (0 alone): only process 0 shows progress."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
        return (resolver.task_id or 0) if resolver is not None and resolver.task_type == "worker" else 0
    if name == "jax":
        return input_shard()[0]
    return backend_ops.replica_index()


def process_count() -> int:
    """Processes of the run in force (1 alone)."""
    name = keras.backend.backend()
    if name == "tensorflow":
        import tensorflow as tf

        resolver = getattr(tf.distribute.get_strategy(), "cluster_resolver", None)
        workers = resolver.cluster_spec().as_dict().get("worker", []) if resolver is not None else []
        return max(1, len(workers))
    if name == "jax":
        import jax

        return jax.process_count()
    return backend_ops.num_replicas()


def input_shard() -> rounds.Shard:
    """The share of every global batch that this process reads and feeds (`rounds.Shard`).

    JAX across processes assembles global arrays from each process's share, and torch processes each
    train on their rank's share: both are fed their share alone. TF's multi-worker strategies take
    global-shape batches and keep worker i's consecutive rows on worker i, so a TF worker reads its share
    and feeds it in place (``padded``). One process reads everything.
    """
    name = keras.backend.backend()
    if name == "jax" and keras.distribution.distribution() is not None:
        import jax

        return rounds.Shard(jax.process_index(), jax.process_count())
    if name == "torch":
        return rounds.Shard(backend_ops.replica_index(), backend_ops.num_replicas())
    if name == "tensorflow" and process_count() > 1:
        return rounds.Shard(process_index(), process_count(), padded=True)
    return rounds.Shard()


@contextlib.contextmanager
def distribute(
    strategy: str = "auto",
    devices: Sequence[str] | None = None,
    *,
    tpu: str | None = None,
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> Iterator[Distribution]:
    """Data parallelism for the active backend, for the duration of the ``with`` block.

    Args:
        strategy: one of `STRATEGIES` for the active backend.
        devices: None (all) or device names: TF ``["/cpu:0", "/cpu:1"]`` (logical CPUs are created when
            TF has not started yet), JAX ``["cpu:0", "cpu:1"]`` as `keras.distribution.list_devices` names
            them.
        tpu: TF ``"tpu"`` only: the TPU name or address (default: ``TPU_NAME``, else the local TPU VM).
        coordinator_address: JAX multi-host: process 0's ``host:port``, passed to
            `keras.distribution.initialize` (default: its ``KERAS_DISTRIBUTION_*`` environment variables).
        num_processes: JAX multi-host: the number of processes (default: as above).
        process_id: JAX multi-host: this process's index (default: as above).
    """
    check_strategy(strategy)
    name = keras.backend.backend()
    if strategy == "auto":
        strategy = _AUTO[name]()
    if strategy == "none":
        yield Distribution("none", 1, name)
    elif name == "tensorflow":
        with _tensorflow(strategy, devices, tpu) as distribution:
            yield distribution
    elif name == "jax":
        with _jax(devices, coordinator_address, num_processes, process_id) as distribution:
            yield distribution
    else:
        with _torch(devices) as distribution:
            yield distribution


# -- TensorFlow ---------------------------------------------------------------------------------------


def _tpu_present() -> bool:
    return bool(os.environ.get("TPU_NAME") or os.environ.get("COLAB_TPU_ADDR")) or os.path.exists(
        "/dev/accel0"
    )


def _auto_tensorflow() -> str:
    import tensorflow as tf

    if _tpu_present():
        return "tpu"
    return "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "none"


def _ensure_logical_cpus(devices: Sequence[str]) -> None:
    """Split the CPU into as many logical devices as ``devices`` names (``/cpu:3`` needs 4)."""
    import tensorflow as tf

    indices = [int(m.group(1)) for d in devices if (m := re.search(r"cpu:(\d+)$", d, re.IGNORECASE))]
    needed = max(indices, default=0) + 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    existing = tf.config.get_logical_device_configuration(cpu)
    if needed <= max(1, len(existing or ())):
        return
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * needed)
    except RuntimeError as error:
        raise ValueError(
            f"{needed} logical CPUs are needed for devices {list(devices)}, but TensorFlow has already "
            "started; enter pw.distribute(...) before running any TensorFlow operation."
        ) from error


@contextlib.contextmanager
def _tensorflow(strategy: str, devices, tpu) -> Iterator[Distribution]:
    import tensorflow as tf

    if strategy == "mirrored":
        if devices:
            _ensure_logical_cpus(devices)
        native = tf.distribute.MirroredStrategy(devices)
    elif strategy == "multi_worker":
        native = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
            tpu=tpu or os.environ.get("TPU_NAME", "local")
        )
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        native = tf.distribute.TPUStrategy(resolver)
    with native.scope():
        yield Distribution(strategy, native.num_replicas_in_sync, "tensorflow", native)


# -- JAX ------------------------------------------------------------------------------------------------


def _auto_jax() -> str:
    import jax

    accelerators = [d for d in jax.devices() if d.platform != "cpu"]
    return "data_parallel" if len(accelerators) > 1 else "none"


@contextlib.contextmanager
def _jax(devices, coordinator_address, num_processes, process_id) -> Iterator[Distribution]:
    if coordinator_address or num_processes or os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
        import jax

        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU hosts; accelerators ignore it
        keras.distribution.initialize(coordinator_address, num_processes, process_id)
    devices = list(devices or keras.distribution.list_devices())
    native = keras.distribution.DataParallel(devices=devices)
    native.auto_shard_dataset = False  # WGANGP.fit feeds each process its share (see input_shard)
    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(native)
    try:
        yield Distribution("data_parallel", math.prod(native.device_mesh.shape), "jax", native)
    finally:
        keras.distribution.set_distribution(previous)


# -- torch ---------------------------------------------------------------------------------------------


def _auto_torch() -> str:
    return "ddp" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "none"


@contextlib.contextmanager
def _torch(devices) -> Iterator[Distribution]:
    import torch
    import torch.distributed as dist

    if devices:
        raise ValueError("Strategy 'ddp' takes no devices: each process uses its LOCAL_RANK's device.")
    created = not dist.is_initialized()
    if created:
        missing = [v for v in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE") if v not in os.environ]
        if missing:
            raise ValueError(
                f"Strategy 'ddp' needs the environment that torchrun sets ({', '.join(missing)} missing); "
                "launch with `torchrun --nproc-per-node N your_script.py`."
            )
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        yield Distribution("ddp", dist.get_world_size(), "torch")
    finally:
        if created:
            dist.destroy_process_group()


_AUTO = {"tensorflow": _auto_tensorflow, "jax": _auto_jax, "torch": _auto_torch}
