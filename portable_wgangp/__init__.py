"""portable-wgangp: WGAN-GP from one model code on the TensorFlow, JAX and PyTorch backends of Keras 3."""

from portable_wgangp._startup import import_quietly, select_default_backend

select_default_backend()
import_quietly("keras")  # and so its backend, without TensorFlow's start-up INFO lines

# ruff: noqa: E402  (keras must not be imported before the backend is chosen)
from portable_wgangp import (
    callbacks,
    data,
    datasets,
    features,
    losses,
    metrics,
    nets,
    penalties,
    rounds,
    sources,
)
from portable_wgangp.backend import input_gradient
from portable_wgangp.distribution import Distribution, distribute
from portable_wgangp.model import WGANGP
from portable_wgangp.penalties import gradient_penalty

__version__ = "0.1.0"

__all__ = [
    "WGANGP",
    "Distribution",
    "__version__",
    "callbacks",
    "data",
    "datasets",
    "distribute",
    "features",
    "gradient_penalty",
    "input_gradient",
    "losses",
    "metrics",
    "nets",
    "penalties",
    "rounds",
    "sources",
]
