"""Test models with controlled noise, shared by in-process tests and the replica worker."""

import keras
import numpy as np

import portable_wgangp as pw


class FixedNoiseWGANGP(pw.WGANGP):
    """Draws the given z and ε instead of random ones, so a step has a closed form."""

    def __init__(self, *args, z, epsilon, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_z = np.asarray(z, dtype="float32")
        self.fixed_epsilon = np.asarray(epsilon, dtype="float32")

    def latent_vectors(self, batch_size):
        return keras.ops.convert_to_tensor(self.fixed_z)

    def interpolation_weights(self, batch_size):
        return keras.ops.convert_to_tensor(self.fixed_epsilon)


def linear_gan(case, **kwargs):
    generator = keras.Sequential([keras.Input((case["A"].shape[0],)), keras.layers.Dense(case["A"].shape[1])])
    generator.set_weights([case["A"].astype("float32"), case["c"].astype("float32")])
    critic = keras.Sequential([keras.Input((case["w"].shape[0],)), keras.layers.Dense(1)])
    critic.set_weights([case["w"].reshape(-1, 1).astype("float32"), case["b"].astype("float32")])
    gan = FixedNoiseWGANGP(
        generator,
        critic,
        case["A"].shape[0],
        n_critic=case["n_critic"],
        gp_weight=case["gp_weight"],
        z=case["z"],
        epsilon=case["epsilon"],
        **kwargs,
    )
    gan.compile(
        generator_optimizer=keras.optimizers.SGD(case["lr"]),
        critic_optimizer=keras.optimizers.SGD(case["lr"]),
    )
    return gan
