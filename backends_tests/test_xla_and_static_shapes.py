"""The step as TPUs compile it: XLA (TensorFlow's `jit_compile=True`; JAX always) and static shapes."""

import keras
import numpy as np
import pytest
from conftest import BACKEND

from portable_wgangp import check, data

XLA_REASON = {
    "jax": "JAX compiles every step with XLA already (the whole suite is the XLA test)",
    "torch": "torch has no XLA here (torch.compile cannot take the penalty's double backward)",
}


def linear_weights(jit_compile: bool) -> list[np.ndarray]:
    gan, x, batch = check.linear_run()
    gan.compile(
        generator_optimizer=keras.optimizers.SGD(0.05),
        critic_optimizer=keras.optimizers.SGD(0.05),
        jit_compile=jit_compile,
    )
    gan.fit(x, batch_size=batch, epochs=1, shuffle=False, verbose=0)
    return gan.get_weights()


@pytest.mark.skipif(BACKEND != "tensorflow", reason=XLA_REASON.get(BACKEND, ""))
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_tensorflow_xla_step_equals_the_graph_step(policy):
    """The closed-form linear step (fixed noise) compiled by XLA gives the graph step's weights (float32:
    exactly; bfloat16: within its rounding). With random noise the two differ: TF's random kernels draw
    other numbers under XLA."""
    with check.dtype_policy(policy):
        compiled, graph = linear_weights(True), linear_weights(False)
    tolerance = 0.0 if policy == "float32" else 2e-2
    for a, b in zip(compiled, graph):
        np.testing.assert_allclose(a, b, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(graph[2][:, 0], check.linear_closed_form(check.linear_case())["w"], rtol=3e-2)


def test_streamed_minibatches_keep_a_static_shape():
    """A loader without drop_last ends each pass with a smaller minibatch: it is dropped, so every round
    has the same shape (what XLA compiles for)."""
    x = np.arange(20, dtype="float32").reshape(10, 2)
    loader = [x[0:4], x[4:8], x[8:10]] * 1  # 4, 4, then a remainder of 2
    rounds = data.group_minibatches(loader, n_critic=1)
    shapes = [next(rounds)[0].shape for _ in range(4)]
    assert shapes == [(4, 1, 2)] * 4
