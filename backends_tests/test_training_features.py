"""Issue 16's training features, each on every backend: generator EMA, lazy penalty, DiffAugment, TTUR,
gradient-norm monitoring, weight clipping and spectral normalization (API, CLI, checkpoints, replicas)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND, numpy, tensor
from test_distribution import CONFIGURATIONS, assert_same_run, run_worker

import portable_wgangp as pw
from portable_wgangp import augment, config
from portable_wgangp import cli as pw_cli
from portable_wgangp.check import FixedNoiseWGANGP
from portable_wgangp.nets import mlp


def blobs(n=256, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 2)) * 0.1 + 1.0).astype("float32")


# -- generator EMA ----------------------------------------------------------------------------------


def bn_generator():
    return keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(2)]
    )


def test_ema_follows_its_closed_form_and_copies_batchnorm_statistics():
    """w_ema after generator update t = β_t·w_ema + (1 − β_t)·w_t, β_t = min(β, (1 + t)/(10 + t)), from
    w_ema = the initial weights; BatchNorm moving statistics are copied."""
    gan = pw.WGANGP(bn_generator(), mlp(2, 1, width=8, depth=1), 2, n_critic=1, seed=0, ema_decay=0.5)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.1), critic_optimizer=keras.optimizers.SGD(0.1))
    assert not gan.ema_generator.trainable and gan.ema_generator is not gan.generator
    expected = gan.generator.get_weights()
    trainable = [w.trainable for w in gan.generator.weights]
    for t in range(4):
        gan.fit(blobs(), batch_size=16, epochs=1, steps_per_epoch=1, verbose=0)
        beta = min(0.5, (1 + t) / (10 + t))
        current = gan.generator.get_weights()
        expected = [beta * e + (1 - beta) * w if tr else w for e, w, tr in zip(expected, current, trainable)]
        for got, want, tr in zip(gan.ema_generator.get_weights(), expected, trainable):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
            if not tr:  # copied bit for bit
                np.testing.assert_array_equal(got, want)
    assert not np.allclose(gan.ema_generator.get_weights()[0], gan.generator.get_weights()[0])


def test_ema_is_saved_and_sample_uses_it_by_default(tmp_path):
    gan = pw.WGANGP(mlp(2, 2, width=8, depth=1), mlp(2, 1, width=8, depth=1), 2, n_critic=1, ema_decay=0.9)
    gan.compile()
    gan.fit(blobs(), batch_size=32, epochs=1, verbose=0)
    gan.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.ema_decay == 0.9
    for a, b in zip(loaded.ema_generator.get_weights(), gan.ema_generator.get_weights()):
        np.testing.assert_array_equal(a, b)
    z = np.random.default_rng(3).standard_normal((5, 2)).astype("float32")
    np.testing.assert_allclose(loaded.sample(5, seed=3), numpy(gan.ema_generator(z)), rtol=1e-6)
    np.testing.assert_allclose(loaded.sample(5, seed=3, use_ema=False), numpy(gan.generator(z)), rtol=1e-6)
    plain = pw.WGANGP(mlp(2, 2, width=8, depth=1), mlp(2, 1, width=8, depth=1), 2)
    assert plain.ema_generator is None
    with pytest.raises(ValueError, match="no generator EMA"):
        plain.sample(2, use_ema=True)


# -- lazy penalty and the gradient norm -------------------------------------------------------------

Z = np.array([[0.3, -1.2], [1.1, 0.4], [-0.7, 0.9], [0.2, 0.5]], dtype="float32")
A0 = np.array([[0.5, -0.2], [0.1, 0.8]], dtype="float32")
C0 = np.array([0.1, -0.3], dtype="float32")
W0 = np.array([1.7, -0.9], dtype="float32")
REAL = np.array([1.0, 2.0], dtype="float32")
LR, LAMBDA, N_CRITIC, STEPS = 0.05, 0.5, 2, 2


def linear_lazy_gan(gp_every):
    generator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    generator.set_weights([A0, C0])
    gan = FixedNoiseWGANGP(
        generator,
        pw.nets.mlp(2, 1, depth=0),
        2,
        n_critic=N_CRITIC,
        gp_weight=LAMBDA,
        gp_every=gp_every,
        z=Z,
        epsilon=[0.1, 0.5, 0.9, 0.3],
    )
    gan.critic.set_weights([W0.reshape(2, 1), np.zeros(1, "float32")])
    gan.compile(generator_optimizer=keras.optimizers.SGD(LR), critic_optimizer=keras.optimizers.SGD(LR))
    return gan


def linear_lazy_closed_form(gp_every):
    """SGD on f(x) = w·x + b, fake = zA + c: ∇w(−W) = mean(fake) − mean(real); the penalty
    (‖w‖ − 1)² has ∇w = 2(‖w‖ − 1)w/‖w‖, weighted K·λ on updates i ≡ 0 (mod K), else 0."""
    a, c, w = A0.astype("float64"), C0.astype("float64"), W0.astype("float64")
    i, norm = 0, None
    for _ in range(STEPS):
        for _ in range(N_CRITIC):
            fake = Z @ a + c
            norm = np.linalg.norm(w)
            grad = fake.mean(0) - REAL
            if i % gp_every == 0:
                grad = grad + gp_every * LAMBDA * 2 * (norm - 1) * w / norm
            w, i = w - LR * grad, i + 1
        a, c = a + LR * np.outer(Z.mean(0), w), c + LR * w  # the generator minimises −mean(w·(zA + c))
    return a, c, w, norm


@pytest.mark.parametrize("gp_every", [1, 2, 4])  # 2 divides n_critic (static); 4 does not (ops.cond)
def test_lazy_penalty_weighs_k_times_on_every_kth_critic_update(gp_every):
    gan = linear_lazy_gan(gp_every)
    history = gan.fit(np.tile(REAL, (16, 1)), batch_size=4, epochs=1, verbose=0)  # 16 / (4·2) = 2 steps
    a, c, w, norm = linear_lazy_closed_form(gp_every)
    assert int(gan.critic_optimizer.iterations) == N_CRITIC * STEPS
    np.testing.assert_allclose(gan.critic.get_weights()[0][:, 0], w, rtol=1e-5)
    np.testing.assert_allclose(gan.generator.get_weights()[0], a, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(gan.generator.get_weights()[1], c, rtol=1e-5, atol=1e-7)
    # the logged norm and penalty are those at the last critic update, penalised or not
    assert history.history["gradient_norm"][-1] == pytest.approx(norm, rel=1e-5)
    assert history.history["gradient_penalty"][-1] == pytest.approx((norm - 1) ** 2, rel=1e-4)


def test_gradient_norm_of_a_linear_critic_is_norm_w_under_every_constraint():
    w = np.array([0.3, -0.4], dtype="float32")  # ‖w‖ = 0.5
    real, fake = tensor(np.ones((4, 2))), tensor(np.zeros((4, 2)))
    critic = pw.nets.mlp(2, 1, depth=0)
    critic.set_weights([w.reshape(2, 1), np.zeros(1, "float32")])
    np.testing.assert_allclose(numpy(pw.penalties.gradient_norms(critic, real, fake)), [0.5] * 4, rtol=1e-6)
    for kwargs in ({"lipschitz": "clip", "clip_value": 1.0}, {"gp_weight": 0.0}):
        gan = FixedNoiseWGANGP(
            mlp(2, 2, width=4, depth=1), critic, 2, n_critic=1, z=Z, epsilon=[0.5] * 4, **kwargs
        )
        gan.critic.set_weights([w.reshape(2, 1), np.zeros(1, "float32")])
        gan.compile(generator_optimizer=keras.optimizers.SGD(0.0), critic_optimizer=keras.optimizers.SGD(0.0))
        history = gan.fit(np.ones((8, 2), "float32"), batch_size=4, epochs=1, verbose=0)
        assert history.history["gradient_norm"][-1] == pytest.approx(0.5, rel=1e-5)
        assert history.history["gradient_penalty"][-1] == pytest.approx(
            0.25, rel=1e-5
        )  # measured, not applied


# -- DiffAugment ------------------------------------------------------------------------------------


def reference_diffaugment(x, policy, draws):
    """The official DiffAugment_pytorch.py, transcribed to numpy (NCHW index arithmetic), fed the given
    uniform numbers instead of torch's random draws."""
    x = np.transpose(x, (0, 3, 1, 2)).astype("float64")
    b, _, h, w = x.shape
    u = draws.astype("float64")

    def integers(v, low, high):
        return np.minimum(np.floor(v * (high - low)) + low, high - 1).astype(int)

    for name in policy:
        if name == "color":
            x = x + (u[:, 0, None, None, None] - 0.5)
            mean = x.mean(axis=1, keepdims=True)
            x = (x - mean) * (u[:, 1, None, None, None] * 2) + mean
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * (u[:, 2, None, None, None] + 0.5) + mean
        elif name == "translation":
            tx = integers(u[:, 3], -(h // 8), h // 8 + 1)[:, None, None]
            ty = integers(u[:, 4], -(w // 8), w // 8 + 1)[:, None, None]
            gb, gx, gy = np.meshgrid(np.arange(b), np.arange(h), np.arange(w), indexing="ij")
            gx = np.clip(gx + tx + 1, 0, h + 1)
            gy = np.clip(gy + ty + 1, 0, w + 1)
            padded = np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1)])
            x = padded.transpose(0, 2, 3, 1)[gb, gx, gy].transpose(0, 3, 1, 2)
        else:
            size = h // 2, w // 2
            ox = integers(u[:, 5], 0, h + (1 - size[0] % 2))[:, None, None]
            oy = integers(u[:, 6], 0, w + (1 - size[1] % 2))[:, None, None]
            gb, gx, gy = np.meshgrid(np.arange(b), np.arange(size[0]), np.arange(size[1]), indexing="ij")
            gx = np.clip(gx + ox - size[0] // 2, 0, h - 1)
            gy = np.clip(gy + oy - size[1] // 2, 0, w - 1)
            mask = np.ones((b, h, w))
            mask[gb, gx, gy] = 0
            x = x * mask[:, None]
    return np.transpose(x, (0, 2, 3, 1))


@pytest.mark.parametrize("policy", ["color", "translation", "cutout", "translation,cutout,color"])
@pytest.mark.parametrize("shape", [(8, 8, 1), (16, 12, 3)])
def test_diffaugment_matches_the_official_transforms_for_the_same_draws(policy, shape):
    """The transform is a deterministic function of the images and the uniform numbers: the same on every
    backend (each compares with one numpy transcription of the official code)."""
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, size=(64, *shape)).astype("float32")
    draws = rng.uniform(size=(64, augment.DRAWS)).astype("float32")
    names = augment.parse_policy(policy)
    got = augment.apply(tensor(x), names, tensor(draws))
    np.testing.assert_allclose(numpy(got), reference_diffaugment(x, names, draws), rtol=1e-5, atol=1e-5)


def test_diffaugment_draws_are_seeded_and_the_policy_is_checked():
    first = numpy(augment.draw(8, seed=keras.random.SeedGenerator(3)))
    again = numpy(augment.draw(8, seed=keras.random.SeedGenerator(3)))
    np.testing.assert_array_equal(first, again)
    assert first.shape == (8, augment.DRAWS) and (0 <= first).all() and (first < 1).all()
    assert augment.parse_policy(" color, cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match="Unknown augmentation 'flip'"):
        augment.parse_policy("color,flip")
    with pytest.raises(ValueError, match="drop augment for non-image data"):
        pw.WGANGP(mlp(2, 2), mlp(2, 1), 2, augment="color")


# -- weight clipping, spectral normalization --------------------------------------------------------


def test_clipping_keeps_every_critic_weight_within_c():
    gan = pw.WGANGP(
        mlp(2, 2, width=8), mlp(2, 1, width=8), 2, n_critic=2, seed=0, lipschitz="clip", clip_value=0.05
    )
    gan.compile(critic_optimizer=keras.optimizers.SGD(1.0))  # large steps: clipping must bind
    history = gan.fit(blobs(), batch_size=32, epochs=1, verbose=0)
    weights = np.concatenate([w.ravel() for w in gan.critic.get_weights()])
    assert np.abs(weights).max() <= 0.05 and np.isclose(np.abs(weights).max(), 0.05)
    assert np.isfinite(history.history["gradient_norm"]).all()


def test_spectral_critic_trains_and_is_required():
    critic = mlp(2, 1, width=8, spectral=True)
    assert sum(isinstance(layer, keras.layers.SpectralNormalization) for layer in critic.layers) == 4
    gan = pw.WGANGP(mlp(2, 2, width=8), critic, 2, n_critic=2, seed=0, lipschitz="spectral")
    gan.compile()
    history = gan.fit(blobs(), batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["gradient_norm"]).all()
    assert all(v < 1.5 for v in history.history["gradient_norm"])  # ‖∇D‖ ≤ Π σ-normalized layers ≈ 1
    with pytest.raises(ValueError, match="SpectralNormalization"):
        pw.WGANGP(mlp(2, 2), mlp(2, 1), 2, lipschitz="spectral")
    with pytest.raises(ValueError, match="gp_every schedules the penalty"):
        pw.WGANGP(mlp(2, 2), mlp(2, 1), 2, lipschitz="clip", gp_every=2)


@pytest.mark.parametrize("n_critic", [1, 2])
def test_spectral_step_runs_one_power_iteration_per_critic_update_and_one_for_the_generator(n_critic):
    """Each training call of SpectralNormalization runs one power iteration: the critic scores real and
    fake samples in ONE call on every backend (JAX would otherwise make two), the generator update calls it
    once, so a step moves ``vector_u`` by exactly n_critic + 1 iterations (the kernel's singular values are
    close, so every further iteration moves it measurably)."""
    rng = np.random.default_rng(1)
    normalized = keras.layers.SpectralNormalization(keras.layers.Dense(16))
    critic = keras.Sequential([keras.Input((2,)), keras.layers.Dense(16), normalized, keras.layers.Dense(1)])
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    r, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    kernel = (q * (2.0 * 0.97 ** np.arange(16))) @ r
    normalized.kernel.assign(kernel.astype("float32"))
    gan = pw.WGANGP(mlp(2, 2, width=4, depth=1), critic, 2, n_critic=n_critic, seed=0, lipschitz="spectral")
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.0), critic_optimizer=keras.optimizers.SGD(0.0))
    u = numpy(normalized.vector_u.value)
    gan.fit(blobs(8 * n_critic), batch_size=8, epochs=1, verbose=0)  # one step; lr 0 keeps W's direction
    iterates = []
    for _ in range(n_critic + 2):
        v = u @ kernel.T
        u = (v / np.linalg.norm(v)) @ kernel
        u = u / np.linalg.norm(u)
        iterates.append(u)
    got = numpy(normalized.vector_u.value)
    np.testing.assert_allclose(got, iterates[n_critic], atol=1e-5)
    assert not np.allclose(got, iterates[n_critic - 1], atol=1e-4)
    assert not np.allclose(got, iterates[n_critic + 1], atol=1e-4)


# -- configuration, CLI, resume, replicas -----------------------------------------------------------


def test_ttur_rates_and_validation():
    c = config.resolve({"lr": 3e-4})
    assert (c.lr_critic, c.lr_generator) == (3e-4, 3e-4)
    c = config.resolve({"lr": 3e-4, "lr_critic": 4e-4})
    assert (c.lr_critic, c.lr_generator) == (4e-4, 3e-4)
    assert config.resolve({"lipschitz": "clip"}).lr == 5e-5
    assert config.resolve({"lipschitz": "clip", "lr": 1e-3}).lr == 1e-3
    refused = [
        ({"lr_generator": 0.0}, "--lr-generator must be a finite number > 0"),
        ({"lr_critic": float("nan")}, "--lr-critic must be a finite number > 0"),
        ({"augment": "color"}, "drop --augment"),
        ({"dataset": "digits", "augment": "blur"}, "Unknown augmentation 'blur'"),
        ({"lipschitz": "clip", "gp_every": 2}, "drop --gp-every"),
        ({"lipschitz": "weight"}, "Unknown lipschitz"),
        ({"clip_value": -1.0}, "--clip-value must be a finite number > 0"),
        ({"ema_decay": 1.0}, r"--ema-decay must lie in \[0, 1\)"),
        ({"gp_every": 0}, "--gp-every must be at least 1"),
    ]
    for requested, message in refused:
        with pytest.raises(config.UserError, match=message):
            config.resolve(requested)
    saved = config.resolve({"ema": True, "gp_every": 2, "lr": 1e-3})
    for changed in ({"gp_every": 4}, {"ema": False}, {"lr_critic": 2e-3}, {"lipschitz": "clip"}):
        with pytest.raises(config.UserError, match="a resumed run keeps its settings"):
            config.check_resume(saved, changed, "config.json")
    assert config.check_resume(saved, {"lr_critic": 1e-3}, "config.json") == saved


def cli(*args):
    env = {**os.environ, "KERAS_BACKEND": BACKEND}
    command = [sys.executable, "-m", "portable_wgangp", *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


FEATURES = ["--ema", "--gp-every", "4", "--lr-critic", "3e-3", "--lr-generator", "1e-3", "--width", "16"]
FEATURES += ["--depth", "2", "--lr-decay", "constant", "--batch-size", "32", "--quiet"]


def test_cli_resume_equals_an_uninterrupted_run_including_the_ema(tmp_path):
    """--ema --gp-every 4 (an ops.cond with n_critic 2) and TTUR through the CLI: the checkpoint holds the
    EMA, metrics.jsonl logs gradient_norm, a resumed run ends with the uninterrupted run's weights, EMA
    and optimizer state; `sample --raw` draws from the raw generator. The uninterrupted run and the first
    part run in this process; the resumed part runs in a fresh one, so all it continues from (EMA, Adam's
    state, the update index, the seed state) comes from the run folder. It resumes after critic update 6
    (3 steps of 2), mid-way through the lazy schedule's period of 4: a schedule restarted at 0 would
    penalise other updates."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert pw_cli.main(["train", "--out", str(whole), "--steps", "8", *FEATURES]) == 0
    assert pw_cli.main(["train", "--out", str(parts), "--steps", "3", *FEATURES]) == 0
    resumed = cli("train", "--out", parts, "--resume", "--steps", 8, "--quiet")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = (keras.models.load_model(out / "checkpoint.keras") for out in (whole, parts))
    assert a.ema_generator is not None and a.gp_every == 4
    assert int(b.critic_optimizer.iterations) == 16 and int(b.generator_optimizer.iterations) == 8
    rates = [o.get_config()["learning_rate"] for o in (a.critic_optimizer, a.generator_optimizer)]
    assert rates == pytest.approx([3e-3, 1e-3])
    for x, y in zip(
        a.get_weights() + [numpy(v) for v in a.critic_optimizer.variables],
        b.get_weights() + [numpy(v) for v in b.critic_optimizer.variables],
    ):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(numpy(a.seed_generator.state.value), numpy(b.seed_generator.state.value))
    records = [json.loads(line) for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 8 and all(r["gradient_norm"] > 0 for r in records)
    steps = [json.loads(line)["step"] for line in (parts / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    command = ["sample", "--checkpoint", str(whole / "checkpoint.keras"), "--n", "8"]
    assert pw_cli.main([*command, "--out", str(tmp_path / "r.npy"), "--raw"]) == 0
    np.testing.assert_allclose(
        np.load(tmp_path / "r.npy"), a.sample(8, seed=0, use_ema=False), rtol=1e-5, atol=1e-6
    )
    assert not np.allclose(np.load(tmp_path / "r.npy"), a.sample(8, seed=0), atol=1e-4)  # EMA by default


def test_replicas_reproduce_the_single_device_run_with_the_features(tmp_path):
    """EMA, the lazy penalty's ops.cond and DiffAugment keep global-batch semantics: R = 2 replicas end with
    the single-device weights (EMA included) and logs."""
    strategy, replicas, processes = next(c for c in CONFIGURATIONS if c[1] == 2)
    expected = run_worker("features", "none", 1, 1, tmp_path)[0]
    assert len([key for key in expected if key.startswith("w")]) == 2 + 4 + 2  # generator, critic, EMA
    for run in run_worker("features", strategy, replicas, processes, tmp_path):
        assert_same_run(run, expected)
