"""Reading ``train``'s checkpoints: only portable-wgangp models, checked against the run they resume."""

from __future__ import annotations

import math
import os

from portable_wgangp.config import TrainConfig
from portable_wgangp.errors import UserError


def load(path):
    """The `WGANGP` saved at ``path`` (a file or an object-store URL); a `UserError` when it is missing or
    is not one."""
    from portable_wgangp import storage

    if storage.is_url(path):
        with storage.local_copy(str(path)) as copy:
            return _load(copy, shown=storage.shown(str(path)))
    return _load(path, shown=str(path))


def _load(path, shown: str):
    import keras

    from portable_wgangp.model import WGANGP

    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"No checkpoint at {shown!r}; pass the .keras file that train wrote.")
    try:
        model = keras.models.load_model(path)
    except Exception as error:
        raise UserError(
            f"{shown!r} is not a portable-wgangp checkpoint (Keras cannot load it: "
            f"{type(error).__name__}); pass the checkpoint.keras that train wrote."
        ) from error
    if not isinstance(model, WGANGP):
        raise UserError(
            f"{shown!r} is not a portable-wgangp checkpoint (it holds a {type(model).__name__}); "
            "pass the checkpoint.keras that train wrote."
        )
    return model


def check_matches(gan, config: TrainConfig, task, path) -> None:
    """Refuse a checkpoint that does not belong to the run configured by ``config`` on ``task``'s data."""
    from portable_wgangp.augment import parse_policy

    optimizer = getattr(gan.generator_optimizer, "inner_optimizer", gan.generator_optimizer)
    pairs = {
        "latent_dim": (gan.latent_dim, config.latent_dim),
        "n_critic": (gan.n_critic, config.n_critic),
        "gp_weight": (gan.gp_weight, config.gp_weight),
        "penalty": (gan.penalty, config.penalty),
        "seed": (gan.seed, config.seed),
        "conditional": (gan.num_classes is not None, config.conditional),
        "ema": (gan.ema_generator is not None, config.ema),
        "gp_every": (gan.gp_every, config.gp_every),
        "augment": (gan.augment, parse_policy(config.augment)),
        "lipschitz": (gan.lipschitz, config.lipschitz),
        # RMSprop (lipschitz "clip") has no betas: nothing to compare there
        "beta_1": (float(getattr(optimizer, "beta_1", config.beta_1)), config.beta_1),
        "beta_2": (float(getattr(optimizer, "beta_2", config.beta_2)), config.beta_2),
    }
    for name, (saved, configured) in pairs.items():
        same = (
            math.isclose(saved, configured, rel_tol=1e-6)
            if isinstance(configured, float)
            else saved == configured
        )
        if not same:
            raise UserError(
                f"{path} does not belong to the run in config.json beside it ({name}: {saved} in the "
                f"checkpoint, {configured} in config.json); start a new run with --overwrite."
            )
    check_sample_shape(gan, task.sample_shape, config.dataset)


def check_sample_shape(gan, sample_shape: tuple, dataset: str) -> None:
    """Refuse data whose samples have another shape than the checkpoint's generator makes."""
    if tuple(gan.sample_shape) != tuple(sample_shape):
        raise UserError(
            f"The checkpoint makes samples of shape {tuple(gan.sample_shape)} but {dataset} has samples of "
            f"shape {tuple(sample_shape)}; use the data it was trained on."
        )
