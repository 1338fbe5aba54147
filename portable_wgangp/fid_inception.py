"""The FID Inception network in Keras: the 2015-12-05 TensorFlow Inception graph of published FIDs.

TTUR, pytorch-fid, torch-fidelity and clean-fid all compute FID with this network: Inception-v3 with
1008 classes whose pooling differs from torchvision's in two ways (pytorch-fid's ``FIDInceptionA``,
``FIDInceptionC``, ``FIDInceptionE_1`` and ``FIDInceptionE_2``):

- the 3×3 stride-1 average pools in the A, C and first E blocks leave the zero padding out of the mean
  (TensorFlow's ``SAME`` average pool; torch ``count_include_pad=False``);
- the last E block (``Mixed_7c``) max-pools its pool branch instead of averaging.

The layers are written once in Keras, channels last, and run on every backend. Each layer is named after
its module in pytorch-fid's state_dict (``Mixed_5b-branch1x1-conv`` for ``Mixed_5b.branch1x1.conv``), so
its weight file ``pt_inception-2015-12-05-6726825d.pth``, converted once to ``.npz`` (needs torch once;
docs/metrics.md has it as one line), loads by name::

    import numpy as np, torch
    state_dict = torch.load("pt_inception-2015-12-05-6726825d.pth", map_location="cpu")
    np.savez("fid_inception.npz", **{key: value.numpy() for key, value in state_dict.items()})

Nothing is ever downloaded. Input handling is pytorch-fid's: bilinear resize to 299×299 (torch's
``align_corners=False``, no antialiasing: Keras's ``image.resize`` computes the same on every backend),
then pixel values in [-1, 1] (our images already are).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import numpy as np
from keras import layers, ops

SIZE = 299
NUM_CLASSES = 1008
BN_EPSILON = 1e-3

# -- the network ---------------------------------------------------------------------------------------------


def _keras_name(module: str) -> str:
    """A Keras layer name for the torch module path ``module`` (torch parameter names forbid dots)."""
    return module.replace(".", "-")


def _conv(x, name: str, filters: int, kernel_size, strides: int = 1, padding: str = "valid"):
    """torchvision's ``BasicConv2d``: conv without bias, BatchNorm (ε = 0.001), ReLU.

    Every padded convolution of the network has stride 1 and pads (k − 1)/2 on each side, which is
    what Keras's ``"same"`` does for stride 1; the stride-2 ones are unpadded (``"valid"``).
    """
    x = layers.Conv2D(
        filters, kernel_size, strides, padding, use_bias=False, name=_keras_name(f"{name}.conv")
    )(x)
    x = layers.BatchNormalization(epsilon=BN_EPSILON, name=_keras_name(f"{name}.bn"))(x)
    return layers.ReLU()(x)


def _pool_branch(x, kind: str):
    """3×3 stride-1 pool, padding 1: the mean over the window's pixels inside the image (``"avg"``:
    Keras's ``"same"`` average pool leaves the padding out on every backend) or their maximum (``"max"``)."""
    pool = layers.AveragePooling2D if kind == "avg" else layers.MaxPooling2D
    return pool(3, strides=1, padding="same")(x)


def _concat(branches):
    return layers.Concatenate(axis=-1)(branches)


def _inception_a(x, name: str, pool_features: int):
    """pytorch-fid's ``FIDInceptionA`` (35×35): 1×1 | 1×1→5×5 | 1×1→3×3→3×3 | avg pool→1×1."""
    branch1x1 = _conv(x, f"{name}.branch1x1", 64, 1)
    branch5x5 = _conv(x, f"{name}.branch5x5_1", 48, 1)
    branch5x5 = _conv(branch5x5, f"{name}.branch5x5_2", 64, 5, padding="same")
    branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
    branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, padding="same")
    branch_pool = _conv(_pool_branch(x, "avg"), f"{name}.branch_pool", pool_features, 1)
    return _concat([branch1x1, branch5x5, branch3x3dbl, branch_pool])


def _inception_b(x, name: str):
    """torchvision's ``InceptionB`` (35×35 → 17×17): 3×3/2 | 1×1→3×3→3×3/2 | max pool 3×3/2."""
    branch3x3 = _conv(x, f"{name}.branch3x3", 384, 3, strides=2)
    branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 64, 1)
    branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 96, 3, padding="same")
    branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_3", 96, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2)(x)
    return _concat([branch3x3, branch3x3dbl, branch_pool])


def _inception_c(x, name: str, channels_7x7: int):
    """pytorch-fid's ``FIDInceptionC`` (17×17): factorised 7×7 convolutions, avg pool→1×1."""
    c7 = channels_7x7
    branch1x1 = _conv(x, f"{name}.branch1x1", 192, 1)
    branch7x7 = _conv(x, f"{name}.branch7x7_1", c7, 1)
    branch7x7 = _conv(branch7x7, f"{name}.branch7x7_2", c7, (1, 7), padding="same")
    branch7x7 = _conv(branch7x7, f"{name}.branch7x7_3", 192, (7, 1), padding="same")
    branch7x7dbl = _conv(x, f"{name}.branch7x7dbl_1", c7, 1)
    for index, (filters, kernel) in enumerate(
        [(c7, (7, 1)), (c7, (1, 7)), (c7, (7, 1)), (192, (1, 7))], start=2
    ):
        branch7x7dbl = _conv(branch7x7dbl, f"{name}.branch7x7dbl_{index}", filters, kernel, padding="same")
    branch_pool = _conv(_pool_branch(x, "avg"), f"{name}.branch_pool", 192, 1)
    return _concat([branch1x1, branch7x7, branch7x7dbl, branch_pool])


def _inception_d(x, name: str):
    """torchvision's ``InceptionD`` (17×17 → 8×8): 1×1→3×3/2 | 1×1→1×7→7×1→3×3/2 | max pool 3×3/2."""
    branch3x3 = _conv(x, f"{name}.branch3x3_1", 192, 1)
    branch3x3 = _conv(branch3x3, f"{name}.branch3x3_2", 320, 3, strides=2)
    branch7x7x3 = _conv(x, f"{name}.branch7x7x3_1", 192, 1)
    branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_2", 192, (1, 7), padding="same")
    branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_3", 192, (7, 1), padding="same")
    branch7x7x3 = _conv(branch7x7x3, f"{name}.branch7x7x3_4", 192, 3, strides=2)
    branch_pool = layers.MaxPooling2D(3, strides=2)(x)
    return _concat([branch3x3, branch7x7x3, branch_pool])


def _inception_e(x, name: str, pool: str):
    """pytorch-fid's ``FIDInceptionE_1`` (``pool="avg"``) and ``FIDInceptionE_2`` (``pool="max"``), 8×8."""

    def split(y, prefix):  # 1×3 and 3×1 side by side
        return _concat(
            [
                _conv(y, f"{prefix}a", 384, (1, 3), padding="same"),
                _conv(y, f"{prefix}b", 384, (3, 1), padding="same"),
            ]
        )

    branch1x1 = _conv(x, f"{name}.branch1x1", 320, 1)
    branch3x3 = split(_conv(x, f"{name}.branch3x3_1", 384, 1), f"{name}.branch3x3_2")
    branch3x3dbl = _conv(x, f"{name}.branch3x3dbl_1", 448, 1)
    branch3x3dbl = _conv(branch3x3dbl, f"{name}.branch3x3dbl_2", 384, 3, padding="same")
    branch3x3dbl = split(branch3x3dbl, f"{name}.branch3x3dbl_3")
    branch_pool = _conv(_pool_branch(x, pool), f"{name}.branch_pool", 192, 1)
    return _concat([branch1x1, branch3x3, branch3x3dbl, branch_pool])


def build_model() -> keras.Model:
    """The FID Inception-v3: images ``(N, 299, 299, 3)`` in [-1, 1] → ``[pool (N, 2048), logits (N, 1008)]``.

    ``pool`` is the final global average pool (FID's features); ``logits = pool · W + b`` is the
    1008-class head (the Inception Score's). Weights are uninitialised until `load_state_dict`. The
    network computes in float32 whatever the global dtype policy (a mixed-precision run's too).
    """
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        return _build_model()
    finally:
        keras.config.set_dtype_policy(policy)


def _build_model() -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, 3))
    x = _conv(inputs, "Conv2d_1a_3x3", 32, 3, strides=2)  # 149×149
    x = _conv(x, "Conv2d_2a_3x3", 32, 3)  # 147×147
    x = _conv(x, "Conv2d_2b_3x3", 64, 3, padding="same")
    x = layers.MaxPooling2D(3, strides=2)(x)  # 73×73
    x = _conv(x, "Conv2d_3b_1x1", 80, 1)
    x = _conv(x, "Conv2d_4a_3x3", 192, 3)  # 71×71
    x = layers.MaxPooling2D(3, strides=2)(x)  # 35×35
    x = _inception_a(x, "Mixed_5b", pool_features=32)
    x = _inception_a(x, "Mixed_5c", pool_features=64)
    x = _inception_a(x, "Mixed_5d", pool_features=64)
    x = _inception_b(x, "Mixed_6a")  # 17×17
    for name, channels_7x7 in [("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)]:
        x = _inception_c(x, name, channels_7x7)
    x = _inception_d(x, "Mixed_7a")  # 8×8
    x = _inception_e(x, "Mixed_7b", pool="avg")
    x = _inception_e(x, "Mixed_7c", pool="max")
    pool = layers.GlobalAveragePooling2D(name="avgpool")(x)
    logits = layers.Dense(NUM_CLASSES, name="fc")(pool)
    return keras.Model(inputs, [pool, logits], name="fid_inception_v3")


# -- weights -------------------------------------------------------------------------------------------------

# torch parameter name → (index in the Keras layer's weights, axes): Keras weight = torch one.transpose(axes)
_CONV = {"weight": (0, (2, 3, 1, 0))}  # OIHW → HWIO
_BATCH_NORM = {"weight": (0, None), "bias": (1, None), "running_mean": (2, None), "running_var": (3, None)}
_DENSE = {"weight": (0, (1, 0)), "bias": (1, None)}  # (out, in) → (in, out)
_IGNORED = "num_batches_tracked"  # BatchNorm's update counter: not used in inference
_CONVERT = "convert pytorch-fid's pt_inception-2015-12-05-6726825d.pth to .npz (docs/metrics.md)"


def _parameters(layer) -> dict:
    if isinstance(layer, layers.Conv2D):
        return _CONV
    if isinstance(layer, layers.BatchNormalization):
        return _BATCH_NORM
    if isinstance(layer, layers.Dense):
        return _DENSE
    return {}


def _torch_key(layer, parameter: str) -> str:
    """The state_dict key of ``layer``'s ``parameter``: its torch module path, a dot, the name."""
    return f"{layer.name.replace('-', '.')}.{parameter}"


def _torch_shape(keras_shape: tuple, axes: tuple | None) -> tuple:
    """The shape of the torch weight whose ``transpose(axes)`` has ``keras_shape``."""
    if axes is None:
        return tuple(keras_shape)
    shape = [0] * len(axes)
    for keras_axis, torch_axis in enumerate(axes):
        shape[torch_axis] = keras_shape[keras_axis]
    return tuple(shape)


def state_dict_shapes(model: keras.Model) -> dict[str, tuple]:
    """pytorch-fid's state_dict key → the shape torch gives it (conv OIHW, fc (out, in)), for ``model``."""
    return {
        _torch_key(layer, parameter): _torch_shape(tuple(layer.weights[index].shape), axes)
        for layer in model.layers
        for parameter, (index, axes) in _parameters(layer).items()
    }


def load_state_dict(model: keras.Model, state_dict: Mapping[str, np.ndarray]) -> None:
    """Sets ``model``'s weights from pytorch-fid's state_dict (numpy arrays) after checking every key and
    shape (``num_batches_tracked`` is ignored): conv kernels OIHW → HWIO, fc (out, in) → (in, out)."""
    given = {key: value for key, value in state_dict.items() if not key.endswith(_IGNORED)}
    expected = state_dict_shapes(model)
    missing, unexpected = sorted(expected.keys() - given.keys()), sorted(given.keys() - expected.keys())
    if missing or unexpected:
        raise ValueError(
            f"the FID Inception weights do not fit the network: missing {_some(missing)}, "
            f"unexpected {_some(unexpected)}; {_CONVERT} and pass that."
        )
    wrong = [
        f"{k} {np.shape(given[k])} (expected {s})" for k, s in expected.items() if np.shape(given[k]) != s
    ]
    if wrong:
        raise ValueError(
            f"the FID Inception weights have wrong shapes: {_some(wrong)}; {_CONVERT} unaltered."
        )
    for layer in model.layers:
        for parameter, (index, axes) in _parameters(layer).items():
            value = np.asarray(given[_torch_key(layer, parameter)], dtype="float32")
            layer.weights[index].assign(value if axes is None else value.transpose(axes))


def _some(names: list[str], shown: int = 5) -> str:
    """The first ``shown`` names, comma-separated, and how many more."""
    if not names:
        return "none"
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file of pytorch-fid's state_dict (see the module docstring)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"no FID Inception weight file at {path!r} (it is never downloaded); {_CONVERT} and pass it."
        )
    if not path.endswith(".npz"):
        raise ValueError(f"{path!r} is not an .npz file; {_CONVERT} and pass the .npz.")
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


# -- the extractor -------------------------------------------------------------------------------------------


class FIDInception:
    """FID's Inception features on the active Keras backend: ``extractor(images)`` → pool features.

    ``weights``: an ``.npz`` of pytorch-fid's state_dict (or that dict itself). Images ``(N, H, W, C)``
    with C = 1 (repeated to RGB) or 3 and values in [-1, 1] are resized to 299×299 (`resize`) and run in
    batches of ``batch_size``. Features ``(N, 2048)`` and logits ``(N, 1008)`` come back as float64.
    """

    name = "inception-fid"

    def __init__(self, weights: str | os.PathLike | Mapping[str, np.ndarray], batch_size: int = 50):
        state_dict = weights if isinstance(weights, Mapping) else read_state_dict(weights)
        self.model = build_model()
        load_state_dict(self.model, state_dict)
        self.model.trainable = False
        self.batch_size = batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Pool features ``(N, 2048)``: FID's and KID's."""
        return self.features_and_logits(images)[0]

    def logits(self, images: np.ndarray) -> np.ndarray:
        """The 1008-class logits ``(N, 1008)``: the Inception Score's."""
        return self.features_and_logits(images)[1]

    def features_and_logits(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both outputs of one pass: ``(N, 2048)`` pool features and ``(N, 1008)`` logits, float64."""
        images = _check_images(images)
        pools, logits = [], []
        for start in range(0, len(images), self.batch_size):
            batch = resize(images[start : start + self.batch_size])
            pool, logit = self.model.predict_on_batch(batch)
            pools.append(pool)
            logits.append(logit)
        return np.concatenate(pools).astype("float64"), np.concatenate(logits).astype("float64")


# -- input -------------------------------------------------------------------------------------------------


def resize(images, size: int = SIZE):
    """Images ``(N, H, W, C)`` → ``(N, size, size, C)``, bilinear as torch's ``F.interpolate(...,
    align_corners=False)``: pixel centres aligned, no antialiasing when shrinking."""
    return ops.image.resize(images, (size, size), interpolation="bilinear", antialias=False)


def _check_images(images: np.ndarray) -> np.ndarray:
    """float32 ``(N, H, W, 3)`` from ``(N, H, W, 1 or 3)`` in [-1, 1]; a ValueError says what is off."""
    images = np.asarray(images, dtype="float32")
    if images.ndim != 4 or images.shape[-1] not in (1, 3) or not images.size:
        raise ValueError(f"FID Inception takes images (N ≥ 1, H, W, 1 or 3), got shape {images.shape}.")
    if images.min() < -1.0 - 1e-3 or images.max() > 1.0 + 1e-3:
        raise ValueError(
            f"FID Inception takes pixel values in [-1, 1], got [{images.min():g}, {images.max():g}]; "
            "scale the images first (uint8: x / 127.5 - 1)."
        )
    return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
