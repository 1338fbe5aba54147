"""Writes the CLI checkpoints that `test_cli.py` samples on every backend (run once, in an environment
with tensorflow and torch: ``python backends_tests/make_cli_fixtures.py``).

- ``data/toy_tensorflow.keras``: `portable-wgangp train` on 8 gaussians, written on TensorFlow;
- ``data/digits_torch.keras``: a DCGAN trained on the digits, written on torch (the file in the repository
  dates from when `nets` built a channels_first generator on torch: it also checks that such a model
  loads and samples alike on every backend, so keep it rather than rewrite it);

each with ``<name>_samples.npy``: what ``sample --n 16 --seed 3`` draws from it on the backend that wrote it.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

DATA = pathlib.Path(__file__).resolve().parent / "data"
FIXTURES = {
    "toy_tensorflow": ("tensorflow", ["--steps", "30", "--width", "32", "--batch-size", "64"]),
    "digits_torch": ("torch", ["--dataset", "digits", "--steps", "4", "--base", "8", "--latent-dim", "16"]),
}
SAMPLE = ["--n", "16", "--seed", "3"]


def cli(backend: str, *args: str) -> None:
    env = {**os.environ, "KERAS_BACKEND": backend}
    subprocess.run([sys.executable, "-m", "portable_wgangp", *args], env=env, check=True)


def main() -> None:
    for name, (backend, flags) in FIXTURES.items():
        with tempfile.TemporaryDirectory() as folder:
            cli(backend, "train", *flags, "--quiet", "--out", folder)
            shutil.copy(pathlib.Path(folder) / "checkpoint.keras", DATA / f"{name}.keras")
        cli(
            backend,
            "sample",
            "--checkpoint",
            str(DATA / f"{name}.keras"),
            *SAMPLE,
            "--out",
            str(DATA / f"{name}_samples.npy"),
        )


if __name__ == "__main__":
    main()
