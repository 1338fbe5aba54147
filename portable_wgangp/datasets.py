"""The named datasets and their facts: the 2-D toy distributions of the paper's ``gan_toy.py`` (their mode
centres and noise, DESIGN.md's construction) and scikit-learn's 8×8 digits (on disk). Nothing is downloaded.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import numpy as np

TOY_DATASETS = ("gaussians8", "gaussians25", "swissroll")


def toy_centres(name: str) -> np.ndarray:
    """Mode centres of a toy distribution, in its scaled units, shape ``(n_modes, 2)``."""
    if name == "gaussians8":
        s = 1.0 / np.sqrt(2.0)
        centres = 2.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        return centres / 1.414
    if name == "gaussians25":
        return np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)]) / 2.828
    raise ValueError(
        f"{name!r} has no discrete modes; the toy datasets with modes are gaussians8, gaussians25."
    )


def toy_noise_std(name: str) -> float:
    """Standard deviation of each mode after scaling (σ of the quality metrics)."""
    return {"gaussians8": 0.02 / 1.414, "gaussians25": 0.05 / 2.828}[name]


def toy_samples(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of a toy distribution, float32 ``(n, 2)``, exactly as ``gan_toy.py`` builds them."""
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        points = make_swiss_roll(n_samples=n, noise=0.25, random_state=int(rng.integers(2**31)))[0]
        return (points[:, [0, 2]] / 7.5).astype("float32")
    if name not in ("gaussians8", "gaussians25"):
        raise ValueError(f"Unknown toy dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}.")
    scale = {"gaussians8": 1.414, "gaussians25": 2.828}[name]
    raw_std = {"gaussians8": 0.02, "gaussians25": 0.05}[name]
    centres = toy_centres(name) * scale
    points = centres[rng.integers(len(centres), size=n)] + raw_std * rng.standard_normal((n, 2))
    return (points / scale).astype("float32")


def toy_minibatches(name: str, batch_size: int, seed: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """An endless stream of fresh minibatches ``(batch_size, 2)`` of a toy distribution.

    Minibatch ``i`` depends only on ``(seed, i)``, so a run resumed at minibatch ``start`` sees the same
    data as an uninterrupted one.
    """
    for index in itertools.count(start):
        yield toy_samples(name, batch_size, np.random.default_rng([seed, index]))


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (on disk, no download): images ``(1797, 8, 8, 1)`` in [-1, 1], labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 8, 8, 1) / 8.0 - 1.0  # pixel values are 0..16
    return images.astype("float32"), bunch.target.astype("int32")
