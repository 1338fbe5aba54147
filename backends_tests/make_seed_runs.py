"""Records the runs of `seed_runs.py` on JAX: ``python backends_tests/make_seed_runs.py``."""

import os
import pathlib
import sys

os.environ["KERAS_BACKEND"] = "jax"
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import numpy as np
import seed_runs as runs

DATA = pathlib.Path(__file__).resolve().parent / "data"


def main() -> None:
    record = {}
    gan = runs.toy_gan()
    record.update({f"initial_{i}": w for i, w in enumerate(runs.weights(gan.generator))})
    first = runs.fit(gan, runs.toy_data(0, 1), runs.TOY["batch"])
    record["first_step_names"] = np.array(sorted(first))
    record["first_step_logs"] = np.array([first[k] for k in sorted(first)])
    runs.fit(gan, runs.toy_data(1, 9), runs.TOY["batch"])
    gan.save(DATA / "seed_run_step10.keras")
    runs.fit(gan, runs.toy_data(10, 10), runs.TOY["batch"])
    for name in ("generator", "critic"):
        record.update({f"toy_{name}_{i}": w for i, w in enumerate(runs.weights(getattr(gan, name)))})
    gan = runs.dcgan_gan()
    runs.fit(gan, runs.dcgan_data(), runs.DCGAN["batch"])
    for name in ("generator", "critic"):
        record.update({f"dcgan_{name}_{i}": w for i, w in enumerate(runs.weights(getattr(gan, name)))})
    np.savez_compressed(DATA / "seed_runs.npz", **record)


if __name__ == "__main__":
    main()
