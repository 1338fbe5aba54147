"""The backend glue gives Keras's own results: `backend.apply_gradients` is the optimizer's update (on
torch, a plain Adam runs fused) and `backend.forward` is the model's call (on torch, the fused torch calls
of `backend.torch_layers`)."""

import keras
import numpy as np
import pytest
from conftest import numpy

from portable_wgangp import backend, nets


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


def _stack(*layers):
    return lambda: keras.Sequential([keras.Input((4,)), *layers])


def _convolutions(data_format):
    """Convolutions whose "same" padding is symmetric (fused on torch) and asymmetric (Keras's call)."""
    x = keras.Input((3, 6, 6) if data_format == "channels_first" else (6, 6, 3))
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", data_format=data_format)(x)  # 6 → 3: (0, 1)
    h = keras.layers.Conv2DTranspose(5, 3, strides=2, padding="same", data_format=data_format)(
        h
    )  # odd kernel
    h = keras.layers.Conv2D(4, 4, padding="same", data_format=data_format, activation="relu")(h)  # (1, 2)
    h = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", data_format=data_format)(h)  # crop 1, 1
    h = keras.layers.Conv2D(2, 3, padding="valid", dilation_rate=2, data_format=data_format)(h)
    h = keras.layers.BatchNormalization(axis=1 if data_format == "channels_first" else -1)(h)
    return keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(h)))


MODELS = {
    "dense-stack": _stack(
        keras.layers.Dense(8, activation="relu"), keras.layers.LeakyReLU(0.2), keras.layers.Dense(1)
    ),
    "reshapes": _stack(
        keras.layers.Reshape((2, 2)), keras.layers.Flatten(), keras.layers.Dense(3, activation="tanh")
    ),
    "dropout": _stack(keras.layers.Dense(8), keras.layers.Dropout(0.5, seed=0)),
    "batch-norm-dense": _stack(
        keras.layers.Dense(8), keras.layers.BatchNormalization(), keras.layers.Dense(2)
    ),
    "dcgan-generator": lambda: nets.dcgan_generator(8, (8, 8, 3), base=4),
    "conditional-dcgan-generator": lambda: nets.dcgan_generator(8, (8, 8, 3), base=4, num_classes=3),
    "dcgan-critic": lambda: nets.dcgan_critic((16, 16, 3), base=4),
    "conditional-resnet-generator": lambda: nets.resnet_generator(8, dim=4, num_classes=3),
    "projection-resnet-critic": lambda: nets.resnet_critic(dim=4, num_classes=3),
    "convolutions-channels-last": lambda: _convolutions("channels_last"),
    "convolutions-channels-first": lambda: _convolutions("channels_first"),
}


def _inputs(model, rng):
    """A batch of 5 for each of the model's inputs: normal floats, labels in 0..2."""
    batch = [
        keras.ops.convert_to_tensor(
            rng.integers(0, 3, (5, *spec.shape[1:])).astype("int32")
            if "int" in spec.dtype
            else rng.normal(size=(5, *spec.shape[1:])).astype("float32")
        )
        for spec in model.inputs
    ]
    return batch[0] if len(batch) == 1 else batch


def _loss_grads_and_state(model, weights, loss):
    """``loss()``'s value and weight gradients from ``weights``, and the non-trainable weights after it."""
    model.set_weights(weights)
    value, _, grads = backend.value_and_grad(lambda: (loss(), None), model.trainable_variables)
    return [numpy(value)], [numpy(g) for g in grads], [numpy(v) for v in model.non_trainable_variables]


def _assert_all_close(ours, theirs, rtol=2e-5):
    """Each group of arrays equal to float32 rounding, measured against the group's largest value (the
    gradient of a bias before a BatchNorm is zero up to rounding noise of the other gradients' size)."""
    for our_group, their_group in zip(ours, theirs, strict=True):
        scale = max([1e-3, *(np.abs(b).max() for b in their_group)])
        for a, b in zip(our_group, their_group, strict=True):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_is_the_models_call_with_its_gradients(name):
    """`backend.forward` (on torch, fused torch calls of the layers) gives the model's outputs, weight
    gradients and BatchNorm moving statistics in training mode, and its outputs in inference mode; a
    model with a layer it does not know (Dropout) is called as usual."""
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    rng = np.random.default_rng(2)
    x = _inputs(model, rng)
    scale = keras.ops.convert_to_tensor(rng.normal(size=model.outputs[0].shape[1:]).astype("float32"))
    weights = model.get_weights()

    def loss(call):
        return lambda: keras.ops.sum(keras.ops.square(call(x)) * scale)

    ours = _loss_grads_and_state(model, weights, loss(lambda v: backend.forward(model, v, training=True)))
    theirs = _loss_grads_and_state(model, weights, loss(lambda v: model(v, training=True)))
    if name == "dropout":
        ours = _loss_grads_and_state(model, weights, loss(lambda v: backend.forward(model, v, training=True)))
        assert (numpy(backend.forward(model, x, training=True)) == 0).any()  # training mode reached Dropout
        ours, theirs = (), ()  # Dropout draws new masks each call
    _assert_all_close(ours, theirs)
    _assert_all_close(
        [[numpy(backend.forward(model, x, training=False))]], [[numpy(model(x, training=False))]]
    )


@pytest.mark.parametrize(
    "name", ["dcgan-critic", "convolutions-channels-last", "convolutions-channels-first"]
)
def test_forward_gives_the_penalty_gradient_of_the_models_call(name):
    """The double backward of the penalty through `backend.forward` equals that through the model's call."""
    keras.utils.set_random_seed(0)
    model = MODELS[name]()
    x = _inputs(model, np.random.default_rng(3))

    def penalty(call):
        return lambda: keras.ops.sum(keras.ops.square(backend.input_gradient(lambda v: call(v), x) - 0.1))

    weights = model.get_weights()
    ours = _loss_grads_and_state(model, weights, penalty(lambda v: backend.forward(model, v, training=True)))
    theirs = _loss_grads_and_state(model, weights, penalty(lambda v: model(v, training=True)))
    _assert_all_close(ours, theirs)


@pytest.mark.parametrize("amsgrad", [False, True], ids=["fused-adam", "keras-adam"])
def test_forward_sees_updated_weights_when_no_gradient_is_recorded(amsgrad):
    """The generator's fakes (made under `backend.constant`, where torch keeps kernels in its layout between
    updates) follow every optimizer update, fused (torch) or Keras's."""
    keras.utils.set_random_seed(0)
    model = MODELS["dcgan-generator"]()
    x = _inputs(model, np.random.default_rng(4))
    optimizer = keras.optimizers.Adam(0.1, amsgrad=amsgrad)
    optimizer.build(model.trainable_variables)
    for _ in range(3):
        fakes = backend.constant(lambda: backend.forward(model, x, training=False))
        _assert_all_close([[numpy(fakes)]], [[numpy(model(x, training=False))]])
        _, _, grads = backend.value_and_grad(
            lambda: (keras.ops.sum(backend.forward(model, x, training=True)), None), model.trainable_variables
        )
        backend.apply_gradients(optimizer, grads, model.trainable_variables)
