"""Wasserstein losses, written once in `keras.ops`.

Every function takes critic scores of shape ``(batch,)`` or ``(batch, 1)`` and returns a float32 scalar,
whatever the dtype policy: the losses are reductions, and reductions run in float32.
"""

from __future__ import annotations

from keras import ops


def _scores(scores):
    """Critic scores as a float32 tensor of shape ``(batch,)``."""
    scores = ops.cast(scores, "float32")
    return ops.reshape(scores, (ops.shape(scores)[0], -1))[:, 0]


def wasserstein_estimate(real_scores, fake_scores):
    """Critic estimate of the Wasserstein-1 distance: ``mean(real) - mean(fake)``."""
    return ops.mean(_scores(real_scores)) - ops.mean(_scores(fake_scores))


def critic_loss(real_scores, fake_scores):
    """Critic's Wasserstein loss (to minimise): ``mean(fake) - mean(real)``."""
    return -wasserstein_estimate(real_scores, fake_scores)


def generator_loss(fake_scores):
    """Generator's Wasserstein loss (to minimise): ``-mean(fake)``."""
    return -ops.mean(_scores(fake_scores))


def drift(real_scores):
    """ProGAN's drift term ``mean(real**2)``, which keeps critic scores near zero (weight it by ε_drift)."""
    return ops.mean(ops.square(_scores(real_scores)))
