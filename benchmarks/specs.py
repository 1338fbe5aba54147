"""The benchmarked models: the same architecture as Keras models (ours) and as torch.nn modules (native)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Spec:
    """A model to time: its nets, latent size, batch, n_critic and sample shape (channels last)."""

    name: str
    latent_dim: int
    batch: int
    n_critic: int
    sample_shape: tuple
    width: int = 512

    def networks(self):
        from portable_wgangp import nets

        if self.name.startswith("mlp"):
            return (
                nets.mlp(self.latent_dim, 2, width=self.width, depth=3),
                nets.mlp(2, 1, width=self.width, depth=3),
            )
        return nets.dcgan_generator(self.latent_dim, self.sample_shape, base=self.width), nets.dcgan_critic(
            self.sample_shape, base=self.width
        )

    def torch_networks(self):
        import torch.nn as nn

        if self.name.startswith("mlp"):

            def mlp(inputs, outputs):
                layers, size = [], inputs
                for _ in range(3):
                    layers += [nn.Linear(size, self.width), nn.ReLU()]
                    size = self.width
                return nn.Sequential(*layers, nn.Linear(size, outputs))

            return mlp(self.latent_dim, 2), mlp(2, 1)
        base, channels = self.width, self.sample_shape[-1]  # 32×32: three stride-2 stages
        generator = nn.Sequential(
            nn.Linear(self.latent_dim, 4 * 4 * base * 8),
            nn.Unflatten(1, (base * 8, 4, 4)),
            nn.BatchNorm2d(base * 8),
            nn.ReLU(),
            *[
                module
                for c_in, c_out in ((base * 8, base * 4), (base * 4, base * 2), (base * 2, base))
                for module in (nn.ConvTranspose2d(c_in, c_out, 4, 2, 1), nn.BatchNorm2d(c_out), nn.ReLU())
            ],
            nn.Conv2d(base, channels, 3, padding=1),
            nn.Tanh(),
        )
        critic = nn.Sequential(
            nn.Conv2d(channels, base, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(base, base * 2, 4, 2, 1),
            nn.LayerNorm([base * 2, 8, 8]),
            nn.LeakyReLU(0.2),
            nn.Conv2d(base * 2, base * 4, 4, 2, 1),
            nn.LayerNorm([base * 4, 4, 4]),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(base * 4 * 16, 1),
        )
        return generator, critic


SPECS = {
    "mlp": Spec("mlp", latent_dim=2, batch=256, n_critic=5, sample_shape=(2,)),  # the paper's toy MLP
    "dcgan": Spec("dcgan", latent_dim=128, batch=64, n_critic=5, sample_shape=(32, 32, 3), width=64),
}
