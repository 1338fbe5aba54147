"""Data at scale: image folders and memory-mapped arrays streamed a round at a time
(`portable_wgangp.sources`, `data.EpochRounds`, `data.StreamRounds`).

Streaming must change nothing but memory: the same rounds as the in-memory arrays of the same images, the
same weights with or without reader threads, exact resume, labels from sub-folders, the bit-depth rules of
the in-memory loaders, and each process reading only its share (the 2-process run is in
test_distribution.py).
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from test_input_validation import one_line_error
from tiny_nets import image_mlps

import portable_wgangp as pw
from portable_wgangp import cli, data, files, host_memory, sources


def write_folder(root, n_per_class=(10, 7), size=8, seed=0, classes=True):
    """PNG images of random pixels under ``root`` (class sub-folders ``a``, ``b``, … when ``classes``);
    returns the uint8 images in the order the folder lists them (classes sorted, files sorted)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for c, count in enumerate(n_per_class):
        folder = root / "abcdefgh"[c] if classes else root
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{c}-{i:03d}.png")
            images.append(pixels)
    return np.stack(images)


class CountingSource:
    """Wraps a source; counts the samples read."""

    def __init__(self, source):
        self.source, self.count = source, 0
        self.sample_shape, self.labels, self.name, self.workers = (
            source.sample_shape,
            source.labels,
            source.name,
            source.workers,
        )

    def __len__(self):
        return len(self.source)

    def read(self, indices):
        self.count += len(indices)
        return self.source.read(indices)


def test_a_folder_reads_as_its_in_memory_images_with_labels_from_sub_folders(tmp_path):
    pixels = write_folder(tmp_path)
    folder = sources.ImageFolderSource(str(tmp_path), size=8)
    assert len(folder) == 17 and folder.sample_shape == (8, 8, 3)
    np.testing.assert_array_equal(folder.labels, [0] * 10 + [1] * 7)
    np.testing.assert_allclose(folder.read(np.array([16, 0, 3])), pixels[[16, 0, 3]] / 127.5 - 1.0, atol=1e-6)
    in_memory, labels = data.load_images(f"images:{tmp_path}", size=8)
    np.testing.assert_array_equal(sources.read_all(folder), in_memory)
    np.testing.assert_array_equal(labels, folder.labels)


def test_stream_rounds_are_those_of_the_in_memory_images_and_resume_exactly(tmp_path):
    write_folder(tmp_path)
    folder = sources.ImageFolderSource(str(tmp_path), size=8, workers=0)
    memory = sources.ArraySource(*data.load_images(f"images:{tmp_path}", size=8))
    # 17 images, batch 4: 4 minibatches a pass, so the 6 steps × 3 minibatches cross 4 passes.
    streamed = data.StreamRounds(folder, 4, 3, steps=6, seed=3)
    kept = data.StreamRounds(memory, 4, 3, steps=6, seed=3)
    resumed = data.StreamRounds(folder, 4, 3, steps=2, first_step=4, seed=3)
    rounds = [streamed[i] for i in range(6)]
    for step in range(6):
        x, y = rounds[step]
        assert x.shape == (4, 3, 8, 8, 3) and y.shape == (4, 3)
        for a, b in zip(rounds[step], kept[step]):
            np.testing.assert_array_equal(a, b)
    for step in (4, 5):
        for a, b in zip(resumed[step - 4], rounds[step]):
            np.testing.assert_array_equal(a, b)
    # Within a pass, minibatches never repeat a sample: a pass has 4 disjoint minibatches.
    stream = data.StreamRounds(memory, 4, 1, steps=4, seed=3, labelled=False)
    picked = np.concatenate([stream[i][0].reshape(4, -1) for i in range(4)])
    assert len(np.unique(picked, axis=0)) == 16
    with pytest.raises(IndexError):
        streamed[6]


def test_each_process_reads_only_its_share_and_the_shares_make_the_global_round(tmp_path):
    write_folder(tmp_path)
    whole = data.StreamRounds(sources.ImageFolderSource(str(tmp_path), 8, workers=0), 4, 3, steps=2, seed=1)
    for padded in (False, True):
        parts = []
        for index in range(2):
            counting = CountingSource(sources.ImageFolderSource(str(tmp_path), 8, workers=0))
            rounds = data.StreamRounds(counting, 4, 3, steps=2, seed=1)
            rounds.shard = data.Shard(index, 2, padded)
            parts.append(rounds[1])
            assert counting.count == 2 * 3  # its 2 rows of each of the 3 minibatches, nothing else
        for k, expected in enumerate(whole[1]):
            if padded:  # global shape, the share in place, zeros elsewhere (TF keeps worker i's rows)
                np.testing.assert_array_equal(parts[0][k][:2], expected[:2])
                np.testing.assert_array_equal(parts[1][k][2:], expected[2:])
                assert not parts[0][k][2:].any() and not parts[1][k][:2].any()
            else:
                np.testing.assert_array_equal(np.concatenate([parts[0][k], parts[1][k]]), expected)


def test_npy_is_memory_mapped_and_scaled_by_its_bit_depth(tmp_path):
    rng = np.random.default_rng(0)
    eight = rng.integers(0, 256, (20, 6, 6), dtype=np.uint8)
    sixteen = rng.integers(0, 65536, (20, 6, 6, 3), dtype=np.uint16)
    np.save(tmp_path / "eight.npy", eight)
    np.save(tmp_path / "sixteen.npy", sixteen)
    np.save(tmp_path / "labels.npy", np.arange(20) % 4)
    source = sources.open_source(f"npy:{tmp_path / 'eight.npy'}:{tmp_path / 'labels.npy'}")
    assert isinstance(source.array, np.memmap) and source.sample_shape == (6, 6, 1)
    np.testing.assert_allclose(
        source.read(np.array([5, 2])), eight[[5, 2], ..., None] / 127.5 - 1.0, atol=1e-6
    )
    np.testing.assert_array_equal(source.labels, np.arange(20) % 4)
    wide = sources.open_source(f"npy:{tmp_path / 'sixteen.npy'}")
    assert wide.labels is None
    np.testing.assert_allclose(wide.read(np.array([7])), sixteen[[7]] / 32767.5 - 1.0, atol=1e-6)


def test_float_npy_is_checked_in_chunks_before_training(tmp_path, monkeypatch):
    x = np.zeros((40, 4, 4, 1), dtype="float32")
    x[33, 1, 2, 0] = np.nan
    np.save(tmp_path / "nan.npy", x)
    x[33, 1, 2, 0] = 1.5
    np.save(tmp_path / "range.npy", x)
    monkeypatch.setattr(sources, "CHUNK_BYTES", 4 * 16 * 5)  # 5 images a chunk: the bad one is in chunk 7
    with pytest.raises(ValueError, match=r"nan.npy', images 30\.\.: .*NaN or infinite value.*sample 3"):
        sources.open_source(f"npy:{tmp_path / 'nan.npy'}")
    with pytest.raises(ValueError, match=r"range.npy', images 30\.\.: Float images must lie in \[-1, 1\]"):
        sources.open_source(f"npy:{tmp_path / 'range.npy'}")
    np.save(tmp_path / "short.npy", np.arange(3))
    np.save(tmp_path / "ok.npy", np.zeros((40, 4, 4), dtype="uint8"))
    with pytest.raises(ValueError, match=r"Labels must be integers of shape \(40,\)"):
        sources.open_source(f"npy:{tmp_path / 'ok.npy'}:{tmp_path / 'short.npy'}")
    with pytest.raises(ValueError, match="must have shape"):
        sources.open_source(f"npy:{tmp_path / 'short.npy'}")


def test_an_unreadable_file_met_while_streaming_is_named(tmp_path):
    write_folder(tmp_path, classes=False, n_per_class=(6,))
    folder = sources.ImageFolderSource(str(tmp_path), 8)
    (tmp_path / "0-003.png").write_bytes(b"torn")
    with pytest.raises(ValueError, match=r"Cannot read the image .*0-003\.png.*remove or replace it"):
        folder.read(np.arange(6))


def small_gan(sample_shape=(8, 8, 3), num_classes=None, seed=0):
    generator, critic = image_mlps(sample_shape, 3, np.random.default_rng(seed), hidden=8)
    gan = pw.WGANGP(generator, critic, 3, n_critic=2, gp_weight=1.0, seed=7)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    return gan


def weights(gan):
    return gan.generator.get_weights() + gan.critic.get_weights()


def test_fit_on_a_folder_trains_as_on_its_arrays_with_or_without_reader_threads(tmp_path):
    write_folder(tmp_path, n_per_class=(12, 9))
    in_memory, _ = data.load_images(f"images:{tmp_path}", size=8)
    runs = []
    for x in (
        in_memory,
        sources.ImageFolderSource(str(tmp_path), 8, workers=0),
        sources.ImageFolderSource(str(tmp_path), 8, workers=3),
    ):
        gan = small_gan()
        gan.fit(x, batch_size=4, epochs=3, verbose=0)  # 2 rounds an epoch, reshuffled every epoch
        assert int(gan.generator_optimizer.iterations) == 6
        runs.append(weights(gan))
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_fit_refuses_a_source_that_does_not_fit_the_model(tmp_path):
    write_folder(tmp_path, classes=False, n_per_class=(8,))
    folder = sources.ImageFolderSource(str(tmp_path), 8)
    with pytest.raises(
        ValueError, match=r"holds samples of shape \(8, 8, 3\) but the generator makes \(4, 4, 3\)"
    ):
        small_gan((4, 4, 3)).fit(folder, batch_size=4)
    gan = small_gan()
    gan.num_classes = 2  # a conditional model's check, without building conditional networks
    with pytest.raises(ValueError, match="has no labels; use class sub-folders"):
        gan.fit(folder, batch_size=4)
    with pytest.raises(ValueError, match="a sample source brings its own labels"):
        small_gan().fit(folder, np.zeros(8, "int32"), batch_size=4)


CLI_FLAGS = ["--steps", "4", "--base", "4", "--batch-size", "4", "--n-critic", "2", "--image-size", "8"]
CLI_FLAGS += ["--lr-decay", "constant"]  # a run stopped at step 2 then resumed plans the same rates
CLI_QUIET = ["--quiet", "--checkpoint-every", "2", "--workers", "2"]


def trained_weights(folder):
    return keras.models.load_model(folder / "checkpoint.keras").generator.get_weights()


def test_cli_trains_conditionally_from_a_streamed_folder_and_resumes_exactly(tmp_path, capfd):
    images = tmp_path / "images"
    write_folder(images, n_per_class=(12, 9))
    spec = ["--dataset", f"images:{images}", "--conditional", *CLI_FLAGS, *CLI_QUIET]
    assert cli.main(["train", *spec, "--out", str(tmp_path / "whole")]) == 0
    assert cli.main(["train", *spec, "--out", str(tmp_path / "half"), "--steps", "2"]) == 0
    assert cli.main(["train", *spec, "--out", str(tmp_path / "half"), "--resume", "--workers", "0"]) == 0
    capfd.readouterr()
    for a, b in zip(trained_weights(tmp_path / "half"), trained_weights(tmp_path / "whole")):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    quality = json.loads((tmp_path / "whole" / "quality.json").read_text())
    assert {"fid", "fid_initial", "kid"} <= set(quality)
    config = json.loads((tmp_path / "half" / "config.json").read_text())
    assert config["workers"] == 0 and config["dataset"] == f"images:{images}"


def test_cli_trains_from_a_memory_mapped_array_as_from_its_npz(tmp_path, capfd):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x)
    for name, spec in (("mapped", f"npy:{tmp_path / 'x.npy'}"), ("loaded", f"npz:{tmp_path / 'x.npz'}")):
        assert (
            cli.main(["train", "--dataset", spec, *CLI_FLAGS, *CLI_QUIET, "--out", str(tmp_path / name)]) == 0
        )
    capfd.readouterr()
    for a, b in zip(trained_weights(tmp_path / "mapped"), trained_weights(tmp_path / "loaded")):
        np.testing.assert_array_equal(a, b)


def test_stats_of_a_streamed_folder_equal_those_of_its_features(tmp_path, capfd, monkeypatch):
    from portable_wgangp import metrics

    write_folder(tmp_path / "images", n_per_class=(30, 25))
    monkeypatch.setattr(cli, "STATS_CHUNK", 16)  # 4 chunks
    out = tmp_path / "stats.npz"
    assert (
        cli.main(
            ["stats", "--dataset", f"images:{tmp_path / 'images'}", "--image-size", "8", "--out", str(out)]
        )
        == 0
    )
    capfd.readouterr()
    images, _ = data.load_images(f"images:{tmp_path / 'images'}", size=8)
    features = metrics.default_extractor(f"images:{tmp_path / 'images'}", "")(images)
    with np.load(out) as saved:
        np.testing.assert_allclose(saved["mu"], features.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(saved["sigma"], np.cov(features, rowvar=False), rtol=1e-9, atol=1e-12)


def test_bad_streamed_data_is_refused_before_the_run_folder_is_touched(tmp_path, capfd):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    torn = tmp_path / "torn"
    torn.mkdir()
    (torn / "0.png").write_bytes(b"torn")
    for spec, message in (
        (f"images:{empty}", "No PNG or JPEG images in"),
        (f"images:{torn}", "Cannot read the image"),
        (f"npy:{tmp_path / 'missing.npy'}", "Cannot read"),
    ):
        out = tmp_path / "run"
        error = one_line_error(capfd, "train", "--dataset", spec, "--out", str(out))
        assert message in error
        assert not out.exists()


def test_a_file_torn_after_the_start_stops_the_run_with_its_name_and_keeps_the_checkpoint(tmp_path, capfd):
    images = tmp_path / "images"
    write_folder(images, classes=False, n_per_class=(16,))
    out = tmp_path / "run"
    flags = [*CLI_FLAGS, "--checkpoint-every", "1", "--workers", "2", "--quiet", "--out", str(out)]
    assert cli.main(["train", "--dataset", f"images:{images}", *flags, "--steps", "2"]) == 0
    capfd.readouterr()
    (images / "0-009.png").write_bytes(b"torn")  # every pass reads every file: the next one meets it
    error = one_line_error(
        capfd, "train", "--dataset", f"images:{images}", *flags, "--steps", "8", "--resume"
    )
    assert "Cannot read the image" in error and "0-009.png" in error
    assert int(keras.models.load_model(out / "checkpoint.keras").generator_optimizer.iterations) >= 2


# -- memory ------------------------------------------------------------------------------------------------

PEAK_RSS_BOUND_MB = 1500  # the whole process, training or resuming, whatever the data's size


def peak_rss_mb(command: list[str]) -> float:
    """The peak resident memory of ``command`` (which must exit 0), in MB: ``ru_maxrss`` of a watcher
    process's only child."""
    watcher = (
        "import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    result = subprocess.run(
        [sys.executable, "-c", watcher, *command],
        env={**os.environ, "KERAS_BACKEND": keras.backend.backend()},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return int(result.stdout.split()[-1]) / 1024


def test_cli_trains_and_resumes_from_an_array_larger_than_its_memory_bound(tmp_path):
    """30,000 64×64 RGB images as a uint8 .npy (369 MB; 1.47 GB as the float32 array an in-memory loader
    would hold): training, then resuming, each stay under the 1.5 GB whole-process bound."""
    images = np.lib.format.open_memmap(tmp_path / "x.npy", "w+", np.uint8, (30_000, 64, 64, 3))
    rng = np.random.default_rng(0)
    for start in range(0, len(images), 5_000):
        images[start : start + 5_000] = rng.integers(0, 256, (5_000, 64, 64, 3), dtype=np.uint8)
    images.flush()
    del images
    out = tmp_path / "run"
    train = [sys.executable, "-m", "portable_wgangp", "train", "--dataset", f"npy:{tmp_path / 'x.npy'}"]
    train += ["--image-size", "64", "--base", "8", "--batch-size", "8", "--n-critic", "1", "--quiet"]
    train += ["--lr-decay", "constant", "--checkpoint-every", "1", "--out", str(out)]
    peaks = [peak_rss_mb([*train, "--steps", "2"]), peak_rss_mb([*train, "--steps", "3", "--resume"])]
    assert [record["step"] for record in files.read_records(out / "metrics.jsonl")] == [1, 2, 3]
    assert max(peaks) < PEAK_RSS_BOUND_MB, f"peak RSS of training and resuming: {peaks} MB"


def test_the_cli_asks_xla_for_its_memory_saving_cpu_scheduler_unless_xla_flags_chose(monkeypatch):
    name = host_memory.XLA_CPU_SCHEDULER.split("=")[0]
    for backend, flags, expected in (
        ("jax", None, host_memory.XLA_CPU_SCHEDULER),
        (
            "jax",
            "--xla_force_host_platform_device_count=4",
            f"--xla_force_host_platform_device_count=4 {host_memory.XLA_CPU_SCHEDULER}",
        ),
        ("jax", f"{name}=true", f"{name}=true"),
        ("tensorflow", None, None),
        ("torch", None, None),
    ):
        monkeypatch.setenv("KERAS_BACKEND", backend)
        if flags is None:
            monkeypatch.delenv("XLA_FLAGS", raising=False)
        else:
            monkeypatch.setenv("XLA_FLAGS", flags)
        host_memory.configure_process()
        assert os.environ.get("XLA_FLAGS") == expected, backend


def test_the_cli_sets_the_heap_but_keeps_what_the_operator_set(monkeypatch):
    calls = []

    class RecordingLibc:
        def mallopt(self, parameter, value):
            calls.append((parameter, value))

    monkeypatch.setattr(host_memory, "_LIBC", RecordingLibc())
    for _, _, variable, _ in host_memory._HEAP_SETTINGS:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    host_memory.configure_process()
    assert calls == [(-8, 2), (-3, 1 << 20), (-1, 8 << 20)]  # M_ARENA_MAX, M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    calls.clear()
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    host_memory.configure_process()
    assert calls == [(-3, 1 << 20)]
