"""SIGTERM and SIGINT (preemptible VMs, Kubernetes, Slurm, Ctrl-C): the run finishes its step, saves a
checkpoint of that step, prints one line and exits 143 / 130; resuming equals an uninterrupted run; a
second signal aborts at once; in a multi-process run every process stops at the same step."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from conftest import BACKEND
from test_distribution import HERE, TIMEOUT, process_environments
from test_resume import FLAGS, assert_same_weights, final_weights, train

import portable_wgangp as pw
from portable_wgangp import files
from portable_wgangp.callbacks import PreemptionCheckpoint
from portable_wgangp.nets import mlp


def start_training(out, *flags) -> subprocess.Popen:
    command = [sys.executable, "-m", "portable_wgangp", "train", "--out", str(out), *flags]
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def signal_after(process, log, steps: int, number: int) -> tuple[int, str]:
    """Send ``number`` once ``log`` holds ``steps`` records; the exit status and stderr."""
    deadline = time.time() + 300
    while time.time() < deadline and len(files.read_records(log)) < steps:
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=300)
    return process.returncode, stderr


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(out, *FLAGS)
    return final_weights(out)


@pytest.mark.parametrize(("number", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_saves_the_current_step_and_resuming_equals_an_uninterrupted_run(
    number, status, uninterrupted, tmp_path
):
    out = tmp_path / "run"
    returncode, stderr = signal_after(start_training(out, *FLAGS), out / "metrics.jsonl", 25, number)
    assert returncode == status, stderr[-2000:]
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    step = len(files.read_records(out / "metrics.jsonl"))
    name = signal.Signals(number).name
    assert f"stopped by {name} at step {step};" in lines[0] and "--resume --out" in lines[0]
    assert int(keras.models.load_model(out / "checkpoint.keras").generator_optimizer.iterations) == step
    train(out, "--resume", "--quiet")
    assert_same_weights(final_weights(out), uninterrupted)
    assert [r["step"] for r in files.read_records(out / "metrics.jsonl")] == list(range(1, 401))


def small_gan_and_data():
    gan = pw.WGANGP(mlp(2, 2, width=8, depth=1), mlp(2, 1, width=8, depth=1), 2, n_critic=2, seed=0)
    gan.compile()
    return gan, np.random.default_rng(0).normal(size=(512, 2)).astype("float32")


class SignalAt(keras.callbacks.Callback):
    """Sends ``number`` to this process at the end of generator step ``step``."""

    def __init__(self, step, number=signal.SIGTERM, times=1):
        super().__init__()
        self.step, self.number, self.times, self.seen = step, number, times, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.step:
            for _ in range(self.times):
                os.kill(os.getpid(), self.number)


def test_the_callback_saves_and_exits_with_128_plus_the_signal(tmp_path, capsys):
    gan, x = small_gan_and_data()
    path = tmp_path / "preempted.keras"
    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stop:
        gan.fit(x, batch_size=32, epochs=3, verbose=0, callbacks=[SignalAt(5), PreemptionCheckpoint(path)])
    assert stop.value.code == 143
    assert "stopped by SIGTERM at step 5" in capsys.readouterr().err
    assert int(keras.models.load_model(path).generator_optimizer.iterations) == 5
    assert signal.getsignal(signal.SIGTERM) is previous  # handlers restored


def test_without_exit_fit_returns_and_says_what_happened(tmp_path):
    gan, x = small_gan_and_data()
    preemption = PreemptionCheckpoint(tmp_path / "p.keras", exit=False)
    gan.fit(x, batch_size=32, epochs=3, verbose=0, callbacks=[SignalAt(4, signal.SIGINT), preemption])
    assert (preemption.received, preemption.step) == (signal.SIGINT, 4)
    assert int(gan.generator_optimizer.iterations) == 4


def test_a_second_signal_aborts_at_once(tmp_path):
    """Two signals before the step ends: the process dies by the signal, without a checkpoint."""
    script = (
        "import sys; sys.path.insert(0, {here!r}); import test_preemption as t; "
        "from portable_wgangp.callbacks import PreemptionCheckpoint as P; gan, x = t.small_gan_and_data(); "
        "gan.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=[t.SignalAt(2, times=2), P({path!r})]); "
        "print('survived')"
    ).format(here=str(HERE), path=str(tmp_path / "never.keras"))
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    result = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == -signal.SIGTERM, result.stderr[-2000:]
    assert "survived" not in result.stdout and not (tmp_path / "never.keras").exists()


MULTI_PROCESS = {"tensorflow": ("multi_worker", 2), "jax": ("data_parallel", 2), "torch": ("ddp", 2)}[BACKEND]


def test_every_process_stops_at_the_same_step_with_one_checkpoint(tmp_path):
    """2 local processes; only the last one gets SIGTERM (at step 4): both stop after step 4, process 0
    writes the one checkpoint, both exit 143."""
    strategy, processes = MULTI_PROCESS
    running = []
    for rank, env in enumerate(process_environments(strategy, processes, processes)):
        out = tmp_path / f"rank{rank}.json"
        command = [
            sys.executable,
            str(HERE / "replica_worker.py"),
            "preempt",
            strategy,
            str(processes),
            str(out),
        ]
        running.append(
            (subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT), out)
        )
    for process, _ in running:
        output = process.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
        assert process.returncode == 143, output[-3000:]
    reports = [json.loads(out.read_text()) for _, out in running]
    assert [r["steps"] for r in reports] == [4] * processes
    assert (tmp_path / "rank0.json.keras").is_file() and not (tmp_path / "rank1.json.keras").exists()
    gan = keras.models.load_model(tmp_path / "rank0.json.keras")
    assert int(gan.generator_optimizer.iterations) == 4
