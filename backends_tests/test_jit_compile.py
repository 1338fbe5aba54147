"""``jit_compile=True`` (``--jit-compile``): on torch the whole step is captured as one graph and compiled
(`backend.torch_capture`), with the weights and the logs of the eager step; JAX and TensorFlow compile their
step always, and the flag changes nothing there (checked too).

On torch the captured graph runs uncompiled here (``COMPILER = None``): what the tests check is the
capture; compiling it with inductor takes minutes on 2 CPU cores (`benchmarks/torch_compiled.py` measures
it, and its exactness).
"""

import keras
import numpy as np
import pytest
from conftest import BACKEND
from tiny_nets import labelled_mlp

import portable_wgangp as pw
from portable_wgangp import cli, files

STEPS = 5
ONLY_TORCH = pytest.mark.skipif(
    BACKEND != "torch", reason="the eager fallback exists on torch only (JAX and TensorFlow always compile)"
)
# A capture that falls back to the eager step warns; where the test expects a capture, that is a failure.
pytestmark = pytest.mark.filterwarnings("error:jit_compile=True")


@pytest.fixture(autouse=True)
def captured_graph_uncompiled(monkeypatch):
    if BACKEND == "torch":
        from portable_wgangp.backend import torch_capture

        monkeypatch.setattr(torch_capture, "COMPILER", None)


def _gan(kind: str, optimizer=keras.optimizers.Adam, **settings):
    """A small GAN, the same weights on every call: ``mlp`` (with an EMA), ``conditional`` (labels) or
    ``dcgan`` (convolutions, BatchNorm in the generator, DiffAugment)."""
    classes = 3 if kind == "conditional" else None
    if kind == "dcgan":
        networks = pw.nets.dcgan_generator(8, (16, 16, 1), base=8), pw.nets.dcgan_critic((16, 16, 1), base=8)
        latent_dim, settings = 8, {"augment": "color,translation", **settings}
    else:
        networks = pw.nets.mlp(2, 2, width=16, depth=2), pw.nets.mlp(2, 1, width=16, depth=2)
        latent_dim, settings = 2, {"ema_decay": 0.9, **settings}
    if classes:
        networks = labelled_mlp(2, 2, classes), labelled_mlp(2, 1, classes)
    gan = pw.WGANGP(*networks, latent_dim, n_critic=2, seed=3, num_classes=classes, **settings)
    pw.rng.initialize(gan, 0)
    return gan, [optimizer(1e-3) for _ in range(2)]


def _data(kind: str):
    rng = np.random.default_rng(0)
    shape = (16, 16, 1) if kind == "dcgan" else (2,)
    x = rng.uniform(-1, 1, size=(16 * 2 * STEPS, *shape)).astype("float32")
    return x, (rng.integers(0, 3, size=len(x)).astype("int32") if kind == "conditional" else None)


def _trained(kind: str, n: int = 1, optimizer=keras.optimizers.Adam, **compile_arguments):
    gan, optimizers = _gan(kind, optimizer)
    gan.compile(*optimizers, steps_per_execution=n, **compile_arguments)
    seen = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: seen.append(dict(logs)))
    gan.fit(*_data(kind), batch_size=16, epochs=1, verbose=0, callbacks=[record])
    return gan, seen


def _assert_same(trained, expected, tolerance=1e-6):
    (gan, seen), (reference, expected_seen) = trained, expected
    assert len(seen) == len(expected_seen) == STEPS
    for logs, expected_logs in zip(seen, expected_seen):
        assert logs == pytest.approx(expected_logs, rel=tolerance, abs=tolerance)
    for w, e in zip(gan.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(w, e, rtol=tolerance, atol=tolerance)


def _programs(gan) -> dict:
    from portable_wgangp.backend import torch_capture

    return torch_capture.programs(gan)


DCGAN_ON_TORCH = pytest.mark.skipif(
    BACKEND != "torch",
    reason="JAX and TensorFlow run one program with or without jit_compile (N: test_steps_per_execution)",
)


@pytest.mark.parametrize(
    ("kind", "n"), [("mlp", 1), ("conditional", 2), pytest.param("dcgan", 3, marks=DCGAN_ON_TORCH)]
)
def test_the_compiled_step_gives_the_weights_and_logs_of_the_eager_step(kind, n):
    compiled = _trained(kind, n, jit_compile=True)
    # torch.func's convolution gradients sum in another order than autograd's: 1.1e-6 measured (CI)
    _assert_same(compiled, _trained(kind), tolerance=1e-5 if kind == "dcgan" else 1e-6)
    if BACKEND == "torch":  # really captured (a fallback would warn, an error here), one program for any N
        programs = list(_programs(compiled[0]).values())
        assert len(programs) == 1 and not isinstance(programs[0], str)
        assert compiled[0].jit_compile is True


def test_a_new_compile_is_captured_again():
    """A captured program holds the optimizers (their settings as constants): after a second ``compile``
    with other optimizers, training follows them as the eager step does."""

    def twice(**compile_arguments):
        gan, optimizers = _gan("mlp")
        gan.compile(*optimizers, **compile_arguments)
        gan.fit(*_data("mlp"), batch_size=16, epochs=1, verbose=0)
        gan.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2, beta_1=0.0), **compile_arguments)
        gan.fit(*_data("mlp"), batch_size=16, epochs=1, verbose=0)
        return gan

    for w, e in zip(twice(jit_compile=True).get_weights(), twice().get_weights()):
        np.testing.assert_allclose(w, e, rtol=1e-6, atol=1e-6)


@ONLY_TORCH
@pytest.mark.filterwarnings("default:jit_compile=True")
@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"optimizer": keras.optimizers.RMSprop}, "its RMSprop is not a plain Keras Adam"),
        ({"gp_every": 3}, "reads a tensor's value in Python"),
    ],
    ids=["rmsprop", "lazy-penalty-3-of-2"],
)
def test_a_step_that_cannot_be_captured_runs_eagerly_with_one_warning(settings, reason):
    optimizer = settings.pop("optimizer", keras.optimizers.Adam)
    gan, optimizers = _gan("mlp", optimizer, **settings)
    gan.compile(*optimizers, jit_compile=True)
    expected = f"^jit_compile=True: the torch step runs eagerly: .*{reason}"
    with pytest.warns(UserWarning, match=expected) as caught:
        gan.fit(*_data("mlp"), batch_size=16, epochs=1, verbose=0)
    assert len([w for w in caught if "jit_compile" in str(w.message)]) == 1
    reference, optimizers = _gan("mlp", optimizer, **settings)
    reference.compile(*optimizers)
    reference.fit(*_data("mlp"), batch_size=16, epochs=1, verbose=0)
    for w, e in zip(gan.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(w, e)


SHORT = ["--steps", "6", "--batch-size", "16", "--width", "8", "--depth", "1", "--lr-decay", "constant"]


def test_cli_jit_compile_logs_and_resumes_like_the_default_step(tmp_path):
    def train(out, *extra):
        assert cli.main(["train", "--out", str(tmp_path / out), "--quiet", *SHORT, *extra]) == 0

    train("default")
    train("compiled", "--steps", "3", "--jit-compile", "--steps-per-execution", "2")
    train("compiled", "--resume", "--jit-compile")
    expected = files.read_records(tmp_path / "default" / "metrics.jsonl")
    compiled = files.read_records(tmp_path / "compiled" / "metrics.jsonl")
    assert [r["step"] for r in compiled] == [r["step"] for r in expected] == list(range(1, 7))
    for record, reference in zip(compiled, expected):
        assert record == pytest.approx(reference, rel=1e-5, abs=1e-6)
    compiled_model, default_model = (
        keras.models.load_model(tmp_path / run / "checkpoint.keras") for run in ("compiled", "default")
    )
    for w, e in zip(compiled_model.get_weights(), default_model.get_weights()):
        np.testing.assert_allclose(w, e, rtol=1e-5, atol=1e-6)
