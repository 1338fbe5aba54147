"""`portable-wgangp`: train, sample and evaluate WGAN-GPs from the command line.

The Keras backend follows ``KERAS_BACKEND``; when it is unset and keras.json's backend is not installed,
the first installed of TensorFlow, JAX and torch. Errors print one line on stderr and exit with status 2
(``--debug`` shows the trace).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time

EXIT_USAGE = 2


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; written to ``OUT/config.json`` (``--resume`` reads it back)."""

    dataset: str = "gaussians8"
    model: str = "mlp"
    steps: int = 5000
    batch_size: int = 256
    n_critic: int = 2
    gp_weight: float = 0.1
    penalty: str = "two_sided"
    lr: float = 2e-3
    lr_decay: str = "linear"
    beta_1: float = 0.0
    beta_2: float = 0.9
    latent_dim: int = 2
    width: int = 128
    depth: int = 3
    seed: int = 0
    strategy: str = "auto"
    checkpoint_every: int = 1000
    conditional: bool = False
    base: int = 32
    image_size: int = 32


FIELDS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
# Image data (digits, npz:, images:): DCGAN nets, the paper's λ 10 and n_critic 5.
IMAGE_DEFAULTS = {
    "model": "dcgan",
    "steps": 2000,
    "batch_size": 64,
    "n_critic": 5,
    "gp_weight": 10.0,
    "lr": 1e-3,
    "latent_dim": 32,
    "checkpoint_every": 500,
}
# Tuned per dataset (see docs/defaults-study.md); flags, --config and --preset override them.
DATASET_DEFAULTS: dict[str, dict] = {"gaussians8": {}, "gaussians25": {"steps": 10000}, "swissroll": {}}
# The paper's gan_toy.py exactly: 3×512 ReLU MLPs, 2-d noise, batch 256, 5 critic steps, λ 0.1, Adam 1e-4
# with β (0.5, 0.9), no decay, 100,000 generator steps.
PRESETS = {
    "paper": {
        "width": 512,
        "depth": 3,
        "latent_dim": 2,
        "batch_size": 256,
        "n_critic": 5,
        "gp_weight": 0.1,
        "lr": 1e-4,
        "lr_decay": "constant",
        "beta_1": 0.5,
        "beta_2": 0.9,
        "steps": 100000,
    }
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portable-wgangp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train", help="train a WGAN-GP; write metrics, pictures, quality and checkpoints"
    )
    defaults = TrainConfig()
    for name, kind in FIELDS.items():
        flag, default = "--" + name.replace("_", "-"), getattr(defaults, name)
        if kind == "bool":
            train.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help="(default off)"
            )
        else:
            train.add_argument(flag, type=_PARSERS[kind], default=None, help=f"(default {default})")
    train.add_argument("--preset", choices=sorted(PRESETS), help="paper: gan_toy.py's exact setting")
    train.add_argument("--config", help="a TOML file of the flags above (flags override it)")
    train.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--label", type=int, help="the class to draw, for a conditional model")
    sample.add_argument("--out", required=True, help="F.png (a picture) or F.npy (the raw samples)")

    evaluate = commands.add_parser("evaluate", help="print the quality figures of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    evaluate.add_argument("--dataset", default="gaussians8", help="the data it was trained on")
    evaluate.add_argument(
        "--n", type=int, default=2000, help="samples to measure (default 2000; images 1000)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    return parser


_PARSERS = {"int": int, "float": float, "str": str}


def resolve_config(args) -> TrainConfig:
    """Defaults < the dataset's tuned defaults < ``--preset`` < ``--config`` < explicit flags."""
    given = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    from_file = _read_toml(args.config) if args.config else {}
    dataset = given.get("dataset", from_file.get("dataset", TrainConfig.dataset))
    values = {**dataset_defaults(dataset), **PRESETS.get(args.preset, {}), **from_file, **given}
    return TrainConfig(**values)


def dataset_defaults(dataset: str) -> dict:
    from portable_wgangp import data

    return (
        DATASET_DEFAULTS.get(dataset, {})
        if dataset in data.TOY_DATASETS
        else {**IMAGE_DEFAULTS, **DATASET_DEFAULTS.get(dataset, {})}
    )


def _read_toml(path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    try:
        with open(path, "rb") as file:
            table = tomllib.load(file)
    except FileNotFoundError as error:
        raise UserError(f"No config file at {path!r}.") from error
    except tomllib.TOMLDecodeError as error:
        raise UserError(f"The config file {path!r} is not valid TOML: {error}.") from error
    table = {key.replace("-", "_"): value for key, value in table.items()}
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise UserError(f"Unknown keys {unknown} in {path!r}; known keys: {', '.join(FIELDS)}.")
    return table


class ToyTask:
    """2-D toy data: MLPs, an endless stream of fresh points, mode coverage and the toy figure."""

    num_classes = None

    def __init__(self, config: TrainConfig):
        if config.model != "mlp":
            raise UserError(f"Unknown model {config.model!r} for 2-D data; choose mlp.")
        if config.conditional:
            raise UserError(f"{config.dataset} has no labels; drop --conditional.")
        self.config = config

    def networks(self):
        from portable_wgangp import nets

        c = self.config
        return (
            nets.mlp(c.latent_dim, 2, width=c.width, depth=c.depth, name="generator"),
            nets.mlp(2, 1, width=c.width, depth=c.depth, name="critic"),
        )

    def minibatches(self, start: int):
        from portable_wgangp import data

        c = self.config
        return data.toy_minibatches(c.dataset, c.batch_size, seed=c.seed, start=start)

    def quality(self, gan, n: int = 2000) -> dict:
        """modes_covered, n_modes, high_quality_fraction and emd of ``n`` samples."""
        from portable_wgangp import data

        return data.toy_quality(
            self.config.dataset, gan.sample(n, seed=self.config.seed), seed=self.config.seed + 1
        )

    def picture(self, gan, path, title: str) -> None:
        import numpy as np
        from keras import ops

        from portable_wgangp import data, plots

        c = self.config
        real = data.toy_samples(c.dataset, 2000, np.random.default_rng([c.seed, 2]))

        def critic(points):
            return ops.convert_to_numpy(ops.cast(gan.critic(points), "float32"))[:, 0]

        plots.toy_figure(path, gan.sample(2000, seed=c.seed), real, critic, title=title)


class ImageTask:
    """Images (digits, npz:, images:): DCGAN nets, shuffled passes over the data, FID and friends, grids."""

    def __init__(self, config: TrainConfig):
        from portable_wgangp import data

        if config.model not in ("dcgan", "resnet"):
            raise UserError(f"Unknown model {config.model!r} for images; choose dcgan or resnet.")
        self.config = config
        self.x, self.y = data.load_images(config.dataset, config.image_size)
        if config.conditional and self.y is None:
            raise UserError(f"{config.dataset} has no labels; drop --conditional or use class sub-folders.")
        self.num_classes = int(self.y.max()) + 1 if config.conditional else None

    def networks(self):
        from portable_wgangp import nets

        c, shape = self.config, self.x.shape[1:]
        if c.model == "resnet":
            if shape != (32, 32, 3):
                raise UserError(f"--model resnet is the paper's 32×32 RGB net; the images are {shape}.")
            return (
                nets.resnet_generator(c.latent_dim, dim=c.base, num_classes=self.num_classes),
                nets.resnet_critic(dim=c.base, num_classes=self.num_classes),
            )
        return (
            nets.dcgan_generator(c.latent_dim, shape, base=c.base, num_classes=self.num_classes),
            nets.dcgan_critic(shape, base=c.base, num_classes=self.num_classes),
        )

    def minibatches(self, start: int):
        from portable_wgangp import data

        c = self.config
        labels = self.y if self.num_classes else None
        return data.array_minibatches(self.x, labels, c.batch_size, seed=c.seed, start=start)

    def _extractor(self):
        from portable_wgangp import metrics

        return metrics.default_extractor(self.config.dataset)

    def _labels(self, n: int):
        import numpy as np

        return None if self.num_classes is None else np.arange(n) % self.num_classes

    def quality(self, gan, n: int = 1000) -> dict:
        """fid, kid, precision, recall of ``n`` samples, fid_initial of the untrained generator, and (for a
        conditional model on digits) the accuracy of a digits classifier on samples drawn per class."""
        from portable_wgangp import metrics

        extractor, n, seed = self._extractor(), min(n, len(self.x)), self.config.seed
        figures = metrics.image_quality(
            self.x[:n], gan.sample(n, seed=seed, labels=self._labels(n)), extractor
        )
        initial = build_gan(self.config, self)
        initial_fid = metrics.image_quality(
            self.x[:n], initial.sample(n, seed=seed, labels=self._labels(n)), extractor
        )
        figures["fid_initial"] = initial_fid["fid"]
        if self.num_classes is not None and hasattr(extractor, "classify"):
            drawn = gan.sample(n, seed=seed, labels=self._labels(n))
            figures["label_accuracy"] = float((extractor.classify(drawn) == self._labels(n)).mean())
        return figures

    def picture(self, gan, path, title: str) -> None:
        from portable_wgangp import plots

        rows = self.num_classes or 8
        plots.image_grid(
            path, gan.sample(rows * 10, seed=self.config.seed, labels=self._sorted_labels(rows)), rows, title
        )

    def _sorted_labels(self, rows: int):
        import numpy as np

        return None if self.num_classes is None else np.repeat(np.arange(rows), 10)


def make_task(config: TrainConfig):
    from portable_wgangp import data

    try:
        return ToyTask(config) if config.dataset in data.TOY_DATASETS else ImageTask(config)
    except ValueError as error:  # from the loaders: unknown dataset, unreadable file
        raise UserError(str(error)) from error


def _check(config: TrainConfig) -> None:
    if config.lr_decay not in ("linear", "constant"):
        raise UserError(f"Unknown lr_decay {config.lr_decay!r}; choose linear or constant.")
    for name in ("steps", "batch_size", "width", "depth", "base"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}.")


def build_gan(config: TrainConfig, task):
    """The WGANGP of a configuration, compiled, with the weights that ``config.seed`` gives.

    Adam, with the learning rate decayed linearly to 0 over the run unless ``lr_decay`` is constant.
    """
    import keras

    import portable_wgangp as pw

    keras.utils.set_random_seed(config.seed)
    generator, critic = task.networks()
    gan = pw.WGANGP(
        generator,
        critic,
        config.latent_dim,
        n_critic=config.n_critic,
        gp_weight=config.gp_weight,
        penalty=config.penalty,
        seed=config.seed,
        num_classes=task.num_classes,
    )

    def adam(updates):
        rate = _linear_decay(config, updates) if config.lr_decay == "linear" else config.lr
        return keras.optimizers.Adam(rate, beta_1=config.beta_1, beta_2=config.beta_2)

    gan.compile(generator_optimizer=adam(config.steps), critic_optimizer=adam(config.steps * config.n_critic))
    return gan


def _linear_decay(config: TrainConfig, updates: int):
    """``config.lr`` decayed linearly to 0 over ``updates`` optimizer updates."""
    import keras

    return keras.optimizers.schedules.PolynomialDecay(config.lr, updates, end_learning_rate=0.0, power=1.0)


def train(args) -> None:
    import keras

    import portable_wgangp as pw
    from portable_wgangp import callbacks

    out = _output_folder(args.out)
    if args.resume:
        config, gan, done = _resume(out, args)
        task = make_task(config)
    else:
        config = resolve_config(args)
        _check(config)
        task = make_task(config)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        done = 0
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    backend = keras.backend.backend()
    print(f"portable-wgangp: {config.dataset}, {config.steps} steps, {backend} backend -> {out}", flush=True)
    started = time.perf_counter()
    with pw.distribute(config.strategy):
        if not args.resume:
            gan = build_gan(config, task)
        if done < config.steps:
            gan.fit(
                task.minibatches(start=done * config.n_critic),
                steps_per_epoch=config.steps - done,
                epochs=1,
                verbose=0,
                callbacks=[
                    callbacks.MetricsLog(out / "metrics.jsonl", first_step=done),
                    callbacks.Checkpoint(out / "checkpoint.keras", config.checkpoint_every, first_step=done),
                    callbacks.Every(
                        config.checkpoint_every,
                        lambda model, step: task.picture(
                            model, out / "samples.png", f"{config.dataset}, {step} steps"
                        ),
                        first_step=done,
                    ),
                    *([] if args.quiet else [callbacks.ProgressBar(config.steps, first_step=done)]),
                    *(
                        [callbacks.TensorBoardLog(out / "tensorboard", first_step=done)]
                        if callbacks.tensorboard_available()
                        else []
                    ),
                ],
            )
    seconds = time.perf_counter() - started
    callbacks.save_atomically(gan, out / "checkpoint.keras")
    quality = _write_results(gan, config, task, out)
    print(f"done in {seconds:.1f} s: " + ", ".join(f"{k} {_fmt(v)}" for k, v in quality.items()))
    for name in (
        "checkpoint.keras",
        "metrics.jsonl",
        "quality.json",
        "samples.png",
        "losses.png",
        "config.json",
    ):
        print(f"  {out / name}")


def _resume(out, args):
    """The configuration, model and steps done of the run in ``out``; flags may extend ``--steps``."""
    checkpoint, saved = out / "checkpoint.keras", out / "config.json"
    if not checkpoint.is_file() or not saved.is_file():
        raise UserError(f"Nothing to resume in {str(out)!r}: it has no checkpoint.keras and config.json.")
    config = TrainConfig(**json.loads(saved.read_text()))
    gan = _load_checkpoint(checkpoint)
    if args.steps is not None and args.steps != config.steps:
        config.steps = args.steps
        if config.lr_decay == "linear":  # decay over the new length, as if the run had been planned so
            gan.generator_optimizer.learning_rate = _linear_decay(config, config.steps)
            gan.critic_optimizer.learning_rate = _linear_decay(config, config.steps * config.n_critic)
    done = int(gan.generator_optimizer.iterations)
    _truncate_metrics(out / "metrics.jsonl", done)
    return config, gan, done


def _truncate_metrics(path, done: int) -> None:
    """Drop the records of steps after ``done`` (logged after the checkpoint by a run that then died)."""
    if path.is_file():
        kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= done]
        path.write_text("".join(line + "\n" for line in kept))


def _write_results(gan, config: TrainConfig, task, out) -> dict:
    """quality.json, samples.png and losses.png of a finished run; returns the quality figures."""
    from portable_wgangp import plots

    quality = task.quality(gan)
    (out / "quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    title = f"{config.dataset}, {int(gan.generator_optimizer.iterations)} steps"
    task.picture(gan, out / "samples.png", title)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    plots.loss_curves(out / "losses.png", records, title=title)
    return quality


def sample(args) -> None:
    import numpy as np

    from portable_wgangp import plots

    gan = _load_checkpoint(args.checkpoint)
    if args.label is not None and gan.num_classes is None:
        raise UserError("--label needs a conditional model; this checkpoint has no classes.")
    samples = gan.sample(args.n, seed=args.seed, labels=args.label)
    if args.out.endswith(".npy"):
        np.save(args.out, samples)
    elif args.out.endswith(".png") and samples.ndim == 4:
        plots.image_grid(args.out, samples, rows=int(np.ceil(np.sqrt(args.n))), title=f"{args.n} samples")
    elif args.out.endswith(".png"):
        plots.toy_figure(args.out, samples, title=f"{args.n} samples")
    else:
        raise UserError(f"--out must end in .png or .npy, got {args.out!r}.")
    print(f"wrote {args.out}")


def evaluate(args) -> None:
    """The quality figures of a checkpoint; its run's config.json (beside it) gives the settings."""
    gan = _load_checkpoint(args.checkpoint)
    saved = pathlib.Path(args.checkpoint).with_name("config.json")
    values = {**dataset_defaults(args.dataset), **(json.loads(saved.read_text()) if saved.is_file() else {})}
    values.update(dataset=args.dataset, seed=args.seed, conditional=gan.num_classes is not None)
    print(json.dumps(make_task(TrainConfig(**values)).quality(gan, args.n), indent=1))


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _output_folder(path) -> pathlib.Path:
    out = pathlib.Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"Cannot create the output folder {path!r}: {error.strerror}.") from error
    return out


def _load_checkpoint(path):
    import keras

    import portable_wgangp  # noqa: F401  (registers WGANGP for deserialization)

    if not os.path.isfile(path):
        raise UserError(f"No checkpoint at {str(path)!r}; pass the .keras file that train wrote.")
    try:
        return keras.models.load_model(path)
    except Exception as error:
        raise UserError(
            f"Cannot load the checkpoint {str(path)!r} ({type(error).__name__}); "
            "pass a .keras file that train wrote."
        ) from error


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except Exception as error:
        if args.debug:
            raise
        message = (
            str(error) if isinstance(error, (UserError, ValueError)) else f"{type(error).__name__}: {error}"
        )
        first_line = message.splitlines()[0] if message else type(error).__name__
        print(f"portable-wgangp: error: {first_line}", file=sys.stderr)
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
