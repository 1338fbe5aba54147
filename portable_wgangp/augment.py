"""Differentiable augmentation (DiffAugment, Zhao et al. 2020), written once in `keras.ops`.

The critic sees every sample, real or fake, through the same random augmentation, and the generator's
gradient flows through it. The transforms follow the official ``DiffAugment_pytorch.py``
(mit-han-lab/data-efficient-gans) on channels-last images ``(batch, H, W, C)`` in [-1, 1]:

- ``color``: brightness x + (u − ½); saturation (x − m_c)·2u + m_c with m_c the per-pixel mean over the
  channels; contrast (x − m)·(u + ½) + m with m the per-image mean; one u ~ U[0, 1) per image each.
- ``translation``: shift by integers (t_h, t_w) ~ U{−H//8..H//8} × U{−W//8..W//8}, zero fill:
  out[i, j] = x[i + t_h, j + t_w] where that lies in the image, else 0.
- ``cutout``: zero a (H//2) × (W//2) square whose top-left corner is (o_h − H//4, o_w − W//4), with
  o ~ U{0..H − (H//2 mod 2)} (clipped to the image).

Randomness is split from the transform: `draw` makes the uniform numbers, ``(batch, DRAWS)``, and
`apply` is a deterministic function of the images and those numbers, so the same numbers give the same
images on every backend, and the draws come from `portable_wgangp.rng`, the same on every backend too.
"""

from __future__ import annotations

from keras import ops

from portable_wgangp import rng

POLICIES = ("color", "translation", "cutout")
# Uniform numbers per image: brightness, saturation, contrast, t_h, t_w, o_h, o_w.
DRAWS = 7


def parse_policy(policy: str | None) -> tuple[str, ...]:
    """``"translation,cutout,color"`` → its names in order; ``None`` or ``""`` → ``()``.

    Raises a ValueError naming an unknown or repeated name and the choices.
    """
    names = tuple(name.strip() for name in (policy or "").split(",") if name.strip())
    for name in names:
        if name not in POLICIES:
            raise ValueError(
                f"Unknown augmentation {name!r}; choose from {', '.join(POLICIES)} (comma-separated)."
            )
    if len(set(names)) != len(names):
        raise ValueError(f"Augmentation policy {policy!r} names a transform twice; name each once.")
    return names


def draw(batch_size, seed=None):
    """The uniform numbers of one augmentation of a batch: ``(batch_size, DRAWS)``, U(0, 1), from
    `portable_wgangp.rng` (the same on every backend)."""
    return rng.uniform((batch_size, DRAWS), seed=seed)


def _integers(u, low: int, high: int):
    """``floor(u·(high − low)) + low``: uniform integers in [low, high) from u ~ U[0, 1), as float32."""
    return ops.minimum(ops.floor(u * (high - low)) + low, high - 1)


def _translate(x, u_h, u_w):
    """Zero-filled integer shift of ``x`` ``(B, H, W, C)``: out[b, i, j] = x[b, i + t_h, j + t_w].

    Written as one-hot shift matrices S_h ``(B, H, H)``, S_w ``(B, W, W)``: out = S_h · x · S_wᵀ, exact
    (each output is one input times 1) and differentiable.
    """
    height, width = x.shape[1], x.shape[2]
    t_h = _integers(u_h, -(height // 8), height // 8 + 1)
    t_w = _integers(u_w, -(width // 8), width // 8 + 1)

    def shift(t, size):
        rows = ops.arange(size, dtype="float32")
        return ops.cast(ops.equal(rows[None, None, :], rows[None, :, None] + t[:, None, None]), x.dtype)

    return ops.einsum("bip,bpqc,bjq->bijc", shift(t_h, height), x, shift(t_w, width))


def _cutout(x, u_h, u_w):
    """``x`` ``(B, H, W, C)`` with a (H//2) × (W//2) square of zeros per image (see the module doc)."""
    height, width = x.shape[1], x.shape[2]

    def band(u, size):
        cut = size // 2
        start = _integers(u, 0, size + 1 - cut % 2) - cut // 2
        index = ops.arange(size, dtype="float32")[None, :]
        return ops.logical_and(index >= start[:, None], index < start[:, None] + cut)

    inside = ops.logical_and(band(u_h, height)[:, :, None], band(u_w, width)[:, None, :])
    return x * ops.cast(ops.logical_not(inside), x.dtype)[..., None]


def apply(x, policy: tuple[str, ...], draws):
    """Augment images ``x`` ``(B, H, W, C)`` by ``policy`` (names of `POLICIES`, applied in order) with
    the uniform numbers ``draws`` ``(B, DRAWS)`` (see `draw`). Shapes and dtype are kept."""
    if not policy:
        return x
    if len(x.shape) != 4:
        raise ValueError(
            f"DiffAugment takes images (batch, height, width, channels), got shape {tuple(x.shape)}; "
            "drop the augmentation for non-image data."
        )
    draws = ops.cast(draws, x.dtype)
    per_image = [ops.reshape(draws[:, i], (-1, 1, 1, 1)) for i in range(3)]
    for name in policy:
        if name == "color":
            x = x + (per_image[0] - 0.5)
            pixel_mean = ops.mean(x, axis=3, keepdims=True)
            x = (x - pixel_mean) * (2.0 * per_image[1]) + pixel_mean
            image_mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
            x = (x - image_mean) * (per_image[2] + 0.5) + image_mean
        elif name == "translation":
            x = _translate(x, draws[:, 3], draws[:, 4])
        else:
            x = _cutout(x, draws[:, 5], draws[:, 6])
    return x
