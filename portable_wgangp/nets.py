"""Reference networks, built from Keras layers only (so they run on every backend).

Every builder takes ``seed``: its network's initial weights are drawn by `portable_wgangp.rng.initialize`,
the same on every backend (None: a seed from Python's `random`, which `keras.utils.set_random_seed` seeds).
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import layers

from portable_wgangp import rng


def _seeded(build):
    """``build`` with a keyword ``seed``: the network it returns has weights drawn by `rng.initialize`."""

    @functools.wraps(build)
    def seeded(*args, seed: int | None = None, **kwargs) -> keras.Model:
        seed = rng.resolve_seed(seed)  # before building: layers may draw from Python's random too
        return rng.initialize(build(*args, **kwargs), seed)

    return seeded


def _spectral(layer: layers.Layer, spectral: bool) -> layers.Layer:
    """``layer`` wrapped in `keras.layers.SpectralNormalization` (W / σ(W), one power iteration per
    training call, Miyato et al. 2018) when ``spectral``, else ``layer`` itself."""
    return layers.SpectralNormalization(layer) if spectral else layer


@_seeded
def mlp(
    input_dim: int,
    output_dim: int,
    *,
    width: int = 128,
    depth: int = 3,
    activation: str = "relu",
    name: str | None = None,
    spectral: bool = False,
) -> keras.Sequential:
    """``depth`` hidden Dense layers of ``width`` units, then a linear Dense to ``output_dim``.

    Shapes: ``(batch, input_dim) -> (batch, output_dim)``. The paper's toy nets (``gan_toy.py``) are
    ``mlp(2, 2, width=512)`` and ``mlp(2, 1, width=512)``. No normalization, so it serves as a critic;
    ``spectral=True`` spectrally normalizes every Dense layer (a critic for ``lipschitz="spectral"``).
    """
    hidden = [_spectral(layers.Dense(width, activation=activation), spectral) for _ in range(depth)]
    output = _spectral(layers.Dense(output_dim), spectral)
    return keras.Sequential([keras.Input((input_dim,)), *hidden, output], name=name)


def _upsamplings(image_shape) -> int:
    """Stride-2 stages between a 4×4 (2×2 for 8×8 images) seed and the image: log2(size / 4), at least 1."""
    height, width = image_shape[:2]
    if height != width or height not in (8, 16, 32, 64):
        raise ValueError(
            f"DCGAN nets take square images of 8, 16, 32 or 64 pixels, got {height}×{width}; resize the "
            "images (images:DIR takes --image-size)."
        )
    return max(1, int(np.log2(height // 4)))


@_seeded
def dcgan_generator(
    latent_dim: int,
    image_shape=(32, 32, 3),
    *,
    base: int = 64,
    num_classes: int | None = None,
) -> keras.Model:
    """DCGAN generator: z ``(batch, latent_dim)`` → images ``(batch, *image_shape)`` in [-1, 1].

    Dense to a ``(s, s, c)`` seed, then stride-2 transposed convolutions with BatchNorm and ReLU, then a
    3×3 convolution with tanh. With ``num_classes``, the inputs are ``[z, labels]`` and a learned label
    embedding is concatenated to z (the label shape is ``(batch,)``, integers).
    """
    stages = _upsamplings(image_shape)
    seed_size = image_shape[0] // 2**stages
    z = keras.Input((latent_dim,), name="z")
    inputs, h = [z], z
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        h = layers.Concatenate()([z, layers.Embedding(num_classes, latent_dim)(labels)])
    channels = base * 2 ** (stages - 1)
    h = layers.Dense(seed_size * seed_size * channels * 2)(h)
    h = layers.Reshape((seed_size, seed_size, channels * 2))(h)
    h = layers.ReLU()(layers.BatchNormalization()(h))
    for stage in range(stages):
        # No bias: the BatchNorm after it has its own shift.
        h = layers.Conv2DTranspose(
            base * 2 ** (stages - 1 - stage), 4, strides=2, padding="same", use_bias=False
        )(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
    images = layers.Conv2D(image_shape[-1], 3, padding="same", activation="tanh", dtype="float32")(h)
    return keras.Model(inputs if num_classes else z, images, name="dcgan_generator")


@_seeded
def dcgan_critic(
    image_shape=(32, 32, 3),
    *,
    base: int = 64,
    num_classes: int | None = None,
    head: str = "projection",
    spectral: bool = False,
) -> keras.Model:
    """DCGAN critic without batch normalization: images → scores ``(batch, 1)``.

    Stride-2 4×4 convolutions with LayerNorm and LeakyReLU(0.2), then a linear score. With
    ``num_classes`` and ``head="projection"``, the inputs are ``[images, labels]`` and the score gains
    the projection term ⟨embed(label), features⟩ (Miyato & Koyama 2018); with ``head="ac"`` the input is
    the images alone and the outputs are ``[scores, class_logits]`` (AC-WGAN, as in the paper).
    ``spectral=True`` spectrally normalizes the convolutions and the score layer (not the embedding).
    """
    stages = _upsamplings(image_shape)
    images = keras.Input(tuple(image_shape), name="images")
    h = images
    for stage in range(stages):
        h = _spectral(layers.Conv2D(base * 2**stage, 4, strides=2, padding="same"), spectral)(h)
        if stage:
            h = layers.LayerNormalization(axis=[1, 2, 3])(h)
        h = layers.LeakyReLU(0.2)(h)
    features = layers.Flatten()(h)
    score = _spectral(layers.Dense(1, dtype="float32"), spectral)(features)
    if not num_classes:
        return keras.Model(images, score, name="dcgan_critic")
    if head == "ac":
        return keras.Model(
            images, [score, layers.Dense(num_classes, dtype="float32")(features)], name="dcgan_ac_critic"
        )
    if head != "projection":
        raise ValueError(f"Unknown critic head {head!r}; choose projection or ac.")
    labels = keras.Input((), dtype="int32", name="labels")
    embedded = layers.Embedding(num_classes, features.shape[-1])(labels)
    projection = layers.Dot(axes=1)([embedded, features])
    return keras.Model(
        [images, labels], layers.Add(dtype="float32")([score, projection]), name="dcgan_projection_critic"
    )


def _conditional_batch_norm(h, labels, num_classes: int | None):
    """BatchNorm; with ``num_classes``, its scale and shift come from the label (conditional BN)."""
    if not num_classes:
        return layers.BatchNormalization()(h)
    channels = h.shape[-1]
    h = layers.BatchNormalization(center=False, scale=False)(h)
    gamma = layers.Reshape((1, 1, channels))(
        layers.Embedding(num_classes, channels, embeddings_initializer="zeros")(labels)
    )
    beta = layers.Reshape((1, 1, channels))(
        layers.Embedding(num_classes, channels, embeddings_initializer="zeros")(labels)
    )
    return layers.Add()([layers.Multiply()([h, layers.Rescaling(1.0, offset=1.0)(gamma)]), beta])


def _residual_block(h, channels: int, resample: str | None, labels=None, num_classes=None):
    """gan_cifar_resnet.py's block: [norm] → ReLU → conv 3×3 → [norm] → ReLU → conv 3×3, plus a shortcut.

    ``resample``: "up" (generator: nearest-neighbour ×2 before the first conv), "down" (critic: mean-pool
    after the second conv) or None. Generator blocks normalize (conditional BN); critic blocks do not.
    """
    generator = resample == "up"
    shortcut = h
    if resample == "up":
        shortcut = layers.UpSampling2D()(shortcut)
    if resample or shortcut.shape[-1] != channels:
        shortcut = layers.Conv2D(channels, 1)(shortcut)
    if resample == "down":
        shortcut = layers.AveragePooling2D(2)(shortcut)
    if generator:
        h = _conditional_batch_norm(h, labels, num_classes)
    h = layers.ReLU()(h)
    if resample == "up":
        h = layers.UpSampling2D()(h)
    h = layers.Conv2D(channels, 3, padding="same")(h)
    if generator:
        h = _conditional_batch_norm(h, labels, num_classes)
    h = layers.ReLU()(h)
    h = layers.Conv2D(channels, 3, padding="same")(h)
    if resample == "down":
        h = layers.AveragePooling2D(2)(h)
    return layers.Add()([shortcut, h])


@_seeded
def resnet_generator(latent_dim: int = 128, *, dim: int = 128, num_classes: int | None = None) -> keras.Model:
    """The paper's 32×32 ResNet generator (``gan_cifar_resnet.py``): z → 4×4 → three up-blocks → 32×32×3.

    With ``num_classes`` the inputs are ``[z, labels]`` and every BatchNorm is class-conditional.
    """
    z = keras.Input((latent_dim,), name="z")
    labels = keras.Input((), dtype="int32", name="labels") if num_classes else None
    h = layers.Reshape((4, 4, dim))(layers.Dense(4 * 4 * dim)(z))
    for _ in range(3):
        h = _residual_block(h, dim, "up", labels, num_classes)
    h = layers.ReLU()(_conditional_batch_norm(h, labels, num_classes))
    images = layers.Conv2D(3, 3, padding="same", activation="tanh", dtype="float32")(h)
    return keras.Model([z, labels] if num_classes else z, images, name="resnet_generator")


@_seeded
def resnet_critic(*, dim: int = 128, num_classes: int | None = None) -> keras.Model:
    """The paper's 32×32 ResNet critic, without normalization.

    Two down-blocks, two plain blocks, ReLU, global mean pooling, a linear score; with ``num_classes``,
    a projection term (inputs ``[images, labels]``).
    """
    images = keras.Input((32, 32, 3), name="images")
    h = images
    for resample in ("down", "down", None, None):
        h = _residual_block(h, dim, resample)
    features = layers.GlobalAveragePooling2D()(layers.ReLU()(h))
    score = layers.Dense(1, dtype="float32")(features)
    if not num_classes:
        return keras.Model(images, score, name="resnet_critic")
    labels = keras.Input((), dtype="int32", name="labels")
    projection = layers.Dot(axes=1)([layers.Embedding(num_classes, dim)(labels), features])
    return keras.Model(
        [images, labels], layers.Add(dtype="float32")([score, projection]), name="resnet_projection_critic"
    )
