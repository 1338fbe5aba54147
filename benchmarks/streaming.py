"""Streaming input: how long the DCGAN step waits for a folder of PNGs, and the memory of a 50,000-image run.

    python benchmarks/streaming.py wait   --json out.json [--backends ...] [--sizes 32 64] [--steps 6]
                                          [--workers 0 2] [--dtype-policy float32]
    python benchmarks/streaming.py memory --json out.json [--backends ...] [--images 50000]

``wait``: per backend (each in its own process) and image size, the CLI's DCGAN (batch 64, n_critic 5)
trains from the same images decoded once into memory and streamed from the PNG folder with each of
``--workers`` reader-thread counts (0: the step decodes its own rounds), and the median seconds per
generator step after a warm-up are compared. ``loader_wait_ms`` = streamed − in memory: the time the step
waits for its data plus what the decoding takes from the step on shared cores. Rows name the device and
the accelerator's peak memory (``device_peak_mb``; none on the CPU).

``memory``: a folder of ``--images`` 64×64 PNGs (made in a temporary folder, deleted afterwards) trained by
``portable-wgangp train --dataset images:DIR --image-size 64`` for a few steps and then resumed, each in a
fresh process whose peak RSS (``/usr/bin/time``'s maximum resident set) is reported; beside it the same
images as an ``npz:`` file, which the in-memory path decodes into one float32 array.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")
BATCH, N_CRITIC = 64, 5  # the CLI's image defaults
ROUND_IMAGES = BATCH * N_CRITIC  # images one generator step reads


def write_pngs(folder: pathlib.Path, count: int, size: int, seed: int = 0) -> None:
    """``count`` smooth random RGB images (8×8 noise upsampled bilinearly: PNG sizes like photos')."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
        small.resize((size, size), Image.BILINEAR).save(folder / f"{i:06d}.png")


def time_steps(gan, rounds, steps: int) -> float:
    """Median seconds per generator step of ``fit`` over ``rounds``, after 2 warm-up steps."""
    import keras

    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    gan.fit(rounds, steps_per_epoch=steps + 2, epochs=1, verbose=0, callbacks=[Clock()])
    return statistics.median(np.diff(ends[1:]))


def wait_rows(sizes, steps: int, worker_counts, dtype_policy: str) -> list[dict]:
    import keras

    from portable_wgangp import data, sources, tasks
    from portable_wgangp.config import resolve

    keras.config.set_dtype_policy(dtype_policy)
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory() as folder:
            count = ROUND_IMAGES * (steps + 3)  # every round reads files it has not read before
            write_pngs(pathlib.Path(folder), count, size)
            spec = f"images:{folder}"
            config = resolve({"dataset": spec, "image_size": size})
            task = tasks.ImageTask(config)
            in_memory = sources.ArraySource(sources.read_all(task.source))
            row = {"backend": keras.backend.backend(), "model": "dcgan", "image_size": size, "images": count}
            row |= {"dtype_policy": dtype_policy, "device": _device_name()}
            for name, source, workers in (
                ("memory_ms", in_memory, 0),
                *((f"streamed_workers{w}_ms", task.source, w) for w in worker_counts),
            ):
                gan = tasks.build_gan(config, task)
                rounds = data.StreamRounds(source, BATCH, N_CRITIC, steps=steps + 2, seed=0, workers=workers)
                row[name] = 1000 * time_steps(gan, rounds, steps)
                if name == "memory_ms":
                    row["device_peak_mb"] = _device_peak_mb()
            row["decode_ms_per_round"] = 1000 * min(_decode_seconds(task.source) for _ in range(3))
            for workers in worker_counts:
                wait = row[f"streamed_workers{workers}_ms"] - row["memory_ms"]
                row[f"loader_wait_ms_workers{workers}"] = wait
                row[f"wait_fraction_workers{workers}"] = wait / row["memory_ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _device_name() -> str:
    """The accelerator the step runs on ("cpu" without one)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.devices()[0]
        return "cpu" if device.platform == "cpu" else device.device_kind
    if keras.backend.backend() == "torch":
        import torch

        return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu") if gpus else "cpu"


def _device_peak_mb() -> float | None:
    """The accelerator's peak allocated memory so far, MB (None on the CPU)."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
    elif keras.backend.backend() == "torch":
        import torch

        peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    else:
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        peak = tf.config.experimental.get_memory_info(gpus[0].name)["peak"] if gpus else None
    return None if peak is None else peak / 2**20


def _decode_seconds(source) -> float:
    started = time.perf_counter()
    source.read(np.arange(ROUND_IMAGES))
    return time.perf_counter() - started


def peak_rss_mb(command: list[str], env: dict) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of ``command`` run to completion (exit 0) under /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as report:
        started = time.perf_counter()
        result = subprocess.run(
            ["/usr/bin/time", "-f", "%M", "-o", report.name, *command],
            env=env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - started
        if result.returncode:
            raise RuntimeError(f"{command} failed:\n{result.stderr[-3000:]}")
        return int(report.read().split()[-1]) / 1024, seconds


def memory_rows(backends, images: int) -> list[dict]:
    from PIL import Image

    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = pathlib.Path(scratch)
        started = time.perf_counter()
        write_pngs(scratch / "images", images, 64)
        print(f"wrote {images} PNGs in {time.perf_counter() - started:.0f} s", flush=True)
        pixels = np.stack([np.asarray(Image.open(p)) for p in sorted((scratch / "images").iterdir())])
        np.savez(scratch / "images.npz", x=pixels)
        del pixels
        flags = ["--image-size", "64", "--quiet", "--checkpoint-every", "2", "--lr-decay", "constant"]
        for backend in backends:
            env = {**os.environ, "KERAS_BACKEND": backend}
            train = [sys.executable, "-m", "portable_wgangp", "train"]
            row = {"backend": backend, "images": images, "image_size": 64}
            streamed, in_memory = scratch / f"run-{backend}-streamed", scratch / f"run-{backend}-memory"
            for key, dataset, out, extra in (
                ("streamed", f"images:{scratch / 'images'}", streamed, ["--steps", "2"]),
                ("streamed_resumed", f"images:{scratch / 'images'}", streamed, ["--steps", "4", "--resume"]),
                ("in_memory", f"npz:{scratch / 'images.npz'}", in_memory, ["--steps", "2"]),
            ):
                command = [*train, "--dataset", dataset, "--out", str(out), *flags, *extra]
                row[f"{key}_peak_rss_mb"], row[f"{key}_s"] = peak_rss_mb(command, env)
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["wait", "memory"])
    parser.add_argument("--json", required=True, help="write the rows to this file")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--sizes", nargs="+", type=int, default=[32, 64], help="wait: image sizes")
    parser.add_argument("--steps", type=int, default=6, help="wait: timed steps per configuration")
    parser.add_argument(
        "--workers", nargs="+", type=int, default=[0, 2], help="wait: reader threads of the streamed runs"
    )
    parser.add_argument("--dtype-policy", default="float32", help="wait: Keras dtype policy of the step")
    parser.add_argument("--images", type=int, default=50_000, help="memory: images in the folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rows = wait_rows(args.sizes, args.steps, args.workers, args.dtype_policy)
        pathlib.Path(args.json).write_text(json.dumps(rows))
        return
    if args.what == "memory":
        rows = memory_rows(args.backends, args.images)
    else:
        rows = []
        for backend in args.backends:
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                command = [
                    sys.executable,
                    __file__,
                    "wait",
                    "--worker",
                    "--json",
                    out.name,
                    "--steps",
                    str(args.steps),
                ]
                command += ["--sizes", *map(str, args.sizes), "--workers", *map(str, args.workers)]
                command += ["--dtype-policy", args.dtype_policy]
                subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, check=True)
                rows += json.loads(pathlib.Path(out.name).read_text())
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
