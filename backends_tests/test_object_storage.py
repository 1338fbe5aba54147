"""Run folders on object storage (``--out gs://…``, ``s3://…``): the run folder's rules hold there, against
real protocol servers started on 127.0.0.1 (`object_stores`): a GCS emulator and moto's S3 server.

Select them with ``-m object_store``. In-process commands go through `cli.main`; the one-line errors of
real processes, signals and a store that goes away during an upload run the CLI as a process.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND
from test_resume import assert_same_weights

from portable_wgangp import callbacks, cli, object_lock, runs, storage

pytestmark = pytest.mark.object_store

SHORT = ["--steps", "6", "--batch-size", "16", "--width", "8", "--depth", "1", "--checkpoint-every", "3"]
LONG = ["--steps", "300", "--batch-size", "32", "--width", "32", "--checkpoint-every", "10", "--quiet"]
RUN_OBJECTS = set(runs.RUN_FILES) - {"best.keras"}  # no --eval-every: no best.keras


@pytest.fixture(params=["gs", "s3"])
def server(request):
    return request.getfixturevalue({"gs": "gcs_server", "s3": "s3_server"}[request.param])


def train(out, *extra):
    return cli.main(["train", "--out", str(out), "--quiet", *SHORT, *extra])


def error_of(capfd) -> str:
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def objects(url) -> dict:
    folder = storage.RemoteFolder(url)
    return {name: folder.read(name) for name in folder.list()}


def steps_logged(url) -> list:
    data = storage.RemoteFolder(url).read("metrics.jsonl") or b""
    return [json.loads(line)["step"] for line in data.decode().splitlines()]


def weights(url) -> list:
    with storage.local_copy(storage.join(url, "checkpoint.keras")) as path:
        gan = keras.models.load_model(path)
    return gan.get_weights() + [np.asarray(v) for v in gan.critic_optimizer.variables]


def test_a_run_on_a_store_holds_every_file_and_keeps_the_folder_rules(server, tmp_path, capfd):
    url = server.new_url()
    assert train(url) == 0
    stored = objects(url)
    assert RUN_OBJECTS <= set(stored) and any(name.startswith("tensorboard/") for name in stored)
    assert not [name for name in stored if name.startswith(".")], "no lock object or partial file is left"
    assert steps_logged(url) == [1, 2, 3, 4, 5, 6]
    capfd.readouterr()

    assert train(url) == 2  # a rerun is refused and changes nothing
    message = error_of(capfd)
    assert "already holds a run" in message and url in message
    assert objects(url) == stored

    assert train(url, "--resume", "--steps", "9") == 0
    assert steps_logged(url) == list(range(1, 10))
    assert train(url, "--overwrite", "--steps", "4") == 0
    assert steps_logged(url) == [1, 2, 3, 4]

    checkpoint = storage.join(url, "checkpoint.keras")
    assert cli.main(["sample", "--checkpoint", checkpoint, "--n", "64", "--out", url + "/s.npy"]) == 0
    assert "s.npy" in storage.RemoteFolder(url).list()
    capfd.readouterr()
    assert cli.main(["evaluate", "--checkpoint", checkpoint, "--n", "200"]) == 0
    assert "modes_covered" in json.loads(capfd.readouterr().out)


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(server, capfd):
    url = server.new_url()
    with runs.run_folder(url).claim("new"):  # this process holds the lock, as a running train would
        for extra in ([], ["--resume"], ["--overwrite"]):
            assert train(url, *extra) == 2
            message = error_of(capfd)
            assert "in use by another portable-wgangp process" in message and f"pid {os.getpid()}" in message
    assert ".portable-wgangp.lock" not in storage.RemoteFolder(url).list()  # released with the holder

    folder = storage.RemoteFolder(url)
    dead = {"pid": 2**22 + 7, "host": socket.gethostname(), "heartbeat": time.time()}
    elsewhere = {"pid": 1, "host": "another-host", "heartbeat": time.time() - object_lock.TIMEOUT_SECONDS - 5}
    alive = {"pid": 1, "host": "another-host", "heartbeat": time.time()}
    for record, why in [(dead, "no longer runs"), (elsewhere, "heartbeat is")]:
        folder.write(object_lock.NAME, json.dumps(record).encode())
        assert train(url, "--overwrite") == 0
        out = capfd.readouterr().out
        assert f"took over the lock of {url}" in out and why in out
    folder.write(object_lock.NAME, json.dumps(alive).encode())
    assert train(url, "--overwrite") == 2
    assert "pid 1 on another-host" in error_of(capfd)


def test_the_lock_keeps_its_heartbeat_and_is_gone_when_released(s3_server):
    folder = storage.RemoteFolder(s3_server.new_url())
    lock = object_lock.ObjectLock(folder, heartbeat=0.2)
    lock.acquire()
    first = json.loads(folder.read(object_lock.NAME))
    time.sleep(1.0)
    beat = json.loads(folder.read(object_lock.NAME))
    assert (beat["pid"], beat["host"]) == (os.getpid(), socket.gethostname())
    assert beat["heartbeat"] > first["heartbeat"]
    assert lock.holder() is not None and "heartbeat" in lock.holder()
    lock.release()
    assert folder.read(object_lock.NAME) is None and lock.holder() is None


def test_the_lock_is_a_conditional_create(s3_server, gcs_server):
    """Proven on the S3 server (it honours ``If-None-Match: *``); the GCS emulator ignores
    ``ifGenerationMatch=0``, so there the test shows that the lock's create sends it."""
    s3 = storage.RemoteFolder(s3_server.new_url())
    assert s3.create("x", b"first") is True
    assert s3.create("x", b"second") is False
    assert s3.read("x") == b"first"

    gcs_server.servers.command("gcs_insert_queries")  # forget earlier inserts
    storage.RemoteFolder(gcs_server.new_url()).create("x", b"first")
    queries = gcs_server.servers.command("gcs_insert_queries")
    assert queries and queries[-1].get("ifGenerationMatch") == ["0"], queries


def test_a_missing_bucket_or_refused_credentials_write_nothing_and_show_no_secret(server, capfd):
    url = f"{server.scheme}://no-such-bucket/run"
    assert train(url) == 2
    message = error_of(capfd)
    assert "no-such-bucket" in message and "bucket does not exist" in message

    secret_url = f"{server.scheme}://someone:s3cr3t-k3y@no-such-bucket/run?X-Signature=s3cr3t-sig"
    assert train(secret_url) == 2
    message = error_of(capfd)
    assert "no-such-bucket" in message and "s3cr3t" not in message

    if server.scheme == "s3":  # moto checks credentials when told to: unknown keys are refused
        url = server.new_url()
        server.servers.command("check_credentials on")
        try:
            assert train(url) == 2
        finally:
            server.servers.command("check_credentials off")
        message = error_of(capfd)
        assert url in message and "access refused" in message
        assert storage.RemoteFolder(url).list() == []


def start_cli(*arguments, cwd=None, env=None) -> subprocess.Popen:
    command = [sys.executable, "-m", "portable_wgangp", *arguments]
    environment = {**os.environ, "KERAS_BACKEND": BACKEND, **(env or {})}
    return subprocess.Popen(
        command, env=environment, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def wait_for_checkpoint(process, url, timeout=300) -> None:
    folder = storage.RemoteFolder(url)
    deadline = time.time() + timeout
    while time.time() < deadline and not folder.exists("checkpoint.keras"):
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.1)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    process = start_cli("train", "--out", str(out), *LONG)
    assert process.wait(timeout=600) == 0, process.communicate()[1][-2000:]
    gan = keras.models.load_model(out / "checkpoint.keras")
    return gan.get_weights() + [np.asarray(v) for v in gan.critic_optimizer.variables]


def resume_on_a_fresh_machine(url, tmp_path):
    """``train --resume`` from an empty working folder and an empty home (all it needs is on the store);
    what it printed."""
    fresh = tmp_path / "fresh"
    (fresh / "home").mkdir(parents=True)
    process = start_cli(
        "train", "--resume", "--out", url, "--quiet", cwd=fresh, env={"HOME": str(fresh / "home")}
    )
    stdout, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-2000:]
    return stdout


# The three runs stopped mid-way (three CLI processes each, with the uninterrupted run: a minute or two)
# share the stores and the backends: SIGTERM on the GCS emulator under torch, SIGKILL on the S3 server
# under TensorFlow, a store gone on the S3 server under JAX. Each backend resumes from a store once; what
# differs between the stores (fsspec's file systems, the lock's conditional create) is tested on both
# above, and each backend's exact resume after a signal or SIGKILL on a local disk in test_preemption and
# test_resume.


def on_backend(name: str):
    return pytest.mark.skipif(
        BACKEND != name,
        reason=f"one mid-run stop on a store per backend (CLI runs of minutes); this one runs on {name}",
    )


@on_backend("torch")
def test_sigterm_saves_to_the_store_and_a_fresh_machine_resumes_exactly(gcs_server, uninterrupted, tmp_path):
    url = gcs_server.new_url()
    process = start_cli("train", "--out", url, *LONG)
    wait_for_checkpoint(process, url)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-2000:]
    line = stderr.strip().splitlines()
    assert len(line) == 1 and f"saved to {url}/checkpoint.keras" in line[0], stderr
    stopped_at = steps_logged(url)[-1]
    assert 10 <= stopped_at < 300
    resume_on_a_fresh_machine(url, tmp_path)
    assert_same_weights(weights(url), uninterrupted)
    assert steps_logged(url) == list(range(1, 301))


@on_backend("tensorflow")
def test_a_machine_lost_mid_run_resumes_from_the_store_on_another(s3_server, uninterrupted, tmp_path):
    """SIGKILL (the VM and its disk gone): the store holds the last checkpoint and the metrics up to it;
    a fresh machine takes over the dead run's lock at once and ends with the uninterrupted weights."""
    url = s3_server.new_url()
    process = start_cli("train", "--out", url, *LONG)
    wait_for_checkpoint(process, url)
    process.kill()
    process.communicate(timeout=60)
    assert object_lock.NAME in storage.RemoteFolder(url).list()  # nobody removed it
    printed = resume_on_a_fresh_machine(url, tmp_path)
    assert f"took over the lock of {url}" in printed and "no longer runs" in printed
    assert_same_weights(weights(url), uninterrupted)
    assert steps_logged(url) == list(range(1, 301))


@on_backend("jax")
def test_a_store_gone_during_an_upload_stops_with_one_line_and_the_run_resumes_when_back(
    s3_server, uninterrupted, tmp_path
):
    url = s3_server.new_url()
    process = start_cli("train", "--out", url, *LONG)
    wait_for_checkpoint(process, url)
    s3_server.stop()
    try:
        _, stderr = process.communicate(timeout=300)
    finally:
        s3_server.start()
    assert process.returncode == 2, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and f"{url}/checkpoint.keras" in lines[0] and "--resume" in lines[0], stderr
    kept = weights(url)  # the previous checkpoint is intact
    assert len(kept) == len(uninterrupted)
    printed = resume_on_a_fresh_machine(url, tmp_path)  # the lock the stopped run could not remove
    assert f"took over the lock of {url}" in printed
    assert_same_weights(weights(url), uninterrupted)
    assert steps_logged(url) == list(range(1, 301))


def test_training_goes_on_while_a_slow_store_uploads(s3_server):
    """Each PUT of the S3 server takes 1.5 s: the steps after a checkpoint do not wait for it."""
    s3_server.servers.command("slow_put 1.5")
    from test_preemption import small_gan_and_data

    gan, data = small_gan_and_data()
    data = np.tile(data, (8, 1))  # 15 generator steps of batch 32 with 2 critic steps each
    folder = runs.RemoteRunFolder(s3_server.new_url())
    writer = callbacks.CheckpointWriter(folder.publish)
    ended = []
    timing = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: ended.append(time.monotonic())
    )
    gan.fit(
        data,
        epochs=1,
        steps_per_epoch=15,
        verbose=0,
        callbacks=[callbacks.Checkpoint(folder / "checkpoint.keras", 10, writer=writer), timing],
    )
    # steps 10-15 ended while step 10's checkpoint was uploading (the end of fit waited for it)
    s3_server.servers.command("slow_put 0")
    assert ended[14] - ended[8] < 1.0, np.diff(ended)
    assert storage.RemoteFolder(folder.location).exists("checkpoint.keras")


def upload_folder(local, url) -> None:
    for path in sorted(local.rglob("*")):
        if path.is_file():
            storage.upload(path, storage.join(url, path.relative_to(local).as_posix()))


def test_data_on_a_store_reads_as_the_same_data_on_disk_and_trains(server, tmp_path, capfd):
    from test_streaming import CLI_FLAGS, CLI_QUIET, write_folder

    from portable_wgangp import sources

    write_folder(tmp_path / "images", n_per_class=(12, 9))
    x = np.random.default_rng(1).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "x.npy", x)
    np.savez(tmp_path / "data" / "x.npz", images=x, labels=np.arange(24) % 3)
    np.save(tmp_path / "data" / "labels.npy", np.arange(24) % 3)
    url = server.new_url()
    upload_folder(tmp_path / "images", url + "/images")
    upload_folder(tmp_path / "data", url + "/data")
    here, there = tmp_path / "data", url + "/data"
    cases = [
        (f"images:{tmp_path / 'images'}", f"images:{url}/images"),
        (f"npz:{here / 'x.npz'}:images", f"npz:{there}/x.npz:images"),
        (f"npy:{here / 'x.npy'}:{here / 'labels.npy'}", f"npy:{there}/x.npy:{there}/labels.npy"),
    ]
    for local, remote in cases:
        expected, source = sources.open_source(local, size=8), sources.open_source(remote, size=8)
        np.testing.assert_array_equal(sources.read_all(source), sources.read_all(expected))
        np.testing.assert_array_equal(source.labels, expected.labels)
    out = tmp_path / "run"
    flags = ["--dataset", cases[0][1], "--conditional", *CLI_FLAGS, *CLI_QUIET, "--out", str(out)]
    assert cli.main(["train", *flags]) == 0, capfd.readouterr().err
    assert json.loads((out / "config.json").read_text())["dataset"] == cases[0][1]


def test_a_remote_npy_is_read_by_row_ranges(s3_server, tmp_path):
    from portable_wgangp import sources

    x = np.random.default_rng(2).integers(0, 65535, (50, 4, 4), dtype=np.uint16)
    np.save(tmp_path / "x.npy", x)
    url = s3_server.new_url() + "/x.npy"
    storage.upload(tmp_path / "x.npy", url)
    array = sources.RemoteNpy(url)
    assert (array.shape, array.dtype) == (x.shape, x.dtype)
    np.testing.assert_array_equal(array[[7, 3, 49]], x[[7, 3, 49]])
    np.testing.assert_array_equal(array[10:20], x[10:20])
    fetched = []
    read_ranges = array.folder.read_ranges
    array.folder.read_ranges = lambda name, starts, ends: (
        fetched.append(sum(ends) - sum(starts)) or read_ranges(name, starts, ends)
    )
    array[[0, 1]]
    assert fetched == [2 * x[0].nbytes]  # two rows' bytes, not the file


def test_no_message_advises_unpickling_or_shows_a_secret(tmp_path, capfd):
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "objects.npz", x=np.array([{"a": 1}], dtype=object))
    for spec in (f"npy:{tmp_path / 'objects.npy'}", f"npz:{tmp_path / 'objects.npz'}"):
        assert cli.main(["train", "--dataset", spec, "--out", str(tmp_path / "run"), "--quiet"]) == 2
        message = error_of(capfd)
        assert "pickled Python objects" in message and "allow_pickle" not in message, message
    for out in ("s3://key:s3cr3t@bucket/run", "gs://bucket/run?X-Goog-Signature=s3cr3t"):
        assert train(out) == 2
        message = error_of(capfd)
        assert "s3cr3t" not in message and "environment" in message, message


def test_a_secret_in_the_environment_is_in_no_file_and_no_output(s3_server, monkeypatch, capfd):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-from-the-environment")
    url = s3_server.new_url()
    assert train(url, "--resume") == 2  # an error message too
    assert train(url) == 0
    printed = capfd.readouterr()
    stored = objects(url)
    assert "config.json" in stored
    for text in (printed.out, printed.err, *(data.decode(errors="replace") for data in stored.values())):
        assert "s3cr3t" not in text
