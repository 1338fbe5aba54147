"""Shared helpers. The suite runs once per backend: nox sets KERAS_BACKEND before keras is imported."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# JAX: this process and the CLI and worker processes the tests start share one persistent compilation
# cache (a folder of this session), so a step compiled once is loaded by every later run of the same
# program instead of compiled again (seconds a CLI run). Set before keras imports jax, which reads it.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    _JAX_CACHE = tempfile.mkdtemp(prefix="portable-wgangp-jax-cache-")
    atexit.register(shutil.rmtree, _JAX_CACHE, ignore_errors=True)
    os.environ.update(JAX_COMPILATION_CACHE_DIR=_JAX_CACHE, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.2")

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()


def pytest_report_header(config):
    return f"KERAS_BACKEND={BACKEND} (keras {keras.__version__})"


def pytest_configure(config):
    if os.environ.get("KERAS_BACKEND") and os.environ["KERAS_BACKEND"] != BACKEND:
        raise pytest.UsageError(f"KERAS_BACKEND={os.environ['KERAS_BACKEND']} but keras runs on {BACKEND}")


def tensor(x, dtype="float32"):
    """A backend tensor from numpy data."""
    return keras.ops.convert_to_tensor(np.asarray(x, dtype=dtype))


def numpy(x) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def linear_critic(weights, bias=0.0) -> keras.Sequential:
    """f(x) = w·x + b over flattened samples, as a Keras model."""
    weights = np.asarray(weights, dtype="float32")
    model = keras.Sequential([keras.Input((len(weights),)), keras.layers.Dense(1)])
    model.set_weights([weights.reshape(-1, 1), np.array([bias], dtype="float32")])
    return model


def mlp_critic(weights, sample_shape) -> keras.Sequential:
    """The tanh MLP critic of `reference.mlp_case` as a Keras model (Flatten first)."""
    model = keras.Sequential(
        [
            keras.Input(tuple(sample_shape)),
            keras.layers.Flatten(),
            keras.layers.Dense(weights[0].shape[1], activation="tanh"),
            keras.layers.Dense(1),
        ]
    )
    model.set_weights([w.astype("float32") for w in weights])
    return model


def assert_close(actual, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(numpy(actual), np.asarray(expected, dtype="float64"), rtol=rtol, atol=atol)


@pytest.fixture(scope="session")
def object_servers(tmp_path_factory):
    """moto's S3 server and a GCS emulator on 127.0.0.1 (`object_stores`), for the whole session; their
    variables are set in this process, so the CLI processes the tests start reach them too."""
    import object_stores

    servers = object_stores.Servers(tmp_path_factory.mktemp("object-stores") / "servers.log")
    before = {name: os.environ.get(name) for name in servers.environment}
    os.environ.update(servers.environment)
    yield servers
    servers.close()
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def s3_server(object_servers):
    import object_stores

    return object_stores.Server(object_servers, "s3")


@pytest.fixture(scope="session")
def gcs_server(object_servers):
    import object_stores

    return object_stores.Server(object_servers, "gs")
