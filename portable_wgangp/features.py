"""Feature extractors and the quality figures of a run: what a generator's samples are measured with
(the digits classifier, pixels, Keras's Inception, the FID Inception) and the figures `quality.json` holds,
computed by the formulas of `portable_wgangp.metrics`.
"""

from __future__ import annotations

import numpy as np

from portable_wgangp import datasets
from portable_wgangp.metrics import (
    earth_movers_distance,
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    mode_quality,
    precision_recall,
)


def toy_quality(name: str, samples: np.ndarray, seed: int = 0) -> dict:
    """The pinned quality figures of ``samples`` of a toy distribution (see `portable_wgangp.metrics`).

    ``emd`` is measured against as many fresh real samples (drawn with ``seed``); the mode figures are
    None for swissroll, which has no discrete modes.
    """
    real = datasets.toy_samples(name, len(samples), np.random.default_rng(seed))
    quality = {"modes_covered": None, "n_modes": None, "high_quality_fraction": None}
    if name != "swissroll":
        quality = mode_quality(samples, datasets.toy_centres(name), datasets.toy_noise_std(name))
    return {**quality, "emd": earth_movers_distance(samples, real)}


class DigitsFeatures:
    """The "digits-FID" feature extractor: a small classifier trained deterministically on the digits.

    A scikit-learn MLP (64 → 64 ReLU → 10, ``random_state=0``) fitted on all 1,797 digits; features are
    its hidden activations, computed in numpy, so they are the same on every backend. Distances over
    them are NOT comparable to Inception-based FID. ``classify`` gives the class, for label accuracy.
    """

    name = "digits-mlp64"

    def __init__(self):
        from sklearn.neural_network import MLPClassifier

        images, labels = datasets.digits()
        self.model = MLPClassifier((64,), max_iter=600, random_state=0).fit(
            images.reshape(len(images), -1), labels
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        flat = np.asarray(images, dtype="float64").reshape(len(images), -1)
        return np.maximum(flat @ self.model.coefs_[0] + self.model.intercepts_[0], 0.0)

    def classify(self, images: np.ndarray) -> np.ndarray:
        return self.model.predict(np.asarray(images, dtype="float64").reshape(len(images), -1))


class PixelFeatures:
    """A fallback feature extractor for images without a trained one: 8×8 block means of each channel.

    Crude but deterministic and backend-independent; its distances compare runs on the same data only.
    """

    name = "pixels-8x8"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        n, height, width, channels = images.shape
        blocks = images[:, : height // 8 * 8, : width // 8 * 8].reshape(
            n, 8, height // 8, 8, width // 8, channels
        )
        return blocks.mean(axis=(2, 4), dtype="float64").reshape(n, -1)  # no float64 copy of the images


def image_quality(real: np.ndarray, generated: np.ndarray, extractor, reference=None) -> dict:
    """``fid``, ``kid``, ``precision``, ``recall`` and ``extractor`` of generated images against real ones;
    ``inception_score`` and ``inception_score_std`` too when the extractor gives class logits (the FID
    Inception). ``reference``: the real side's FID statistics (``(mu, sigma)`` or a stats file's arrays)
    in place of the real images' (KID, precision and recall still use ``real``)."""
    return feature_quality(extractor(real), generated, extractor, reference)


def feature_quality(features_real: np.ndarray, generated: np.ndarray, extractor, reference=None) -> dict:
    """`image_quality` with the real side given as its ``extractor`` features ``(N, D)``: extracted once,
    they score several generators, and the real images need not stay in memory."""
    if hasattr(extractor, "features_and_logits"):
        features_generated, logits = extractor.features_and_logits(generated)
    else:
        features_generated, logits = extractor(generated), None
    precision, recall = precision_recall(features_real, features_generated)
    figures = {
        "fid": frechet_distance(features_real if reference is None else reference, features_generated),
        "kid": kernel_inception_distance(features_real, features_generated),
        "precision": precision,
        "recall": recall,
        "extractor": extractor.name,
    }
    if logits is not None:
        figures["inception_score"], figures["inception_score_std"] = inception_score(
            logits, splits=min(10, len(logits))
        )
    return figures


class InceptionFeatures:
    """Inception-v3 pool features (standard FID), used only when Keras's weight file is already on disk.

    Never downloads: the file ``$KERAS_HOME/models/inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5``
    must exist (`available`). Images are resized to 299×299 RGB; runs on the active backend.
    """

    name = "inception-v3"
    WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"

    @classmethod
    def weights_path(cls):
        import os
        import pathlib

        home = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
        return home / "models" / cls.WEIGHTS

    @classmethod
    def available(cls) -> bool:
        return cls.weights_path().is_file()

    def __init__(self):
        import keras

        self.model = keras.applications.InceptionV3(
            include_top=False, weights=str(self.weights_path()), pooling="avg", input_shape=(299, 299, 3)
        )

    def __call__(self, images: np.ndarray, batch_size: int = 50) -> np.ndarray:
        from keras import ops

        images = np.asarray(images, dtype="float32")
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        chunks = []
        for start in range(0, len(images), batch_size):
            resized = ops.image.resize(images[start : start + batch_size], (299, 299))
            chunks.append(ops.convert_to_numpy(self.model(resized, training=False)))
        return np.concatenate(chunks).astype("float64")


def default_extractor(dataset: str, spec: str = ""):
    """The extractor ``spec`` names (see `extractor_from_spec`), else: digits → `DigitsFeatures`; other
    images → `InceptionFeatures` when its weights are on disk, else `PixelFeatures`."""
    if spec:
        return extractor_from_spec(spec)
    if dataset == "digits":
        return DigitsFeatures()
    return InceptionFeatures() if InceptionFeatures.available() else PixelFeatures()


def extractor_from_spec(spec: str):
    """The feature extractor that ``spec`` names: ``digits-mlp64``, ``pixels-8x8``, ``inception-v3``, or
    ``inception-fid:PATH`` (the FID Inception of published FIDs, weights from the ``.npz`` at PATH)."""
    name, _, path = spec.partition(":")
    if name == "inception-fid" and path:
        from portable_wgangp.fid_inception import FIDInception

        return FIDInception(path)
    extractors = {cls.name: cls for cls in (DigitsFeatures, PixelFeatures, InceptionFeatures)}
    if spec not in extractors:
        raise ValueError(
            f"unknown feature extractor {spec!r}; choose {', '.join(extractors)} or inception-fid:PATH."
        )
    return extractors[spec]()
