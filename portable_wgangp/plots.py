"""Pictures (matplotlib, headless): what people would rather look at than read."""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Sequence

import numpy as np

CURVES = ("critic_loss", "gradient_penalty", "wasserstein_estimate", "generator_loss", "gradient_norm")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def toy_figure(
    path,
    generated: np.ndarray,
    real: np.ndarray | None = None,
    critic: Callable[[np.ndarray], np.ndarray] | None = None,
    title: str = "",
) -> pathlib.Path:
    """The paper's toy figure: real (orange) and generated (green) points over the critic's contours.

    ``critic`` maps points ``(N, 2)`` to scores ``(N,)``; it is drawn on a grid over the points' extent.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    points = generated if real is None else np.concatenate([real, generated])
    low, high = np.percentile(points, [0.5, 99.5], axis=0)
    margin = 0.15 * (high - low).max()
    low, high = low - margin, high + margin
    if critic is not None:
        xs, ys = np.linspace(low[0], high[0], 120), np.linspace(low[1], high[1], 120)
        grid = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype("float32")
        levels = ax.contourf(
            xs, ys, critic(grid).reshape(len(ys), len(xs)), levels=20, cmap="Blues", alpha=0.6
        )
        fig.colorbar(levels, ax=ax, fraction=0.046, pad=0.04, label="critic score")
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.6, label="real")
    ax.scatter(generated[:, 0], generated[:, 1], s=3, c="tab:green", alpha=0.6, label="generated")
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=2, markerscale=4, frameon=False)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)


def loss_curves(path, records: Sequence[dict], title: str = "") -> pathlib.Path:
    """The logged `CURVES` against the step (light: raw, dark: moving average of ~1 % of the run)."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(13, 6), dpi=100, sharex=True)
    axes[1, 2].axis("off")
    steps = np.array([r["step"] for r in records])
    window = max(1, len(records) // 100)
    for ax, name in zip(axes.ravel(), CURVES):
        values = np.array([r.get(name, np.nan) for r in records], dtype="float64")
        ax.plot(steps, values, color="tab:blue", alpha=0.25, linewidth=0.8)
        if len(values) >= window:
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            ax.plot(steps[window - 1 :], smooth, color="tab:blue", linewidth=1.5)
        ax.set_title(name)
        ax.grid(alpha=0.3)
    for ax in (*axes[1, :2], axes[0, 2]):
        ax.set_xlabel("generator step")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)


def image_grid(path, images: np.ndarray, rows: int, title: str = "") -> pathlib.Path:
    """Images ``(N, H, W, C)`` in [-1, 1] as a grid of ``rows`` rows (one row per class, say)."""
    plt = _pyplot()
    images = np.clip((np.asarray(images, dtype="float32") + 1.0) / 2.0, 0.0, 1.0)
    columns = int(np.ceil(len(images) / rows))
    height, width, channels = images.shape[1:]
    canvas = np.ones((rows * (height + 1) + 1, columns * (width + 1) + 1, channels), dtype="float32")
    for index, image in enumerate(images):
        r, c = divmod(index, columns)
        canvas[
            1 + r * (height + 1) : 1 + r * (height + 1) + height,
            1 + c * (width + 1) : 1 + c * (width + 1) + width,
        ] = image
    fig, ax = plt.subplots(figsize=(min(12, 0.5 + columns * 0.45), min(12, 0.5 + rows * 0.45)), dpi=100)
    ax.imshow(
        canvas[..., 0] if channels == 1 else canvas, cmap="gray" if channels == 1 else None, vmin=0, vmax=1
    )
    ax.axis("off")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)
