"""Quality metrics at scale: time and peak memory of each metric, before → after, and the reference libraries.

    python benchmarks/metrics.py [--n 10000] [--dim 2048] [--emd-n 5000] [--only CASE ...] [--columns COL ...]

Features: N = 10,000 samples of D = 2,048 float32 features a side (Inception's pool size), drawn from a
fixed seed; the EMD on 5,000 2-D points a side, random or from a collapsed generator (every generated
point within 1e-3 of one centre); the Inception Score on 10,000 × 1,000 logits. "before" is the library's
formula before issue 15 (``backends_tests/metric_references.py``: full pairwise matrices, ``sqrtm``, the
assignment solver), "after" is `portable_wgangp.metrics`, "reference" is prdc / POT when installed.

Each measurement runs once, in its own process: after the data are made, the process's peak resident set
is reset (``/proc/self/clear_refs``) and the call timed; "peak MB" is the peak during the call above the
resident size before it (the inputs, Python, numpy). A run past ``--timeout`` seconds is reported as such.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "backends_tests")]

import metric_references as ref  # noqa: E402

from portable_wgangp import metrics  # noqa: E402


def features(n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Real and generated float32 features: standard normal, and the same scaled by 1.05 and moved by 0.02."""
    rng = np.random.default_rng(0)
    real = rng.standard_normal((n, dim), dtype=np.float32)
    generated = rng.standard_normal((n, dim), dtype=np.float32) * np.float32(1.05) + np.float32(0.02)
    return real, generated


def points(n: int, collapsed: bool) -> tuple[np.ndarray, np.ndarray]:
    """Real 2-D points (standard normal) and generated ones: normal, or all within 1e-3 of (0.5, 0.5)."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(n, 2))
    generated = 0.5 + (1e-3 if collapsed else 1.0) * rng.normal(size=(n, 2))
    return real, generated


def logits(n: int) -> np.ndarray:
    return 3.0 * np.random.default_rng(2).normal(size=(n, 1000))


def prdc_precision_recall(real, generated):
    import prdc

    result = prdc.compute_prdc(real, generated, nearest_k=3)
    return float(result["precision"]), float(result["recall"])


def pot_emd(a, b):
    import ot
    from scipy.spatial.distance import cdist

    return float(
        ot.emd2(np.full(len(a), 1 / len(a)), np.full(len(b), 1 / len(b)), cdist(a, b), numItermax=10**9)
    )


def softmax_inception_score(x):
    from scipy.special import softmax

    return ref.inception_score_loop(softmax(x, axis=1), 10)


# case -> (data maker, {column: function}); a column whose package is missing is skipped
CASES = {
    "fid": (
        "features",
        {"before": ref.frechet_distance_sqrtm, "after": metrics.frechet_distance},
    ),
    "kid full": (
        "features",
        {
            "before": ref.kid_full_matrices,
            "after": lambda a, b: metrics.kernel_inception_distance(a, b, subset_size=len(a)),
        },
    ),
    "kid 100×1000": ("features", {"after": metrics.kernel_inception_distance}),
    "precision_recall": (
        "features",
        {
            "before": ref.precision_recall_cdist,
            "after": metrics.precision_recall,
            "reference": prdc_precision_recall,
        },
    ),
    "emd random": (
        "points",
        {"before": ref.emd_assignment, "after": metrics.earth_movers_distance, "reference": pot_emd},
    ),
    "emd collapsed": (
        "points collapsed",
        {"before": ref.emd_assignment, "after": metrics.earth_movers_distance, "reference": pot_emd},
    ),
    "inception_score": ("logits", {"before": softmax_inception_score, "after": metrics.inception_score}),
}
COLUMNS = ["before", "after", "reference"]
REFERENCE_PACKAGE = {"precision_recall": "prdc", "emd random": "ot", "emd collapsed": "ot"}


def make_data(kind: str, args) -> tuple:
    if kind == "features":
        return features(args.n, args.dim)
    if kind.startswith("points"):
        return points(args.emd_n, collapsed=kind.endswith("collapsed"))
    return (logits(args.n),)


def status_mb(field: str) -> float:
    """A ``/proc/self/status`` size (VmRSS, VmHWM) in MB."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def measure(case: str, column: str, args) -> dict:
    """Runs in the child: make the data, reset the peak RSS, time one call."""
    kind, columns = CASES[case]
    data = make_data(kind, args)
    if available(case, "reference"):
        importlib.import_module(REFERENCE_PACKAGE.get(case, "numpy"))  # its import is not timed
    pathlib.Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    before = status_mb("VmRSS")
    start = time.perf_counter()
    value = columns[column](*data)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_mb": status_mb("VmHWM") - before, "value": value}


def run_child(case: str, column: str, args) -> dict:
    command = [sys.executable, __file__, "--child", case, column, "--n", str(args.n), "--dim", str(args.dim)]
    command += ["--emd-n", str(args.emd_n)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"timeout": args.timeout}
    return json.loads(done.stdout.strip().splitlines()[-1])


def available(case: str, column: str) -> bool:
    package = REFERENCE_PACKAGE.get(case, "numpy")
    return column != "reference" or importlib.util.find_spec(package) is not None


def cell(result: dict | None) -> str:
    if result is None:
        return "-"
    if "timeout" in result:
        return f"> {result['timeout']} s"
    return f"{result['seconds']:.1f} s, {result['peak_mb']:.0f} MB"


def value_text(value) -> str:
    return ", ".join(f"{v:.6g}" for v in np.atleast_1d(value))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="samples a side (features, logits)")
    parser.add_argument("--dim", type=int, default=2048, help="features per sample")
    parser.add_argument("--emd-n", type=int, default=5000, help="2-D points a side for the EMD")
    parser.add_argument("--only", nargs="+", choices=list(CASES), help="these cases only")
    parser.add_argument("--columns", nargs="+", choices=COLUMNS, default=COLUMNS, help="these columns only")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per measurement")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args)))
        return
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, numpy {np.__version__}"
    print(f"{machine}; N={args.n}, D={args.dim}, EMD N={args.emd_n}")
    print("| metric | before | after | reference | values (before / after / reference) |")
    print("| --- | --- | --- | --- | --- |")
    results = {}
    for case in args.only or CASES:
        row = {
            column: run_child(case, column, args)
            for column in args.columns
            if column in CASES[case][1] and available(case, column)
        }
        results[case] = row
        values = " / ".join(value_text(r["value"]) for r in row.values() if "value" in r)
        cells = " | ".join(cell(row.get(column)) for column in COLUMNS)
        print(f"| {case} | {cells} | {values} |", flush=True)
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
