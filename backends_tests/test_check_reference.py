"""`portable-wgangp check --reference cpu`: the devices' K steps against the same steps on the host CPU.

On a CPU-only machine both sides run on the CPU, in two processes: the same backend, seed and data give
the same numbers (PASS). The device side under mixed_bfloat16, held to float32 agreement, FAILs and names
the setting that restores it. The tables that map each framework's settings to the precision of its
float32 matmuls (and so to the tolerance) are checked on every backend.
"""

import json
import os

import keras
import pytest

from portable_wgangp import check


def verdict(output: str) -> str:
    """The table's last line, PASS or FAIL (frameworks may print more after it)."""
    return [line for line in output.splitlines() if line in ("PASS", "FAIL")][-1]


def hint(output: str) -> str:
    return next(line for line in output.splitlines() if line.startswith("hint: "))


# The CPU runs of this module by (steps, batch): a check of the same steps as an earlier one reuses that
# one's CPU run instead of starting a child again (its numbers are the same: the first test shows them
# equal to this process's float32 run), which saves a process start and a compile (seconds).
CPU_RUNS: dict = {}


def reuse_cpu_runs(monkeypatch) -> None:
    start, finish = check._start_reference, check._finish_reference

    def start_once(folder, steps, batch):
        if (steps, batch) in CPU_RUNS:
            return None, (steps, batch), None
        process, out, log = start(folder, steps, batch)
        return process, out, (log, (steps, batch))

    def finish_once(process, out, log):
        if process is None:
            return CPU_RUNS[out]
        CPU_RUNS[log[1]] = finish(process, out, log[0])
        return CPU_RUNS[log[1]]

    monkeypatch.setattr(check, "_start_reference", start_once)
    monkeypatch.setattr(check, "_finish_reference", finish_once)


def run_check(tmp_path, monkeypatch, capture, *flags) -> tuple[int, dict, str]:
    """Exit status, JSON report and output of ``check --reference cpu FLAGS``: the device side in this
    process (its frameworks already started), the CPU side in the child process it starts (or an earlier
    check's, `CPU_RUNS`)."""
    from portable_wgangp import cli

    monkeypatch.setenv("XLA_FLAGS", os.environ.get("XLA_FLAGS", ""))  # restored after: check adds to it
    reuse_cpu_runs(monkeypatch)
    report_file = tmp_path / "report.json"
    previous = keras.config.dtype_policy()
    try:
        status = cli.main(["check", "--reference", "cpu", "--json", str(report_file), *flags])
    finally:
        keras.config.set_dtype_policy(previous)
    output = capture.readouterr().out
    assert report_file.is_file(), output[-3000:]
    return status, json.loads(report_file.read_text()), output


def test_two_cpu_processes_agree_and_pass(tmp_path, monkeypatch, capsys):
    status, report, output = run_check(tmp_path, monkeypatch, capsys)
    assert status == 0, output[-3000:]
    assert report["passed"] is True and report["reference"] == "cpu" and report["steps"] == 20
    assert report["platform"] == report["reference_platform"] == "cpu"
    assert report["matmul_precision"] == report["precision"] == "float32"
    assert report["tolerance"] == {"precision": "float32", "rtol": 1e-4, "atol": 1e-4}
    # Measured: exactly 0 on every backend (same library, same threads, same program).
    assert report["max_weight_diff"] <= 1e-6 and report["max_metric_diff"] <= 1e-6
    assert set(report["max_metric_diff_by_name"]) >= {"critic_loss", "gradient_penalty", "generator_loss"}
    assert verdict(output) == "PASS" and output.count("PASS") >= 8
    assert hint(output) == "hint: the device computes what the CPU computes, to float32 rounding"


def test_a_bfloat16_device_held_to_float32_fails_and_names_the_setting(tmp_path, monkeypatch, capsys):
    flags = ["--dtype-policy", "mixed_bfloat16", "--precision", "float32"]
    status, report, output = run_check(tmp_path, monkeypatch, capsys, *flags)
    assert status == 1, output[-3000:]
    assert report["passed"] is False and report["compute_dtype"] == "bfloat16"
    assert report["matmul_precision"] == "float32" and report["precision"] == "bfloat16"
    assert report["tolerance"]["precision"] == "float32"
    # Measured (20 steps): weights 1.3e-3 to 2.4e-3 and metrics 3.3e-2 to 6.3e-2 from float32, 220 to 300
    # times float32's tolerance; without --precision, bfloat16's holds them with room to spare.
    assert report["max_weight_diff"] > 1e-4 and report["max_metric_diff"] > 1e-3
    float32, bfloat16 = (check.reference_tolerance(p, 20) for p in ("float32", "bfloat16"))
    assert report["excess"] > 30 and report["excess"] * float32 / bfloat16 < 0.5
    assert verdict(output) == "FAIL" and output.count("FAIL") >= 3
    line = hint(output)
    assert "computes in bfloat16, coarser than the float32 asked for" in line
    assert "mixed_bfloat16" in line and "the float32 policy (leave out --dtype-policy)" in line


@pytest.mark.parametrize(
    ("framework", "args", "expected"),
    [
        ("jax", ("cpu", None), "float32"),
        ("jax", ("cpu", "bfloat16"), "float32"),
        ("jax", ("tpu", None), "bfloat16"),
        ("jax", ("tpu", "default"), "bfloat16"),
        ("jax", ("tpu", "high"), "bfloat16_3x"),
        ("jax", ("tpu", "highest"), "float32"),
        ("jax", ("gpu", None, (9, 0)), "tensorfloat32"),
        ("jax", ("gpu", None, (7, 0)), "float32"),
        ("jax", ("gpu", "highest", (9, 0)), "float32"),
        ("jax", ("gpu", "bfloat16", (9, 0)), "tensorfloat32"),  # an alias of DEFAULT
        ("jax", ("gpu", "BF16_BF16_F32", (9, 0)), "bfloat16"),  # a dot algorithm
        ("jax", ("tpu", "tensorfloat32"), "bfloat16_3x"),  # an alias of HIGH
        ("jax", ("tpu", "BF16_BF16_F32_X6"), "float32"),
        ("tensorflow", ("cpu", True), "float32"),
        ("tensorflow", ("gpu", True, (8, 0)), "tensorfloat32"),
        ("tensorflow", ("gpu", True, (8, 0), True), "float32"),  # NVIDIA_TF32_OVERRIDE=0
        ("tensorflow", ("gpu", True, (7, 5)), "float32"),
        ("tensorflow", ("gpu", False, (8, 0)), "float32"),
        ("tensorflow", ("tpu", True), "bfloat16"),
        ("tensorflow", ("tpu", False), "float32"),
        ("torch", ("cpu", "medium"), "float32"),
        ("torch", ("cuda", "highest", (9, 0)), "float32"),
        ("torch", ("cuda", "high", (9, 0)), "tensorfloat32"),
        ("torch", ("cuda", "high", (9, 0), True), "float32"),
        ("torch", ("cuda", "medium", (9, 0)), "bfloat16"),
        ("torch", ("cuda", "high", (7, 0)), "float32"),
    ],
    ids=str,
)
def test_each_framework_setting_maps_to_the_precision_of_its_matmuls(framework, args, expected):
    assert getattr(check, f"{framework}_matmul_precision")(*args) == expected


def test_this_machine_multiplies_in_float32():
    facts = check.device_facts()
    assert facts["platform"] == "cpu" and facts["matmul_precision"] == "float32"
    assert facts["float32_setting"] == ""


def synthetic_report(platform, matmul, setting, fix, policy="float32", held_to=None, excess=0.5) -> dict:
    compute = keras.DTypePolicy(policy).compute_dtype
    precision = check.coarser(matmul, compute)
    held_to = held_to or precision
    t = check.reference_tolerance(held_to, 20)
    report = {
        "passed": excess <= 1.0,
        "reference": "cpu",
        "backend": "jax",
        "strategy": "data_parallel",
        "num_replicas": 8,
        "num_processes": 1,
        "steps": 20,
        "device": f"8 × accelerator ({platform})",
        "platform": platform,
        "matmul_precision": matmul,
        "matmul_setting": setting,
        "dtype_policy": policy,
        "compute_dtype": compute,
        "precision": precision,
        "tolerance": {"precision": held_to, "rtol": t, "atol": t},
        "rows": {"generator weights": {"max_diff": 3e-3, "excess": excess}},
        "reference_device": "cpu",
    }
    report["hint"] = check.reference_hint(report, fix)
    return report


def test_a_tpu_at_its_default_passes_within_bfloat16_and_says_how_to_agree_in_float32():
    fix = check.FLOAT32_SETTINGS["jax"]
    report = synthetic_report("tpu", "bfloat16", "jax_default_matmul_precision=None", fix)
    assert report["tolerance"]["atol"] == 0.1
    text = check.format_reference_report(report)
    assert text.endswith("\nPASS") and "float32 matmuls in one bfloat16 pass" in text
    assert "the TPU multiplies float32 matrices in one bfloat16 pass" in report["hint"]
    assert "JAX_DEFAULT_MATMUL_PRECISION=highest" in report["hint"]
    assert "for float32 agreement (and a tolerance of 0.0001)" in report["hint"]
    held = synthetic_report("tpu", "bfloat16", "…", fix, held_to="float32", excess=30.0)
    assert "coarser than the float32 asked for" in held["hint"] and "highest" in held["hint"]
    assert check.format_reference_report(held).endswith("\nFAIL")


def test_a_float32_device_beyond_float32_rounding_is_not_a_setting():
    report = synthetic_report(
        "gpu", "float32", "torch.get_float32_matmul_precision()='highest'", "", excess=5.0
    )
    assert report["passed"] is False and "which no precision setting explains" in report["hint"]
    tf32 = synthetic_report("gpu", "tensorfloat32", "…", check.FLOAT32_SETTINGS["torch"], excess=0.2)
    assert tf32["passed"] and "set_float32_matmul_precision('highest')" in tf32["hint"]


def test_tolerance_batch_and_choices():
    assert check.reference_tolerance("float32", 20) == check.reference_tolerance("float32", 5) == 1e-4
    assert check.reference_tolerance("bfloat16", 100) == pytest.approx(0.5)
    assert [check.reference_batch(r) for r in (1, 2, 3, 8, 32)] == [8, 8, 9, 8, 32]
    assert check.coarser("tensorfloat32", "float32") == "tensorfloat32"
    assert check.coarser("tensorfloat32", "bfloat16") == "bfloat16"
    from portable_wgangp import cli

    parser = cli.build_parser()
    assert cli.main(["check", "--steps", "5"]) == 2  # --steps and --precision need --reference
    assert cli.main(["check", "--reference", "cpu", "--steps", "0"]) == 2
    action = next(
        a
        for a in parser._subparsers._group_actions[0].choices["check"]._actions
        if "--precision" in a.option_strings
    )
    assert tuple(action.choices) == ("auto", *check.PRECISIONS)
