"""DESIGN invariant 7: a resumed run ends with the weights of an uninterrupted one (same seed, CPU)."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
from conftest import BACKEND

import portable_wgangp  # noqa: F401  (registers WGANGP for load_model)

FLAGS = ["--steps", "400", "--batch-size", "32", "--width", "32", "--checkpoint-every", "10", "--quiet"]


def train(out, *extra, check=True):
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    command = [sys.executable, "-m", "portable_wgangp", "train", "--out", str(out), *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr[-2000:]


def final_weights(out):
    gan = keras.models.load_model(out / "checkpoint.keras")
    return gan.get_weights() + [np.asarray(v) for v in gan.critic_optimizer.variables]


def assert_same_weights(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(
            np.asarray(x, dtype="float64"), np.asarray(y, dtype="float64"), rtol=1e-6, atol=1e-7
        )


def test_resume_after_sigkill_mid_run_gives_the_weights_of_an_uninterrupted_run(tmp_path):
    """Killed (SIGKILL) after at least 25 logged steps, resumed from its last checkpoint: the same final
    weights and optimizer state as an uninterrupted run, and one metrics record per step."""
    train(tmp_path / "whole", *FLAGS)
    out = tmp_path / "killed"
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    command = [
        sys.executable,
        "-m",
        "portable_wgangp",
        "train",
        "--out",
        str(out),
        *FLAGS[:1],
        "400",
        *FLAGS[2:],
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and (not log.is_file() or len(log.read_text().splitlines()) < 25):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "checkpoint.keras").is_file()
    train(out, "--resume", "--quiet")
    assert_same_weights(final_weights(out), final_weights(tmp_path / "whole"))
    steps = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    assert steps == list(range(1, 401))


def test_the_same_seed_gives_bitwise_the_same_weights(tmp_path):
    """Determinism on CPU: two processes training with the same seed end with identical bits (weights and
    optimizer state); another seed gives other weights."""
    short = ["--steps", "50", *FLAGS[2:]]
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        train(tmp_path / name, *short, "--seed", seed)
    a, b, c = (final_weights(tmp_path / name) for name in "abc")
    for x, y in zip(a, b):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(a[0]), np.asarray(c[0]))


# A run started on R replicas and resumed on fewer (another strategy where the backend has one for 1).
ELASTIC = {
    "jax": [("data_parallel", 4, 1), ("data_parallel", 2, 1)],
    "tensorflow": [("mirrored", 2, 1), ("none", 1, 1)],
    "torch": [("ddp", 2, 2), ("none", 1, 1)],
}[BACKEND]


def test_a_run_resumed_on_fewer_replicas_ends_with_the_weights_of_the_uninterrupted_run(tmp_path):
    """3 steps on the first replica count, a checkpoint, 3 steps on the second: the weights of 6 steps
    on one device (≤ 1e-5), the global batch being the same whatever the replicas."""
    from test_distribution import run_worker

    os.environ["ELASTIC_CHECKPOINT"] = str(tmp_path / "elastic.keras")
    try:
        (start, resume), whole = ELASTIC, ("none", 1, 1)
        run_worker("elastic_start", *start, tmp_path)
        resumed = run_worker("elastic_resume", *resume, tmp_path)[0]
        reference = run_worker("elastic_whole", *whole, tmp_path)[0]
    finally:
        del os.environ["ELASTIC_CHECKPOINT"]
    assert len(resumed) == len(reference) > 0
    for name in reference:
        np.testing.assert_allclose(resumed[name], reference[name], rtol=1e-5, atol=1e-6)
