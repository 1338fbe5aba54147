"""The WGANGP model: pinned API and step semantics, saving, data inputs, learning, errors."""

import inspect
import json

import keras
import numpy as np
import pytest
from conftest import numpy

import portable_wgangp as pw
from portable_wgangp.callbacks import save_atomically
from portable_wgangp.nets import mlp


def toy_gan(n_critic=3, seed=0, **kwargs):
    return pw.WGANGP(
        mlp(2, 2, width=16, depth=2), mlp(2, 1, width=16, depth=2), 2, n_critic=n_critic, seed=seed, **kwargs
    )


def blobs(n=384, seed=0):
    return (np.random.default_rng(seed).normal(size=(n, 2)) * 0.1 + 1.0).astype("float32")


def test_pinned_signatures_and_defaults():
    params = inspect.signature(pw.WGANGP).parameters
    assert list(params)[:3] == ["generator", "critic", "latent_dim"]
    defaults = {"n_critic": 5, "gp_weight": 10.0, "penalty": "two_sided", "drift_weight": 0.0, "seed": None}
    for name, value in defaults.items():
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY and params[name].default == value
    gp = inspect.signature(pw.gradient_penalty).parameters
    assert [gp[n].default for n in ("epsilon", "mode", "target", "seed")] == [None, "two_sided", 1.0, None]
    gan = toy_gan()
    gan.compile()
    for optimizer in (gan.generator_optimizer, gan.critic_optimizer):
        assert isinstance(optimizer, keras.optimizers.Adam)
        assert optimizer.get_config()["learning_rate"] == pytest.approx(1e-4)
        assert (optimizer.beta_1, optimizer.beta_2) == (0.0, 0.9)
    assert gan.generator_optimizer is not gan.critic_optimizer


def test_iterations_follow_n_critic():
    gan = toy_gan(n_critic=3)
    gan.compile()
    gan.fit(blobs(), batch_size=16, epochs=2, verbose=0)  # 384 // (16 * 3) = 8 steps per epoch
    assert int(gan.generator_optimizer.iterations) == 16
    assert int(gan.critic_optimizer.iterations) == 3 * 16


class RecordingWGANGP(pw.WGANGP):
    """Records the real minibatch of every critic update (eager steps only)."""

    seen: list

    def critic_update(self, real, labels=None):
        self.seen.append(numpy(real))
        return super().critic_update(real, labels)


def test_each_critic_update_sees_a_fresh_minibatch():
    x = np.arange(96 * 2, dtype="float32").reshape(96, 2)
    gan = RecordingWGANGP(mlp(2, 2, width=8, depth=1), mlp(2, 1, width=8, depth=1), 2, n_critic=3, seed=0)
    gan.seen = []
    gan.compile(run_eagerly=True)
    gan.fit(x, batch_size=8, epochs=1, verbose=0)
    assert len(gan.seen) == 12  # 4 steps × 3 critic updates
    rows = np.concatenate(gan.seen)[:, 0]
    assert len(np.unique(rows)) == len(rows) == 96, "every sample is used once per epoch"
    assert all(batch.shape == (8, 2) for batch in gan.seen)


def test_logs_hold_the_four_metrics_as_finite_scalars():
    gan = toy_gan()
    gan.compile()
    history = gan.fit(blobs(), batch_size=32, epochs=1, verbose=0)
    for name in ("critic_loss", "gradient_penalty", "wasserstein_estimate", "generator_loss"):
        assert np.isfinite(history.history[name]).all()
    assert history.history["gradient_penalty"][-1] >= 0


@pytest.mark.parametrize("joint", [True, False], ids=["one-critic-call", "two-critic-calls"])
def test_joint_and_separate_scoring_train_alike(monkeypatch, joint):
    """Real and fake samples scored in one critic call or in two (`backend.JOINT_SCORES`, chosen per
    backend for speed) give the same training: weights and logged metrics."""
    from portable_wgangp import backend

    runs = []
    for flag in (backend.JOINT_SCORES, joint):
        monkeypatch.setattr(backend, "JOINT_SCORES", flag)
        keras.utils.set_random_seed(0)
        gan = toy_gan(n_critic=3, gp_weight=10.0)
        # SGD: Adam would turn rounding noise in a zero gradient (a dead unit's) into a full-size step.
        gan.compile(
            generator_optimizer=keras.optimizers.SGD(0.05), critic_optimizer=keras.optimizers.SGD(0.05)
        )
        history = gan.fit(blobs(192), batch_size=32, epochs=1, shuffle=False, verbose=0)
        runs.append((gan.get_weights(), history.history))
    (weights, logs), (other_weights, other_logs) = runs
    for a, b in zip(weights, other_weights, strict=True):  # float32 rounding, summed over 8 updates
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    for name in logs:
        np.testing.assert_allclose(logs[name], other_logs[name], rtol=1e-4, atol=1e-5)


def test_short_fit_learns_on_separated_data():
    """The critic separates real data far from the generator's: the Wasserstein estimate rises."""
    gan = toy_gan(n_critic=2, gp_weight=1.0)
    gan.compile(critic_optimizer=keras.optimizers.Adam(1e-3, beta_1=0.0, beta_2=0.9))
    x = blobs(2048) + 3.0
    estimates = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            estimates.append(float(logs["wasserstein_estimate"]))

    gan.fit(x, batch_size=64, epochs=3, verbose=0, callbacks=[Record()])
    assert np.mean(estimates[-3:]) > np.mean(estimates[:3]) + 1.0


def test_save_and_load_round_trip_gives_identical_samples(tmp_path):
    gan = toy_gan(seed=4)
    gan.compile(generator_optimizer=keras.optimizers.Adam(2e-3))
    gan.fit(blobs(), batch_size=32, epochs=1, verbose=0)
    path = tmp_path / "run.keras"
    gan.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, pw.WGANGP)
    assert (loaded.latent_dim, loaded.n_critic, loaded.seed) == (2, 3, 4)
    np.testing.assert_array_equal(loaded.sample(16, seed=3), gan.sample(16, seed=3))
    assert loaded.generator_optimizer.get_config()["learning_rate"] == pytest.approx(2e-3)
    assert int(loaded.critic_optimizer.iterations) == int(gan.critic_optimizer.iterations)
    for a, b in zip(loaded.critic_optimizer.variables, gan.critic_optimizer.variables):
        np.testing.assert_array_equal(numpy(a), numpy(b))


def test_sample_is_deterministic_for_a_seed():
    gan = toy_gan()
    assert gan.sample(5, seed=1).shape == (5, 2)
    np.testing.assert_array_equal(gan.sample(5, seed=1), gan.sample(5, seed=1))
    assert not np.array_equal(gan.sample(5, seed=1), gan.sample(5, seed=2))


def test_fit_accepts_a_python_generator_of_minibatches():
    gan = toy_gan(n_critic=2)
    gan.compile()

    def minibatches():
        rng = np.random.default_rng(0)
        while True:
            yield rng.normal(size=(16, 2)).astype("float32")

    gan.fit(minibatches(), epochs=1, steps_per_epoch=3, verbose=0)
    assert int(gan.critic_optimizer.iterations) == 6


def test_fit_accepts_a_tf_dataset():
    tf = pytest.importorskip(
        "tensorflow", reason="tf.data needs tensorflow, installed only in the TF session"
    )
    gan = toy_gan(n_critic=2)
    gan.compile()
    gan.fit(tf.data.Dataset.from_tensor_slices(blobs(128)).batch(16), epochs=2, verbose=0)
    assert int(gan.generator_optimizer.iterations) == 8


def test_fit_accepts_a_torch_dataloader():
    torch = pytest.importorskip(
        "torch", reason="a DataLoader needs torch, installed only in the torch session"
    )
    gan = toy_gan(n_critic=2)
    gan.compile()
    loader = torch.utils.data.DataLoader(torch.from_numpy(blobs(128)), batch_size=16, shuffle=True)
    gan.fit(loader, epochs=2, verbose=0)
    assert int(gan.generator_optimizer.iterations) == 8


def test_non_finite_loss_stops_fit_naming_step_and_metric():
    # tanh propagates NaN on every backend (TF's CPU ReLU maps NaN to 0).
    gan = pw.WGANGP(mlp(2, 2, activation="tanh"), mlp(2, 1, activation="tanh"), 2, n_critic=1, seed=0)
    gan.compile()
    x = blobs(64)
    x[5] = np.nan  # arrays are checked before the first step; a stream of minibatches cannot be
    with pytest.raises(
        FloatingPointError, match=r"(critic_loss|wasserstein_estimate|gradient_penalty).* step 1"
    ):
        gan.fit((x for _ in range(2)), steps_per_epoch=2, epochs=1, verbose=0)


def test_a_non_finite_weight_is_never_checkpointed(tmp_path):
    gan = toy_gan()
    gan.compile()
    path = save_atomically(gan, tmp_path / "checkpoint.keras")
    good = path.read_bytes()
    kernel = gan.critic.trainable_variables[0]
    kernel.assign(keras.ops.full(kernel.shape, float("inf")))
    with pytest.raises(FloatingPointError, match=r"Not saving checkpoint\.keras: .*kernel holds non-finite"):
        save_atomically(gan, path)
    assert path.read_bytes() == good


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_critic": 0}, "n_critic"),
        ({"gp_weight": -1.0}, "gp_weight"),
        ({"penalty": "hinge"}, "Unknown penalty mode"),
    ],
)
def test_bad_hyperparameters_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        toy_gan(**kwargs)


def test_batchnorm_in_the_critic_is_refused():
    critic = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    with pytest.raises(ValueError, match=r"BatchNormalization.*LayerNormalization"):
        pw.WGANGP(mlp(2, 2), critic, 2)


def test_fit_before_compile_says_to_compile():
    with pytest.raises(RuntimeError, match="compile"):
        toy_gan().fit(blobs(), batch_size=16, verbose=0)


def test_too_little_data_for_one_step_says_so():
    gan = toy_gan(n_critic=5)
    gan.compile()
    with pytest.raises(ValueError, match="batch_size \\* n_critic"):
        gan.fit(blobs(100), batch_size=32, verbose=0)


def test_training_state_holds_exactly_both_optimizers():
    """What Keras threads as optimizer state (JAX: the pure train state) is both optimizers, nothing else."""
    gan = toy_gan()
    gan.compile()
    expected = gan.generator_optimizer.variables + gan.critic_optimizer.variables
    assert [id(v) for v in gan.optimizer.variables] == [id(v) for v in expected]


def test_latent_dim_that_does_not_match_the_generator_names_latent_dim():
    with pytest.raises(ValueError, match="latent_dim is 3 but the generator takes latent vectors of size 2"):
        pw.WGANGP(mlp(2, 2), mlp(2, 1), 3)


def test_generator_output_the_critic_refuses_names_the_shape():
    with pytest.raises(ValueError, match=r"does not accept the generator's output of shape \(1, 2\)"):
        pw.WGANGP(mlp(2, 2), mlp(3, 1), 2)


def test_saved_optimizers_name_no_backend_module():
    """On torch, Keras's Adam is a torch subclass serialized under keras.src.backend.torch, which a
    process without torch cannot import; checkpoints must name the public class."""
    gan = toy_gan()
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.RMSprop(1e-3))
    config = json.dumps(gan.get_compile_config())
    assert "keras.src.backend" not in config
    assert config.count('"module": "keras.optimizers"') == 2


def test_integer_samples_are_refused_with_the_scaling_fix():
    gan = toy_gan()
    gan.compile()
    with pytest.raises(ValueError, match=r"integers \(uint8\).*pw\.data\.scale_images"):
        gan.fit(np.zeros((384, 2), dtype="uint8"), batch_size=32, verbose=0)


def test_data_of_another_shape_than_the_generator_output_names_both_shapes():
    gan = toy_gan()
    gan.compile()
    with pytest.raises(ValueError, match=r"samples have shape \(3,\) but the generator makes \(2,\)"):
        gan.fit(np.zeros((256, 3), "float32"), batch_size=16, verbose=0)
