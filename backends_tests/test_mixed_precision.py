"""Mixed precision: the penalty, its norm and the losses stay float32; training stays finite."""

import keras
import numpy as np
import pytest
from conftest import numpy, tensor

import portable_wgangp as pw
from portable_wgangp.nets import mlp

RNG = np.random.default_rng(3)
REAL, FAKE = RNG.normal(size=(64, 2)), RNG.normal(size=(64, 2)) + 1.0
EPSILON = RNG.uniform(size=(64,))


@pytest.fixture
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def critic_pair(policy_name):
    """A float32 critic and a critic of the given policy holding the same weights."""
    keras.config.set_dtype_policy("float32")
    reference = mlp(2, 1, width=32, depth=2, activation="tanh")
    keras.config.set_dtype_policy(policy_name)
    mixed = mlp(2, 1, width=32, depth=2, activation="tanh")
    mixed.set_weights(reference.get_weights())
    return reference, mixed


@pytest.mark.parametrize("policy", ["mixed_bfloat16"], indirect=True)
def test_bfloat16_penalty_matches_float32_within_bf16_tolerance(policy):
    reference, mixed = critic_pair(policy)
    assert mixed.layers[0].compute_dtype == "bfloat16"
    values = [
        pw.gradient_penalty(critic, tensor(REAL), tensor(FAKE), epsilon=tensor(EPSILON))
        for critic in (reference, mixed)
    ]
    assert all("float32" in str(v.dtype) for v in values)
    np.testing.assert_allclose(numpy(values[1]), numpy(values[0]), rtol=3e-2)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_mixed_precision_training_runs_finite(policy):
    gan = pw.WGANGP(mlp(2, 2, width=32, depth=2), mlp(2, 1, width=32, depth=2), 2, n_critic=2, seed=0)
    gan.compile()
    if policy == "mixed_float16":
        assert isinstance(gan.critic_optimizer, keras.optimizers.LossScaleOptimizer)
    history = gan.fit((RNG.normal(size=(512, 2)) + 1).astype("float32"), batch_size=32, epochs=1, verbose=0)
    for name, values in history.history.items():
        assert np.isfinite(values).all(), name
    samples = gan.sample(8, seed=0)
    assert samples.dtype == np.float32 and np.isfinite(samples).all()


def tiny_gradient_critic(policy_name):
    """A critic whose input gradients (~1e-8 a component) underflow in float16: a tanh layer whose output
    weights are 1e-8."""
    keras.config.set_dtype_policy(policy_name)
    critic = mlp(2, 1, width=16, depth=1, activation="tanh")
    kernel, bias, out_kernel, out_bias = critic.get_weights()
    critic.set_weights([kernel, bias, np.full_like(out_kernel, 1e-8), out_bias])
    return critic


@pytest.mark.parametrize("policy", ["mixed_float16"], indirect=True)
def test_float16_penalty_does_not_underflow_with_the_loss_scale(policy):
    """Without scaling, float16 input gradients of 1e-8 underflow to 0; scaled by the loss scale (2^15)
    and unscaled in float32 they match the float32 critic."""
    reference = tiny_gradient_critic("float32")
    mixed = tiny_gradient_critic(policy)
    mixed.set_weights(reference.get_weights())

    def r1(critic, **kwargs):  # E‖g‖², the zero-centred penalty at the real samples
        return float(numpy(pw.gradient_penalty(critic, tensor(REAL), mode="zero_centered", **kwargs)))

    expected = r1(reference)
    assert expected > 0
    assert r1(mixed) < 0.5 * expected  # the plain float16 gradient lost (most of) it
    assert r1(mixed, loss_scale=2.0**15) == pytest.approx(expected, rel=2e-2)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"], indirect=True)
def test_mixed_precision_trains_the_dcgan(policy):
    from portable_wgangp import nets

    gan = pw.WGANGP(
        nets.dcgan_generator(8, (8, 8, 1), base=4),
        nets.dcgan_critic((8, 8, 1), base=4),
        8,
        n_critic=2,
        seed=0,
    )
    gan.compile()
    assert gan.critic.layers[1].compute_dtype == policy.split("_")[1]
    images = RNG.uniform(-1, 1, size=(64, 8, 8, 1)).astype("float32")
    history = gan.fit(images, batch_size=16, epochs=1, verbose=0)
    for name, values in history.history.items():
        assert np.isfinite(values).all(), name
    assert np.isfinite(gan.sample(4, seed=0)).all()
