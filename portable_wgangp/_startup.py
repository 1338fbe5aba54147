"""Start-up, before keras is first imported: choose an installed backend, then import keras quietly.

Keras falls back to TensorFlow when ``KERAS_BACKEND`` is unset, which fails where only JAX or torch is
installed (``pip install "portable-wgangp[jax]"``). And importing TensorFlow prints C++ INFO lines on
stderr (oneDNN, CPU features) that would bury a one-line error of the CLI.
"""

import importlib
import importlib.util
import json
import os
import pathlib
import re
import sys
import tempfile

FRAMEWORKS = ("tensorflow", "jax", "torch")
# TensorFlow's start-up INFO chatter; its warnings and errors are kept.
_CHATTER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|I\d{4} \d\d:\d\d:\d\d|"
    r"To enable the following instructions: .*rebuild TensorFlow|"
    r"W\d{4} \d\d:\d\d:\d\d.* dataset\.cc:\d+\] Input of GeneratorDatasetOp)"
)


def select_default_backend() -> None:
    """Set ``KERAS_BACKEND`` to an installed framework when the one Keras would use is not installed.

    Without ``KERAS_BACKEND`` Keras uses keras.json's backend (Keras writes that file on first import,
    naming TensorFlow). That choice is kept when its framework is installed; otherwise the first
    installed of TensorFlow, JAX and torch is used.
    """
    if "KERAS_BACKEND" in os.environ or "keras" in sys.modules:
        return
    if importlib.util.find_spec(_keras_json_backend() or "tensorflow"):
        return
    installed = [name for name in FRAMEWORKS if importlib.util.find_spec(name)]
    if not installed:
        raise ImportError(
            "portable_wgangp needs a Keras backend and none is installed; install one, "
            "e.g. pip install 'portable-wgangp[jax]' (or [tensorflow], [torch])."
        )
    os.environ["KERAS_BACKEND"] = installed[0]


def import_quietly(name: str):
    """``importlib.import_module(name)`` with TensorFlow's start-up INFO lines removed from stderr."""
    if name in sys.modules:
        return sys.modules[name]
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            return importlib.import_module(name)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(without_chatter(captured.read().decode(errors="replace")))


def without_chatter(text: str) -> str:
    """``text`` without TensorFlow's start-up INFO lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not _CHATTER.match(line))


def _keras_json_backend() -> str | None:
    home = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
    try:
        return json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError):
        return None
