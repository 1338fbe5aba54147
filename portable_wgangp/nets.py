"""Reference networks, built from Keras layers only (so they run on every backend)."""

from __future__ import annotations

import keras
from keras import layers


def mlp(
    input_dim: int,
    output_dim: int,
    *,
    width: int = 128,
    depth: int = 3,
    activation: str = "relu",
    name: str | None = None,
) -> keras.Sequential:
    """``depth`` hidden Dense layers of ``width`` units, then a linear Dense to ``output_dim``.

    Shapes: ``(batch, input_dim) -> (batch, output_dim)``. The paper's toy nets (``gan_toy.py``) are
    ``mlp(2, 2, width=512)`` and ``mlp(2, 1, width=512)``. No normalization, so it serves as a critic.
    """
    hidden = [layers.Dense(width, activation=activation) for _ in range(depth)]
    return keras.Sequential([keras.Input((input_dim,)), *hidden, layers.Dense(output_dim)], name=name)
