"""Choose a Keras backend that is installed, before keras is first imported.

Keras falls back to TensorFlow when ``KERAS_BACKEND`` is unset, which fails where only JAX or torch is
installed (``pip install "portable-wgangp[jax]"``). Run before the first ``import keras``.
"""

import importlib.util
import json
import os
import pathlib
import sys

FRAMEWORKS = ("tensorflow", "jax", "torch")


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


def _keras_json_backend() -> str | None:
    home = pathlib.Path(os.environ.get("KERAS_HOME", pathlib.Path.home() / ".keras"))
    try:
        return json.loads((home / "keras.json").read_text()).get("backend")
    except (OSError, ValueError):
        return None
