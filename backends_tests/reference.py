"""Reference values in float64 numpy: the cross-backend contract that every backend must match to 1e-5.

``python backends_tests/reference.py`` rewrites ``data/reference_values.json`` and
``data/reference_model.keras`` (a WGANGP holding the generator weights below). The linear step's closed form
is `portable_wgangp.check`'s, which `portable-wgangp check` uses on users' machines too.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from portable_wgangp.check import linear_case as linear_step_case
from portable_wgangp.check import linear_closed_form as linear_step

DATA = pathlib.Path(__file__).parent / "data"
VALUES = DATA / "reference_values.json"
MODEL = DATA / "reference_model.keras"
MODES = (
    ("two_sided", 1.0),
    ("one_sided", 1.0),
    ("one_sided", 2.0),
    ("zero_centered", 1.0),
    ("two_sided", 0.5),
)


def _rng():
    return np.random.default_rng(20260511)


def mlp_case(sample_shape=(3,), hidden=5, batch=4):
    """A tanh MLP critic (flattened input -> tanh(hidden) -> 1) with its weights, inputs and ε."""
    rng = _rng()
    dim = int(np.prod(sample_shape))
    weights = [
        rng.normal(size=(dim, hidden)) * 1.4,
        rng.normal(size=(hidden,)) * 0.1,
        rng.normal(size=(hidden, 1)) * 1.4,
        rng.normal(size=(1,)) * 0.1,
    ]
    real = rng.normal(size=(batch, *sample_shape))
    fake = rng.normal(size=(batch, *sample_shape)) + 1.0
    epsilon = rng.uniform(size=(batch,))
    return weights, real, fake, epsilon


def mlp_scores(weights, x):
    w1, b1, w2, b2 = weights
    return (np.tanh(x.reshape(len(x), -1) @ w1 + b1) @ w2 + b2)[:, 0]


def mlp_input_gradient(weights, x):
    """∇ₓ Σ critic(x), by hand."""
    w1, b1, w2, _ = weights
    hidden = np.tanh(x.reshape(len(x), -1) @ w1 + b1)
    return (((1.0 - hidden**2) * w2[:, 0]) @ w1.T).reshape(x.shape)


def penalty(weights, real, fake, epsilon, mode, target):
    """The pinned penalty: ε weights the real sample; norms over all non-batch axes."""
    eps = epsilon.reshape((-1,) + (1,) * (real.ndim - 1))
    points = eps * real + (1.0 - eps) * fake
    norms = np.sqrt(np.sum(mlp_input_gradient(weights, points).reshape(len(points), -1) ** 2, axis=1))
    if mode == "zero_centered":
        return float(np.mean(norms**2))
    excess = norms / target - 1.0
    if mode == "one_sided":
        excess = np.maximum(excess, 0.0)
    return float(np.mean(excess**2))


def penalty_weight_gradients(weights, real, fake, epsilon, mode, target, h=1e-6):
    """d penalty / d weights by central differences in float64 (error ~1e-9)."""
    grads = []
    for i, w in enumerate(weights):
        grad = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            shifted = []
            for sign in (1.0, -1.0):
                moved = [v.copy() for v in weights]
                moved[i][index] += sign * h
                shifted.append(penalty(moved, real, fake, epsilon, mode, target))
            grad[index] = (shifted[0] - shifted[1]) / (2 * h)
        grads.append(grad)
    return grads


def generator_case():
    """Generator weights for the saved reference model: z (2) -> tanh(4) -> 2."""
    rng = _rng()
    return [rng.normal(size=(2, 4)), rng.normal(size=(4,)), rng.normal(size=(4, 2)), rng.normal(size=(2,))]


def generator_samples(weights, n, seed):
    """What `WGANGP.sample(n, seed)` must return: z from numpy's default_rng(seed) in float32."""
    w1, b1, w2, b2 = weights
    z = np.random.default_rng(seed).standard_normal((n, 2)).astype("float32").astype("float64")
    return np.tanh(z @ w1 + b1) @ w2 + b2


def compute_values() -> dict:
    values = {"penalties": [], "linear_step": {}}
    for shape in ((3,), (2, 2, 1)):
        weights, real, fake, epsilon = mlp_case(shape)
        for mode, target in MODES:
            values["penalties"].append(
                {
                    "sample_shape": list(shape),
                    "mode": mode,
                    "target": target,
                    "penalty": penalty(weights, real, fake, epsilon, mode, target),
                    "weight_gradients": [
                        g.tolist()
                        for g in penalty_weight_gradients(weights, real, fake, epsilon, mode, target)
                    ],
                }
            )
    step = linear_step(linear_step_case())
    values["linear_step"] = {k: (v if k == "logs" else v.tolist()) for k, v in step.items()}
    values["samples_seed_7"] = generator_samples(generator_case(), 5, seed=7).tolist()
    return values


def write_model(path=MODEL) -> None:
    """Save a WGANGP whose generator holds `generator_case()` weights (needs a Keras backend)."""
    import keras

    import portable_wgangp as pw
    from portable_wgangp.nets import mlp

    generator = mlp(2, 2, width=4, depth=1, activation="tanh")
    generator.set_weights([w.astype("float32") for w in generator_case()])
    gan = pw.WGANGP(generator, mlp(2, 1, width=4, depth=1, activation="tanh"), 2, seed=0)
    gan.compile()
    gan.save(path)
    assert isinstance(keras.models.load_model(path), pw.WGANGP)


if __name__ == "__main__":
    DATA.mkdir(exist_ok=True)
    VALUES.write_text(json.dumps(compute_values(), indent=1) + "\n")
    write_model()
    print(f"wrote {VALUES} and {MODEL}")
