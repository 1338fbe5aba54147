"""Reference values in float64 numpy: the cross-backend contract that every backend must match to 1e-5.

``python backends_tests/reference.py`` rewrites ``data/reference_values.json`` (numpy only) and, with a
Keras backend installed, ``data/reference_model.keras`` (a WGANGP holding the generator weights below).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

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


def linear_step_case():
    """Linear generator G(z) = zA + c and linear critic f(x) = x·w + b, trained by SGD, noise fixed."""
    rng = _rng()
    batch, latent, dim, n_critic = 8, 3, 2, 2
    return {
        "A": rng.normal(size=(latent, dim)),
        "c": rng.normal(size=(dim,)),
        "w": rng.normal(size=(dim,)) * 2.0,
        "b": np.array([0.3]),
        "z": rng.normal(size=(batch, latent)),
        "epsilon": rng.uniform(size=(batch,)),
        "rounds": rng.normal(size=(batch, n_critic, dim)) + np.array([2.0, -1.0]),
        "n_critic": n_critic,
        "gp_weight": 10.0,
        "lr": 0.05,
    }


def linear_step(case):
    """One WGANGP step in closed form (n_critic SGD critic updates, then one SGD generator update).

    Penalty of a linear critic: (‖w‖ − 1)², gradient 2(‖w‖ − 1)w/‖w‖, whatever ε. The same z serves
    every draw of the step.
    """
    A, c, w, b = (case[k].copy() for k in ("A", "c", "w", "b"))
    z, lr, lam = case["z"], case["lr"], case["gp_weight"]
    fake_mean = (z @ A + c).mean(axis=0)
    for k in range(case["n_critic"]):
        real_mean = case["rounds"][:, k].mean(axis=0)
        norm = np.linalg.norm(w)
        estimate = real_mean @ w - fake_mean @ w
        gp = (norm - 1.0) ** 2
        logs = {"critic_loss": -estimate + lam * gp, "gradient_penalty": gp, "wasserstein_estimate": estimate}
        w = w - lr * (-(real_mean - fake_mean) + lam * 2.0 * (norm - 1.0) * w / norm)
    logs["generator_loss"] = -(fake_mean @ w + b[0])
    A = A - lr * (-np.outer(z.mean(axis=0), w))
    c = c - lr * (-w)
    return {"A": A, "c": c, "w": w, "b": b, "logs": {k: float(v) for k, v in logs.items()}}


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
