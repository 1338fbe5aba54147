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


FIELDS = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
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
        flag = "--" + name.replace("_", "-")
        train.add_argument(
            flag, type=_PARSERS[kind], default=None, help=f"(default {getattr(defaults, name)})"
        )
    train.add_argument("--preset", choices=sorted(PRESETS), help="paper: gan_toy.py's exact setting")
    train.add_argument("--config", help="a TOML file of the flags above (flags override it)")
    train.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--out", required=True, help="F.png (a picture) or F.npy (the raw samples)")

    evaluate = commands.add_parser("evaluate", help="print the quality figures of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    evaluate.add_argument("--dataset", default="gaussians8", help="the data it was trained on")
    evaluate.add_argument("--n", type=int, default=2000, help="samples to measure (default 2000)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    return parser


_PARSERS = {"int": int, "float": float, "str": str}


def resolve_config(args) -> TrainConfig:
    """Defaults < the dataset's tuned defaults < ``--preset`` < ``--config`` < explicit flags."""
    given = {name: getattr(args, name) for name in FIELDS if getattr(args, name) is not None}
    from_file = _read_toml(args.config) if args.config else {}
    dataset = given.get("dataset", from_file.get("dataset", TrainConfig.dataset))
    values = {**DATASET_DEFAULTS.get(dataset, {}), **PRESETS.get(args.preset, {}), **from_file, **given}
    return TrainConfig(**values)


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


def _check(config: TrainConfig) -> None:
    from portable_wgangp import data

    if config.dataset not in data.TOY_DATASETS:
        raise UserError(f"Unknown dataset {config.dataset!r}; choose one of {', '.join(data.TOY_DATASETS)}.")
    if config.model != "mlp":
        raise UserError(f"Unknown model {config.model!r} for 2-D data; choose mlp.")
    if config.lr_decay not in ("linear", "constant"):
        raise UserError(f"Unknown lr_decay {config.lr_decay!r}; choose linear or constant.")
    for name in ("steps", "batch_size", "width", "depth"):
        if getattr(config, name) < 1:
            raise UserError(f"{name} must be at least 1, got {getattr(config, name)}.")


def build_gan(config: TrainConfig):
    """The WGANGP of a configuration, compiled: MLPs, Adam with the learning rate decayed linearly to 0."""
    import keras

    import portable_wgangp as pw
    from portable_wgangp import nets

    gan = pw.WGANGP(
        nets.mlp(config.latent_dim, 2, width=config.width, depth=config.depth, name="generator"),
        nets.mlp(2, 1, width=config.width, depth=config.depth, name="critic"),
        config.latent_dim,
        n_critic=config.n_critic,
        gp_weight=config.gp_weight,
        penalty=config.penalty,
        seed=config.seed,
    )

    def adam(updates):
        rate = config.lr
        if config.lr_decay == "linear":
            rate = keras.optimizers.schedules.PolynomialDecay(
                config.lr, updates, end_learning_rate=0.0, power=1.0
            )
        return keras.optimizers.Adam(rate, beta_1=config.beta_1, beta_2=config.beta_2)

    gan.compile(generator_optimizer=adam(config.steps), critic_optimizer=adam(config.steps * config.n_critic))
    return gan


def train(args) -> None:
    import keras

    import portable_wgangp as pw
    from portable_wgangp import callbacks, data

    out = _output_folder(args.out)
    if args.resume:
        config, gan, done = _resume(out, args)
    else:
        config = resolve_config(args)
        _check(config)
        keras.utils.set_random_seed(config.seed)
        (out / "metrics.jsonl").unlink(missing_ok=True)
        done = 0
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(config), indent=1) + "\n")
    backend = keras.backend.backend()
    print(f"portable-wgangp: {config.dataset}, {config.steps} steps, {backend} backend -> {out}", flush=True)
    started = time.perf_counter()
    with pw.distribute(config.strategy):
        if not args.resume:
            gan = build_gan(config)
        if done < config.steps:
            gan.fit(
                data.toy_minibatches(
                    config.dataset, config.batch_size, seed=config.seed, start=done * config.n_critic
                ),
                steps_per_epoch=config.steps - done,
                epochs=1,
                verbose=0,
                callbacks=[
                    callbacks.MetricsLog(out / "metrics.jsonl", first_step=done),
                    callbacks.Checkpoint(out / "checkpoint.keras", config.checkpoint_every, first_step=done),
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
    quality = _write_results(gan, config, out)
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
    import keras

    checkpoint, saved = out / "checkpoint.keras", out / "config.json"
    if not checkpoint.is_file() or not saved.is_file():
        raise UserError(f"Nothing to resume in {str(out)!r}: it has no checkpoint.keras and config.json.")
    config = TrainConfig(**json.loads(saved.read_text()))
    if args.steps is not None:
        config.steps = args.steps
    keras.utils.set_random_seed(config.seed)
    gan = _load_checkpoint(checkpoint)
    return config, gan, int(gan.generator_optimizer.iterations)


def _write_results(gan, config: TrainConfig, out) -> dict:
    """quality.json, samples.png and losses.png of a finished run; returns the quality figures."""
    import numpy as np
    from keras import ops

    from portable_wgangp import data, plots

    generated = gan.sample(2000, seed=config.seed)
    quality = data.toy_quality(config.dataset, generated, seed=config.seed + 1)
    (out / "quality.json").write_text(json.dumps(quality, indent=1) + "\n")
    real = data.toy_samples(config.dataset, 2000, np.random.default_rng([config.seed, 2]))

    def critic(points):
        return ops.convert_to_numpy(ops.cast(gan.critic(points), "float32"))[:, 0]

    title = f"{config.dataset}, {int(gan.generator_optimizer.iterations)} steps"
    plots.toy_figure(out / "samples.png", generated, real, critic, title=title)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    plots.loss_curves(out / "losses.png", records, title=title)
    return quality


def sample(args) -> None:
    import numpy as np

    from portable_wgangp import plots

    gan = _load_checkpoint(args.checkpoint)
    samples = gan.sample(args.n, seed=args.seed)
    if args.out.endswith(".npy"):
        np.save(args.out, samples)
    elif args.out.endswith(".png"):
        plots.toy_figure(args.out, samples, title=f"{args.n} samples")
    else:
        raise UserError(f"--out must end in .png or .npy, got {args.out!r}.")
    print(f"wrote {args.out}")


def evaluate(args) -> None:
    from portable_wgangp import data

    if args.dataset not in data.TOY_DATASETS:
        raise UserError(f"Unknown dataset {args.dataset!r}; choose one of {', '.join(data.TOY_DATASETS)}.")
    gan = _load_checkpoint(args.checkpoint)
    quality = data.toy_quality(args.dataset, gan.sample(args.n, seed=args.seed), seed=args.seed + 1)
    print(json.dumps(quality, indent=1))


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
