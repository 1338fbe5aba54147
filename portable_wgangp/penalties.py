"""Gradient penalties (Gulrajani et al. 2017 and relatives), written once in `keras.ops`.

Shapes: ``real`` and ``fake`` are ``(batch, *sample_shape)``; the critic maps them to ``(batch,)`` or
``(batch, 1)`` scores. The only framework-specific piece, the gradient of the critic w.r.t. its input,
comes from :func:`portable_wgangp.backend.input_gradient`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from keras import ops

from portable_wgangp import rng
from portable_wgangp.backend import input_gradient

PENALTY_MODES = ("two_sided", "one_sided", "zero_centered")


def check_mode(mode: str) -> str:
    """Return ``mode`` if it names a penalty, else raise a ValueError that lists the choices."""
    if mode not in PENALTY_MODES:
        raise ValueError(f"Unknown penalty mode {mode!r}; choose one of {', '.join(PENALTY_MODES)}.")
    return mode


def safe_norm(g):
    """Per-sample Euclidean norm over all non-batch axes: ``(batch, ...) -> (batch,)``, in float32.

    Exact where the norm is positive and with a zero (not NaN) derivative where it is 0: the square root
    only ever sees positive arguments (the "double where" trick), so no epsilon biases the value.
    """
    g = ops.cast(g, "float32")
    squares = ops.sum(ops.square(ops.reshape(g, (ops.shape(g)[0], -1))), axis=1)
    positive = squares > 0.0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


def interpolate(real, fake, epsilon):
    """``x_hat = epsilon * real + (1 - epsilon) * fake`` in float32 (epsilon weights the REAL sample).

    ``epsilon``: shape ``(batch,)`` or anything broadcastable to ``real`` such as ``(batch, 1, ...)``.
    """
    real = ops.cast(real, "float32")
    fake = ops.cast(fake, "float32")
    epsilon = ops.cast(epsilon, "float32")
    if len(epsilon.shape) == 1:
        epsilon = ops.reshape(epsilon, (-1,) + (1,) * (len(real.shape) - 1))
    return epsilon * real + (1.0 - epsilon) * fake


def _compatible(shape_a, shape_b) -> bool:
    """Equal shapes, where a dimension unknown at trace time (None) matches any size."""
    return len(shape_a) == len(shape_b) and all(
        a is None or b is None or a == b for a, b in zip(shape_a, shape_b)
    )


def _check_epsilon_shape(shape: tuple, sample_shape: tuple) -> None:
    """ε is one weight per sample: shape ``(batch,)`` or ``(batch, 1, ...)`` broadcastable to the samples."""
    batch = sample_shape[0]
    known = isinstance(batch, int) and isinstance(shape[0], int) if shape else True
    per_sample = len(shape) >= 1 and (not known or shape[0] == batch) and all(d == 1 for d in shape[1:])
    if not per_sample or len(shape) > len(sample_shape):
        raise ValueError(
            f"epsilon must hold one weight per sample, shape ({batch},) or ({batch}, 1, ...), got {shape}; "
            "pass one interpolation weight per sample."
        )


def uniform_epsilon(batch_size, seed=None):
    """Per-sample interpolation weights ε ~ U(0, 1), shape ``(batch,)``, from `portable_wgangp.rng` (``seed``:
    a `keras.random.SeedGenerator`, an int or None), the same on every backend."""
    return rng.uniform((batch_size,), seed=seed)


def penalty_from_norms(norms, mode: str = "two_sided", target: float = 1.0):
    """Mean penalty over the batch from per-sample gradient norms ``(batch,)``, as a float32 scalar.

    two_sided: E[(‖g‖/t − 1)²]; one_sided: E[max(0, ‖g‖/t − 1)²]; zero_centered: E[‖g‖²].
    """
    check_mode(mode)
    if mode == "zero_centered":
        return ops.mean(ops.square(norms))
    excess = norms / target - 1.0
    if mode == "one_sided":
        excess = ops.maximum(excess, 0.0)
    return ops.mean(ops.square(excess))


def gradient_norms(critic: Callable, real, fake=None, *, epsilon=None, seed=None, loss_scale=None):
    """Per-sample norms ‖∇ₓ critic(x̂)‖ ``(batch,)`` (float32) at x̂ = ε·real + (1 − ε)·fake.

    ε ~ U[0, 1] per sample (drawn with ``seed``) unless ``epsilon`` is given (shape ``(batch,)`` or
    ``(batch, 1, ...)``); with ``fake=None`` the gradient is taken at the real samples. Differentiable
    w.r.t. the critic's weights: `gradient_penalty` and the logged ``gradient_norm`` share this one input
    gradient. ``loss_scale``: see `scaled_input_gradient`.
    """
    if fake is None:
        points = ops.cast(real, "float32")
    else:
        if not _compatible(real.shape, fake.shape):
            raise ValueError(
                f"real and fake samples must have the same shape, got {tuple(real.shape)} and "
                f"{tuple(fake.shape)}; pass batches of equal size drawn from the same space."
            )
        if epsilon is None:
            epsilon = uniform_epsilon(ops.shape(real)[0], seed=seed)
        epsilon = ops.convert_to_tensor(epsilon)
        _check_epsilon_shape(tuple(epsilon.shape), tuple(real.shape))
        points = interpolate(real, fake, epsilon)
    return safe_norm(scaled_input_gradient(critic, points, loss_scale))


def scaled_input_gradient(critic: Callable, points, loss_scale=None):
    """∇ₓ Σ critic(x) at ``points`` in float32; as ∇ₓ Σ S·critic(x) / S when ``loss_scale`` S is given.

    Under float16 the backward pass through the critic's float16 layers then carries S-times larger
    values that do not underflow (PyTorch's AMP recipe for gradient penalties; TF issue #48662); the
    unscaling and the norm are float32.
    """
    if loss_scale is None:
        return ops.cast(input_gradient(critic, points), "float32")
    scale = ops.cast(loss_scale, "float32")

    def scaled(x, **kwargs):
        return ops.cast(critic(x, **kwargs), "float32") * scale

    return ops.cast(input_gradient(scaled, points), "float32") / scale


def check_target(target) -> float:
    """Return ``target`` as a float if it is a finite number > 0, else raise a ValueError."""
    if isinstance(target, bool) or not (
        isinstance(target, (int, float)) and math.isfinite(target) and target > 0
    ):
        raise ValueError(f"target must be a finite number > 0, got {target!r}.")
    return float(target)


def gradient_penalty(
    critic: Callable,
    real,
    fake=None,
    *,
    epsilon=None,
    mode: str = "two_sided",
    target: float = 1.0,
    seed=None,
    loss_scale=None,
):
    """Gradient penalty of ``critic`` at interpolates of ``real`` and ``fake`` (a float32 scalar).

    x_hat = ε·real + (1 − ε)·fake with ε ~ U[0, 1] per sample (drawn with ``seed``) unless ``epsilon`` is
    given; g = ∇ₓ critic(x_hat) per sample; the penalty is :func:`penalty_from_norms` of ‖g‖
    (:func:`gradient_norms`). In mode ``zero_centered`` with ``fake=None`` the gradient is taken at the real
    samples (R1). The result is differentiable w.r.t. the critic's weights on every backend.
    ``loss_scale`` S (float16 critics): the input gradient is taken on S·critic and unscaled in float32
    (`scaled_input_gradient`).
    """
    check_mode(mode)
    check_target(target)
    if fake is None and mode != "zero_centered":
        raise ValueError(
            f"Penalty mode {mode!r} needs fake samples; pass `fake`, or use mode='zero_centered'."
        )
    norms = gradient_norms(critic, real, fake, epsilon=epsilon, seed=seed, loss_scale=loss_scale)
    return penalty_from_norms(norms, mode=mode, target=target)
