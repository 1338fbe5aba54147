"""Backend-independent random numbers: threefry-2x32 (Salmon et al. 2011, JAX's own generator) in `keras.ops`.

Every random number of a run — the networks' initial weights, z, ε, the DiffAugment draws — comes from
here, so one seed gives the same numbers on TensorFlow, JAX and torch and on any number of replicas.

A draw is keyed by ``(seed, counter)``: the seed, and the number of draws made before it from the same
`keras.random.SeedGenerator` (its state is ``[seed, counter]``; Keras advances and saves it, so a resumed run
continues the same stream). Element ``i`` of a draw of ``n`` values hashes the block ``(i, 0)`` for
``i < ceil(n / 2)``; the block's two output words give elements ``i`` and ``ceil(n / 2) + i``.

Words are int32 tensors holding uint32 bit patterns: additions wrap modulo 2³² and shifts right are masked
to logical shifts, which every backend computes exactly (JAX runs 32-bit by default, and torch's CPU
kernels for uint32 are incomplete). A uniform takes the top 23 bits, ``u = (k + ½) / 2²³`` in (0, 1),
exact in float32; normals come by Box–Muller, whose logarithm, square root and sine differ between
backends only by float32 rounding.
"""

from __future__ import annotations

import math
import random

import keras
import numpy as np
from keras import ops

from portable_wgangp import backend

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_MANTISSA_BITS = 23


# TensorFlow's tensors define no shift operators; elsewhere the operators skip keras.ops's dispatch, which
# eager torch pays on every call (~20 µs).
_SHIFT_OPERATORS = keras.backend.backend() != "tensorflow"


def _shift_left(x, bits: int):
    return x << bits if _SHIFT_OPERATORS or isinstance(x, np.ndarray) else ops.left_shift(x, bits)


def _shift_right(x, bits: int):
    return x >> bits if _SHIFT_OPERATORS or isinstance(x, np.ndarray) else ops.right_shift(x, bits)


class _HostOps:
    """The few `keras.ops` a draw uses, in numpy: for the initial weights (drawn once, on the host, where
    JAX's eager dispatch would compile each operation for each new weight shape: ~9 s for two MLPs) and for
    every draw whose key is known on the host (`_draw`)."""

    arange, zeros_like, concatenate, reshape = np.arange, np.zeros_like, np.concatenate, np.reshape
    log, sqrt, cos, sin = np.log, np.sqrt, np.cos, np.sin

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype)

    @staticmethod
    def erfinv(x):
        from scipy.special import erfinv

        return erfinv(x).astype(x.dtype)


def _logical_right_shift(x, bits: int):
    """``x >>> bits`` of an int32 tensor: an arithmetic shift with the copied sign bits masked off."""
    return _shift_right(x, bits) & ((1 << (32 - bits)) - 1)


def _rotate_left(x, bits: int):
    return _shift_left(x, bits) | _logical_right_shift(x, 32 - bits)


def _signed(word: int) -> int:
    """A uint32 value as the int32 with the same bits."""
    word &= 0xFFFFFFFF
    return word - (1 << 32) if word >= 1 << 31 else word


def _as_word(value):
    """A Python int or an int32 tensor, as a word that adds to int32 tensors."""
    return _signed(value) if isinstance(value, int) else value


def threefry2x32(key, x0, x1):
    """Threefry-2x32 with 20 rounds: the block ``(x0, x1)`` (int32 tensors of one shape) under ``key``
    (two words: Python ints or int32 scalars); returns the two output words, int32, bit for bit JAX's
    ``threefry_2x32`` and Random123's ``threefry2x32_20``."""
    k0, k1 = (_as_word(word) for word in key)
    k2 = _signed(k0 ^ k1 ^ _PARITY) if isinstance(k0, int) and isinstance(k1, int) else k0 ^ k1 ^ _PARITY
    schedule = (k0, k1, k2)
    x0, x1 = x0 + k0, x1 + k1
    for group in range(5):
        for bits in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, bits) ^ x0
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + (schedule[(group + 2) % 3] + (group + 1))
    return x0, x1


def _size(shape):
    size = 1
    for dim in shape:
        size = size * dim
    return size


def _unit_pairs(size, key, xp=ops):
    """Two float32 vectors of ``ceil(size / 2)`` uniforms on (0, 1): the two words of the blocks
    ``(i, 0)``, ``i < ceil(size / 2)``, under ``key``, each ``(k + ½) / 2²³`` with k its top 23 bits.
    ``xp``: `keras.ops`, or `_HostOps` for numpy."""
    blocks = xp.arange((size + 1) // 2, dtype="int32")
    words = threefry2x32(key, blocks, xp.zeros_like(blocks))
    scale = 2.0**-_MANTISSA_BITS
    return [(xp.cast(_logical_right_shift(w, 32 - _MANTISSA_BITS), "float32") + 0.5) * scale for w in words]


def _shaped(halves, size, shape, xp=ops):
    """The two halves joined, cut to ``size`` values, in ``shape``."""
    values = xp.concatenate(halves)
    if not (isinstance(size, int) and size % 2 == 0):
        values = values[:size]
    return xp.reshape(values, shape)


def _uniform(shape, key, minval, maxval, xp):
    size = _size(shape)
    unit = _shaped(_unit_pairs(size, key, xp), size, shape, xp)
    return unit if (minval, maxval) == (0.0, 1.0) else unit * (maxval - minval) + minval


def _normal(shape, key, mean, stddev, xp):
    size = _size(shape)
    u, v = _unit_pairs(size, key, xp)
    radius = xp.sqrt(xp.log(u) * -2.0)
    angle = v * (2.0 * math.pi)
    return _shaped([radius * xp.cos(angle), radius * xp.sin(angle)], size, shape, xp) * stddev + mean


def _truncated_normal(shape, key, mean, stddev, xp):
    low = 0.5 * math.erfc(2.0 / math.sqrt(2.0))  # Φ(−2)
    u = _uniform(shape, key, low, 1.0 - low, xp)
    return xp.erfinv(u * 2.0 - 1.0) * (math.sqrt(2.0) * stddev) + mean


def _draw_key(seed):
    """The key of the next draw from ``seed``: a `SeedGenerator` (advanced), an int, None or a key (two
    ints); Python ints when the key can be read on the host without waiting for a device (`_draw`).

    A generator's state ``[seed, counter]`` is uint32 (JAX), int64 (TensorFlow) or int32 (torch): the seed's
    two 16-bit halves are read in that type, so the key has the same bits on every backend.
    """
    if isinstance(seed, keras.random.SeedGenerator):
        state = seed.next()
        on_host = backend.host_value(state)
        if on_host is not None:
            return int(on_host[0]) & 0xFFFFFFFF, int(on_host[1]) & 0xFFFFFFFF
        low, high = (ops.cast(part & 0xFFFF, "int32") for part in (state[0], _shift_right(state[0], 16)))
        return low | _shift_left(high, 16), ops.cast(state[1], "int32")
    if isinstance(seed, tuple):
        return seed
    seed = resolve_seed(seed)
    if not isinstance(seed, int):
        raise TypeError(f"seed must be a keras.random.SeedGenerator, an int, None or two ints, got {seed!r}.")
    return seed, 0


def _draw(distribution, shape, seed, *parameters):
    """``distribution(shape, key, *parameters, xp)`` for the next key of ``seed``: in numpy when the key is
    known on the host (an eager torch step on the CPU, an int seed), where ~150 tiny operations cost ~1 µs
    each instead of an eager framework's ~10 µs dispatch; else in `keras.ops` (compiled steps, a GPU)."""
    key = _draw_key(seed)
    if all(isinstance(value, (int, np.integer)) for value in (*key, *shape)):
        return ops.convert_to_tensor(distribution(shape, key, *parameters, _HostOps))
    return distribution(shape, key, *parameters, ops)


def uniform(shape, seed=None, minval: float = 0.0, maxval: float = 1.0):
    """float32 ``shape`` uniform on (minval, maxval), the next draw of ``seed`` (a `SeedGenerator`, which
    it advances; an int, which always gives the same draw; None, a seed from Python's `random`)."""
    return _draw(_uniform, shape, seed, minval, maxval)


def normal(shape, seed=None, mean: float = 0.0, stddev: float = 1.0):
    """float32 ``shape`` normal by Box–Muller: each block's uniforms (u, v) give
    ``√(−2 ln u) · cos 2πv`` and ``√(−2 ln u) · sin 2πv``."""
    return _draw(_normal, shape, seed, mean, stddev)


def truncated_normal(shape, seed=None, mean: float = 0.0, stddev: float = 1.0):
    """float32 ``shape`` normal truncated to two standard deviations (Keras's `TruncatedNormal`), by the
    inverse distribution function: u uniform on (Φ(−2), Φ(2)), z = √2 · erfinv(2u − 1)."""
    return _draw(_truncated_normal, shape, seed, mean, stddev)


def resolve_seed(seed: int | None) -> int:
    """``seed``, or one drawn from Python's `random` (which `keras.utils.set_random_seed` seeds)."""
    return random.randrange(1 << 32) if seed is None else seed


def _initial_value(initializer, shape, key):
    """The value Keras's ``initializer`` would give a variable of ``shape``, drawn here with ``key`` (a numpy
    array); None for an initializer that draws nothing (zeros, ones, constants)."""
    from keras.src.initializers.random_initializers import compute_fans

    inits = keras.initializers
    if isinstance(initializer, (inits.Zeros, inits.Ones, inits.Constant, inits.Identity)):
        return None
    if isinstance(initializer, inits.VarianceScaling):
        fan_in, fan_out = compute_fans(shape)
        fans = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}
        scale = initializer.scale / max(1.0, fans[initializer.mode])
        if initializer.distribution == "truncated_normal":  # stddev of N(0, 1) truncated to ±2: .8796
            return _truncated_normal(shape, key, 0.0, math.sqrt(scale) / 0.87962566103423978, _HostOps)
        if initializer.distribution == "untruncated_normal":
            return _normal(shape, key, 0.0, math.sqrt(scale), _HostOps)
        limit = math.sqrt(3.0 * scale)
        return _uniform(shape, key, -limit, limit, _HostOps)
    if isinstance(initializer, inits.RandomNormal):
        return _normal(shape, key, initializer.mean, initializer.stddev, _HostOps)
    if isinstance(initializer, inits.TruncatedNormal):
        return _truncated_normal(shape, key, initializer.mean, initializer.stddev, _HostOps)
    if isinstance(initializer, inits.RandomUniform):
        return _uniform(shape, key, initializer.minval, initializer.maxval, _HostOps)
    raise ValueError(
        f"{type(initializer).__name__} draws from Keras's per-backend generator, which portable_wgangp.rng "
        "does not reproduce; use a Glorot, He, LeCun, RandomNormal, RandomUniform or TruncatedNormal "
        "initializer."
    )


def _initialized_variables(model: keras.Model):
    """``(variable, initializer)`` of every variable of ``model``'s layers that Keras initialized from a
    layer's ``<name>_initializer`` (a Dense's kernel and bias, a BatchNorm's statistics, an Embedding), in
    layer order; a `SpectralNormalization`'s power-iteration vector u comes with Keras's
    ``TruncatedNormal``."""
    for layer in model._flatten_layers(include_self=False):
        for attribute in sorted(vars(layer)):
            if attribute.endswith("_initializer"):
                variable = getattr(layer, attribute.removesuffix("_initializer"), None)
                if isinstance(variable, keras.Variable):
                    yield variable, keras.initializers.get(getattr(layer, attribute))
        if isinstance(layer, keras.layers.SpectralNormalization):
            yield layer.vector_u, keras.initializers.TruncatedNormal(stddev=0.02)


def initialize(model: keras.Model, seed: int, stream: int = 0) -> keras.Model:
    """``model`` with its weights drawn again as its initializers would, from threefry-2x32: variable
    ``i`` (in layer order) from the key ``(seed, stream · 2¹⁶ + i)``, so the same seed gives the same
    weights on every backend. Returns ``model``."""
    for index, (variable, initializer) in enumerate(_initialized_variables(model)):
        value = _initial_value(initializer, tuple(variable.shape), (seed, (stream << 16) + index))
        if value is not None:
            variable.assign(value.astype(variable.dtype))
    return model
