"""Sample-quality measures (numpy, scipy and POT; no framework).

Toy distributions (DESIGN.md's pinned definitions, in the dataset's scaled units): a sample is *high
quality* when it lies within 3σ of its nearest mode centre; a mode is *covered* when at least 20 % of its
fair share N/K of the N samples are high-quality samples nearest to it; ``emd`` is the exact earth mover's
distance between N generated and N real samples with uniform weights and Euclidean cost.

Image quality over features ``(N, D)`` follows the reference implementations: FID as pytorch-fid / TTUR
(statistics "mu", "sigma" interchangeable with theirs), KID's subset protocol as torch-fidelity /
clean-fid, precision and recall as prdc, the Inception Score as TTUR / torch-fidelity. Pairwise work goes
by blocks of rows (`BLOCK_ELEMENTS`), so memory grows as O((N + M)·D), not N·M.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Mapping

import numpy as np
from scipy.spatial.distance import cdist

HQ_SIGMAS = 3.0

COVERAGE_SHARE = 0.2

BLOCK_ELEMENTS = 2**23  # entries of one block of a pairwise matrix: 64 MiB of float64

_EPS = np.finfo("float64").eps


def _features(x, name: str, *, min_samples: int = 2) -> np.ndarray:
    """``x`` as finite floating-point features ``(N, D)`` with N ≥ ``min_samples``; 1-D ``(N,)`` is N samples
    of one feature (as ``np.cov(x, rowvar=False)`` reads it). float32 stays float32 (no copy of a large
    set: each metric computes in float64 where it matters); other types become float64."""
    x = np.asarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype("float64")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(
            f"{name} must be features of shape (N, D), got shape {x.shape}; flatten each sample or run a "
            "feature extractor first."
        )
    if len(x) < min_samples:
        raise ValueError(f"{name} has {len(x)} samples; at least {min_samples} are needed.")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop or fix those samples.")
    return x


def _feature_pair(a, b, names: tuple[str, str], *, min_samples: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Both sets checked by `_features`, with the same number D of features."""
    a, b = _features(a, names[0], min_samples=min_samples), _features(b, names[1], min_samples=min_samples)
    _same_dimension(a.shape[1], b.shape[1], names)
    return a, b


def _same_dimension(dim_a: int, dim_b: int, names: tuple[str, str]) -> None:
    if dim_a != dim_b:
        raise ValueError(
            f"{names[0]} has {dim_a} features per sample and {names[1]} has {dim_b}; compare features of the "
            "same extractor."
        )


def _at_least(value: int, minimum: int, name: str) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be an integer ≥ {minimum}, got {value!r}.")
    return int(value)


def _row_blocks(n_rows: int, n_cols: int) -> list[slice]:
    """Consecutive slices covering ``range(n_rows)``, each of at most ``BLOCK_ELEMENTS // n_cols`` rows."""
    step = max(1, BLOCK_ELEMENTS // max(n_cols, 1))
    return [slice(start, min(start + step, n_rows)) for start in range(0, n_rows, step)]


# POT imports every framework it finds for its backends unless these say not to; it runs on numpy here.
_POT_FRAMEWORKS_OFF = ("PYTORCH", "TENSORFLOW", "JAX", "CUPY")


def _pot():
    """POT (`ot`), imported with its framework backends switched off (a user's setting is kept)."""
    for name in _POT_FRAMEWORKS_OFF:
        os.environ.setdefault(f"POT_BACKEND_DISABLE_{name}", "1")
    import ot

    return ot


def earth_movers_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Exact EMD (Wasserstein-1) between point sets ``a`` ``(N, ...)`` and ``b`` ``(M, ...)``.

    min over plans P ≥ 0 with row sums 1/N and column sums 1/M of Σ_ij P_ij ‖a_i − b_j‖ (uniform weights,
    Euclidean cost over the flattened samples), solved exactly by POT's network simplex (``ot.emd2``). For
    N = M an optimal plan is a permutation, so this is the mean cost of an optimal assignment.
    """
    a, b = _points(a, "a"), _points(b, "b")
    ot = _pot()
    _same_dimension(a.shape[1], b.shape[1], ("a", "b"))
    uniform_a, uniform_b = np.full(len(a), 1.0 / len(a)), np.full(len(b), 1.0 / len(b))
    cost, log = ot.emd2(uniform_a, uniform_b, cdist(a, b), numItermax=10**9, log=True)
    if log["warning"] is not None:
        raise RuntimeError(f"POT's exact EMD solver did not reach the optimum: {log['warning']}")
    return float(cost)


def _points(x, name: str) -> np.ndarray:
    """Samples ``(N, ...)`` flattened to finite points ``(N, D)``, N ≥ 1."""
    x = np.asarray(x, dtype="float64")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError(f"{name} has no samples (shape {x.shape}); the EMD needs at least one on each side.")
    return _features(x.reshape(len(x), -1), name, min_samples=1)


def mode_quality(samples: np.ndarray, centres: np.ndarray, sigma: float) -> dict:
    """``modes_covered``, ``n_modes`` and ``high_quality_fraction`` of 2-D ``samples`` ``(N, 2)``."""
    samples = np.asarray(samples, dtype="float64")
    if len(samples) == 0:
        raise ValueError("mode_quality got no samples; an empty set covers no mode, so pass at least one.")
    distances = cdist(samples, centres)
    nearest = distances.argmin(axis=1)
    high_quality = distances[np.arange(len(samples)), nearest] <= HQ_SIGMAS * sigma
    per_mode = np.bincount(nearest[high_quality], minlength=len(centres))
    fair_share = len(samples) / len(centres)
    return {
        "modes_covered": int(np.sum(per_mode >= COVERAGE_SHARE * fair_share)),
        "n_modes": len(centres),
        "high_quality_fraction": float(high_quality.mean()),
    }


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (``np.cov``, N − 1) of features ``(N, D)``, float64.

    These are FID's Gaussian statistics, stored by pytorch-fid, TTUR and ``portable-wgangp stats`` as
    "mu" and "sigma"; `frechet_distance` accepts them in place of features.
    """
    features = _features(features, "features")
    return features.mean(axis=0, dtype="float64"), np.atleast_2d(np.cov(features, rowvar=False))


def streamed_feature_statistics(batches: Iterable) -> tuple[np.ndarray, np.ndarray]:
    """`feature_statistics` of the concatenation of ``batches`` of features ``(n_i, D)``, accumulated one
    batch at a time: memory O(D²) however many samples.

    Sums are shifted by the first batch's mean (in float64) so that the covariance
    ``(Σ dᵢdᵢᵀ − N d̄d̄ᵀ) / (N − 1)`` of the shifted features ``d`` loses no precision to a large mean.
    """
    count, shift, total, outer = 0, None, None, None
    for batch in batches:
        batch = _features(batch, "features", min_samples=1).astype("float64")
        if shift is None:
            shift, total, outer = batch.mean(axis=0), 0.0, 0.0
        shifted = batch - shift
        count, total, outer = count + len(shifted), total + shifted.sum(axis=0), outer + shifted.T @ shifted
    if count < 2:
        raise ValueError(f"features has {count} samples; at least 2 are needed.")
    mean = total / count
    return shift + mean, np.atleast_2d((outer - count * np.outer(mean, mean)) / (count - 1))


def _gaussian(x, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of features ``(N, D)``, of a ``(mu, sigma)`` tuple or of a mapping (dict, npz file) with
    "mu" and "sigma"."""
    if isinstance(x, Mapping):
        missing = sorted({"mu", "sigma"} - set(x.keys()))
        if missing:
            raise ValueError(f"{name} lacks {missing}; pass features (N, D) or statistics 'mu' and 'sigma'.")
        x = (x["mu"], x["sigma"])
    elif not (isinstance(x, tuple) and len(x) == 2 and np.ndim(x[1]) == 2):
        return feature_statistics(_features(x, name))
    mu, sigma = np.atleast_1d(np.asarray(x[0], "float64")), np.atleast_2d(np.asarray(x[1], "float64"))
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(
            f"{name}'s statistics have shapes mu {mu.shape}, sigma {sigma.shape}; expected (D,) and (D, D)."
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{name}'s statistics hold NaN or infinite values; recompute them from features.")
    return mu, sigma


def _trace_sqrt_product(sigma_a: np.ndarray, sigma_b: np.ndarray) -> float:
    """Tr((Σa Σb)^½) = Σ_i √λ_i, λ the eigenvalues of the symmetric PSD matrix Σa^½ Σb Σa^½.

    Σa Σb = Σa^½ · (Σa^½ Σb) and Σa^½ Σb Σa^½ = (Σa^½ Σb) · Σa^½ have the same eigenvalues, so two symmetric
    eigendecompositions replace ``sqrtm``'s complex Schur form of the non-symmetric Σa Σb; eigenvalues that
    round-off pushes below 0 (singular covariances) are clipped to 0.
    """
    values, vectors = np.linalg.eigh(sigma_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    product = root_a @ sigma_b @ root_a
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((product + product.T) / 2.0), 0.0, None)).sum())


def frechet_distance(a, b) -> float:
    """FID's formula ‖μa − μb‖² + Tr(Σa) + Tr(Σb) − 2 Tr((Σa Σb)^½) between two Gaussians.

    Each side is features ``(N, D)`` (N ≥ 2; statistics by `feature_statistics`) or precomputed statistics:
    a ``(mu, sigma)`` tuple or a mapping such as a pytorch-fid / TTUR ``.npz`` with "mu" and "sigma".
    """
    (mu_a, sigma_a), (mu_b, sigma_b) = _gaussian(a, "a"), _gaussian(b, "b")
    _same_dimension(len(mu_a), len(mu_b), ("a", "b"))
    traces = float(np.trace(sigma_a) + np.trace(sigma_b))
    return float(np.sum((mu_a - mu_b) ** 2)) + traces - 2.0 * _trace_sqrt_product(sigma_a, sigma_b)


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The kernel matrix k(x_i, y_j) = (x_i·y_j / D + 1)³, ``(len(x), len(y))`` (cubed by products: ``** 3``
    costs ten times as much)."""
    kernel = x @ y.T
    kernel /= x.shape[1]
    kernel += 1.0
    cube = kernel * kernel
    cube *= kernel
    return cube


def _kernel_sum(x: np.ndarray, y: np.ndarray) -> float:
    """Σ_ij k(x_i, y_j), by blocks of rows of ``x``."""
    return float(sum(_cubic_kernel(x[rows], y).sum() for rows in _row_blocks(len(x), len(y))))


def _kernel_sum_off_diagonal(x: np.ndarray) -> float:
    """Σ_{i≠j} k(x_i, x_j): each block of rows against the rows from its own on; k is symmetric, so the part
    right of the block's diagonal square counts twice."""
    total = 0.0
    for rows in _row_blocks(len(x), len(x)):
        block = _cubic_kernel(x[rows], x[rows.start :])
        square = block[:, : rows.stop - rows.start]
        total += square.sum() - np.trace(square) + 2.0 * block[:, square.shape[1] :].sum()
    return float(total)


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """The unbiased MMD² estimate (Bińkowski et al. 2018) between ``x`` ``(m, D)`` and ``y`` ``(n, D)``:
    Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (n(n−1)) − 2 Σ_ij k(x_i, y_j) / (mn)."""
    x, y, m, n = x.astype("float64", copy=False), y.astype("float64", copy=False), len(x), len(y)
    within = _kernel_sum_off_diagonal(x) / (m * (m - 1)) + _kernel_sum_off_diagonal(y) / (n * (n - 1))
    return within - 2.0 * _kernel_sum(x, y) / (m * n)


def kernel_inception_distance_with_std(
    a, b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID's mean and standard deviation (ddof 0) over subsets, as torch-fidelity and clean-fid report it.

    When both sets have at most ``subset_size`` samples: the unbiased MMD² of the full sets (std 0), the
    value every subset of those protocols gives. Otherwise ``subsets`` draws of min(N, subset_size)
    samples without replacement from each side, ``np.random.RandomState(seed)`` drawing ``a``'s then
    ``b``'s indices for each subset (torch-fidelity's order: ``seed=2020`` draws its subsets).
    """
    a, b = _feature_pair(a, b, ("a", "b"))
    subsets, subset_size = _at_least(subsets, 1, "subsets"), _at_least(subset_size, 2, "subset_size")
    if len(a) <= subset_size and len(b) <= subset_size:
        return float(_mmd2_unbiased(a, b)), 0.0
    rng = np.random.RandomState(seed)
    estimates = [
        _mmd2_unbiased(
            a[rng.choice(len(a), min(len(a), subset_size), replace=False)],
            b[rng.choice(len(b), min(len(b), subset_size), replace=False)],
        )
        for _ in range(subsets)
    ]
    return float(np.mean(estimates)), float(np.std(estimates))


def kernel_inception_distance(a, b, *, subsets: int = 100, subset_size: int = 1000, seed: int = 0) -> float:
    """KID (Bińkowski et al. 2018): the unbiased MMD² between features ``a`` ``(N, D)`` and ``b`` ``(M, D)``
    (N, M ≥ 2) with the cubic kernel k(x, y) = (x·y / D + 1)³, averaged over random subsets.

    The protocol of torch-fidelity and clean-fid: the mean over ``subsets`` subsets of ``subset_size``
    samples per side (seeded by ``seed``); sets of at most ``subset_size`` samples are used whole, once.
    `kernel_inception_distance_with_std` also gives the spread over the subsets.
    """
    return kernel_inception_distance_with_std(a, b, subsets=subsets, subset_size=subset_size, seed=seed)[0]


def _squared_distances(x: np.ndarray, x_sq: np.ndarray, y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    """‖x_i − y_j‖² ``(len(x), len(y))`` as ‖x_i‖² + ‖y_j‖² − 2 x_i·y_j (one matrix product), clipped at 0.

    Its error is at most 2(D + 4)·ε·(‖x_i‖² + ‖y_j‖²) (ε the float64 epsilon: dot-product round-off).
    """
    out = x @ y.T
    out *= -2.0
    out += x_sq[:, None]
    out += y_sq[None, :]
    return np.maximum(out, 0.0, out=out)


class _Balls:
    """The k-NN balls of a point set ``(N, D)``: around each point, the ball reaching its k-th nearest other
    point (the k-th smallest distance, the point itself being the 0-th).

    ``approx_sq`` holds the squared radii from `_squared_distances` over the points less ``centre`` (a k-th
    smallest value moves no more than the distances do, so their error bound holds); `exact` gives a
    radius from ``cdist`` over the points as given.
    """

    def __init__(self, points: np.ndarray, centre: np.ndarray, k: int):
        self.points, self.k, self._exact = points, k, {}
        self.centred = points - centre  # distances do not move; smaller norms, smaller round-off
        self.sq_norms = np.einsum("ij,ij->i", self.centred, self.centred)
        self.approx_sq = np.empty(len(points))
        for rows in _row_blocks(len(points), len(points)):
            block = self.squared_distances(self.centred[rows], self.sq_norms[rows])
            block.partition(k, axis=1)  # in place: column k now holds each row's k-th smallest
            self.approx_sq[rows] = block[:, k]

    def squared_distances(self, x: np.ndarray, x_sq: np.ndarray) -> np.ndarray:
        """`_squared_distances` from centred points ``x`` (norms ``x_sq``) to every point of the set."""
        return _squared_distances(x, x_sq, self.centred, self.sq_norms)

    def exact(self, i: int) -> float:
        if i not in self._exact:
            self._exact[i] = np.partition(cdist(self.points[i : i + 1], self.points)[0], self.k)[self.k]
        return self._exact[i]


def _settle(queries: np.ndarray, balls: _Balls, pairs: tuple[np.ndarray, np.ndarray], inside: np.ndarray):
    """For each (query q, ball b) pair too close to call, sets ``inside[q]`` when ‖q − b‖ < b's radius, both
    by ``cdist`` over the points as given."""
    for q, b in zip(*pairs):
        if not inside[q] and cdist(queries[q : q + 1], balls.points[b : b + 1])[0, 0] < balls.exact(b):
            inside[q] = True


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds, as prdc computes them.

    Precision: the fraction of generated samples strictly inside the real manifold, the union of the balls
    around each real sample reaching its k-th nearest real neighbour; recall: the fraction of real
    samples strictly inside the generated manifold. Features ``(N, D)`` and ``(M, D)`` with N, M > k.

    One pass of matrix products per block of rows gives every distance (the radii of each set, then the
    real × generated distances for both tests at once); a comparison within the distances' round-off bound
    of its radius is redone with ``cdist``, so the result is that of ``cdist``'s distances throughout.
    """
    k = _at_least(k, 1, "k")
    real, generated = _feature_pair(real, generated, ("real", "generated"), min_samples=k + 1)
    centre = real.mean(axis=0, dtype="float64")
    real_balls, generated_balls = _Balls(real, centre, k), _Balls(generated, centre, k)
    largest = max(real_balls.sq_norms.max(), generated_balls.sq_norms.max())
    # bounds the error of (squared distance − radius²): products, centring and cdist's own round-off
    tolerance = 32.0 * (real.shape[1] + 4) * _EPS * largest
    precise, recalled = np.zeros(len(generated), bool), np.zeros(len(real), bool)
    for rows in _row_blocks(len(real), len(generated)):
        squared = generated_balls.squared_distances(real_balls.centred[rows], real_balls.sq_norms[rows])
        gap = squared - real_balls.approx_sq[rows, None]  # generated j against the ball of real i
        precise |= (gap < -tolerance).any(axis=0)
        close = np.nonzero((gap >= -tolerance) & (gap <= tolerance) & ~precise[None, :])
        _settle(generated, real_balls, (close[1], close[0] + rows.start), precise)
        gap = np.subtract(squared, generated_balls.approx_sq[None, :], out=squared)  # real i, ball of j
        recalled[rows] |= (gap < -tolerance).any(axis=1)
        close = np.nonzero((gap >= -tolerance) & (gap <= tolerance) & ~recalled[rows, None])
        _settle(real, generated_balls, (close[0] + rows.start, close[1]), recalled)
    return float(precise.mean()), float(recalled.mean())


def inception_score(logits_or_probs: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Inception Score (Salimans et al. 2016) of class predictions ``(N, C)``: mean and std over splits.

    The rows split in order into ``splits`` parts [i·N // splits, (i+1)·N // splits) (TTUR's and
    torch-fidelity's bounds, without shuffling); a part's score is exp(mean_x KL(p(y|x) ‖ p(y))) with p(y)
    the part's mean prediction; returns the mean and the standard deviation (ddof 0, as they do) of the
    parts' scores. Rows that are all non-negative and sum to 1 (within 1e-3) are read as probabilities,
    anything else as logits (softmax).
    """
    from scipy.special import rel_entr, softmax

    scores = np.asarray(logits_or_probs, dtype="float64")
    if scores.ndim != 2:
        raise ValueError(f"inception_score needs predictions of shape (N, C), got shape {scores.shape}.")
    if not np.isfinite(scores).all():
        raise ValueError("inception_score got NaN or infinite predictions; drop or fix those rows.")
    splits = _at_least(splits, 1, "splits")
    if len(scores) < splits:
        raise ValueError(f"inception_score got {len(scores)} samples for {splits} splits; pass more samples.")
    probabilities = (scores >= 0).all() and np.all(np.abs(scores.sum(axis=1) - 1.0) <= 1e-3)
    p = scores if probabilities else softmax(scores, axis=1)
    bounds = np.arange(splits + 1) * len(p) // splits
    per_split = [
        np.exp(rel_entr(part, part.mean(axis=0)).sum(axis=1).mean())
        for part in (p[start:stop] for start, stop in itertools.pairwise(bounds))
    ]
    return float(np.mean(per_split)), float(np.std(per_split))


# The feature extractors and quality figures moved to `portable_wgangp.features` (they build Keras models
# and read datasets); their names here are looked up there when first used, so this module imports neither.
_IN_FEATURES = (
    "DigitsFeatures",
    "PixelFeatures",
    "InceptionFeatures",
    "image_quality",
    "feature_quality",
    "default_extractor",
    "extractor_from_spec",
)


def __getattr__(name: str):
    if name not in _IN_FEATURES:
        raise AttributeError(f"module 'portable_wgangp.metrics' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module("portable_wgangp.features"), name)
