"""Reproduce Figure 1 of Gulrajani et al. 2017 (weight clipping vs the gradient penalty) with this library.

(a) Value surfaces of critics trained against a FIXED generator whose samples are the real data plus
    N(0, 1) noise (``gan_toy.py``'s FIXED_GENERATOR), on 8 gaussians, 25 gaussians and swissroll:
    weight clipping (c = 0.01) against the two-sided penalty (λ = 0.1, as gan_toy.py).
(b) Per-layer gradient norms ‖∂L/∂W_l‖ of the critic's loss (what its optimizer receives) for a
    12-layer ReLU critic on swissroll, averaged over the last 100 of its updates, for clipping
    c ∈ {0.1, 0.01, 0.001} and for the penalty (λ = 10 here, the paper's image setting).

Only the constraint differs: every critic is an MLP trained by Adam(1e-4, β 0.5, 0.9) for ``--updates``
updates of batch 256 (the penalty's critics by `pw.gradient_penalty`, the clipped ones clipped after each
update exactly as ``WGANGP(lipschitz="clip")`` does). Prints the figures quoted in
docs/training-features.md and writes docs/figure1.png. Runs on any backend; torch is the quickest for
these small eager loops:

    KERAS_BACKEND=torch python docs/figure1.py              # 15 minutes on 2 shared CPU cores
"""

from __future__ import annotations

import argparse
import json
import pathlib

import keras
import numpy as np
from keras import ops

import portable_wgangp as pw
from portable_wgangp import backend, data

BATCH = 256


def train_critic(critic, dataset, *, clip=None, gp_weight=0.0, updates=1000, seed=0, record_from=None):
    """Train ``critic`` against real + N(0, 1); returns the mean per-layer gradient norms of its loss
    (one per Dense kernel) over the updates from ``record_from`` on (None: not recorded)."""
    rng = np.random.default_rng(seed)
    optimizer = keras.optimizers.Adam(1e-4, beta_1=0.5, beta_2=0.9)
    variables = critic.trainable_variables
    optimizer.build(variables)
    kernels = [i for i, v in enumerate(variables) if len(v.shape) == 2]
    recorded = []
    for step in range(updates):
        real = ops.convert_to_tensor(data.toy_samples(dataset, BATCH, rng))
        fake = real + ops.convert_to_tensor(rng.standard_normal((BATCH, 2)).astype("float32"))

        def objective(real=real, fake=fake):
            wasserstein = -pw.losses.wasserstein_estimate(critic(real), critic(fake))
            penalty = pw.gradient_penalty(critic, real, fake) if gp_weight else 0.0
            return wasserstein + gp_weight * penalty, wasserstein

        _, _, grads = backend.value_and_grad(objective, variables)
        if record_from is not None and step >= record_from:
            recorded.append([float(ops.norm(ops.reshape(grads[i], (-1,)))) for i in kernels])
        backend.apply_gradients(optimizer, grads, variables)
        if clip is not None:
            for variable in variables:
                variable.assign(ops.clip(variable, -clip, clip))
    return np.mean(recorded, axis=0) if recorded else None


def value_surface(critic, extent=2.0, size=100):
    xs = np.linspace(-extent, extent, size, dtype="float32")
    grid = np.stack(np.meshgrid(xs, xs), axis=-1).reshape(-1, 2)
    return xs, ops.convert_to_numpy(critic(grid))[:, 0].reshape(size, size)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=1000, help="critic updates per critic (default 1000)")
    parser.add_argument("--out", default=str(pathlib.Path(__file__).with_name("figure1.png")))
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keras.utils.set_random_seed(0)
    fig = plt.figure(figsize=(13, 7.5), dpi=100)
    grid = fig.add_gridspec(2, 4)
    summary = {"surfaces": {}, "layer_norms": {}}
    for column, dataset in enumerate(data.TOY_DATASETS):
        real = data.toy_samples(dataset, 500, np.random.default_rng(1))
        for row, (name, kwargs) in enumerate((("clipping", {"clip": 0.01}), ("penalty", {"gp_weight": 0.1}))):
            critic = pw.nets.mlp(2, 1, width=256, depth=3)
            train_critic(critic, dataset, updates=args.updates, **kwargs)
            xs, values = value_surface(critic)
            ax = fig.add_subplot(grid[row, column])
            ax.contourf(xs, xs, values, levels=20, cmap="viridis")
            ax.scatter(real[:, 0], real[:, 1], s=1, c="tab:orange")
            ax.set_title(f"{dataset}: {name}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            weights = np.concatenate([w.ravel() for w in critic.get_weights()])
            summary["surfaces"][f"{dataset}/{name}"] = {
                "value_range": float(values.max() - values.min()),
                "weights_at_bound": float(np.mean(np.abs(weights) >= 0.0099)) if name == "clipping" else None,
            }
    ax = fig.add_subplot(grid[:, 3])
    settings = [(f"clipping c={c}", {"clip": c}) for c in (0.1, 0.01, 0.001)]
    settings.append(("gradient penalty", {"gp_weight": 10.0}))
    for name, kwargs in settings:
        critic = pw.nets.mlp(2, 1, width=128, depth=12)
        norms = train_critic(
            critic, "swissroll", updates=args.updates, record_from=args.updates - 100, **kwargs
        )
        drawn = np.log10(np.maximum(norms, 1e-38))  # exact zeros (float32 underflow) drawn at 1e-38
        ax.plot(np.arange(1, len(norms) + 1), drawn, marker="o", markersize=3, label=name)
        summary["layer_norms"][name] = [float(v) for v in norms]
    ax.set_xlabel("critic layer")
    ax.set_ylabel("log10 ‖∂L/∂W‖")
    ax.set_title("(b) swissroll, 12-layer critic", fontsize=9)
    ax.legend(fontsize=8)
    fig.suptitle(f"(a) critic value surfaces against real + N(0, 1), {args.updates} Adam updates each")
    fig.tight_layout()
    fig.savefig(args.out)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
