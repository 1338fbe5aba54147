"""Sample-quality measures (numpy and scipy; no framework).

Toy distributions (DESIGN.md's pinned definitions, in the dataset's scaled units): a sample is *high
quality* when it lies within 3σ of its nearest mode centre; a mode is *covered* when at least 20 % of its
fair share N/K of the N samples are high-quality samples nearest to it; ``emd`` is the exact earth mover's
distance between N generated and N real samples with uniform weights and Euclidean cost.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

HQ_SIGMAS = 3.0
COVERAGE_SHARE = 0.2


def earth_movers_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Exact EMD between two equally sized point sets ``(N, D)`` with uniform weights.

    With N points on each side and weights 1/N, an optimal transport plan is a permutation, so the exact
    EMD is the mean cost of an optimal assignment (scipy's solver).
    """
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    if a.shape != b.shape:
        raise ValueError(f"EMD needs two sets of the same shape, got {a.shape} and {b.shape}.")
    cost = cdist(a.reshape(len(a), -1), b.reshape(len(b), -1))
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].mean())


def mode_quality(samples: np.ndarray, centres: np.ndarray, sigma: float) -> dict:
    """``modes_covered``, ``n_modes`` and ``high_quality_fraction`` of 2-D ``samples`` ``(N, 2)``."""
    distances = cdist(np.asarray(samples, dtype="float64"), centres)
    nearest = distances.argmin(axis=1)
    high_quality = distances[np.arange(len(samples)), nearest] <= HQ_SIGMAS * sigma
    per_mode = np.bincount(nearest[high_quality], minlength=len(centres))
    fair_share = len(samples) / len(centres)
    return {
        "modes_covered": int(np.sum(per_mode >= COVERAGE_SHARE * fair_share)),
        "n_modes": len(centres),
        "high_quality_fraction": float(high_quality.mean()),
    }
