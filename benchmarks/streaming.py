"""Streaming input: how long the DCGAN step waits for a folder of PNGs, and the memory of a 50,000-image run.

    python benchmarks/streaming.py wait   --json out.json [--backends ...] [--sizes 32 64] [--steps 6]
    python benchmarks/streaming.py memory --json out.json [--backends ...] [--images 50000]

``wait``: per backend (each in its own process) and image size, the CLI's DCGAN (batch 64, n_critic 5)
trains from the same images three ways — decoded once into memory, streamed from the PNG folder by the
step itself (``--workers 0``), and streamed by 2 reader threads (``--workers 2``) — and the median
seconds per generator step after a warm-up are compared. ``loader_wait_ms`` = streamed − in memory: the
time the step waits for its data plus what the decoding takes from the step on shared cores.

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


def wait_rows(sizes, steps: int) -> list[dict]:
    import keras

    from portable_wgangp import data, sources, tasks
    from portable_wgangp.config import resolve

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
            for name, source, workers in (
                ("memory_ms", in_memory, 0),
                ("streamed_ms", task.source, 0),
                ("streamed_workers_ms", task.source, 2),
            ):
                gan = tasks.build_gan(config, task)
                rounds = data.StreamRounds(source, BATCH, N_CRITIC, steps=steps + 2, seed=0, workers=workers)
                row[name] = 1000 * time_steps(gan, rounds, steps)
            row["decode_ms_per_round"] = 1000 * min(_decode_seconds(task.source) for _ in range(3))
            for workers, key in ((0, "streamed_ms"), (2, "streamed_workers_ms")):
                wait = row[key] - row["memory_ms"]
                row[f"loader_wait_ms_workers{workers}"] = wait
                row[f"wait_fraction_workers{workers}"] = wait / row["memory_ms"]
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


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
    parser.add_argument("--images", type=int, default=50_000, help="memory: images in the folder")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        pathlib.Path(args.json).write_text(json.dumps(wait_rows(args.sizes, args.steps)))
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
                command += ["--sizes", *map(str, args.sizes)]
                subprocess.run(command, env={**os.environ, "KERAS_BACKEND": backend}, check=True)
                rows += json.loads(pathlib.Path(out.name).read_text())
    pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
