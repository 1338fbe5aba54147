"""The names of the data layer's first module, kept for code written against them. They now live where
their concept does: the named datasets in `portable_wgangp.datasets`, the checks, scaling and readers of
samples in `portable_wgangp.sources`, the rounds `fit` consumes in `portable_wgangp.rounds`, the toy
quality figures in `portable_wgangp.features`. Each is looked up when first used: importing this module
imports none of them.
"""

from __future__ import annotations

import importlib

_HOMES = {
    "datasets": ("TOY_DATASETS", "toy_centres", "toy_noise_std", "toy_samples", "toy_minibatches", "digits"),
    "sources": (
        "as_labels",
        "MAX_CLASSES",
        "count_classes",
        "check_numeric",
        "check_finite",
        "as_float_array",
        "scale_images",
        "load_array",
        "numpy_reason",
        "load_npz",
        "load_images",
    ),
    "rounds": (
        "DEFAULT_BATCH_SIZE",
        "is_source",
        "is_array",
        "Shard",
        "ONE_PROCESS",
        "process_share",
        "read_round",
        "SourceRounds",
        "EpochRounds",
        "StreamRounds",
        "check_enough",
        "group_minibatches",
        "check_divisible",
        "critic_rounds",
        "executions",
        "ExecutionRounds",
        "placed_ahead",
        "PlacedRounds",
    ),
    "features": ("toy_quality",),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name not in _HOME:
        raise AttributeError(f"module 'portable_wgangp.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"portable_wgangp.{_HOME[name]}"), name)


def __dir__() -> list[str]:
    return sorted(_HOME)
