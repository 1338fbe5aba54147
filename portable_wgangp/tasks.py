"""What a run trains on: the data, its networks, its quality figures and its pictures.

A task is chosen by the dataset (`make_task`): `ToyTask` for the 2-D toy distributions, `ImageTask` for
images (``digits``, ``npz:PATH[:KEY]``, ``npy:PATH[:LABELS]``, ``images:DIR``, ``cifar10:PATH``).
Building a task loads and validates the data, so every data problem is found before a run folder is
touched.
"""

from __future__ import annotations

import functools

import numpy as np

from portable_wgangp import datasets, features, metrics, rounds, sources
from portable_wgangp.config import TrainConfig
from portable_wgangp.errors import UserError


class ToyTask:
    """2-D toy data: MLPs, an endless stream of fresh points, mode coverage and the toy figure."""

    num_classes = None
    sample_shape = (2,)
    score = "emd"  # the quality figure that picks best.keras (lower is better)

    def __init__(self, config: TrainConfig):
        self.config = config

    def networks(self):
        from portable_wgangp import nets

        c = self.config
        return (
            nets.mlp(c.latent_dim, 2, width=c.width, depth=c.depth, name="generator"),
            nets.mlp(2, 1, width=c.width, depth=c.depth, name="critic", spectral=c.lipschitz == "spectral"),
        )

    def rounds(self, first_step: int, steps: int):
        """Minibatches from step ``first_step`` on (fresh points; `WGANGP.fit` groups them in rounds)."""
        c = self.config
        return datasets.toy_minibatches(c.dataset, c.batch_size, seed=c.seed, start=first_step * c.n_critic)

    def quality(self, gan, n: int = 2000, *, initial: bool = True, reference=None, use_ema=None) -> dict:
        """modes_covered, n_modes, high_quality_fraction and emd of ``n`` samples (of the generator EMA
        when the model has one, unless ``use_ema`` is False; ``initial`` and ``reference`` concern images
        only)."""
        samples = gan.sample(n, seed=self.config.seed, use_ema=use_ema)
        return features.toy_quality(self.config.dataset, samples, seed=self.config.seed + 1)

    def picture(self, gan, path, title: str) -> None:
        from keras import ops

        from portable_wgangp import plots

        c = self.config
        real = datasets.toy_samples(c.dataset, 2000, np.random.default_rng([c.seed, 2]))

        def critic(points):
            return ops.convert_to_numpy(ops.cast(gan.critic(points), "float32"))[:, 0]

        plots.toy_figure(path, gan.sample(2000, seed=c.seed), real, critic, title=title)


class ImageTask:
    """Images (digits, npz:, images:): DCGAN nets, shuffled passes over the data, FID and friends, grids."""

    score = "fid"  # the quality figure that picks best.keras (lower is better)

    def __init__(self, config: TrainConfig):
        self.config = config
        try:
            self.source = sources.open_source(config.dataset, config.image_size, config.workers)
            if config.conditional and self.source.labels is None:
                raise UserError(
                    f"{config.dataset} has no labels; drop --conditional or use class sub-folders."
                )
            labels = self.source.labels
            self.num_classes = sources.count_classes(labels, config.dataset) if config.conditional else None
        except ValueError as error:  # unreadable file, bad dtype, NaN, bad labels: the loader says which
            raise UserError(str(error)) from error
        self.sample_shape = tuple(self.source.sample_shape)
        if config.batch_size > len(self.source):
            raise UserError(
                f"--batch-size {config.batch_size} exceeds the {len(self.source)} images of "
                f"{config.dataset}; use at most {len(self.source)}."
            )
        if config.model == "resnet" and self.sample_shape != (32, 32, 3):
            raise UserError(
                f"--model resnet is the paper's 32×32 RGB net, but the images are {self.sample_shape}; "
                "use --model dcgan or --image-size 32 with RGB images."
            )

    def networks(self):
        from portable_wgangp import nets

        c, shape = self.config, self.sample_shape
        if c.model == "resnet":
            generator = nets.resnet_generator(c.latent_dim, dim=c.base, num_classes=self.num_classes)
            if self.num_classes and c.critic_head == "ac":
                return generator, _auxiliary_classifier(nets.resnet_critic(dim=c.base), self.num_classes)
            return generator, nets.resnet_critic(dim=c.base, num_classes=self.num_classes)
        return (
            nets.dcgan_generator(c.latent_dim, shape, base=c.base, num_classes=self.num_classes),
            nets.dcgan_critic(
                shape,
                base=c.base,
                num_classes=self.num_classes,
                head=c.critic_head,
                spectral=c.lipschitz == "spectral",
            ),
        )

    def rounds(self, first_step: int, steps: int):
        """Steps ``first_step …`` of the run's data, streamed from the source (`rounds.StreamRounds`)."""
        c = self.config
        return rounds.StreamRounds(
            self.source,
            c.batch_size,
            c.n_critic,
            steps=steps,
            first_step=first_step,
            seed=c.seed,
            labelled=self.num_classes is not None,
        )

    def real_images(self, n: int) -> np.ndarray:
        """``n`` real images (all when there are fewer), a seeded sample of the whole dataset."""
        n = min(n, len(self.source))
        picked = np.random.default_rng([self.config.seed, 3]).choice(len(self.source), n, replace=False)
        return sources.read_all(self.source, np.sort(picked))

    @functools.cached_property
    def extractor(self):
        """``--extractor``'s feature extractor, else the dataset's default (built once)."""
        return features.default_extractor(self.config.dataset, self.config.extractor)

    def _labels(self, n: int):
        return None if self.num_classes is None else np.arange(n) % self.num_classes

    def quality(self, gan, n: int = 1000, *, initial: bool = True, reference=None, use_ema=None) -> dict:
        """fid, kid, precision, recall of ``n`` samples (Inception Score with the FID Inception),
        fid_initial of the untrained generator of the same seed (``initial``), and (for a conditional model
        on digits) the accuracy of a digits classifier on samples drawn per class. Samples come from the
        generator EMA when the model has one, unless ``use_ema`` is False; the real side is `real_images`.
        ``reference``: FID statistics of the real data to use instead of those real images'."""
        extractor, seed = self.extractor, self.config.seed
        real = extractor(self.real_images(n))  # features: the images need not stay in memory
        n = len(real)
        drawn = gan.sample(n, seed=seed, labels=self._labels(n), use_ema=use_ema)
        figures = features.feature_quality(real, drawn, extractor, reference)
        if self.num_classes is not None and hasattr(extractor, "classify"):
            figures["label_accuracy"] = float((extractor.classify(drawn) == self._labels(n)).mean())
        del drawn
        if initial:
            untrained = build_gan(self.config, self).sample(n, seed=seed, labels=self._labels(n))
            figures["fid_initial"] = metrics.frechet_distance(
                real if reference is None else reference, extractor(untrained)
            )
        return figures

    def picture(self, gan, path, title: str) -> None:
        from portable_wgangp import plots

        rows = self.num_classes or 8
        labels = None if self.num_classes is None else np.repeat(np.arange(rows), 10)
        plots.image_grid(path, gan.sample(rows * 10, seed=self.config.seed, labels=labels), rows, title)


def _auxiliary_classifier(critic, num_classes: int):
    """An unconditional critic whose last layer is its linear score, with a second output: class logits
    from the same features (AC-WGAN: gan_cifar_resnet.py's ACGAN head; outputs ``[scores, logits]``)."""
    import keras

    from portable_wgangp import rng

    features = critic.layers[-1].input
    logits = keras.layers.Dense(num_classes, dtype="float32")(features)
    model = keras.Model(critic.input, [critic.output, logits], name=f"{critic.name}_ac")
    return rng.initialize(model, rng.resolve_seed(None))  # the head's weights too, the same on every backend


def make_task(config: TrainConfig):
    """The task of ``config.dataset``, its data loaded and checked (a `UserError` says what is wrong)."""
    return ToyTask(config) if config.dataset in datasets.TOY_DATASETS else ImageTask(config)


def build_gan(config: TrainConfig, task):
    """The WGANGP of a configuration, compiled, with the weights that ``config.seed`` gives.

    Adam (RMSprop for ``lipschitz == "clip"``, as the original WGAN) at ``lr_generator`` and ``lr_critic``,
    each decayed linearly to 0 over the run unless ``lr_decay`` is constant.
    """
    import keras

    from portable_wgangp.model import WGANGP

    keras.utils.set_random_seed(config.seed)
    generator, critic = task.networks()
    gan = WGANGP(
        generator,
        critic,
        config.latent_dim,
        n_critic=config.n_critic,
        gp_weight=config.gp_weight,
        penalty=config.penalty,
        seed=config.seed,
        num_classes=task.num_classes,
        ema_decay=config.ema_decay if config.ema else None,
        gp_every=config.gp_every,
        augment=config.augment or None,
        lipschitz=config.lipschitz,
        clip_value=config.clip_value,
    )

    def optimizer(rate, updates):
        if config.lr_decay == "linear":
            rate = linear_decay(rate, updates)
        if config.lipschitz == "clip":  # the original WGAN's optimizer
            return keras.optimizers.RMSprop(rate)
        return keras.optimizers.Adam(rate, beta_1=config.beta_1, beta_2=config.beta_2)

    gan.compile(
        generator_optimizer=optimizer(config.lr_generator, config.steps),
        critic_optimizer=optimizer(config.lr_critic, config.steps * config.n_critic),
        steps_per_execution=config.steps_per_execution,
        jit_compile=config.jit_compile or "auto",
    )
    return gan


def linear_decay(rate: float, updates: int):
    """``rate`` decayed linearly to 0 over ``updates`` optimizer updates."""
    import keras

    return keras.optimizers.schedules.PolynomialDecay(rate, updates, end_learning_rate=0.0, power=1.0)
