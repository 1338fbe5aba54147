"""Quality measures on known cases, and the toy datasets' construction."""

import numpy as np
import pytest

from portable_wgangp import data, metrics

RNG = np.random.default_rng(11)


def test_emd_of_a_set_with_itself_is_zero_and_a_shift_costs_its_length():
    points = RNG.normal(size=(300, 2))
    assert metrics.earth_movers_distance(points, points) == pytest.approx(0.0, abs=1e-12)
    shift = np.array([0.3, -0.4])
    assert metrics.earth_movers_distance(points, points + shift) == pytest.approx(0.5, rel=1e-9)


def test_emd_takes_sets_of_different_sizes_but_refuses_different_dimensions():
    assert metrics.earth_movers_distance(np.zeros((3, 2)), np.ones((4, 2))) == pytest.approx(np.sqrt(2))
    with pytest.raises(ValueError, match="a has 2 features per sample and b has 3"):
        metrics.earth_movers_distance(np.zeros((3, 2)), np.zeros((3, 3)))


@pytest.mark.parametrize("name", ["gaussians8", "gaussians25"])
def test_the_true_distribution_covers_every_mode_with_high_quality(name):
    quality = data.toy_quality(name, data.toy_samples(name, 2000, RNG))
    assert quality["modes_covered"] == quality["n_modes"] == {"gaussians8": 8, "gaussians25": 25}[name]
    assert quality["high_quality_fraction"] >= 0.95
    assert quality["emd"] < 0.1  # sampling noise alone, 2000 vs 2000 points


def test_a_collapsed_generator_covers_one_mode():
    centre = data.toy_centres("gaussians8")[3]
    collapsed = centre + 0.001 * RNG.normal(size=(1000, 2))
    quality = data.toy_quality("gaussians8", collapsed)
    assert quality["modes_covered"] == 1
    assert quality["high_quality_fraction"] == 1.0
    assert quality["emd"] > 1.0


def test_toy_datasets_follow_gan_toy_construction():
    centres = data.toy_centres("gaussians8")
    np.testing.assert_allclose(np.linalg.norm(centres, axis=1), 2 / 1.414)
    grid = data.toy_centres("gaussians25")
    assert grid.shape == (25, 2) and grid.max() == pytest.approx(4 / 2.828)
    roll = data.toy_samples("swissroll", 500, RNG)
    assert roll.shape == (500, 2) and roll.dtype == np.float32 and np.abs(roll).max() < 2.5
    assert data.toy_quality("swissroll", roll)["n_modes"] is None


def test_toy_minibatches_depend_only_on_seed_and_index():
    stream = data.toy_minibatches("gaussians8", 16, seed=3)
    first = [next(stream) for _ in range(4)]
    resumed = next(data.toy_minibatches("gaussians8", 16, seed=3, start=2))
    np.testing.assert_array_equal(resumed, first[2])
    assert not np.array_equal(first[0], first[1])
