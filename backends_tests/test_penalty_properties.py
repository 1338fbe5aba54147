"""Property tests (hypothesis) of the penalty's invariances, on the active backend."""

import keras
import numpy as np
from conftest import linear_critic, numpy, tensor
from hypothesis import given, settings
from hypothesis import strategies as st

import portable_wgangp as pw

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True)
CRITIC = keras.Sequential(  # seeded: the same critic, hence the same examples, in every run
    [
        keras.Input((3,)),
        keras.layers.Dense(8, activation="tanh", kernel_initializer=keras.initializers.GlorotUniform(0)),
        keras.layers.Dense(1, kernel_initializer=keras.initializers.GlorotUniform(1)),
    ]
)
# (‖g‖ − 1)² loses relative precision near ‖g‖ = 1: float32 rounding of ‖g‖ (~1e-7) bounds its error.
TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}


def batch(seed, size):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(size, 3)), rng.normal(size=(size, 3)) + 1.0, rng.uniform(size=(size,))


def penalty(critic, real, fake, eps, mode="two_sided"):
    return float(
        numpy(pw.gradient_penalty(critic, tensor(real), tensor(fake), epsilon=tensor(eps), mode=mode))
    )


@SETTINGS
@given(seed=st.integers(0, 2**16), size=st.integers(2, 12), mode=st.sampled_from(pw.penalties.PENALTY_MODES))
def test_penalty_ignores_the_order_of_the_batch(seed, size, mode):
    real, fake, eps = batch(seed, size)
    order = np.random.default_rng(seed + 1).permutation(size)
    np.testing.assert_allclose(
        penalty(CRITIC, real[order], fake[order], eps[order], mode),
        penalty(CRITIC, real, fake, eps, mode),
        **TOLERANCE,
    )


@SETTINGS
@given(seed=st.integers(0, 2**16), size=st.integers(1, 8), copies=st.integers(2, 4))
def test_penalty_is_a_mean_so_repeating_the_batch_changes_nothing(seed, size, copies):
    real, fake, eps = batch(seed, size)
    repeated = [np.concatenate([a] * copies) for a in (real, fake, eps)]
    np.testing.assert_allclose(penalty(CRITIC, *repeated), penalty(CRITIC, real, fake, eps), **TOLERANCE)


@SETTINGS
@given(
    w=st.lists(st.floats(-3, 3, allow_nan=False), min_size=3, max_size=3),
    scale=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_linear_critic_penalty_does_not_depend_on_the_inputs_scale(w, scale, seed):
    critic = linear_critic(w)
    real, fake, eps = batch(seed, 6)
    expected = (np.linalg.norm(np.asarray(w, dtype="float32")) - 1.0) ** 2
    np.testing.assert_allclose(
        penalty(critic, scale * real, scale * fake, eps), expected, rtol=1e-5, atol=1e-6
    )
