"""`backend.apply_gradients` is the optimizer's own update (on torch, a plain Adam runs fused)."""

import keras
import numpy as np
import pytest

from portable_wgangp import backend


def _weights():
    rng = np.random.default_rng(0)
    return [rng.normal(size=shape).astype("float32") for shape in [(7, 5), (5,), (3, 2, 2)]]


@pytest.mark.parametrize(
    "settings",
    [
        {"learning_rate": 1e-3, "beta_1": 0.5, "beta_2": 0.9},
        {"learning_rate": 1e-2, "beta_1": 0.0, "beta_2": 0.99, "epsilon": 1e-3},
        {"learning_rate": keras.optimizers.schedules.PolynomialDecay(1e-2, 10, 1e-4)},
        {"learning_rate": 1e-3, "amsgrad": True},
        {"learning_rate": 1e-3, "clipnorm": 0.1},
    ],
    ids=["paper-betas", "large-epsilon", "schedule", "amsgrad", "clipnorm"],
)
def test_apply_gradients_equals_the_optimizers_apply(settings):
    """Ten Adam updates with gradients from 1 to 1e-7 (where ε matters) match Keras's, weight by weight."""
    ours = [keras.Variable(w) for w in _weights()]
    theirs = [keras.Variable(w) for w in _weights()]
    ours_optimizer, their_optimizer = keras.optimizers.Adam(**settings), keras.optimizers.Adam(**settings)
    ours_optimizer.build(ours)
    their_optimizer.build(theirs)
    rng = np.random.default_rng(1)
    for k in range(10):
        grads = [(rng.normal(size=w.shape) * 10.0**-k).astype("float32") for w in _weights()]
        backend.apply_gradients(ours_optimizer, [keras.ops.convert_to_tensor(g) for g in grads], ours)
        their_optimizer.apply([keras.ops.convert_to_tensor(g) for g in grads], theirs)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7)
    assert int(ours_optimizer.iterations) == int(their_optimizer.iterations) == 10
    for a, b in zip(ours_optimizer.variables, their_optimizer.variables):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-9)
