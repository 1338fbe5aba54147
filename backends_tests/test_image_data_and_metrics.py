"""Image loaders and image-quality measures on known cases."""

import numpy as np
import pytest
from PIL import Image

from portable_wgangp import data, metrics

RNG = np.random.default_rng(8)


def test_fid_is_zero_on_itself_and_grows_by_the_squared_mean_shift():
    features = RNG.normal(size=(500, 6))
    assert metrics.frechet_distance(features, features) == pytest.approx(0.0, abs=1e-6)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 0.0, 3.0])
    assert metrics.frechet_distance(features, features + shift) == pytest.approx(np.sum(shift**2), rel=1e-6)


def test_kid_is_near_zero_on_identical_sets_and_positive_for_different_ones():
    features = RNG.normal(size=(400, 6))
    same = metrics.kernel_inception_distance(features, features)
    shifted = metrics.kernel_inception_distance(features, features + 1.0)
    assert abs(same) < 0.01 * shifted
    assert shifted > 0


def test_precision_and_recall_are_one_on_identical_sets_and_fall_for_a_collapsed_set():
    features = RNG.normal(size=(300, 4))
    assert metrics.precision_recall(features, features) == (1.0, 1.0)
    collapsed = np.repeat(features[:1], 300, axis=0) + 1e-3
    precision, recall = metrics.precision_recall(features, collapsed)
    assert precision == 1.0 and recall < 0.05


def test_digits_are_scaled_and_labelled():
    x, y = data.digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert sorted(set(y.tolist())) == list(range(10))


def test_digits_classifier_features_are_deterministic():
    x, y = data.digits()
    first, second = metrics.DigitsFeatures(), metrics.DigitsFeatures()
    np.testing.assert_array_equal(first(x[:50]), second(x[:50]))
    assert (first.classify(x) == y).mean() > 0.98


def test_image_folder_with_classes(tmp_path):
    for label, colour in enumerate([(255, 0, 0), (0, 0, 255)]):
        (tmp_path / f"class{label}").mkdir()
        for i in range(3):
            Image.new("RGB", (20, 12), colour).save(tmp_path / f"class{label}" / f"{i}.png")
    images, labels = data.load_images(f"images:{tmp_path}", size=16)
    assert images.shape == (6, 16, 16, 3) and labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_allclose(images[0, 0, 0], [1.0, -1.0, -1.0])


def test_npz_integer_images_are_scaled_not_fed_raw(tmp_path):
    raw = RNG.integers(0, 256, size=(10, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=raw, labels=np.arange(10))
    images, labels = data.load_images(f"npz:{tmp_path / 'd.npz'}")
    assert images.shape == (10, 8, 8, 1) and images.min() >= -1 and images.max() <= 1
    np.testing.assert_allclose(images[..., 0], raw / 127.5 - 1.0, atol=1e-6)
    assert labels.tolist() == list(range(10))


def test_float_images_out_of_range_are_refused():
    with pytest.raises(ValueError, match=r"must lie in \[-1, 1\]"):
        data.scale_images(np.full((2, 8, 8, 1), 3.0))


def test_unknown_dataset_names_the_choices():
    with pytest.raises(ValueError, match="npz:PATH"):
        data.load_images("cifar10")


def test_extractor_choice_never_downloads(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no Inception weights there
    assert not metrics.InceptionFeatures.available()
    assert isinstance(metrics.default_extractor("digits"), metrics.DigitsFeatures)
    assert isinstance(metrics.default_extractor("images:x"), metrics.PixelFeatures)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / metrics.InceptionFeatures.WEIGHTS).write_bytes(b"")
    assert metrics.InceptionFeatures.available()
