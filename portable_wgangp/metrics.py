"""Sample-quality measures (numpy and scipy; no framework).

Toy distributions (DESIGN.md's pinned definitions, in the dataset's scaled units): a sample is *high
quality* when it lies within 3σ of its nearest mode centre; a mode is *covered* when at least 20 % of its
fair share N/K of the N samples are high-quality samples nearest to it; ``emd`` is the exact earth mover's
distance between N generated and N real samples with uniform weights and Euclidean cost.
"""

from __future__ import annotations

import warnings

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


# -- image quality over features -----------------------------------------------------------------------------


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID's formula on two feature sets ``(N, D)``: ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½)."""
    from scipy import linalg

    mu_a, mu_b = features_a.mean(axis=0), features_b.mean(axis=0)
    cov_a = np.cov(features_a, rowvar=False)
    cov_b = np.cov(features_b, rowvar=False)
    with warnings.catch_warnings():  # singular covariances (a collapsed generator) are a valid input
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        root = linalg.sqrtm(cov_a @ cov_b)
    if np.iscomplexobj(root):
        root = root.real  # round-off gives tiny imaginary parts
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a + cov_b - 2.0 * root))


def kernel_inception_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """KID: the unbiased MMD² with the cubic kernel k(x, y) = (x·y / D + 1)³ (Bińkowski et al. 2018)."""
    dim = features_a.shape[1]
    k_aa = (features_a @ features_a.T / dim + 1.0) ** 3
    k_bb = (features_b @ features_b.T / dim + 1.0) ** 3
    k_ab = (features_a @ features_b.T / dim + 1.0) ** 3
    m, n = len(features_a), len(features_b)
    within_a = (k_aa.sum() - np.trace(k_aa)) / (m * (m - 1))
    within_b = (k_bb.sum() - np.trace(k_bb)) / (n * (n - 1))
    return float(within_a + within_b - 2.0 * k_ab.mean())


def precision_recall(real: np.ndarray, generated: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds.

    Precision: the fraction of generated samples inside the real manifold (the union of balls around
    each real sample reaching its k-th nearest real neighbour); recall: the converse.
    """

    def inside(manifold, queries):
        radii = np.sort(cdist(manifold, manifold), axis=1)[:, k]  # column 0 is the point itself
        return (cdist(queries, manifold) <= radii[None, :]).any(axis=1).mean()

    return float(inside(real, generated)), float(inside(generated, real))


class DigitsFeatures:
    """The "digits-FID" feature extractor: a small classifier trained deterministically on the digits.

    A scikit-learn MLP (64 → 64 ReLU → 10, ``random_state=0``) fitted on all 1,797 digits; features are
    its hidden activations, computed in numpy, so they are the same on every backend. Distances over
    them are NOT comparable to Inception-based FID. ``classify`` gives the class, for label accuracy.
    """

    name = "digits-mlp64"

    def __init__(self):
        from sklearn.neural_network import MLPClassifier

        from portable_wgangp.data import digits

        images, labels = digits()
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
        images = np.asarray(images, dtype="float64")
        n, height, width, channels = images.shape
        blocks = images[:, : height // 8 * 8, : width // 8 * 8].reshape(
            n, 8, height // 8, 8, width // 8, channels
        )
        return blocks.mean(axis=(2, 4)).reshape(n, -1)


def image_quality(real: np.ndarray, generated: np.ndarray, extractor) -> dict:
    """``fid``, ``kid``, ``precision``, ``recall`` and ``extractor`` of generated images against real ones."""
    features_real, features_generated = extractor(real), extractor(generated)
    precision, recall = precision_recall(features_real, features_generated)
    return {
        "fid": frechet_distance(features_real, features_generated),
        "kid": kernel_inception_distance(features_real, features_generated),
        "precision": precision,
        "recall": recall,
        "extractor": extractor.name,
    }


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


def default_extractor(dataset: str):
    """digits → `DigitsFeatures`; other images → `InceptionFeatures` when its weights are on disk, else
    `PixelFeatures`."""
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
