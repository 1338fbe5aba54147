"""`portable-wgangp check`: passes for every strategy the suite covers, fails on a wrong aggregation.

Each check runs as the user would run it (the CLI in subprocesses, one per process of the run).
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND
from test_distribution import TIMEOUT, process_environments

# (strategy, replicas, processes)
CONFIGURATIONS = {
    "tensorflow": [("mirrored", 2, 1), ("mirrored", 4, 1), ("multi_worker", 2, 2)],
    "jax": [("data_parallel", 2, 1), ("data_parallel", 4, 1), ("data_parallel", 4, 2)],
    "torch": [("ddp", 2, 2)],
}[BACKEND]
# Sum the replicas' gradients instead of averaging them: the classic aggregation bug.
SUMMING = (
    "import sys, portable_wgangp as pw; from portable_wgangp import backend, cli\n"
    "real = backend.value_and_grad\n"
    "def summing(fn, variables):\n"
    "    loss, aux, grads = real(fn, variables)\n"
    "    return loss, aux, [g * pw.distribution.num_replicas() for g in grads]\n"
    "backend.value_and_grad = summing\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def run_check(tmp_path, strategy, replicas, processes, *flags, inject=False) -> tuple[list[int], dict, str]:
    """Exit statuses, process 0's JSON report and output of ``check`` in ``processes`` processes."""
    report = tmp_path / "report.json"
    args = ["check", "--strategy", strategy, "--replicas", str(replicas), "--json", str(report), *flags]
    command = [sys.executable, "-c", SUMMING] if inject else [sys.executable, "-m", "portable_wgangp"]
    running = []
    for env in process_environments(strategy, replicas, processes):
        if processes > 1 and strategy == "data_parallel":
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={replicas // processes}"
        running.append(
            subprocess.Popen(
                [*command, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [process.communicate(timeout=TIMEOUT)[0] for process in running]
    assert report.is_file(), outputs[0][-3000:]
    return [process.returncode for process in running], json.loads(report.read_text()), outputs[0]


def verdict(output: str) -> str:
    """The table's last line, PASS or FAIL (frameworks may print more after it)."""
    return [line for line in output.splitlines() if line in ("PASS", "FAIL")][-1]


@pytest.mark.parametrize(("strategy", "replicas", "processes"), CONFIGURATIONS, ids=str)
def test_check_passes_for_a_correct_aggregation(tmp_path, strategy, replicas, processes):
    statuses, report, output = run_check(tmp_path, strategy, replicas, processes, "--no-timing")
    assert statuses == [0] * processes, output[-3000:]
    assert report["passed"] is True and report["num_replicas"] == replicas
    assert report["num_processes"] == processes
    assert report["max_weight_diff"] < 1e-5 and report["max_metric_diff"] < 1e-5
    assert report["max_closed_form_diff"] < 1e-5
    assert output.count("PASS") >= 7 and verdict(output) == "PASS"


def test_check_fails_when_replicas_sum_instead_of_averaging(tmp_path):
    strategy, replicas, processes = CONFIGURATIONS[0]
    statuses, report, output = run_check(tmp_path, strategy, replicas, processes, "--no-timing", inject=True)
    assert statuses == [1] * processes, output[-3000:]
    assert report["passed"] is False and report["max_weight_diff"] > 1e-3
    assert verdict(output) == "FAIL"


def test_check_times_the_step_and_checks_the_penalty_under_bfloat16(tmp_path):
    strategy, replicas, processes = CONFIGURATIONS[0]
    statuses, report, _ = run_check(
        tmp_path, strategy, replicas, processes, "--dtype-policy", "mixed_bfloat16"
    )
    assert statuses == [0] * processes
    penalty = report["penalty"]
    assert penalty["compute_dtype"] == "bfloat16" and 0 < penalty["relative_diff"] <= penalty["tolerance"]
    timing = report["timing"]
    assert timing["one_device_ms"] > 0 and timing["replicas_ms"] > 0 and timing["efficiency"] > 0


def test_check_refuses_another_backends_strategy(tmp_path):
    foreign = {"tensorflow": "ddp", "jax": "mirrored", "torch": "data_parallel"}[BACKEND]
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    result = subprocess.run(
        [sys.executable, "-m", "portable_wgangp", "check", "--strategy", foreign],
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert result.returncode == 2 and f"does not fit the {BACKEND} backend" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
