"""A training run's settings: defaults, presets, a TOML file and flags, resolved and checked up front.

Resolution order (later wins): `TrainConfig`'s defaults < the dataset's tuned defaults < ``--preset`` <
``--config FILE.toml`` < explicit flags. `validate` checks every value before anything is written, and
`check_resume` decides which settings a resumed run may change (`RESUMABLE`).
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib

from portable_wgangp.datasets import TOY_DATASETS
from portable_wgangp.errors import UserError


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``OUT/config.json`` (``--resume`` reads it back)."""

    dataset: str = "gaussians8"
    model: str = "mlp"
    steps: int = 5000
    batch_size: int = 256
    n_critic: int = 2
    gp_weight: float = 0.1
    penalty: str = "two_sided"
    lr: float = 2e-3
    lr_decay: str = "linear"
    beta_1: float = 0.0
    beta_2: float = 0.9
    latent_dim: int = 2
    width: int = 128
    depth: int = 3
    seed: int = 0
    strategy: str = "auto"
    checkpoint_every: int = 1000
    steps_per_execution: int = 1  # generator steps per call of the compiled step (TPUs, small networks)
    jit_compile: bool = False  # torch: capture and compile the whole step (JAX and TensorFlow always do)
    conditional: bool = False
    critic_head: str = "projection"  # how a conditional critic takes the labels: projection or ac (AC-WGAN)
    base: int = 32
    image_size: int = 32
    eval_every: int = 0
    extractor: str = ""
    workers: int = 2  # threads that read and decode images:DIR ahead of the step (0: read in the step)
    # Training like the best GAN codebases (see WGANGP's arguments of the same names):
    ema: bool = False  # sample and evaluate with an EMA of the generator's weights
    ema_decay: float = 0.999
    gp_every: int = 1  # lazy penalty: on every K-th critic update, weighted by K
    augment: str = ""  # DiffAugment policy, e.g. translation,cutout,color (images only)
    lr_critic: float | None = None  # TTUR: each network's learning rate (None: --lr)
    lr_generator: float | None = None
    lipschitz: str = "penalty"  # penalty, clip (the original WGAN, RMSprop) or spectral
    clip_value: float = 0.01


# Each setting's type: "int", "float", "str" or "bool" (an optional one, "float | None", counts as "float";
# None means "unset" and is filled in by `resolve`).
FIELDS = {f.name: f.type.split(" | ")[0] for f in dataclasses.fields(TrainConfig)}
# Settings a resumed run may change: they alter neither the maths nor the data of the steps to come
# (the global batch is the same whatever the strategy's replica count).
RESUMABLE = (
    "steps",
    "checkpoint_every",
    "steps_per_execution",
    "jit_compile",
    "strategy",
    "eval_every",
    "extractor",
    "workers",
)
# Image data (digits, npz:, npy:, images:): DCGAN nets, the paper's λ 10 and n_critic 5.
IMAGE_DEFAULTS = {
    "model": "dcgan",
    "steps": 2000,
    "batch_size": 64,
    "n_critic": 5,
    "gp_weight": 10.0,
    "lr": 1e-3,
    "latent_dim": 32,
    "checkpoint_every": 500,
}
# Tuned per dataset (see docs/defaults-study.md); flags, --config and --preset override them.
DATASET_DEFAULTS: dict[str, dict] = {"gaussians8": {}, "gaussians25": {"steps": 10000}, "swissroll": {}}
# The paper's gan_toy.py exactly: 3×512 ReLU MLPs, 2-d noise, batch 256, 5 critic steps, λ 0.1, Adam 1e-4
# with β (0.5, 0.9), no decay, 100,000 generator steps. For the 2-D toy datasets only.
# cifar10: gan_cifar_resnet.py's unconditional run (Inception Score 7.86 in the paper's Table 3): the 32×32
# ResNet with 128 channels, 128-d noise, batch 64, 5 critic steps, λ 10, Adam 2e-4 with β (0, 0.9), decayed
# linearly to 0 over 100,000 generator steps. cifar10-conditional: the same with the labels, conditional
# BatchNorm in the generator and an auxiliary-classifier critic (AC-WGAN, 8.42). For cifar10:PATH only.
CIFAR10_PRESET = {
    "model": "resnet",
    "base": 128,
    "latent_dim": 128,
    "batch_size": 64,
    "n_critic": 5,
    "gp_weight": 10.0,
    "penalty": "two_sided",
    "lr": 2e-4,
    "lr_decay": "linear",
    "beta_1": 0.0,
    "beta_2": 0.9,
    "steps": 100000,
    "conditional": False,
}
PRESETS = {
    "paper": {
        "width": 512,
        "depth": 3,
        "latent_dim": 2,
        "batch_size": 256,
        "n_critic": 5,
        "gp_weight": 0.1,
        "lr": 1e-4,
        "lr_decay": "constant",
        "beta_1": 0.5,
        "beta_2": 0.9,
        "steps": 100000,
    },
    "cifar10": CIFAR10_PRESET,
    "cifar10-conditional": {**CIFAR10_PRESET, "conditional": True, "critic_head": "ac"},
}
# --lipschitz clip is the original WGAN (Arjovsky et al. 2017): RMSprop at 5e-5 (explicit flags override).
LIPSCHITZ_DEFAULTS = {"clip": {"lr": 5e-5}}
CHOICES = {
    "penalty": ("two_sided", "one_sided", "zero_centered"),
    "lr_decay": ("linear", "constant"),
    "lipschitz": ("penalty", "clip", "spectral"),
    "critic_head": ("projection", "ac"),
}
# Integer settings and their least value.
MINIMA = {
    "steps": 1,
    "batch_size": 1,
    "n_critic": 1,
    "latent_dim": 1,
    "width": 1,
    "depth": 1,
    "seed": 0,
    "checkpoint_every": 1,
    "steps_per_execution": 1,
    "eval_every": 0,
    "base": 1,
    "image_size": 8,
    "gp_every": 1,
    "workers": 0,
}
# The generator of a run's random numbers (`portable_wgangp.rng`): config.json records it, --resume insists.
RANDOM_NUMBERS = "threefry2x32"
MAX_SEED = 2**32 - 1  # numpy's and Keras's global seeds are 32-bit


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def is_toy(dataset: str) -> bool:
    return dataset in TOY_DATASETS


def dataset_defaults(dataset: str) -> dict:
    """The tuned defaults of ``dataset``: per toy dataset, or those of all image data (a new dict)."""
    if is_toy(dataset):
        return dict(DATASET_DEFAULTS.get(dataset, {}))  # a copy: callers add to it
    return {**IMAGE_DEFAULTS, **DATASET_DEFAULTS.get(dataset, {})}


def requested_values(given: dict, config_file: str | None = None, preset: str | None = None) -> dict:
    """The settings the user asked for (``--preset``, then the TOML file, then flags), without defaults.

    ``given``: explicit flags (None for a flag not given is allowed and ignored).
    """
    from_file = read_toml(config_file) if config_file else {}
    if preset is not None and preset not in PRESETS:
        raise UserError(f"Unknown preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    given = {name: value for name, value in given.items() if value is not None}
    return {**PRESETS.get(preset, {}), **from_file, **given}


def resolve(requested: dict, preset: str | None = None) -> TrainConfig:
    """The full, validated configuration: defaults < the dataset's defaults < ``requested``."""
    dataset = requested.get("dataset", TrainConfig.dataset)
    if preset is not None:
        check_preset(preset, dataset)
    lipschitz = LIPSCHITZ_DEFAULTS.get(requested.get("lipschitz", TrainConfig.lipschitz), {})
    config = _with_rates(TrainConfig(**{**dataset_defaults(dataset), **lipschitz, **requested}))
    validate(config)
    return config


def is_cifar10(dataset: str) -> bool:
    kind, _, rest = dataset.partition(":")
    return kind == "cifar10" and bool(rest)


def check_preset(preset: str, dataset: str) -> None:
    """Refuse a preset on data it was not made for: ``paper`` is for the 2-D toys, ``cifar10`` and
    ``cifar10-conditional`` for ``cifar10:PATH``."""
    if preset == "paper" and not is_toy(dataset):
        raise UserError(
            f"--preset {preset} is gan_toy.py's setting for the 2-D toy datasets "
            f"({', '.join(TOY_DATASETS)}), not for {dataset}; drop --preset."
        )
    if preset.startswith("cifar10") and not is_cifar10(dataset):
        raise UserError(
            f"--preset {preset} is gan_cifar_resnet.py's setting for CIFAR-10, not for {dataset}; pass "
            "--dataset cifar10:PATH (cifar-10-python.tar.gz or cifar-10-batches-py/) or drop --preset."
        )


def _with_rates(config: TrainConfig) -> TrainConfig:
    """``config`` with an unset ``lr_critic`` / ``lr_generator`` set to ``lr`` (--lr sets both)."""
    for name in ("lr_critic", "lr_generator"):
        if getattr(config, name) is None:
            setattr(config, name, config.lr)
    return config


def read_toml(path) -> dict:
    """The settings of a TOML file (keys as the flags, ``-`` or ``_``), each checked for its type."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except FileNotFoundError as error:
        raise UserError(f"No config file at {str(path)!r}; pass the path of a TOML file.") from error
    except IsADirectoryError as error:
        raise UserError(f"--config {str(path)!r} is a folder; pass the path of a TOML file.") from error
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"The config file {str(path)!r} is not valid TOML: {error}.") from error
    table = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise UserError(f"Unknown keys {unknown} in {str(path)!r}; known keys: {', '.join(FIELDS)}.")
    return {key: _typed(key, value, path) for key, value in table.items()}


_TYPE_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _typed(key: str, value, path):
    """``value`` as the type of setting ``key``; a UserError names the key and the expected type."""
    kind = FIELDS[key]
    fits = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
    }[kind]
    if not fits:
        raise UserError(
            f"{key} in {str(path)!r} must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__})."
        )
    return float(value) if kind == "float" else value


def validate(config: TrainConfig) -> None:
    """Every setting in range and every choice known; a UserError names the setting and the fix."""
    from portable_wgangp import distribution

    for name, least in MINIMA.items():
        value = getattr(config, name)
        if value < least:
            raise UserError(f"{flag(name)} must be at least {least}, got {value}.")
    if config.seed > MAX_SEED:
        raise UserError(f"--seed must be at most {MAX_SEED}, got {config.seed}.")
    for name in ("lr", "lr_critic", "lr_generator", "clip_value"):
        value = getattr(config, name)
        if value is not None and not (math.isfinite(value) and value > 0):
            raise UserError(f"{flag(name)} must be a finite number > 0, got {value}.")
    if not 0 <= config.ema_decay < 1:
        raise UserError(f"--ema-decay must lie in [0, 1), got {config.ema_decay}.")
    if config.gp_every > 1 and config.lipschitz != "penalty":
        raise UserError(
            f"--gp-every schedules the gradient penalty, which --lipschitz {config.lipschitz} does without; "
            "drop --gp-every."
        )
    if not (math.isfinite(config.gp_weight) and config.gp_weight >= 0):
        raise UserError(f"--gp-weight must be a finite number >= 0, got {config.gp_weight}.")
    for name in ("beta_1", "beta_2"):
        if not 0 <= getattr(config, name) < 1:
            raise UserError(f"{flag(name)} must lie in [0, 1), got {getattr(config, name)}.")
    for name, choices in CHOICES.items():
        if getattr(config, name) not in choices:
            raise UserError(f"Unknown {name} {getattr(config, name)!r}; choose one of {', '.join(choices)}.")
    distribution.check_strategy(config.strategy)
    _validate_data_and_model(config)


def _validate_data_and_model(config: TrainConfig) -> None:
    from portable_wgangp.augment import parse_policy

    try:
        parse_policy(config.augment)
    except ValueError as error:
        raise UserError(f"--augment: {error}") from error
    if is_toy(config.dataset):
        if config.model != "mlp":
            raise UserError(f"Unknown model {config.model!r} for 2-D data; choose mlp.")
        if config.conditional:
            raise UserError(f"{config.dataset} has no labels; drop --conditional.")
        if config.extractor:
            raise UserError(f"--extractor measures images; {config.dataset} is 2-D points: drop it.")
        if config.augment:
            raise UserError(
                f"--augment transforms images, and {config.dataset} is 2-D points; drop --augment."
            )
        return
    if config.lipschitz == "spectral" and config.model == "resnet":
        raise UserError("--lipschitz spectral is built for --model dcgan (and mlp), not resnet; use dcgan.")
    kind, _, rest = config.dataset.partition(":")
    if config.dataset != "digits" and not (kind in ("npz", "npy", "images", "cifar10") and rest):
        raise UserError(
            f"Unknown dataset {config.dataset!r}; use {', '.join(TOY_DATASETS)}, digits, npz:PATH[:KEY], "
            "npy:PATH[:LABELS], images:DIR or cifar10:PATH."
        )
    if config.critic_head == "ac" and not config.conditional:
        raise UserError("--critic-head ac classifies the labels of a --conditional model; add --conditional.")
    if config.model not in ("dcgan", "resnet"):
        raise UserError(f"Unknown model {config.model!r} for images; choose dcgan or resnet.")
    if config.extractor:
        check_extractor(config.extractor)
    if kind == "images" and config.model == "dcgan" and config.image_size not in (8, 16, 32, 64):
        raise UserError(f"--image-size must be 8, 16, 32 or 64 for --model dcgan, got {config.image_size}.")


EXTRACTORS = ("digits-mlp64", "pixels-8x8", "inception-v3", "inception-fid:PATH")


def check_extractor(spec: str) -> None:
    """Refuse an unknown feature extractor, or an FID Inception whose weight file is missing."""
    name, _, path = spec.partition(":")
    if spec not in EXTRACTORS[:3] and not (name == "inception-fid" and path):
        raise UserError(f"Unknown --extractor {spec!r}; choose one of {', '.join(EXTRACTORS)}.")
    if name == "inception-fid" and not pathlib.Path(path).is_file():
        raise UserError(
            f"No weight file {path!r} for --extractor inception-fid:PATH; convert pytorch-fid's weights as "
            "docs/metrics.md shows."
        )


def saved_form(config: TrainConfig) -> dict:
    """What ``config.json`` holds: the settings and the generator of the run's random numbers."""
    return {**dataclasses.asdict(config), "random_numbers": RANDOM_NUMBERS}


def load_saved(path: pathlib.Path, *, resuming: bool = False) -> TrainConfig:
    """The configuration a run saved in ``config.json``; a UserError when it is not one, or (``resuming``)
    when its random numbers came from another generator than `RANDOM_NUMBERS`."""
    try:
        values = json.loads(path.read_text())
        if not isinstance(values, dict):
            raise ValueError("not a JSON object")
        drawn = values.pop("random_numbers", "keras")  # earlier runs drew from Keras's per-backend generators
        if resuming and drawn != RANDOM_NUMBERS:
            raise UserError(
                f"{path} is a run whose random numbers came from {drawn!r}, and this version draws them from "
                f"{RANDOM_NUMBERS!r}, so it cannot continue that run: resume it with the version that began "
                "it, or start a new run with --overwrite."
            )
        return _with_rates(TrainConfig(**values))
    except (ValueError, TypeError) as error:
        raise UserError(
            f"{path} is not a portable-wgangp run configuration ({error}); start a new run with --overwrite."
        ) from error


def check_resume(saved: TrainConfig, requested: dict, where) -> TrainConfig:
    """The saved configuration with the `RESUMABLE` settings of ``requested`` applied.

    Any other requested setting that differs from the saved one is refused, naming it, its saved value
    and how to start a new run instead.
    """
    for name, value in requested.items():
        saved_value = getattr(saved, name)
        same = (
            saved_value is not None and math.isclose(float(value), float(saved_value), rel_tol=1e-12)
            if FIELDS[name] == "float"
            else value == saved_value
        )
        if not same and name not in RESUMABLE:
            raise UserError(
                f"{flag(name)} {value} differs from the run's {name} = {saved_value} ({where}); a resumed "
                f"run keeps its settings (only {', '.join(map(flag, RESUMABLE))} may change): drop "
                f"{flag(name)}, or start a new run in another --out or with --overwrite."
            )
    config = dataclasses.replace(saved, **{k: v for k, v in requested.items() if k in RESUMABLE})
    validate(config)
    return config
