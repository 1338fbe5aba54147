"""Small studies of the training features on digits (README "Training like the best GAN codebases").

Each study runs the CLI (`portable-wgangp train`/`evaluate`) on the active backend (JAX is the quickest
on CPU), a few seeds each, and prints its raw figures (also to ``--json``):

- ``ema``: digits, 1000 generator steps, ``--ema``; the same checkpoint evaluated with the EMA and with
  ``--raw`` (a paired comparison: one run, two generators).
- ``lazy``: seconds per generator step of digits training (n_critic 5, in process, the best of 3
  interleaved timings of 200 steps each) with the penalty on every update, ``--gp-every 5`` (static) and
  ``--gp-every 4`` (``ops.cond``), and the FID reached after 1000 steps.
- ``augment``: 10 % of digits (179 of the 1797 images, conditional), 1000 steps, with and without
  ``--augment translation,cutout,color``; FID and label accuracy against ALL digits.

    KERAS_BACKEND=jax python docs/features_study.py --study ema --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

# The repository's package, in this process (the lazy study's timings) and in the CLI runs alike, whatever
# the working directory and whatever copy is installed.
ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def cli(*args) -> str:
    command = [sys.executable, "-m", "portable_wgangp", *map(str, args)]
    result = subprocess.run(command, capture_output=True, text=True, env=ENV)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return result.stdout


def evaluate(folder: pathlib.Path, *extra) -> dict:
    out = cli("evaluate", "--checkpoint", folder / "checkpoint.keras", "--dataset", "digits", *extra)
    return json.loads(out[out.index("{") :])


def study_ema(root, seeds, steps):
    rows = []
    for seed in seeds:
        out = root / f"ema-{seed}"
        cli(
            "train", "--dataset", "digits", "--steps", steps, "--seed", seed, "--ema", "--out", out, "--quiet"
        )
        ema, raw = evaluate(out, "--seed", seed), evaluate(out, "--seed", seed, "--raw")
        rows.append({"seed": seed, "ema": ema, "raw": raw})
    return rows


def step_seconds(gp_every_values, steps: int = 200, repeats: int = 3) -> dict:
    """Seconds per generator step of the digits run's training for each K of ``gp_every_values``, in
    process: each model compiled and warmed up first, then ``repeats`` rounds that time ``steps`` steps of
    every K in turn (interleaved, so a change in the machine's load hits all of them); the best round."""
    import time

    from portable_wgangp import config, tasks

    models = {}
    for gp_every in gp_every_values:
        settings = config.resolve({"dataset": "digits", "gp_every": gp_every})
        task = tasks.make_task(settings)
        gan = tasks.build_gan(settings, task)
        batches = task.rounds(first_step=0, steps=steps)
        gan.fit(batches, steps_per_epoch=10, verbose=0)  # compiles
        models[gp_every] = gan, batches
    timings = {gp_every: [] for gp_every in gp_every_values}
    for _ in range(repeats):
        for gp_every, (gan, batches) in models.items():
            started = time.perf_counter()
            gan.fit(batches, steps_per_epoch=steps, verbose=0)
            timings[gp_every].append((time.perf_counter() - started) / steps)
    return {gp_every: min(seconds) for gp_every, seconds in timings.items()}


def study_lazy(root, seeds, steps):
    rows = []
    for gp_every in (1, 5, 4):
        for seed in seeds:
            out = root / f"lazy-{gp_every}-{seed}"
            cli(
                "train", "--dataset", "digits", "--steps", steps, "--seed", seed, "--gp-every", gp_every,
                "--out", out, "--quiet",
            )  # fmt: skip
            rows.append(
                {"gp_every": gp_every, "seed": seed, **json.loads((out / "quality.json").read_text())}
            )
    for gp_every, seconds in step_seconds((1, 5, 4)).items():
        rows.append({"gp_every": gp_every, "s_per_step": seconds})
    return rows


def study_augment(root, seeds, steps):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    subset = rng.permutation(len(digits.images))[: len(digits.images) // 10]
    path = root / "digits10.npz"
    images = (digits.images[subset] * (255 / 16)).round().astype("uint8")[..., None]
    np.savez(path, x=images, labels=digits.target[subset])
    rows = []
    for policy in ("", "translation,cutout,color"):
        for seed in seeds:
            out = root / f"augment-{policy or 'none'}-{seed}"
            flags = ["--augment", policy] if policy else []
            cli(
                "train", "--dataset", f"npz:{path}:x", "--conditional", "--steps", steps, "--seed", seed,
                "--out", out, "--quiet", "--extractor", "digits-mlp64", *flags,
            )  # fmt: skip
            quality = evaluate(out, "--seed", seed)
            rows.append({"augment": policy or "none", "seed": seed, **quality})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("ema", "lazy", "augment"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--json", help="write the raw figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        rows = {"ema": study_ema, "lazy": study_lazy, "augment": study_augment}[args.study](
            pathlib.Path(root), args.seeds, args.steps
        )
    print(json.dumps(rows, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
