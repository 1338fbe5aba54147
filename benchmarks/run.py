"""Our WGAN-GP step against hand-written native steps, side by side, per backend and model.

    python benchmarks/run.py --quick --json out.json [--models mlp dcgan] [--backends jax tensorflow torch]

Each backend runs in its own subprocess (``KERAS_BACKEND`` is read once per process). In it, for each
model, the steps are timed interleaved (ours, native, [keras-io], ours, native, … after a warm-up) and
the median per generator step is reported (each generator step = n_critic critic updates + 1 generator
update). Ours goes through `WGANGP.fit` on numpy data, as a user would; a block's time runs from the end
of its first step to the end of its last, so fit's start-up is not counted. JSON: a list of rows with
``backend``, ``model``, ``ours_ms``, ``native_ms``, ``ratio`` (ours / native), and ``keras_io_ms`` on
TensorFlow rows, ``penalty_overhead`` (ours with the penalty / ours with gp_weight=0, which skips it),
``first_step_s`` (ours, compilation included) and ``peak_rss_mb`` (the backend's process).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
BACKENDS = ("jax", "tensorflow", "torch")
MAX_REPETITIONS = 7  # interleaved blocks per candidate (all of them without --quick)
EXTRAS = {"jax": "jax", "tensorflow": "tensorflow-cpu", "torch": "torch"}  # the package's extras


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer repetitions (≤ 10 minutes in all on 2 cores)"
    )
    parser.add_argument("--json", help="write the rows to this file")
    parser.add_argument("--models", nargs="+", default=["mlp", "dcgan"], choices=["mlp", "dcgan"])
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument(
        "--scaling",
        action="store_true",
        help="time the mlp at batch sizes 64/256/1024 (width 512) and widths 128/512/1024 (batch 256)",
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        rows = [time_model(spec, args.quick) for spec in specs_to_time(args.models, args.scaling)]
        pathlib.Path(args.json).write_text(json.dumps(rows))
        return
    missing = [backend for backend in args.backends if importlib.util.find_spec(backend) is None]
    if missing:
        parser.error(
            f"{', '.join(missing)} not installed: pip install -c constraints-cpu.txt "
            f"'.[{','.join(EXTRAS[b] for b in missing)}]' in the repository, or leave them out of --backends."
        )
    rows = []
    for backend in args.backends:
        with tempfile.TemporaryDirectory() as folder:
            out = pathlib.Path(folder) / "rows.json"
            command = [
                sys.executable,
                str(HERE / "run.py"),
                "--worker",
                "--json",
                str(out),
                "--models",
                *args.models,
            ]
            command += ["--quick"] if args.quick else []
            command += ["--scaling"] if args.scaling else []
            env = {
                **os.environ,
                "KERAS_BACKEND": backend,
                "PYTHONPATH": os.pathsep.join(
                    [
                        str(HERE),
                        str(HERE.parent),
                        *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep)),
                    ]
                ),
            }
            subprocess.run(command, env=env, check=True)
            rows += json.loads(out.read_text())
    print(table(rows, args.scaling))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


def specs_to_time(models, scaling: bool) -> list:
    """The specs a worker times: the named models, or the mlp's batch-size and width grid."""
    from specs import SPECS

    if not scaling:
        return [SPECS[name] for name in models]
    mlp = SPECS["mlp"]
    return [dataclasses.replace(mlp, batch=batch) for batch in (64, 256, 1024)] + [
        dataclasses.replace(mlp, width=width) for width in (128, 1024)
    ]


def table(rows, scaling: bool = False) -> str:
    if scaling:
        lines = [
            "| backend | batch | width | ours ms | native ms | ratio |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        lines += [
            f"| {r['backend']} | {r['batch']} | {r['width']} | {r['ours_ms']:.1f} | {r['native_ms']:.1f} "
            f"| {r['ratio']:.2f} |"
            for r in rows
        ]
        return "\n".join(lines)
    lines = [
        "| backend | model | ours ms | native ms | ratio | keras-io ms | penalty overhead | first step s "
        "| peak RSS MB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        keras_io = f"{r['keras_io_ms']:.1f}" if r.get("keras_io_ms") else "-"
        lines.append(
            f"| {r['backend']} | {r['model']} | {r['ours_ms']:.1f} | {r['native_ms']:.1f} "
            f"| {r['ratio']:.2f} | {keras_io} | {r['penalty_overhead']:.2f} | {r['first_step_s']:.1f} "
            f"| {r['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


# -- the worker (one backend per process) ---------------------------------------------------------------


class BlockTimer:
    """Times of the ends of a fit's steps (a Keras callback, built lazily so keras loads in the worker)."""

    def __new__(cls):
        import keras

        class Timer(keras.callbacks.Callback):
            def on_train_begin(self, logs=None):
                self.started, self.ends = time.perf_counter(), []

            def on_train_batch_end(self, batch, logs=None):
                self.ends.append(time.perf_counter())

        return Timer()


def time_model(spec, quick: bool) -> dict:
    import keras
    import numpy as np
    from native import MAKERS, make_keras_io_step

    import portable_wgangp as pw

    name = spec.name
    backend = keras.backend.backend()
    steps = {"mlp": 10, "dcgan": 3}[name] if quick else {"mlp": 30, "dcgan": 10}[name]
    # Quick: at least 3 interleaved repetitions, more (up to the full 7) while they fit in 45 s (cheap models
    # get the medians of more blocks: a 2-core machine's noise is a few per cent per block).
    repetitions, budget_s = (3, 45.0) if quick else (MAX_REPETITIONS, 0.0)
    rng = np.random.default_rng(0)
    data = rng.uniform(-1, 1, size=(spec.batch * spec.n_critic * (steps + 1), *spec.sample_shape)).astype(
        "float32"
    )
    rounds = np.swapaxes(
        data[: spec.batch * spec.n_critic].reshape(spec.n_critic, spec.batch, *spec.sample_shape), 0, 1
    )

    def ours(gp_weight):
        gan = pw.WGANGP(
            *spec.networks(), spec.latent_dim, n_critic=spec.n_critic, gp_weight=gp_weight, seed=0
        )
        gan.compile()
        return gan

    def fit_block(gan):
        timer = BlockTimer()
        gan.fit(data, batch_size=spec.batch, epochs=1, shuffle=False, verbose=0, callbacks=[timer])
        return (timer.ends[-1] - timer.ends[0]) / (len(timer.ends) - 1), timer.ends[0] - timer.started

    def native_block(run, feed):
        inputs = feed(rounds)
        started = time.perf_counter()
        for _ in range(steps):
            run(inputs)
        return (time.perf_counter() - started) / steps

    candidates = {"ours": ours(10.0), "no_penalty": ours(0.0)}
    first_step = fit_block(candidates["ours"])[1]  # warm-up, compilation included
    fit_block(candidates["no_penalty"])
    natives = {"native": MAKERS[backend](spec)}
    if backend == "tensorflow":
        natives["keras_io"] = make_keras_io_step(spec)
    for run, feed in natives.values():
        native_block(run, feed)  # warm-up
    times = {key: [] for key in [*candidates, *natives]}
    started = time.perf_counter()
    while len(times["ours"]) < repetitions or (
        len(times["ours"]) < MAX_REPETITIONS
        and (time.perf_counter() - started) * (1 + 1 / len(times["ours"])) < budget_s
    ):
        for key, gan in candidates.items():
            times[key].append(fit_block(gan)[0])
        for key, (run, feed) in natives.items():
            times[key].append(native_block(run, feed))
    ms = {key: 1000 * statistics.median(values) for key, values in times.items()}
    scale = 1024 if platform.system() == "Darwin" else 1  # ru_maxrss: bytes on macOS, KiB elsewhere
    return {
        "backend": backend,
        "model": name,
        "batch": spec.batch,
        "n_critic": spec.n_critic,
        "width": spec.width,
        "ours_ms": ms["ours"],
        "native_ms": ms["native"],
        "ratio": ms["ours"] / ms["native"],
        "keras_io_ms": ms.get("keras_io"),
        "penalty_overhead": ms["ours"] / ms["no_penalty"],
        "first_step_s": first_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024,
        "repetitions": len(times["ours"]),
        "steps_per_block": steps,
    }


if __name__ == "__main__":
    main()
