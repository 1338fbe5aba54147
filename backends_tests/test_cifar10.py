"""CIFAR-10 from its python archive (``cifar10:PATH``) and the paper's presets, on a tiny archive made here.

The archive is written as the official ``cifar-10-python.tar.gz`` is: ``cifar-10-batches-py/`` holding
``data_batch_1..5``, ``test_batch`` and ``batches.meta``, each a protocol-2 pickle written as Python 2's
cPickle wrote it (every string a byte string, numpy's ``numpy.core.multiarray`` names), with 4 images a batch.
"""

import io
import json
import pickle
import re
import struct
import tarfile
from typing import ClassVar

import keras
import numpy as np
import pytest

import portable_wgangp  # noqa: F401  (registers WGANGP for load_model)
from portable_wgangp import cli, sources
from portable_wgangp.config import requested_values, resolve
from portable_wgangp.errors import UserError

PER_BATCH = 4
BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
HINT = "pass the cifar-10-python.tar.gz archive or its cifar-10-batches-py folder"


class Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote it: str and bytes alike as (SHORT_)BINSTRING."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_binstring(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = dispatch[bytes] = save_binstring


def python2_pickle(value) -> bytes:
    file = io.BytesIO()
    Python2Pickler(file, protocol=2).dump(value)
    return file.getvalue().replace(b"numpy._core.", b"numpy.core.")  # the names numpy 1 wrote


def batch(data: np.ndarray, labels: list, name: str) -> bytes:
    files = [f"image_{i}.png" for i in range(len(labels))]
    return python2_pickle({"batch_label": name, "labels": labels, "data": data, "filenames": files})


def write_archive(folder, files: dict):
    """``files`` (name: bytes) in ``folder/cifar-10-batches-py/`` and in ``folder/cifar-10-python.tar.gz``."""
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as archive:
        for name, content in files.items():
            (batches / name).write_bytes(content)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return folder / "cifar-10-python.tar.gz", batches


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """The tiny archive, its folder, and the images (float32 NHWC in [-1, 1]) and labels it must give."""
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 256, size=(6 * PER_BATCH, 3072), dtype=np.uint8)
    rows[0, [0, 1024, 2048]] = (0, 255, 128)  # the first pixel's red, green, blue (channel-first rows)
    labels = [i % 10 for i in range(6 * PER_BATCH)]
    files = {
        name: batch(
            rows[i * PER_BATCH : (i + 1) * PER_BATCH], labels[i * PER_BATCH : (i + 1) * PER_BATCH], name
        )
        for i, name in enumerate([*BATCHES, "test_batch"])
    }
    files["batches.meta"] = python2_pickle(
        {
            "label_names": [
                "airplane",
                "automobile",
                "bird",
                "cat",
                "deer",
                "dog",
                "frog",
                "horse",
                "ship",
                "truck",
            ]
        }
    )
    archive, folder = write_archive(tmp_path_factory.mktemp("cifar"), files)
    train = 5 * PER_BATCH
    images = rows[:train].reshape(train, 3, 32, 32).transpose(0, 2, 3, 1) / 127.5 - 1.0
    return archive, folder, files, images.astype("float32"), np.array(labels[:train])


@pytest.mark.parametrize("form", ["archive", "folder", "parent"])
def test_the_training_split_is_read_in_order_with_its_labels(cifar, form):
    archive, folder, _, images, labels = cifar
    path = {"archive": archive, "folder": folder, "parent": folder.parent}[form]
    source = sources.open_source(f"cifar10:{path}")
    assert (len(source), source.sample_shape, source.workers) == (5 * PER_BATCH, (32, 32, 3), 0)
    read, read_labels = sources.load_images(f"cifar10:{path}")
    assert read.dtype == np.float32 and read_labels.dtype == np.int32
    np.testing.assert_allclose(read, images, atol=1e-6)
    np.testing.assert_array_equal(read_labels, labels)
    np.testing.assert_allclose(read[0, 0, 0], (-1.0, 1.0, 128 / 127.5 - 1), atol=1e-6)  # NHWC, from CHW rows
    np.testing.assert_allclose(source.read(np.array([7, 2])), images[[7, 2]], atol=1e-6)


def test_what_is_not_the_archive_is_refused_in_one_sentence(cifar, tmp_path):
    archive, _, files, _, _ = cifar
    (tmp_path / "notes.txt").write_text("not an archive")
    (tmp_path / "cut.tar.gz").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    partial, _ = write_archive(tmp_path / "partial", {k: v for k, v in files.items() if k != "data_batch_3"})
    evil = pickle.dumps({b"data": print}, protocol=2)  # a pickle that names a function
    tampered, _ = write_archive(tmp_path / "tampered", {**files, "data_batch_2": evil})
    floats = batch(np.zeros((2, 3072), np.float32), [0, 1], "data_batch_4")
    wrong, _ = write_archive(tmp_path / "wrong", {**files, "data_batch_4": floats})
    cases = [
        (tmp_path / "absent.tar.gz", "No CIFAR-10 archive or folder at"),
        (tmp_path / "notes.txt", "notes.txt' is not a tar archive, gzipped or not"),
        (tmp_path / "cut.tar.gz", r"Cannot read the archive .*cut.tar.gz' \(Compressed file ended"),
        (tmp_path, re.escape(f"{str(tmp_path)!r} holds no data_batch_1..5")),
        (partial, "lacks data_batch_3 of data_batch_1..5"),
        (
            tampered,
            r"data_batch_2 is not a CIFAR-10 batch \(it names \S+print, which a CIFAR-10 batch never holds",
        ),
        (wrong, r"data_batch_4 is not a CIFAR-10 batch \(its data must be uint8 rows of 3072 values"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=message) as error:
            sources.open_source(f"cifar10:{path}")
        text = str(error.value)
        assert text.count(". ") == 0 and "\n" not in text and text.endswith(f"{HINT}."), text


@pytest.mark.parametrize(
    ("preset", "conditional", "head"), [("cifar10", False, "projection"), ("cifar10-conditional", True, "ac")]
)
def test_the_presets_are_the_papers_settings(cifar, preset, conditional, head):
    dataset = f"cifar10:{cifar[0]}"
    config = resolve(requested_values({"dataset": dataset}, preset=preset), preset)
    assert (config.model, config.base, config.latent_dim, config.image_size) == ("resnet", 128, 128, 32)
    assert (config.batch_size, config.n_critic, config.gp_weight, config.penalty) == (
        64,
        5,
        10.0,
        "two_sided",
    )
    assert (config.lr_generator, config.lr_critic, config.lr_decay, config.steps) == (
        2e-4,
        2e-4,
        "linear",
        100000,
    )
    assert (config.beta_1, config.beta_2, config.conditional, config.critic_head) == (
        0.0,
        0.9,
        conditional,
        head,
    )
    assert resolve(requested_values({"dataset": dataset, "steps": 7}, preset=preset), preset).steps == 7


@pytest.mark.parametrize(
    ("preset", "dataset", "message"),
    [
        (
            "cifar10",
            "digits",
            "--preset cifar10 is gan_cifar_resnet.py's setting for CIFAR-10, not for digits",
        ),
        (
            "cifar10-conditional",
            "gaussians8",
            "--preset cifar10-conditional is gan_cifar_resnet.py's setting",
        ),
        ("paper", "cifar10:x.tar.gz", "--preset paper is gan_toy.py's setting for the 2-D toy datasets"),
    ],
)
def test_a_preset_on_other_data_is_refused_in_one_line(preset, dataset, message):
    with pytest.raises(UserError, match=message) as error:
        resolve(requested_values({"dataset": dataset}, preset=preset), preset)
    assert "\n" not in str(error.value)


def test_the_conditional_preset_trains_an_ac_wgan_from_the_command_line(cifar, tmp_path, capfd):
    """``--preset cifar10-conditional`` (narrowed to run in seconds): the ResNet AC-WGAN on the archive's
    labels, a checkpoint that loads, ``stats`` on the folder, and the preset refused on other data."""
    archive, folder, _, _, _ = cifar
    out, stats = tmp_path / "run", tmp_path / "stats.npz"
    small = ["--base", "4", "--latent-dim", "8", "--n-critic", "1", "--batch-size", "4", "--steps", "2"]
    preset = ["--preset", "cifar10-conditional", "--extractor", "pixels-8x8", "--quiet", "--out", str(out)]
    assert cli.main(["train", "--dataset", f"cifar10:{archive}", *small, *preset]) == 0
    saved = json.loads((out / "config.json").read_text())
    assert [saved[k] for k in ("model", "conditional", "critic_head", "lr", "gp_weight")] == [
        "resnet", True, "ac", 2e-4, 10.0
    ]  # fmt: skip
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    assert {"fid", "fid_initial", "kid"} <= set(json.loads((out / "quality.json").read_text()))
    gan = keras.models.load_model(out / "checkpoint.keras")
    assert (gan.num_classes, gan.auxiliary_classifier, len(gan.critic.outputs)) == (10, True, 2)
    assert gan.generator.output_shape == (None, 32, 32, 3)
    extractor = ["--extractor", "pixels-8x8"]
    assert cli.main(["stats", "--dataset", f"cifar10:{folder}", *extractor, "--out", str(stats)]) == 0
    assert np.load(stats)["mu"].shape == (192,)
    capfd.readouterr()
    assert (
        cli.main(["train", "--dataset", "digits", "--preset", "cifar10", "--out", str(tmp_path / "x")]) == 2
    )
    assert "--preset cifar10 is gan_cifar_resnet.py's setting" in capfd.readouterr().err
