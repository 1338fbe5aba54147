"""The cross-backend guarantee: every backend matches the float64 numpy table to 1e-5 (invariant 4)."""

import json

import keras
import numpy as np
import pytest
import reference
from conftest import assert_close, mlp_critic, tensor

import portable_wgangp as pw
from portable_wgangp import backend
from portable_wgangp.check import linear_gan

VALUES = json.loads(reference.VALUES.read_text())


def test_checked_in_table_is_what_numpy_computes():
    fresh = reference.compute_values()
    assert json.loads(json.dumps(fresh)) == VALUES


@pytest.mark.parametrize(
    "row", VALUES["penalties"], ids=lambda r: f"{r['mode']}-t{r['target']}-{r['sample_shape']}"
)
def test_penalty_and_weight_gradients_match_numpy(row):
    weights, real, fake, epsilon = reference.mlp_case(tuple(row["sample_shape"]))
    critic = mlp_critic(weights, row["sample_shape"])
    variables = critic.trainable_variables

    def objective():
        value = pw.gradient_penalty(
            critic,
            tensor(real),
            tensor(fake),
            epsilon=tensor(epsilon),
            mode=row["mode"],
            target=row["target"],
        )
        return value, ()

    value, _, grads = backend.value_and_grad(objective, variables)
    assert_close(value, row["penalty"])
    for grad, expected in zip(grads, row["weight_gradients"]):
        assert_close(grad, expected, rtol=1e-5, atol=2e-6)


def test_full_step_matches_the_closed_form():
    case = reference.linear_step_case()
    expected = VALUES["linear_step"]
    gan = linear_gan(case)
    logs = gan.train_on_batch(case["rounds"].astype("float32"), return_dict=True)
    kernel_a, bias_c = gan.generator.get_weights()
    kernel_w, bias_b = gan.critic.get_weights()
    assert_close(kernel_a, expected["A"])
    assert_close(bias_c, expected["c"])
    assert_close(kernel_w[:, 0], expected["w"])
    assert_close(bias_b, expected["b"])
    for name, value in expected["logs"].items():
        assert_close(logs[name], value)


def test_saved_model_gives_the_numpy_samples():
    """Invariant 6 across backends: a model saved on JAX loads here and samples what numpy computes."""
    gan = keras.models.load_model(reference.MODEL)
    assert isinstance(gan, pw.WGANGP)
    assert_close(gan.sample(5, seed=7), np.array(VALUES["samples_seed_7"]), rtol=1e-5, atol=1e-5)
