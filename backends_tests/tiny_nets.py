"""Tiny networks with fixed weights for tests that compare runs (used by tests and `replica_worker.py`)."""

import keras
import numpy as np


def image_mlps(shape, latent_dim: int, rng: np.random.Generator, hidden: int = 16):
    """``(generator, critic)``: a tanh MLP generator of images ``shape`` and an MLP critic with ``hidden``
    tanh units, every weight drawn from ``rng`` (so the same whatever the backend or strategy)."""
    generator = keras.Sequential(
        [
            keras.Input((latent_dim,)),
            keras.layers.Dense(int(np.prod(shape)), activation="tanh"),
            keras.layers.Reshape(shape),
        ]
    )
    critic = keras.Sequential(
        [
            keras.Input(shape),
            keras.layers.Flatten(),
            keras.layers.Dense(hidden, activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    for net in (generator, critic):
        net.set_weights([rng.normal(size=w.shape).astype("float32") * 0.3 for w in net.get_weights()])
    return generator, critic


def labelled_mlp(inputs: int, outputs: int, classes: int) -> keras.Model:
    """``[x, labels] -> Dense(outputs)(tanh(Dense(16)([x, embedding(labels)])))``."""
    x, labels = keras.Input((inputs,)), keras.Input((), dtype="int32")
    h = keras.layers.Concatenate()([x, keras.layers.Embedding(classes, 4)(labels)])
    return keras.Model([x, labels], keras.layers.Dense(outputs)(keras.layers.Dense(16, activation="tanh")(h)))
