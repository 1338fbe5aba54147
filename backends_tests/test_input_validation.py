"""Every bad input is refused before the first step, with a message that names the fix (API and CLI)."""

import json
import re

import keras
import numpy as np
import pytest
from PIL import Image

import portable_wgangp as pw
from portable_wgangp import cli, data
from portable_wgangp.nets import mlp

RNG = np.random.default_rng(3)


# -- data -----------------------------------------------------------------------------------------------


def test_unsigned_images_are_scaled_by_their_bit_depth():
    np.testing.assert_array_equal(data.scale_images(np.array([[0, 255]], np.uint8)), [[-1.0, 1.0]])
    np.testing.assert_allclose(
        data.scale_images(np.array([[0, 32768, 65535]], np.uint16)), [[-1, 0, 1]], atol=2e-5
    )


@pytest.mark.parametrize(
    ("images", "message"),
    [
        (np.zeros((2, 4, 4), np.int32), "must be uint8 .* or uint16"),
        (np.zeros((2, 4, 4), bool), "must be real numbers, got an array of dtype bool"),
        (np.zeros((2, 4, 4), np.complex64), "must be real numbers"),
        (np.array([["a", "b"], ["c", "d"]]), "must be real numbers"),
        (np.full((2, 4, 4), 200.0), r"Float images must lie in \[-1, 1\]"),
        (np.zeros(5), r"must have shape \(N, \*sample_shape\)"),
        (np.zeros((0, 4, 4)), "N >= 1"),
    ],
)
def test_images_that_cannot_be_scaled_are_refused(images, message):
    with pytest.raises(ValueError, match=message):
        data.scale_images(images)


def test_nan_anywhere_is_refused_naming_the_sample():
    images = np.zeros((6, 4, 4, 1), np.float32)
    images[4, 2, 1, 0] = np.nan
    with pytest.raises(
        ValueError, match=r"1 NaN or infinite value\(s\), the first in sample 4 at index \(4, 2, 1, 0\)"
    ):
        data.scale_images(images)


def test_sixteen_bit_pngs_keep_their_sixteen_bits(tmp_path):
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")  # mode I;16
    images, _ = data.load_images(f"images:{tmp_path}", size=2)
    np.testing.assert_allclose(images[0, :, :, 0], values / 65535.0 * 2 - 1, atol=1e-4)
    Image.fromarray((values // 257).astype(np.uint8)).save(tmp_path / "deep.png")  # the same, in 8 bits
    eight, _ = data.load_images(f"images:{tmp_path}", size=2)
    np.testing.assert_allclose(eight, images, atol=2 / 255)


def test_an_unreadable_image_is_named(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match=r"Cannot read the image .*broken\.png"):
        data.load_images(f"images:{tmp_path}", size=8)


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ([0, 1, -1, 2], r"found 4 distinct values \[-1, 0, 1, 2\]"),
        ([0, 5, 9, 9], r"found 3 distinct values \[0, 5, 9\]"),
        ([0, 1, 1_000_000, 2], r"\[0, 1, 2, 1000000\]"),
    ],
)
def test_class_labels_must_be_zero_to_k_minus_one(labels, message):
    with pytest.raises(ValueError, match=message):
        data.count_classes(np.array(labels))
    assert data.count_classes(np.array([2, 0, 1, 1])) == 3


def test_npz_object_arrays_are_not_unpickled(tmp_path):
    np.savez(tmp_path / "objects.npz", x=np.array([object(), object()], dtype=object))
    with pytest.raises(ValueError, match="cannot be read"):
        data.load_npz(str(tmp_path / "objects.npz"))


# -- API --------------------------------------------------------------------------------------------------


def gan(**kwargs):
    model = pw.WGANGP(mlp(2, 2, width=8, depth=1), mlp(2, 1, width=8, depth=1), 2, n_critic=2, **kwargs)
    model.compile()
    return model


@pytest.mark.parametrize(
    ("x", "message"),
    [
        (np.zeros(64, np.float32), r"must have shape \(N, \*sample_shape\)"),
        (np.zeros((0, 2), np.float32), "N >= 1"),
        (np.zeros((64, 2), bool), "must be real numbers"),
        (np.zeros((64, 2), np.complex64), "must be real numbers"),
        (np.zeros((64, 3), np.float32), r"reshape the data to \(N, 2\)"),
        (np.zeros((64, 2), np.uint8), "scale_images"),
    ],
)
def test_fit_refuses_unusable_arrays(x, message):
    with pytest.raises(ValueError, match=message):
        gan().fit(x, batch_size=8, verbose=0)


def test_fit_refuses_nan_before_the_first_step_wherever_it_is():
    x = RNG.normal(size=(4096, 2)).astype("float32")
    x[4000, 1] = np.inf  # a row that a short run would never draw
    model = gan()
    with pytest.raises(ValueError, match=r"the first in sample 4000"):
        model.fit(x, batch_size=8, steps_per_epoch=1, verbose=0)
    assert int(model.generator_optimizer.iterations) == 0


def test_fit_checks_batch_size_and_labels():
    x = RNG.normal(size=(64, 2)).astype("float32")
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        gan().fit(x, batch_size=0, verbose=0)
    with pytest.raises(ValueError, match="pass y= exactly when num_classes is set"):
        gan().fit(x, np.zeros(64, "int32"), batch_size=8, verbose=0)
    conditional = pw.WGANGP(
        keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]),
        mlp(2, 1, width=8, depth=1),
        2,
        num_classes=3,
    )
    conditional.generator, conditional.critic = None, None  # never reached: the labels are checked first
    with pytest.raises(ValueError, match=r"Labels must lie in 0..2 \(num_classes 3\), got values \[0, 7\]"):
        pw.data.as_labels(np.array([0, 7]), 2, 3)


def test_a_critic_must_give_one_score_per_sample():
    with pytest.raises(ValueError, match=r"one score per sample.*gives \(1, 2\)"):
        pw.WGANGP(mlp(2, 2), mlp(2, 2), 2)


def test_a_generator_must_have_one_output():
    z = keras.Input((2,))
    two = keras.Model(z, [keras.layers.Dense(2)(z), keras.layers.Dense(2)(z)])
    with pytest.raises(ValueError, match="one tensor of samples"):
        pw.WGANGP(two, mlp(2, 1), 2)


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"n": 0}, "n must be a positive integer"), ({"n": 2.5}, "n must")]
)
def test_sample_checks_its_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        gan().sample(**kwargs)


def test_penalty_arguments_are_checked():
    critic = mlp(2, 1, width=4, depth=1)
    real, fake = np.ones((4, 2), "float32"), np.zeros((4, 2), "float32")
    with pytest.raises(ValueError, match="target must be a finite number > 0"):
        pw.gradient_penalty(critic, real, fake, target=0.0)
    with pytest.raises(
        ValueError, match=r"one weight per sample, shape \(4,\) or \(4, 1, ...\), got \(4, 2\)"
    ):
        pw.gradient_penalty(critic, real, fake, epsilon=np.full((4, 2), 0.5, "float32"))
    with pytest.raises(ValueError, match="finite and >= 0"):
        gan(gp_weight=float("nan"))


# -- CLI (in-process; one line, exit status 2) ---------------------------------------------------------


def one_line_error(capfd, *argv) -> str:
    assert cli.main(list(argv)) == 2
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def write_npz(path, labels, images=None):
    images = RNG.integers(0, 65536, size=(len(labels), 8, 8), dtype=np.uint16) if images is None else images
    np.savez(path, x=images, labels=np.array(labels))
    return f"npz:{path}"


@pytest.mark.parametrize(
    ("labels", "message"),
    [([0, 1, -1] * 30, "distinct values [-1, 0, 1]"), ([0, 1, 10**6] * 30, "[0, 1, 1000000]")],
)
def test_cli_refuses_bad_labels_before_writing(tmp_path, capfd, labels, message):
    spec = write_npz(tmp_path / "d.npz", labels)
    out = tmp_path / "out"
    assert message in one_line_error(capfd, "train", "--dataset", spec, "--conditional", "--out", str(out))
    assert not out.exists()


def test_cli_refuses_nan_in_array_data(tmp_path, capfd):
    images = RNG.uniform(-1, 1, size=(90, 8, 8)).astype("float32")
    images[77, 3, 3] = np.nan
    spec = write_npz(tmp_path / "nan.npz", [0] * 90, images)
    assert "first in sample 77" in one_line_error(
        capfd, "train", "--dataset", spec, "--out", str(tmp_path / "o")
    )


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('lr = "fast"', "lr in '.*' must be a number, got 'fast' \\(str\\)"),
        ("steps = 1.5", "steps in '.*' must be an integer"),
        ("conditional = 1", "conditional in '.*' must be true or false"),
        ("learning_rate = 0.1", "Unknown keys \\['learning_rate'\\]"),
        ("lr = ", "is not valid TOML"),
    ],
)
def test_toml_values_are_type_checked(tmp_path, capfd, toml, message):
    (tmp_path / "c.toml").write_text(toml + "\n")
    error = one_line_error(capfd, "train", "--config", str(tmp_path / "c.toml"), "--out", str(tmp_path / "o"))
    assert re.search(message, error), error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "paper", "--dataset", "digits"], "--preset paper is gan_toy.py's setting"),
        (["--dataset", "images:{tmp}", "--image-size", "4"], "--image-size must be at least 8"),
        (["--dataset", "images:{tmp}", "--image-size", "12"], "--image-size must be 8, 16, 32 or 64"),
        (["--dataset", "digits", "--batch-size", "5000"], "exceeds the 1797 images"),
        (["--lr", "abc"], "argument --lr: invalid float value: 'abc'"),
        (["--out", ""], "--out must name a folder"),
    ],
)
def test_cli_settings_that_do_not_fit_are_refused(tmp_path, capfd, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = [] if "--out" in argv else ["--out", str(tmp_path / "o")]
    if "invalid float" in message:
        with pytest.raises(SystemExit) as stop:
            cli.main(["train", *argv, *out])
        assert stop.value.code == 2 and message in capfd.readouterr().err
        return
    assert message in one_line_error(capfd, "train", *argv, *out)


@pytest.fixture(scope="module")
def toy_checkpoint(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    flags = ["--steps", "2", "--batch-size", "8", "--width", "8", "--depth", "1", "--quiet"]
    assert cli.main(["train", "--out", str(out), *flags]) == 0
    return out / "checkpoint.keras"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sample", "--n", "0", "--out", "{tmp}/s.npy"], "--n must be at least 1"),
        (["sample", "--seed", "-1", "--out", "{tmp}/s.npy"], "--seed must lie in 0.."),
        (["sample", "--out", "{tmp}/s.txt"], "--out must end in .png or .npy"),
        (["sample", "--out", "{tmp}/missing/s.npy"], "create it first"),
        (["sample", "--label", "1", "--out", "{tmp}/s.npy"], "--label needs a conditional model"),
        (["evaluate", "--n", "0"], "--n must be at least 1"),
        (
            ["evaluate", "--dataset", "digits"],
            "makes samples of shape (2,) but digits has samples of shape (8, 8, 1)",
        ),
    ],
)
def test_sample_and_evaluate_arguments(toy_checkpoint, tmp_path, capfd, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert message in one_line_error(capfd, *argv[:1], "--checkpoint", str(toy_checkpoint), *argv[1:])


def test_a_keras_model_that_is_not_ours_is_named_so(tmp_path, capfd):
    mlp(2, 1).save(tmp_path / "plain.keras")
    error = one_line_error(capfd, "sample", "--checkpoint", str(tmp_path / "plain.keras"), "--out", "x.npy")
    assert "is not a portable-wgangp checkpoint (it holds a Sequential)" in error


def test_sixteen_bit_arrays_train_from_the_cli(tmp_path, capfd):
    spec = write_npz(tmp_path / "deep.npz", [0, 1] * 45)
    flags = ["--steps", "2", "--base", "4", "--batch-size", "8", "--n-critic", "1", "--quiet"]
    assert cli.main(["train", "--dataset", spec, "--conditional", "--out", str(tmp_path / "o"), *flags]) == 0
    assert json.loads((tmp_path / "o" / "config.json").read_text())["conditional"] is True


# What the frameworks raise when an allocation fails (torch's arrives inside Keras's RuntimeError about
# the layer, with terminal colours).
OUT_OF_MEMORY = {
    "python": MemoryError(),
    "torch": RuntimeError(
        "Exception encountered when calling Conv2D.call().\n\n\x1b[1m[enforce fail at alloc_cpu.cpp:127] "
        "err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate 41943040 bytes.\x1b[0m"
    ),
    "xla": RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 366787904 bytes."),
    "tensorflow": RuntimeError("OOM when allocating tensor with shape[64,32,32,64] and type float"),
}


@pytest.mark.parametrize("framework", list(OUT_OF_MEMORY))
def test_running_out_of_memory_says_so_in_one_line_and_the_run_resumes(
    tmp_path, capfd, monkeypatch, framework
):
    """Memory runs out after the last checkpoint (in the end-of-run figures): one line naming the
    allocation and the fix, the checkpoint kept, and `--resume` finishes the run."""
    from portable_wgangp import tasks

    def exhausted(*args, **kwargs):
        raise OUT_OF_MEMORY[framework]

    out = str(tmp_path / "run")
    flags = [
        "train",
        "--steps",
        "2",
        "--checkpoint-every",
        "1",
        "--batch-size",
        "16",
        "--quiet",
        "--out",
        out,
    ]
    monkeypatch.setattr(tasks.ToyTask, "quality", exhausted)
    line = one_line_error(capfd, *flags)
    assert line.startswith("portable-wgangp: error: out of memory (")
    assert "lower --batch-size or --image-size" in line and "--resume" in line
    assert {
        "python": "MemoryError",
        "torch": "DefaultCPUAllocator: can't allocate memory: you tried",
        "xla": "RESOURCE_EXHAUSTED",
        "tensorflow": "OOM when allocating",
    }[framework] in line
    assert "\x1b" not in line
    if framework != "python":
        return
    monkeypatch.undo()
    assert cli.main([*flags, "--resume"]) == 0
    assert json.loads((tmp_path / "run" / "quality.json").read_text())["n_modes"] == 8
