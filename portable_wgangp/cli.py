"""`portable-wgangp`: train, sample and evaluate WGAN-GPs from the command line.

The Keras backend follows ``KERAS_BACKEND``; when it is unset, the first installed of jax, torch and
tensorflow is used. Errors print one line on stderr and exit with status 2 (``--debug`` shows the trace).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time

EXIT_USAGE = 2
FRAMEWORKS = {"jax": "jax", "torch": "torch", "tensorflow": "tensorflow"}


class UserError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


def choose_backend() -> str:
    """``KERAS_BACKEND`` if set, else the first installed framework; set it before keras is imported."""
    if "KERAS_BACKEND" not in os.environ:
        installed = [name for name, module in FRAMEWORKS.items() if importlib.util.find_spec(module)]
        if not installed:
            raise UserError(
                "No Keras backend is installed; install one, e.g. pip install 'portable-wgangp[jax]'."
            )
        os.environ["KERAS_BACKEND"] = installed[0]
    return os.environ["KERAS_BACKEND"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="portable-wgangp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a WGAN-GP and write metrics, pictures and a checkpoint")
    train.add_argument("--dataset", default="gaussians8", help="gaussians8 (default), gaussians25, swissroll")
    train.add_argument("--steps", type=int, default=5000, help="generator steps (default 5000)")
    train.add_argument("--batch-size", type=int, default=256, help="critic minibatch size (default 256)")
    train.add_argument(
        "--n-critic", type=int, default=2, help="critic updates per generator step (default 2)"
    )
    train.add_argument("--gp-weight", type=float, default=0.1, help="λ, the penalty weight (default 0.1)")
    train.add_argument("--penalty", default="two_sided", help="two_sided (default), one_sided, zero_centered")
    train.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate, decayed linearly to 0")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, noise and data (default 0)")
    train.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    train.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2), help="Keras progress display")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--out", required=True, help="F.png (a picture) or F.npy (the raw samples)")
    return parser


def train(args) -> None:
    import keras

    import portable_wgangp as pw
    from portable_wgangp import data, nets, plots
    from portable_wgangp.callbacks import MetricsLog

    if args.dataset not in data.TOY_DATASETS:
        raise UserError(f"Unknown dataset {args.dataset!r}; choose one of {', '.join(data.TOY_DATASETS)}.")
    if args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}.")
    out = _output_folder(args.out)
    keras.utils.set_random_seed(args.seed)
    latent_dim = 2
    gan = pw.WGANGP(
        nets.mlp(latent_dim, 2, width=128, depth=3, name="generator"),
        nets.mlp(2, 1, width=128, depth=3, name="critic"),
        latent_dim,
        n_critic=args.n_critic,
        gp_weight=args.gp_weight,
        penalty=args.penalty,
        seed=args.seed,
    )

    def adam(updates):
        decay = keras.optimizers.schedules.PolynomialDecay(args.lr, updates, end_learning_rate=0.0, power=1.0)
        return keras.optimizers.Adam(decay, beta_1=0.0, beta_2=0.9)

    gan.compile(generator_optimizer=adam(args.steps), critic_optimizer=adam(args.steps * args.n_critic))
    print(
        f"portable-wgangp: training on {args.dataset} with the {keras.backend.backend()} backend", flush=True
    )
    started = time.perf_counter()
    gan.fit(
        data.toy_minibatches(args.dataset, args.batch_size, seed=args.seed),
        steps_per_epoch=args.steps,
        epochs=1,
        verbose=args.verbose,
        callbacks=[MetricsLog(out / "metrics.jsonl")],
    )
    seconds = time.perf_counter() - started
    gan.save(out / "checkpoint.keras")
    generated = gan.sample(2000, seed=args.seed)
    real = data.toy_samples(args.dataset, 2000, __import__("numpy").random.default_rng(args.seed + 1))
    plots.scatter_points(out / "samples.png", generated, real, title=f"{args.dataset}, {args.steps} steps")
    print(f"trained {args.steps} steps in {seconds:.1f} s; wrote", flush=True)
    for name in ("metrics.jsonl", "samples.png", "checkpoint.keras"):
        print(f"  {out / name}")


def sample(args) -> None:
    import numpy as np

    from portable_wgangp import plots

    gan = _load_checkpoint(args.checkpoint)
    samples = gan.sample(args.n, seed=args.seed)
    if args.out.endswith(".npy"):
        np.save(args.out, samples)
    elif args.out.endswith(".png"):
        plots.scatter_points(args.out, samples, title=f"{args.n} samples")
    else:
        raise UserError(f"--out must end in .png or .npy, got {args.out!r}.")
    print(f"wrote {args.out}")


def _output_folder(path):
    import pathlib

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
        raise UserError(f"No checkpoint at {path!r}; pass the .keras file that train wrote.")
    try:
        return keras.models.load_model(path)
    except Exception as error:
        raise UserError(
            f"Cannot load the checkpoint {path!r} ({type(error).__name__}); is it a .keras file?"
        ) from error


COMMANDS = {"train": train, "sample": sample}


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        choose_backend()
        COMMANDS[args.command](args)
    except Exception as error:
        if args.debug:
            raise
        message = (
            str(error) if isinstance(error, (UserError, ValueError)) else f"{type(error).__name__}: {error}"
        )
        print(
            f"portable-wgangp: error: {message.splitlines()[0] if message else type(error).__name__}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    return 0


if __name__ == "__main__":
    sys.exit(main())
