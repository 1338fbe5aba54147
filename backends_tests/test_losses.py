import numpy as np
import pytest
from conftest import assert_close, tensor

import portable_wgangp as pw

REAL = np.array([1.0, 2.0, 4.0, -1.0])
FAKE = np.array([0.5, -3.0, 0.0, 2.5])


@pytest.mark.parametrize("shape", [(4,), (4, 1)])
def test_losses_are_the_pinned_means(shape):
    real, fake = tensor(REAL.reshape(shape)), tensor(FAKE.reshape(shape))
    assert_close(pw.losses.critic_loss(real, fake), FAKE.mean() - REAL.mean())
    assert_close(pw.losses.generator_loss(fake), -FAKE.mean())
    assert_close(pw.losses.wasserstein_estimate(real, fake), REAL.mean() - FAKE.mean())
    assert_close(pw.losses.drift(real), np.mean(REAL**2))


def test_losses_are_float32_scalars_for_half_precision_scores():
    loss = pw.losses.critic_loss(tensor(REAL, "float16"), tensor(FAKE, "float16"))
    assert tuple(loss.shape) == ()
    assert "float32" in str(loss.dtype)
