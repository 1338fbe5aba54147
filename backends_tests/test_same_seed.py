"""One seed, one run on every backend: the initial weights, z and ε come from `portable_wgangp.rng`, so a run
here ends where the same run ended on JAX (`seed_runs.py`, recorded in ``data/seed_runs.npz``), up to the
float32 rounding that training amplifies (issue 25's tolerances: the first step's logs to 1e-3 relative,
20 toy steps to 1e-2 and 5 DCGAN steps to 1e-4 in relative L2 per network)."""

import json
import pathlib

import keras
import numpy as np
import pytest
import seed_runs as runs
from keras import ops

import portable_wgangp as pw
from portable_wgangp import backend, rng

DATA = pathlib.Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def recorded():
    return dict(np.load(DATA / "seed_runs.npz"))


def recorded_network(recorded, prefix: str) -> list:
    return [recorded[f"{prefix}_{i}"] for i in range(sum(k.startswith(prefix + "_") for k in recorded))]


def assert_ends_as_recorded(gan, recorded, run: str, bound: float) -> None:
    """Both networks within ``bound`` (relative L2) of the recorded ``run``'s."""
    for name in ("generator", "critic"):
        distance = runs.relative_l2(
            runs.weights(getattr(gan, name)), recorded_network(recorded, f"{run}_{name}")
        )
        assert distance < bound, (name, distance)


# Random123's known-answer vectors for threefry2x32_20 (key, counter, output), which jax.random's
# threefry_2x32 reproduces too.
KNOWN_ANSWERS = [
    ((0, 0), (0, 0), (0x6B200159, 0x99BA4EFE)),
    ((0xFFFFFFFF, 0xFFFFFFFF), (0xFFFFFFFF, 0xFFFFFFFF), (0x1CB996FC, 0xBB002BE7)),
    ((0x13198A2E, 0x03707344), (0x243F6A88, 0x85A308D3), (0xC4923A9C, 0x483DF7A0)),
]


@pytest.mark.parametrize("key,counter,expected", KNOWN_ANSWERS)
def test_threefry_gives_the_published_bits(key, counter, expected):
    words = [ops.convert_to_tensor(np.array([counter[i]], "uint32").view("int32")) for i in (0, 1)]
    out = [int(np.asarray(ops.convert_to_numpy(w)).view("uint32")[0]) for w in rng.threefry2x32(key, *words)]
    assert out == list(expected)


def test_draws_are_the_same_numbers_on_every_backend():
    generator = keras.random.SeedGenerator(12345)
    z = ops.convert_to_numpy(rng.normal((3, 5), generator))
    u = ops.convert_to_numpy(rng.uniform((7,), generator))
    # Recorded on JAX; TensorFlow and torch differ in float32 rounding of log, sin and cos only.
    np.testing.assert_allclose(
        z[0], [-0.14648716, 1.1843687, -0.20092171, -0.75596595, 0.78909993], rtol=1e-5
    )
    np.testing.assert_array_equal(u[:3], np.float32([0.8270326, 0.9857808, 0.23471719]))
    state = ops.convert_to_numpy(generator.state)
    assert [int(state[0]), int(state[1])] == [12345, 2]  # one counter step a draw


def test_uniforms_are_uniform_and_normals_normal():
    u = ops.convert_to_numpy(rng.uniform((20000,), seed=1))
    z = ops.convert_to_numpy(rng.normal((20001,), seed=2))  # odd: the last block's second word is cut
    assert 0 < u.min() and u.max() < 1 and abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    assert z.shape == (20001,) and abs(z.mean()) < 0.02 and abs(z.std() - 1) < 0.02
    assert abs(np.mean(np.abs(z) < 1) - 0.6827) < 0.01


@pytest.mark.parametrize("distribution", [rng._uniform, rng._normal, rng._truncated_normal])
def test_a_draw_on_the_host_is_the_draw_in_keras_ops(distribution):
    """A key known on the host (an int seed; an eager torch step on the CPU) is drawn in numpy, any other
    in `keras.ops`: the same threefry bits, the same floats up to rounding."""
    in_ops = ops.convert_to_numpy(distribution((5, 33), (7, 3), 0.5, 2.0, ops))
    on_host = distribution((5, 33), (7, 3), 0.5, 2.0, rng._HostOps)
    assert on_host.dtype == np.float32 and on_host.shape == (5, 33)
    if distribution is rng._uniform:
        np.testing.assert_array_equal(in_ops, on_host)
    np.testing.assert_allclose(in_ops, on_host, rtol=1e-5, atol=1e-5)


def test_only_an_eager_step_on_the_cpu_reads_the_seed_on_the_host():
    state = keras.random.SeedGenerator(1).state.value
    assert (backend.host_value(state) is not None) == (keras.backend.backend() == "torch")


def test_initializers_keep_keras_distributions():
    dense = keras.layers.Dense(400, kernel_initializer="he_normal", bias_initializer="random_uniform")
    model = keras.Sequential([keras.Input((300,)), dense, keras.layers.BatchNormalization()])
    rng.initialize(model, seed=5)
    kernel, bias = ops.convert_to_numpy(dense.kernel), ops.convert_to_numpy(dense.bias)
    stddev = (2 / 300) ** 0.5  # He: truncated at ±2 σ' with σ' = stddev / 0.8796, so that its std is stddev
    assert abs(kernel.std() / stddev - 1) < 0.02 and np.abs(kernel).max() <= 2 * stddev / 0.87962566
    assert np.abs(bias).max() <= 0.05 and bias.std() > 0.02
    assert np.all(ops.convert_to_numpy(model.layers[-1].gamma) == 1)  # ones stay ones
    with pytest.raises(ValueError, match="Orthogonal draws from Keras's per-backend generator"):
        rng.initialize(
            keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, kernel_initializer="orthogonal")]), 0
        )


def test_a_toy_run_is_the_jax_run(recorded):
    """Initial weights, the first step's logs, and 20 steps (fitted as 1 + 9 + 10, as recorded)."""
    gan = runs.toy_gan()
    for actual, expected in zip(runs.weights(gan.generator), recorded_network(recorded, "initial")):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)
    logs = runs.fit(gan, runs.toy_data(0, 1), runs.TOY["batch"])
    names = [str(n) for n in recorded["first_step_names"]]
    np.testing.assert_allclose([logs[n] for n in names], recorded["first_step_logs"], rtol=1e-3)
    runs.fit(gan, runs.toy_data(1, 9), runs.TOY["batch"])
    runs.fit(gan, runs.toy_data(10, 10), runs.TOY["batch"])
    assert_ends_as_recorded(gan, recorded, "toy", 1e-2)


def test_resuming_a_jax_checkpoint_continues_the_same_run(recorded):
    gan = keras.saving.load_model(DATA / "seed_run_step10.keras")
    assert int(ops.convert_to_numpy(gan.generator_optimizer.iterations)) == 10
    runs.fit(gan, runs.toy_data(10, 10), runs.TOY["batch"])
    assert_ends_as_recorded(gan, recorded, "toy", 1e-2)


def test_five_dcgan_steps_end_where_jax_ended(recorded):
    gan = runs.dcgan_gan()
    runs.fit(gan, runs.dcgan_data(), runs.DCGAN["batch"])
    assert_ends_as_recorded(gan, recorded, "dcgan", 1e-4)


def test_nets_take_a_seed():
    first, second, other = (pw.nets.mlp(2, 1, width=8, seed=s) for s in (3, 3, 4))
    assert np.array_equal(runs.weights(first)[0], runs.weights(second)[0])
    assert not np.array_equal(runs.weights(first)[0], runs.weights(other)[0])


def test_resume_refuses_a_run_of_other_random_numbers(tmp_path):
    from portable_wgangp import config
    from portable_wgangp.errors import UserError

    saved = config.saved_form(config.resolve({}))
    assert saved["random_numbers"] == "threefry2x32"
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    assert config.load_saved(path, resuming=True).seed == 0
    del saved["random_numbers"]  # a run of an earlier version: Keras's per-backend generators
    path.write_text(json.dumps(saved))
    assert config.load_saved(path).seed == 0  # evaluate and sample still read it
    with pytest.raises(UserError, match=r"random numbers came from 'keras'.*cannot continue that run"):
        config.load_saved(path, resuming=True)
