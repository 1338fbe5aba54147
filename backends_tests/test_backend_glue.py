"""The backend glue gives Keras's own results: `backend.apply_gradients` is the optimizer's update (on
torch, a plain Adam runs fused) and `backend.forward` is the model's call (on torch, a plain layer stack
runs its layers' `call`s)."""

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
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-7
        )
    assert int(ours_optimizer.iterations) == int(their_optimizer.iterations) == 10
    for a, b in zip(ours_optimizer.variables, their_optimizer.variables):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6, atol=1e-9
        )


@pytest.mark.parametrize(
    "layers",
    [
        lambda: [
            keras.layers.Dense(8, activation="relu"),
            keras.layers.LeakyReLU(0.2),
            keras.layers.Dense(1),
        ],
        lambda: [
            keras.layers.Reshape((2, 2)),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="tanh"),
        ],
        lambda: [keras.layers.Dense(8), keras.layers.Dropout(0.5, seed=0)],
    ],
    ids=["dense-stack", "reshapes", "dropout"],
)
def test_forward_is_the_models_call_with_its_gradients(layers):
    """`backend.forward` (on torch, a direct run of a plain layer stack) gives the model's outputs and
    weight gradients; a stack with a training-mode layer (Dropout) is called as usual."""
    model = keras.Sequential([keras.Input((4,)), *layers()])
    x = keras.ops.convert_to_tensor(np.random.default_rng(2).normal(size=(5, 4)).astype("float32"))
    variables = model.trainable_variables

    def loss(call):
        return lambda: (keras.ops.sum(keras.ops.square(call())), None)

    ours = backend.value_and_grad(loss(lambda: backend.forward(model, x, training=False)), variables)
    theirs = backend.value_and_grad(loss(lambda: model(x, training=False)), variables)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ours[0]), keras.ops.convert_to_numpy(theirs[0]), rtol=1e-6
    )
    for a, b in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), rtol=1e-6)
    trained = keras.ops.convert_to_numpy(backend.forward(model, x, training=True))
    if any(isinstance(layer, keras.layers.Dropout) for layer in model.layers):
        assert (trained == 0).any()  # training mode reached the Dropout
