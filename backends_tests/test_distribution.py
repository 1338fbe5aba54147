"""Replica-count invariance (DESIGN invariant 5) and the distribution adapter's errors.

Each run is a subprocess (`replica_worker.py`): JAX's host device count and TensorFlow's logical CPUs must
be set before the framework starts, and torch's process group needs one process per replica. Every run
with R replicas must reproduce the single-device run of the same global batch: final weights and every
logged metric, to 1e-5 relative. The `mlp` case uses random noise, so this also proves that replicas
draw different noise (else the global batch would differ) and that logged values are global means.
"""

import json
import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest
import reference
from conftest import BACKEND

import portable_wgangp as pw
import portable_wgangp.distribution
from portable_wgangp import data
from portable_wgangp.check import MLP_GLOBAL_BATCH, MLP_N_CRITIC, MLP_STEPS

HERE = pathlib.Path(__file__).parent
# (strategy, replicas, processes)
CONFIGURATIONS = {
    "tensorflow": [("mirrored", 2, 1), ("mirrored", 4, 1), ("multi_worker", 2, 2)],
    "jax": [
        ("data_parallel", 1, 1),
        ("data_parallel", 2, 1),
        ("data_parallel", 4, 1),
        ("data_parallel", 8, 1),
        ("data_parallel", 2, 2),
        ("data_parallel", 4, 2),  # the shape of a TPU pod slice: 2 hosts × 2 devices
    ],
    "torch": [("ddp", 2, 2), ("ddp", 4, 4)],
}[BACKEND]
TIMEOUT = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_environments(strategy: str, replicas: int, processes: int) -> list[dict]:
    """One environment per process: torchrun's for ddp, TF_CONFIG for multi_worker, Keras's for JAX."""
    env = {
        **os.environ,
        "KERAS_BACKEND": BACKEND,
        "PYTHONPATH": os.pathsep.join([str(HERE.parent), str(HERE)]),
    }
    if strategy == "data_parallel" and processes > 1:
        env.update(
            KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{_free_port()}",
            KERAS_DISTRIBUTION_NUM_PROCESSES=str(processes),
            JAX_DEVICES_PER_PROCESS=str(replicas // processes),
        )
        return [{**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)} for i in range(processes)]
    if strategy == "data_parallel":
        env["JAX_DEVICES_PER_PROCESS"] = str(max(4, replicas))
    if strategy == "ddp":
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(replicas))
        return [{**env, "RANK": str(rank), "LOCAL_RANK": str(rank)} for rank in range(replicas)]
    if strategy == "multi_worker":
        cluster = {"worker": [f"127.0.0.1:{_free_port()}" for _ in range(replicas)]}
        return [
            {**env, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
            for i in range(replicas)
        ]
    return [env]


def run_worker(case: str, strategy: str, replicas: int, processes: int, folder: pathlib.Path) -> list[dict]:
    """Run the worker in ``processes`` processes; each process's saved arrays."""
    outputs, running = [], []
    for rank, env in enumerate(process_environments(strategy, replicas, processes)):
        out = folder / f"{case}-{strategy}-{replicas}-{processes}-{rank}.npz"
        outputs.append(out)
        command = [sys.executable, str(HERE / "replica_worker.py"), case, strategy, str(replicas), str(out)]
        running.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for process in running:
        output = process.communicate(timeout=TIMEOUT)[0].decode(errors="replace")
        assert process.returncode == 0, output[-3000:]
    return [dict(np.load(out)) for out in outputs]


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    folder = tmp_path_factory.mktemp("single")
    return {case: run_worker(case, "none", 1, 1, folder)[0] for case in ("mlp", "linear")}


def assert_same_run(run: dict, expected: dict) -> None:
    assert list(run["names"]) == list(expected["names"])
    np.testing.assert_allclose(run["logs"], expected["logs"], rtol=1e-5, atol=1e-6)
    for key in expected:
        if key.startswith("w"):
            np.testing.assert_allclose(run[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("case", ["mlp", "linear"])
@pytest.mark.parametrize(("strategy", "replicas", "processes"), CONFIGURATIONS, ids=lambda v: str(v))
def test_replicas_reproduce_the_single_device_run(
    case, strategy, replicas, processes, single_device, tmp_path
):
    for run in run_worker(case, strategy, replicas, processes, tmp_path):  # every process, the same model
        assert_same_run(run, single_device[case])


def test_steps_per_execution_on_two_replicas_reproduces_the_single_device_run(single_device, tmp_path):
    """2 steps per compiled call (3 steps: a call of 2 and a padded call of 1) on 2 replicas: every step's
    logs and the weights of the 1-device run of single steps."""
    strategy, replicas, processes = CONFIGURATIONS[0] if BACKEND != "jax" else CONFIGURATIONS[1]
    for run in run_worker("mlp_executions", strategy, replicas, processes, tmp_path):
        assert_same_run(run, single_device["mlp"])


STREAM_CONFIGURATION = {
    "tensorflow": ("multi_worker", 2, 2),
    "jax": ("data_parallel", 2, 2),
    "torch": ("ddp", 2, 2),
}


def test_two_processes_streaming_a_folder_read_disjoint_shares_and_train_as_one(tmp_path, monkeypatch):
    """Per-host sharding: each process decodes only the files of its share of every global batch, and
    the two processes end with the weights of the one-process run."""
    from PIL import Image

    rng = np.random.default_rng(5)
    images = tmp_path / "images"
    images.mkdir()
    for i in range(MLP_GLOBAL_BATCH * MLP_N_CRITIC * MLP_STEPS + 3):  # 3 left over: never read
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(images / f"{i:03d}.png")
    monkeypatch.setenv("STREAM_FOLDER", str(images))
    single = run_worker("stream", "none", 1, 1, tmp_path)[0]
    single_reads = set(np.load(tmp_path / "stream-none-1-1-0.npz.reads.npy"))
    strategy, replicas, processes = STREAM_CONFIGURATION[BACKEND]
    runs = run_worker("stream", strategy, replicas, processes, tmp_path)
    reads = [
        set(np.load(tmp_path / f"stream-{strategy}-{replicas}-{processes}-{rank}.npz.reads.npy"))
        for rank in range(processes)
    ]
    assert not reads[0] & reads[1]
    assert reads[0] | reads[1] == single_reads
    assert len(single_reads) == MLP_GLOBAL_BATCH * MLP_N_CRITIC * MLP_STEPS
    for run in runs:
        assert_same_run(run, single)


def test_single_device_linear_run_is_the_closed_form(single_device):
    expected = json.loads(reference.VALUES.read_text())["linear_step"]
    run = single_device["linear"]
    np.testing.assert_allclose(run["w0"], expected["A"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run["w2"][:, 0], expected["w"], rtol=1e-5, atol=1e-6)
    logs = dict(zip(run["names"], run["logs"][0]))
    for name, value in expected["logs"].items():
        assert logs[name] == pytest.approx(value, rel=1e-5)


def test_unknown_strategy_names_the_backend_and_the_choices():
    with pytest.raises(
        ValueError, match=rf"'horovod' does not fit the {BACKEND} backend; choose one of auto"
    ):
        with pw.distribute("horovod"):
            pass


def test_strategy_of_another_backend_is_refused():
    foreign = {"tensorflow": "ddp", "jax": "mirrored", "torch": "data_parallel"}[BACKEND]
    with pytest.raises(ValueError, match=rf"does not fit the {BACKEND} backend"):
        with pw.distribute(foreign):
            pass


def test_none_strategy_has_one_replica():
    with pw.distribute("none") as dist:
        assert dist.num_replicas == 1
        assert pw.distribution.num_replicas() == 1


def test_global_batch_must_divide_by_the_replicas():
    x = np.zeros((64, 2), dtype="float32")
    with pytest.raises(ValueError, match="global batch size 6 does not divide by the 4 replicas"):
        data.critic_rounds(x, batch_size=6, n_critic=1, num_replicas=4)
    with pytest.raises(ValueError, match="global batch size 6 does not divide by the 4 replicas"):
        next(data.critic_rounds(iter([x[:6]] * 2), batch_size=None, n_critic=1, num_replicas=4)[0])
