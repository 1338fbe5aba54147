"""Straightforward implementations of the quality metrics, written from their papers' and reference
implementations' formulas with full pairwise matrices: the oracles of ``test_metrics_scale.py`` and the
"before" column of ``benchmarks/metrics.py`` (they are the library's formulas before blocking)."""

from __future__ import annotations

import warnings

import numpy as np
from scipy import linalg
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist


def frechet_distance_sqrtm(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's formula: ‖μa − μb‖² + Tr(Σa + Σb − 2 sqrtm(Σa Σb)), real part of the root."""
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b).real
    return float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def kid_full_matrices(a: np.ndarray, b: np.ndarray) -> float:
    """The unbiased MMD² with k(x, y) = (x·y / D + 1)³ from the three full kernel matrices."""
    dim, m, n = a.shape[1], len(a), len(b)
    k_aa, k_bb, k_ab = ((x @ y.T / dim + 1.0) ** 3 for x, y in ((a, a), (b, b), (a, b)))
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def precision_recall_cdist(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """prdc's precision and recall on ``cdist`` matrices: k-NN radii by a full sort, strict ``<``."""

    def inside(manifold, queries):
        radii = np.sort(cdist(manifold, manifold), axis=1)[:, k]  # column 0 is the point itself
        return (cdist(queries, manifold) < radii[None, :]).any(axis=1).mean()

    return float(inside(real, generated)), float(inside(generated, real))


def emd_assignment(a: np.ndarray, b: np.ndarray) -> float:
    """EMD of two equally sized sets: the mean cost of scipy's optimal assignment."""
    cost = cdist(a.reshape(len(a), -1), b.reshape(len(b), -1))
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def inception_score_loop(probabilities: np.ndarray, splits: int) -> tuple[float, float]:
    """Salimans et al.'s loop (TTUR's ``get_inception_score``): KL of each prediction to its part's mean."""
    n, scores = len(probabilities), []
    for i in range(splits):
        part = probabilities[i * n // splits : (i + 1) * n // splits]
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.where(part > 0, part * (np.log(part) - np.log(part.mean(axis=0))), 0.0)
        scores.append(np.exp(kl.sum(axis=1).mean()))
    return float(np.mean(scores)), float(np.std(scores))
