"""DESIGN invariants 1-3 and the penalty conventions, each on the active backend."""

import keras
import numpy as np
import pytest
from conftest import assert_close, linear_critic, numpy, tensor

import portable_wgangp as pw
from portable_wgangp import backend

RNG = np.random.default_rng(0)
REAL = RNG.normal(size=(6, 3))
FAKE = RNG.normal(size=(6, 3)) + 2.0


@pytest.mark.parametrize("w", [[3.0, 4.0, 0.0], [0.1, -0.2, 0.05], [1.0, 0.0, 0.0]])
def test_linear_critic_penalty_and_its_weight_gradient(w):
    """Invariant 1: penalty (‖w‖ − 1)², gradient w.r.t. w 2(‖w‖ − 1)w/‖w‖."""
    w = np.array(w)
    critic = linear_critic(w, bias=0.7)
    kernel = critic.layers[-1].kernel

    def objective():
        return pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE), seed=1), ()

    value, _, (grad_kernel, grad_bias) = backend.value_and_grad(objective, [kernel, critic.layers[-1].bias])
    norm = np.linalg.norm(w)
    assert_close(value, (norm - 1.0) ** 2)
    assert_close(np.ravel(numpy(grad_kernel)), 2.0 * (norm - 1.0) * w / norm, atol=1e-6)
    assert_close(grad_bias, [0.0])


def test_quadratic_critic_input_gradient_is_x():
    """Invariant 2: ∇ₓ ½‖x‖² = x, for any sample shape."""
    x = RNG.normal(size=(5, 2, 3, 1))

    def critic(points):
        return 0.5 * keras.ops.sum(keras.ops.square(points), axis=(1, 2, 3))

    assert_close(pw.input_gradient(critic, tensor(x)), x)


def test_constant_critic_penalty_is_one_with_finite_gradients():
    """Invariant 3: ‖g‖ = 0 gives penalty 1 (two-sided) and finite, zero weight gradients."""
    critic = linear_critic([0.0, 0.0, 0.0], bias=2.0)
    variables = critic.trainable_variables

    def objective():
        return pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE)), ()

    value, _, grads = backend.value_and_grad(objective, variables)
    assert_close(value, 1.0)
    for grad in grads:
        assert np.all(np.isfinite(numpy(grad)))
        assert_close(grad, np.zeros(tuple(grad.shape)))


def test_epsilon_weights_the_real_sample():
    """x̂ = ε·real + (1 − ε)·fake: with the quadratic critic, g = x̂, so ‖g‖ reveals x̂."""
    real, fake = np.array([[3.0, 0.0]]), np.array([[0.0, 0.0]])

    def critic(points):
        return 0.5 * keras.ops.sum(keras.ops.square(points), axis=1)

    value = pw.gradient_penalty(critic, tensor(real), tensor(fake), epsilon=tensor([0.25]))
    assert_close(value, (0.75 - 1.0) ** 2)  # ‖x̂‖ = 0.25 · 3


@pytest.mark.parametrize(
    ("mode", "target", "expected"),
    [
        ("two_sided", 1.0, lambda n: (n - 1) ** 2),
        ("one_sided", 1.0, lambda n: np.maximum(n - 1, 0) ** 2),
        ("one_sided", 4.0, lambda n: np.maximum(n / 4 - 1, 0) ** 2),
        ("two_sided", 2.0, lambda n: (n / 2 - 1) ** 2),
        ("zero_centered", 1.0, lambda n: n**2),
    ],
)
def test_modes_and_targets_follow_tf_gan_convention(mode, target, expected):
    """‖g‖ = ‖w‖ for a linear critic; the target divides the norm (TF-GAN, ProGAN)."""
    for w in ([0.3, 0.4, 0.0], [3.0, 4.0, 0.0]):
        critic = linear_critic(w)
        value = pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE), mode=mode, target=target)
        assert_close(value, expected(np.linalg.norm(w)))


def test_zero_centered_without_fake_is_taken_at_the_real_samples():
    def critic(points):
        return 0.5 * keras.ops.sum(keras.ops.square(points), axis=1)

    value = pw.gradient_penalty(critic, tensor(REAL), mode="zero_centered")
    assert_close(value, np.mean(np.sum(REAL**2, axis=1)))


def test_epsilon_accepts_batch_and_broadcast_shapes():
    def critic(points):
        return 0.5 * keras.ops.sum(keras.ops.square(points), axis=(1, 2))

    real, fake = RNG.normal(size=(4, 2, 2)), RNG.normal(size=(4, 2, 2))
    eps = RNG.uniform(size=(4,))
    flat = pw.gradient_penalty(critic, tensor(real), tensor(fake), epsilon=tensor(eps))
    broadcast = pw.gradient_penalty(critic, tensor(real), tensor(fake), epsilon=tensor(eps.reshape(4, 1, 1)))
    points = eps[:, None, None] * real + (1 - eps[:, None, None]) * fake
    expected = np.mean((np.linalg.norm(points.reshape(4, -1), axis=1) - 1) ** 2)
    assert_close(flat, expected)
    assert_close(broadcast, expected)


def test_random_epsilon_is_reproducible_with_a_seed():
    critic = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, activation="tanh"), keras.layers.Dense(1)]
    )
    first = pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE), seed=3)
    second = pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE), seed=3)
    assert_close(first, numpy(second), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "hinge"}, "Unknown penalty mode"),
        ({"fake": np.zeros((6, 2))}, "same shape"),
        ({"fake": None}, "needs fake samples"),
    ],
)
def test_bad_arguments_raise_value_errors(kwargs, message):
    critic = linear_critic([1.0, 0.0, 0.0])
    kwargs = {"fake": FAKE, **kwargs}
    fake = kwargs.pop("fake")
    with pytest.raises(ValueError, match=message):
        pw.gradient_penalty(critic, tensor(REAL), None if fake is None else tensor(fake), **kwargs)
