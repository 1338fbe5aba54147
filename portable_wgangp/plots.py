"""Pictures (matplotlib, headless): what people would rather look at than read."""

from __future__ import annotations

import pathlib

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def scatter_points(
    path, generated: np.ndarray, real: np.ndarray | None = None, title: str = ""
) -> pathlib.Path:
    """2-D samples as a scatter plot (real points in orange behind the generated ones in green)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5), dpi=100)
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, c="tab:orange", alpha=0.5, label="real")
    ax.scatter(generated[:, 0], generated[:, 1], s=3, c="tab:green", alpha=0.6, label="generated")
    ax.set_aspect("equal")
    ax.legend(loc="upper right", markerscale=4)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return pathlib.Path(path)
