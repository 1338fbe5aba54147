"""A run loads only its own framework: in an environment with TensorFlow, JAX and torch installed together
(Colab, GPU images, ``pip install "portable-wgangp[all]"``; the nox session ``together``), a ``train`` run
imports no framework beyond its backend's and what ``import keras`` itself imports (Keras 3.15 imports JAX
when installed, for its Orbax checkpoint callback), and still writes its TensorBoard events and the EMD.
In a one-framework session the same test holds trivially."""

import json
import os
import subprocess
import sys

from conftest import BACKEND

FRAMEWORKS = ("tensorflow", "jax", "torch")
RUN = r"""
import json, sys
import keras
loaded_by_keras = [m for m in FRAMEWORKS if m in sys.modules]
from portable_wgangp import cli
status = cli.main(["train", "--out", sys.argv[1], "--quiet", "--steps", "12", "--batch-size", "16",
                   "--width", "8", "--depth", "1", "--checkpoint-every", "6", "--steps-per-execution", "4"])
after = [m for m in FRAMEWORKS if m in sys.modules]
print(json.dumps({"status": status, "keras": loaded_by_keras, "after": after}))
"""


def test_a_train_run_imports_no_other_framework(tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-c", f"FRAMEWORKS = {FRAMEWORKS!r}\n{RUN}", str(out)],
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["status"] == 0
    assert set(report["after"]) <= {BACKEND, *report["keras"]}, report
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert json.loads((out / "quality.json").read_text())["emd"] > 0
