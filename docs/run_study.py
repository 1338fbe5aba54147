"""The defaults study: train from the CLI over backends, seeds and settings; print a markdown table.

    python docs/run_study.py --backends jax tensorflow torch --seeds 0 1 2 -- --dataset gaussians8
    python docs/run_study.py --backends jax --seeds 0 1 2 --label "lr 1e-3" -- --lr 1e-3

Everything after ``--`` goes to ``portable-wgangp train``. Runs are sequential (one per process, the
backend set through KERAS_BACKEND) and written under ``runs/study/``.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", nargs="+", default=["jax", "tensorflow", "torch"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--label", default="defaults")
    parser.add_argument("flags", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    flags = [f for f in args.flags if f != "--"]
    rows = []
    for backend in args.backends:
        for seed in args.seeds:
            out = pathlib.Path("runs/study") / args.label.replace(" ", "_") / f"{backend}-{seed}"
            command = [
                sys.executable,
                "-m",
                "portable_wgangp",
                "train",
                "--quiet",
                "--seed",
                str(seed),
                "--out",
                str(out),
            ]
            started = time.perf_counter()
            subprocess.run(
                command + flags, check=True, env={**os.environ, "KERAS_BACKEND": backend}, capture_output=True
            )
            seconds = time.perf_counter() - started
            quality = json.loads((out / "quality.json").read_text())
            rows.append((args.label, backend, seed, quality, seconds))
            print(_row(*rows[-1]), flush=True)


def _row(label, backend, seed, q, seconds):
    modes = f"{q['modes_covered']}/{q['n_modes']}" if q["n_modes"] else "-"
    hq = f"{100 * q['high_quality_fraction']:.1f} %" if q["high_quality_fraction"] is not None else "-"
    return f"| {label} | {backend} | {seed} | {modes} | {hq} | {q['emd']:.4f} | {seconds:.0f} s |"


if __name__ == "__main__":
    main()
