"""Host overhead: ms per generator step of a `train` run's fit at N steps per compiled call.

    KERAS_BACKEND=jax python benchmarks/executions.py --json out.json          # N = 1, 8, 32; two nets
    KERAS_BACKEND=torch python benchmarks/executions.py --jit-compile          # torch's compiled step

The toy task of the CLI (8 gaussians, batch 64 unless --batch-size), its callbacks on (metrics log,
checkpoints and pictures every 1000 steps, TensorBoard, heap release, progress bar to /dev/null), nets so
small that the maths is far below the bookkeeping (width 32) and the CLI's default (width 128). Each N is
timed from the end of its first call (compilation) to the end of the run; one process per backend. Beside
each, the hand-written native step of `native.py` at the same N steps a call (same nets, batch and
n_critic; one host sync a call, no callbacks, its input fed once): ours / native is the bookkeeping left.
"""

from __future__ import annotations

import argparse
import io
import json
import pathlib
import tempfile
import time

import keras
import numpy as np
from native import MAKERS
from specs import Spec

from portable_wgangp import config as settings
from portable_wgangp import data, runs, tasks


def step_ms(n: int, width: int, batch_size: int, steps: int, jit_compile: bool) -> tuple[float, float]:
    """(ms per step after the first call, seconds of the first call) of a toy run at ``n`` steps per call."""
    flags = {"steps": steps, "batch_size": batch_size, "width": width, "steps_per_execution": n}
    config = settings.resolve({**flags, "jit_compile": jit_compile}, None)
    task = tasks.make_task(config)
    gan = tasks.build_gan(config, task)
    ends = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ends.append(time.perf_counter())
    )
    with tempfile.TemporaryDirectory() as folder:
        fit_callbacks = runs.training_callbacks(config, task, runs.RunFolder(folder), 0, {}, quiet=False)
        fit_callbacks[-1].stream = io.StringIO()  # the progress bar, drawn but not shown
        started = time.perf_counter()
        gan.fit(task.rounds(0, steps), steps_per_epoch=steps, verbose=0, callbacks=[*fit_callbacks, clock])
    return (ends[-1] - ends[n - 1]) / (steps - n) * 1e3, ends[n - 1] - started


def native_step_ms(n: int, width: int, batch_size: int, steps: int) -> float:
    """ms per step of the native step of the CLI's toy nets at ``n`` steps a call, after a first call."""
    config = settings.resolve({"width": width}, None)
    spec = Spec("mlp", config.latent_dim, batch_size, config.n_critic, (2,), width=width)
    run, feed = MAKERS[keras.backend.backend()](spec, steps=n)
    rounds = feed(
        data.toy_samples(config.dataset, batch_size * n * config.n_critic, np.random.default_rng(0)).reshape(
            batch_size, n * config.n_critic, 2
        )
    )
    run(rounds)  # compilation
    calls = max(1, steps // n - 1)
    started = time.perf_counter()
    for _ in range(calls):
        run(rounds)
    return (time.perf_counter() - started) / (calls * n) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executions", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--widths", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=640)
    parser.add_argument("--jit-compile", action="store_true", help="train with --jit-compile (torch)")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    rows = []
    for width in args.widths:
        for n in args.executions:
            ms, first = step_ms(n, width, args.batch_size, args.steps, args.jit_compile)
            native = native_step_ms(n, width, args.batch_size, args.steps)
            base = next((r["ms"] for r in rows if r["width"] == width and r["n"] == 1), ms)
            row = {"backend": keras.backend.backend(), "width": width, "batch": args.batch_size, "n": n}
            row |= {"jit_compile": True} if args.jit_compile else {}
            rows.append(
                {
                    **row,
                    "ms": round(ms, 3),
                    "native_ms": round(native, 3),
                    "ratio": round(ms / native, 3),
                    "first_call_s": round(first, 2),
                    "speedup": round(base / ms, 2),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
