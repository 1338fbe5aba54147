"""The runs that one seed must reproduce on every backend (`test_same_seed.py`), recorded on JAX by
``python backends_tests/make_seed_runs.py`` into ``data/seed_runs.npz`` and ``data/seed_run_step10.keras``.

- ``toy``: the CLI's toy networks (``nets.mlp``, width 64) on 8 gaussians, batch 64, n_critic 5, Adam, seed 0:
  20 generator steps, fitted as 1 + 9 + 10 (the first step's logs and the checkpoint at step 10 kept);
- ``dcgan``: ``nets.dcgan_*`` (base 8) on the 8×8 digits, batch 32, n_critic 5, seed 0: 5 generator steps.

Every random number — initial weights, z, ε — comes from `portable_wgangp.rng`; the data is numpy's.
"""

import keras
import numpy as np

import portable_wgangp as pw

TOY = {"batch": 64, "steps": 20, "n_critic": 5}
DCGAN = {"batch": 32, "steps": 5, "n_critic": 5}


def toy_gan():
    keras.utils.set_random_seed(0)
    generator, critic = pw.nets.mlp(2, 2, width=64), pw.nets.mlp(2, 1, width=64)
    gan = pw.WGANGP(generator, critic, 2, n_critic=TOY["n_critic"], gp_weight=0.1, seed=0)
    gan.compile()
    return gan


def toy_data(first_step: int, steps: int) -> np.ndarray:
    """The real minibatches of generator steps ``first_step`` .. ``first_step + steps − 1``."""
    rows = TOY["batch"] * TOY["n_critic"]
    x = pw.datasets.toy_samples("gaussians8", rows * TOY["steps"], np.random.default_rng(0))
    return x[first_step * rows : (first_step + steps) * rows]


def dcgan_gan():
    keras.utils.set_random_seed(0)
    generator = pw.nets.dcgan_generator(16, (8, 8, 1), base=8)
    critic = pw.nets.dcgan_critic((8, 8, 1), base=8)
    gan = pw.WGANGP(generator, critic, 16, n_critic=DCGAN["n_critic"], seed=0)
    gan.compile()
    return gan


def dcgan_data() -> np.ndarray:
    return pw.datasets.digits()[0][: DCGAN["batch"] * DCGAN["n_critic"] * DCGAN["steps"]]


def fit(gan, x, batch: int) -> dict:
    """Fits ``x`` in order, one pass; the last step's logs."""
    history = gan.fit(x, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return {name: values[-1] for name, values in history.history.items()}


def weights(model) -> list[np.ndarray]:
    return [np.asarray(keras.ops.convert_to_numpy(v)) for v in model.weights]


def relative_l2(actual: list, expected: list) -> float:
    """‖actual − expected‖ / ‖expected‖ over all of a network's weights."""
    difference = sum(float(np.sum((a - e) ** 2)) for a, e in zip(actual, expected))
    return (difference / sum(float(np.sum(e**2)) for e in expected)) ** 0.5
