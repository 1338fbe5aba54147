"""The quality metrics at scale (issue 15): each against an independent formula, closed forms and the
reference implementations' conventions, on small data; blocked code paths with tiny blocks; edge cases."""

import math

import metric_references as ref
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from scipy.special import softmax
from scipy.stats import wasserstein_distance

from portable_wgangp import metrics

RNG = np.random.default_rng(15)


@pytest.fixture
def tiny_blocks(monkeypatch):
    """Blocks of a few rows, so that every blocked loop runs many times."""
    monkeypatch.setattr(metrics, "BLOCK_ELEMENTS", 64)


def correlated(n, dim, scale=1.0, shift=0.0):
    return (RNG.normal(size=(n, dim)) @ RNG.normal(size=(dim, dim)) / math.sqrt(dim)) * scale + shift


# -- FID -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, dim", [(400, 12), (300, 64), (1000, 3)])
def test_fid_eigenvalue_form_equals_the_sqrtm_form(n, dim):
    a, b = correlated(n, dim), correlated(n + 50, dim, scale=0.7, shift=0.3)
    assert metrics.frechet_distance(a, b) == pytest.approx(ref.frechet_distance_sqrtm(a, b), rel=1e-10)


def test_fid_of_diagonal_gaussians_has_its_closed_form_even_when_singular():
    mu_a, mu_b = RNG.normal(size=6), RNG.normal(size=6)
    var_a, var_b = np.array([1.0, 4.0, 0.0, 2.5, 0.3, 0.0]), np.array([2.0, 1.0, 3.0, 0.0, 0.3, 0.0])
    expected = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(var_a) - np.sqrt(var_b)) ** 2)
    got = metrics.frechet_distance((mu_a, np.diag(var_a)), {"mu": mu_b, "sigma": np.diag(var_b)})
    assert got == pytest.approx(expected, rel=1e-12)


def test_fid_takes_statistics_as_tuple_dict_or_npz_in_place_of_features(tmp_path):
    a, b = correlated(300, 5), correlated(200, 5, shift=1.0)
    mu, sigma = metrics.feature_statistics(b)
    np.testing.assert_allclose(mu, b.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(b.T), rtol=1e-12)
    np.savez(tmp_path / "stats.npz", mu=mu.astype("float32"), sigma=sigma)
    expected = metrics.frechet_distance(a, b)
    with np.load(tmp_path / "stats.npz") as stats:
        assert metrics.frechet_distance(a, stats) == pytest.approx(expected, rel=1e-6)  # float32 mu
    assert metrics.frechet_distance(a, (mu, sigma)) == pytest.approx(expected, rel=1e-12)
    assert metrics.frechet_distance({"mu": mu, "sigma": sigma}, a) == pytest.approx(expected, rel=1e-10)


def test_fid_reads_one_dimensional_features_as_one_feature():
    a, b = RNG.normal(size=200), RNG.normal(2.0, 3.0, size=150)
    expected = (a.mean() - b.mean()) ** 2 + (a.std(ddof=1) - b.std(ddof=1)) ** 2
    assert metrics.frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert metrics.frechet_distance(a, b[:, None]) == metrics.frechet_distance(a, b)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "a has 1 samples; at least 2"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "a has 3 features per sample and b has 4"),
        (np.array([[0.0, np.nan], [1.0, 2.0]]), np.zeros((5, 2)), "a holds NaN or infinite"),
        (np.zeros((5, 3)), {"mu": np.zeros(3)}, r"b lacks \['sigma'\]"),
        (np.zeros((5, 3)), (np.zeros(3), np.eye(4)), "expected \\(D,\\) and \\(D, D\\)"),
        (np.zeros((4, 2, 2)), np.zeros((4, 4)), "shape \\(N, D\\), got shape \\(4, 2, 2\\)"),
    ],
)
def test_fid_refuses_bad_inputs_with_a_clear_message(a, b, message):
    with pytest.raises(ValueError, match=message):
        metrics.frechet_distance(a, b)


# -- KID -----------------------------------------------------------------------------------------------------


def test_kid_full_estimator_equals_the_full_matrices_for_sets_within_the_subset_size(tiny_blocks):
    a, b = correlated(90, 7), correlated(70, 7, shift=0.2)
    assert metrics.kernel_inception_distance(a, b, subset_size=90) == pytest.approx(
        ref.kid_full_matrices(a, b), rel=1e-12
    )
    assert metrics.kernel_inception_distance_with_std(a, b)[1] == 0.0


def test_kid_of_equal_sizes_is_clean_fids_per_subset_formula():
    a, b = correlated(60, 9), correlated(60, 9, scale=1.3)
    m, dim = len(a), a.shape[1]
    within = (a @ a.T / dim + 1) ** 3 + (b @ b.T / dim + 1) ** 3
    cross = (a @ b.T / dim + 1) ** 3
    clean_fid = ((within.sum() - np.diag(within).sum()) / (m - 1) - cross.sum() * 2 / m) / m
    assert metrics.kernel_inception_distance(a, b) == pytest.approx(clean_fid, rel=1e-12)


def test_kid_subset_protocol_is_torch_fidelitys():
    a, b = correlated(130, 6), correlated(110, 6, shift=0.1)
    rng, estimates = np.random.RandomState(7), []
    for _ in range(9):
        subset_a, subset_b = a[rng.choice(130, 40, replace=False)], b[rng.choice(110, 40, replace=False)]
        estimates.append(ref.kid_full_matrices(subset_a, subset_b))
    mean, std = metrics.kernel_inception_distance_with_std(a, b, subsets=9, subset_size=40, seed=7)
    assert mean == pytest.approx(np.mean(estimates), rel=1e-12)
    assert std == pytest.approx(np.std(estimates), rel=1e-9)
    assert metrics.kernel_inception_distance(a, b, subsets=9, subset_size=40, seed=7) == mean


def test_kid_subsets_take_a_whole_side_that_is_smaller_than_the_subset_size():
    a, b = correlated(30, 4), correlated(80, 4, shift=0.5)
    rng, estimates = np.random.RandomState(0), []
    for _ in range(5):
        subset_a, subset_b = a[rng.choice(30, 30, replace=False)], b[rng.choice(80, 50, replace=False)]
        estimates.append(ref.kid_full_matrices(subset_a, subset_b))
    assert metrics.kernel_inception_distance(a, b, subsets=5, subset_size=50) == pytest.approx(
        np.mean(estimates), rel=1e-12
    )


@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.zeros((1, 3)), np.zeros((5, 3)), "a has 1 samples; at least 2"),
        (np.zeros((5, 3)), np.zeros((0, 3)), "b has 0 samples; at least 2"),
        (np.zeros((5, 3)), np.zeros((5, 2)), "a has 3 features per sample and b has 2"),
        (np.zeros((5, 3)), np.full((5, 3), np.inf), "b holds NaN or infinite"),
    ],
)
def test_kid_refuses_bad_inputs_instead_of_returning_nan(a, b, message):
    with pytest.raises(ValueError, match=message):
        metrics.kernel_inception_distance(a, b)


# -- precision and recall ------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_recall_equals_the_cdist_version(k, tiny_blocks):
    real, generated = correlated(120, 8), correlated(90, 8, scale=1.2, shift=0.3)
    assert metrics.precision_recall(real, generated, k) == ref.precision_recall_cdist(real, generated, k)


@pytest.mark.parametrize("dim", [2, 3, 5, 9])
@pytest.mark.parametrize("rotate", [False, True])
def test_precision_recall_equals_the_cdist_version_on_lattice_data_full_of_ties(dim, rotate):
    """Ties everywhere; rotated and moved, the ties are broken by round-off, the way ``cdist`` rounds."""
    turn = np.linalg.qr(RNG.normal(size=(dim, dim)))[0] if rotate else np.eye(dim)
    real = (RNG.integers(0, 4, size=(300, dim)) * 0.1) @ turn + 7.0 * rotate
    generated = (RNG.integers(0, 4, size=(250, dim)) * 0.1 + 0.1) @ turn + 7.0 * rotate
    assert metrics.precision_recall(real, generated, 2) == ref.precision_recall_cdist(real, generated, 2)


def test_precision_recall_of_collapsed_and_copied_generators():
    real = correlated(200, 16, scale=30.0, shift=100.0)
    for generated in (
        np.repeat(real[:1], 150, axis=0),  # one point, exactly: radius 0
        real[3] + 1e-9 * RNG.normal(size=(150, 16)),  # one point, nearly: tiny radii far from the origin
        np.concatenate([real[:100], real[:100] + 1e-12]),  # copies of training samples
    ):
        assert metrics.precision_recall(real, generated) == ref.precision_recall_cdist(real, generated)
    assert metrics.precision_recall(real, np.repeat(real[:1], 150, axis=0)) == (1.0, 0.0)


def test_precision_recall_follow_prdcs_definition_with_a_strict_inequality():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    # k = 1: every real radius is 1; a generated point at distance exactly 1 is outside
    precision, _ = metrics.precision_recall(real, np.array([[4.0], [4.0], [1.5]]), k=1)
    assert precision == pytest.approx(1 / 3)


def test_precision_recall_refuses_too_few_samples_for_k():
    with pytest.raises(ValueError, match="generated has 3 samples; at least 4"):
        metrics.precision_recall(np.zeros((10, 2)), np.zeros((3, 2)), k=3)
    with pytest.raises(ValueError, match="k must be an integer ≥ 1"):
        metrics.precision_recall(np.zeros((10, 2)), np.zeros((10, 2)), k=0)


def test_float32_features_give_the_results_of_their_float64_values():
    real, generated = correlated(150, 10).astype("float32"), correlated(120, 10, shift=0.2).astype("float32")
    wide_real, wide_generated = real.astype("float64"), generated.astype("float64")
    assert metrics.frechet_distance(real, generated) == metrics.frechet_distance(wide_real, wide_generated)
    for measure in (metrics.kernel_inception_distance, metrics.precision_recall):
        assert measure(real, generated) == measure(wide_real, wide_generated)


# -- EMD -----------------------------------------------------------------------------------------------------


def test_emd_equals_the_optimal_assignment_for_equal_sizes():
    a, b = RNG.normal(size=(200, 2)), RNG.normal(size=(200, 2)) * 0.5 + 1.0
    assert metrics.earth_movers_distance(a, b) == pytest.approx(ref.emd_assignment(a, b), rel=1e-12)


def test_emd_of_different_sizes_equals_the_assignment_between_replicated_sets():
    a, b = RNG.normal(size=(6, 3)), RNG.normal(size=(4, 3)) + 0.5
    # uniform weights 1/6 and 1/4: the same measures as 12 points each, every point copied 2 or 3 times
    cost = cdist(np.repeat(a, 2, axis=0), np.repeat(b, 3, axis=0))
    rows, cols = linear_sum_assignment(cost)
    assert metrics.earth_movers_distance(a, b) == pytest.approx(cost[rows, cols].mean(), rel=1e-12)


def test_emd_in_one_dimension_equals_scipys_wasserstein_distance():
    a, b = RNG.normal(size=37), RNG.exponential(size=23)
    assert metrics.earth_movers_distance(a, b) == pytest.approx(wasserstein_distance(a, b), rel=1e-10)


@pytest.mark.parametrize(
    "a, b, message",
    [
        (np.zeros((0, 2)), np.zeros((3, 2)), "a has no samples"),
        (np.zeros((3, 2)), [], "b has no samples"),
        (np.zeros((3, 2)), np.zeros((3, 3)), "a has 2 features per sample and b has 3"),
    ],
)
def test_emd_refuses_empty_or_mismatched_sets(a, b, message):
    with pytest.raises(ValueError, match=message):
        metrics.earth_movers_distance(a, b)


def test_mode_quality_refuses_an_empty_sample_set():
    with pytest.raises(ValueError, match="no samples"):
        metrics.mode_quality(np.zeros((0, 2)), np.eye(2), 0.1)


# -- Inception Score -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, splits", [(1003, 10), (11, 10), (500, 1), (64, 64)])
def test_inception_score_equals_salimans_loop_on_probabilities_and_logits(n, splits):
    logits = 3.0 * RNG.normal(size=(n, 12))
    expected = ref.inception_score_loop(softmax(logits, axis=1), splits)
    for predictions in (logits, softmax(logits, axis=1)):
        mean, std = metrics.inception_score(predictions, splits)
        assert mean == pytest.approx(expected[0], rel=1e-12)
        assert std == pytest.approx(expected[1], rel=1e-9, abs=1e-12)


def test_inception_score_closed_forms():
    classes = 7
    assert metrics.inception_score(np.full((140, classes), 1 / classes)) == pytest.approx((1.0, 0.0))
    assert metrics.inception_score(np.zeros((140, classes))) == pytest.approx((1.0, 0.0))  # equal logits
    one_hot = np.eye(classes)[np.arange(140) % classes]  # every split holds each class twice
    mean, std = metrics.inception_score(one_hot, splits=10)
    assert mean == pytest.approx(classes, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    assert metrics.inception_score(1e4 * one_hot, splits=10)[0] == pytest.approx(classes, rel=1e-9)


@pytest.mark.parametrize(
    "predictions, splits, message",
    [
        (np.ones((5, 3)) / 3, 10, "got 5 samples for 10 splits"),
        (np.ones(30), 10, "shape \\(N, C\\), got shape \\(30,\\)"),
        (np.ones((30, 3, 1)), 10, "got shape \\(30, 3, 1\\)"),
        (np.full((30, 3), np.nan), 10, "NaN or infinite"),
        (np.ones((30, 3)), 0, "splits must be an integer ≥ 1"),
    ],
)
def test_inception_score_refuses_bad_inputs(predictions, splits, message):
    with pytest.raises(ValueError, match=message):
        metrics.inception_score(predictions, splits)
