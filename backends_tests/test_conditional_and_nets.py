"""Reference networks and class-conditional WGAN-GP, on the active backend."""

import keras
import numpy as np
import pytest
from conftest import assert_close, tensor

import portable_wgangp as pw
from portable_wgangp import nets

RNG = np.random.default_rng(5)


def linear_projection_critic(w, class_offsets):
    """f(x, y) = w·x + c[y]: its input gradient is w whatever the label."""
    x = keras.Input((len(w),))
    y = keras.Input((), dtype="int32")
    dense, embedding = keras.layers.Dense(1), keras.layers.Embedding(len(class_offsets), 1)
    model = keras.Model([x, y], keras.layers.Add()([dense(x), keras.layers.Flatten()(embedding(y))]))
    dense.set_weights([np.reshape(w, (-1, 1)), np.zeros(1)])
    embedding.set_weights([np.reshape(class_offsets, (-1, 1))])
    return model


def test_conditional_penalty_holds_the_labels_fixed():
    w = np.array([0.6, -1.2, 0.4])
    critic = linear_projection_critic(w, [5.0, -3.0, 1.0])
    labels = tensor([0, 2, 1, 1], "int32")
    value = pw.gradient_penalty(
        lambda x: critic([x, labels]), tensor(RNG.normal(size=(4, 3))), tensor(RNG.normal(size=(4, 3)))
    )
    assert_close(value, (np.linalg.norm(w) - 1.0) ** 2)


def conditional_gan(classes=3, image_shape=(8, 8, 1)):
    generator = nets.dcgan_generator(8, image_shape, base=8, num_classes=classes)
    critic = nets.dcgan_critic(image_shape, base=8, num_classes=classes)
    gan = pw.WGANGP(generator, critic, 8, n_critic=2, seed=0, num_classes=classes)
    gan.compile()
    return gan


def test_conditional_fit_sample_and_save(tmp_path):
    gan = conditional_gan()
    x = RNG.uniform(-1, 1, size=(64, 8, 8, 1)).astype("float32")
    y = RNG.integers(0, 3, size=64)
    history = gan.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert int(gan.generator_optimizer.iterations) == 4
    assert np.isfinite(history.history["critic_loss"]).all()
    assert gan.sample(5, seed=0, labels=2).shape == (5, 8, 8, 1)
    gan.save(tmp_path / "c.keras")
    loaded = keras.models.load_model(tmp_path / "c.keras")
    assert loaded.num_classes == 3
    np.testing.assert_array_equal(loaded.sample(6, seed=1), gan.sample(6, seed=1))


def test_conditional_gan_refuses_unlabelled_data_and_bad_labels():
    gan = conditional_gan()
    x = RNG.uniform(-1, 1, size=(32, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match="pass y="):
        gan.fit(x, batch_size=8, verbose=0)
    with pytest.raises(ValueError, match=r"Labels must lie in 0\.\.2"):
        gan.sample(2, labels=3)


@pytest.mark.parametrize("size", [8, 16, 32, 64])
def test_dcgan_nets_build_train_two_steps_and_round_trip(size, tmp_path):
    shape = (size, size, 3)
    generator, critic = nets.dcgan_generator(16, shape, base=4), nets.dcgan_critic(shape, base=4)
    assert generator.output_shape == (None, *shape)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in critic.layers)
    gan = pw.WGANGP(generator, critic, 16, n_critic=1, seed=0)
    gan.compile()
    gan.fit(RNG.uniform(-1, 1, size=(8, *shape)).astype("float32"), batch_size=4, epochs=1, verbose=0)
    assert int(gan.generator_optimizer.iterations) == 2
    gan.save(tmp_path / "d.keras")
    np.testing.assert_array_equal(
        keras.models.load_model(tmp_path / "d.keras").sample(2, seed=0), gan.sample(2, seed=0)
    )


def test_dcgan_refuses_unsupported_sizes():
    with pytest.raises(ValueError, match="8, 16, 32 or 64"):
        nets.dcgan_generator(16, (28, 28, 1))


@pytest.mark.parametrize("classes", [None, 4])
def test_resnet_nets_build_train_two_steps_and_round_trip(classes, tmp_path):
    generator = nets.resnet_generator(16, dim=8, num_classes=classes)
    critic = nets.resnet_critic(dim=8, num_classes=classes)
    assert generator.output_shape == (None, 32, 32, 3)
    gan = pw.WGANGP(generator, critic, 16, n_critic=1, seed=0, num_classes=classes)
    gan.compile()
    x = RNG.uniform(-1, 1, size=(8, 32, 32, 3)).astype("float32")
    gan.fit(x, None if classes is None else RNG.integers(0, classes, size=8), batch_size=4, verbose=0)
    assert int(gan.generator_optimizer.iterations) == 2
    gan.save(tmp_path / "r.keras")
    restored = keras.models.load_model(tmp_path / "r.keras")
    np.testing.assert_array_equal(restored.sample(2, seed=0), gan.sample(2, seed=0))


def test_auxiliary_classifier_critic_learns_the_classes():
    """AC-WGAN: the critic's class head is trained on real labels (its cross-entropy falls)."""
    generator = nets.dcgan_generator(8, (8, 8, 1), base=8, num_classes=2)
    critic = nets.dcgan_critic((8, 8, 1), base=8, num_classes=2, head="ac")
    gan = pw.WGANGP(generator, critic, 8, n_critic=2, seed=0, num_classes=2, gp_weight=1.0)
    assert gan.auxiliary_classifier
    gan.compile(critic_optimizer=keras.optimizers.Adam(3e-3))
    y = np.arange(256) % 2
    x = np.where(y[:, None, None, None] == 1, 0.8, -0.8) + 0.05 * RNG.normal(size=(256, 8, 8, 1))
    before = float(gan._class_loss(tensor(x[:64]), tensor(y[:64], "int32")))
    gan.fit(x.astype("float32"), y, batch_size=16, epochs=2, verbose=0)
    after = float(gan._class_loss(tensor(x[:64]), tensor(y[:64], "int32")))
    assert after < 0.5 * before
    assert gan.sample(4, seed=0, labels=1).shape == (4, 8, 8, 1)
