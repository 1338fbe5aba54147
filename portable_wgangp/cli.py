"""`portable-wgangp`: train, sample and evaluate WGAN-GPs from the command line.

The Keras backend follows ``KERAS_BACKEND``; when it is unset and keras.json's backend is not installed,
the first installed of TensorFlow, JAX and torch. Errors print one line on stderr and exit with status 2
(``--debug`` shows the trace).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import pathlib
import sys
import tempfile

from portable_wgangp.config import FIELDS, MAX_SEED, PRESETS, TrainConfig, UserError
from portable_wgangp.runs import Stopped

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line on stderr (exit status 2), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portable-wgangp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

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
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (only --steps, --checkpoint-every, --strategy "
        "may change)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = commands.add_parser("sample", help="draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--label", type=int, help="the class to draw, for a conditional model")
    sample.add_argument("--out", required=True, help="F.png (a picture) or F.npy (the raw samples)")
    sample.add_argument("--raw", action="store_true", help="use the raw generator, not its EMA")

    evaluate = commands.add_parser("evaluate", help="print the quality figures of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a .keras file written by train")
    evaluate.add_argument("--dataset", default="gaussians8", help="the data it was trained on")
    evaluate.add_argument(
        "--n", type=int, default=2000, help="samples to measure (default 2000; images 1000)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    evaluate.add_argument("--raw", action="store_true", help="use the raw generator, not its EMA")
    return parser


_PARSERS = {"int": int, "float": float, "str": str}


def train(args) -> int:
    from portable_wgangp import runs
    from portable_wgangp.config import requested_values

    given = {name: getattr(args, name) for name in FIELDS}
    request = runs.TrainRequest(
        requested_values(given, args.config, args.preset),
        out=args.out,
        preset=args.preset,
        resume=args.resume,
        overwrite=args.overwrite,
        quiet=args.quiet,
    )
    return runs.train(request)


def sample(args) -> int:
    import numpy as np

    from portable_wgangp import checkpoints, files, plots

    _check_count_and_seed(args)
    suffix = pathlib.Path(args.out).suffix
    if suffix not in (".png", ".npy"):
        raise UserError(f"--out must end in .png or .npy, got {args.out!r}.")
    _check_parent_folder(args.out)
    gan = checkpoints.load(args.checkpoint)
    if args.label is not None and gan.num_classes is None:
        raise UserError("--label needs a conditional model; this checkpoint has no classes.")
    if args.label is not None and not 0 <= args.label < gan.num_classes:
        raise UserError(f"--label must lie in 0..{gan.num_classes - 1} for this model, got {args.label}.")
    samples = gan.sample(args.n, seed=args.seed, labels=args.label, use_ema=False if args.raw else None)
    with files.atomic_path(args.out) as temporary:
        if suffix == ".npy":
            with open(temporary, "wb") as file:
                np.save(file, samples)
        elif samples.ndim == 4:
            rows = int(np.ceil(np.sqrt(args.n)))
            plots.image_grid(temporary, samples, rows=rows, title=f"{args.n} samples")
        else:
            plots.toy_figure(temporary, samples, title=f"{args.n} samples")
    print(f"wrote {args.out}")
    return 0


def evaluate(args) -> int:
    """The quality figures of a checkpoint (of its generator EMA when it has one, unless ``--raw``); its
    run's config.json (beside it) gives the settings."""
    from portable_wgangp import checkpoints, config, tasks

    _check_count_and_seed(args)
    gan = checkpoints.load(args.checkpoint)
    saved = pathlib.Path(args.checkpoint).with_name("config.json")
    values = config.dataset_defaults(args.dataset)
    if saved.is_file():
        values.update(dataclasses.asdict(config.load_saved(saved)))
    values.update(dataset=args.dataset, seed=args.seed, conditional=gan.num_classes is not None)
    if config.is_toy(args.dataset):
        values.update(model="mlp")
    elif values.get("model") == "mlp":
        values["model"] = config.IMAGE_DEFAULTS["model"]
    settings = TrainConfig(**values)
    config.validate(settings)
    if config.is_toy(args.dataset):  # 2-D points, no data to load
        checkpoints.check_sample_shape(gan, tasks.ToyTask.sample_shape, args.dataset)
        task = tasks.ToyTask(settings)
    else:
        task = tasks.make_task(settings)
        checkpoints.check_sample_shape(gan, task.sample_shape, args.dataset)
    print(json.dumps(task.quality(gan, args.n, use_ema=False if args.raw else None), indent=1))
    return 0


def _check_count_and_seed(args) -> None:
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}.")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must lie in 0..{MAX_SEED}, got {args.seed}.")


def _check_parent_folder(path) -> None:
    parent = pathlib.Path(path).resolve().parent
    if not parent.is_dir():
        raise UserError(f"No folder {str(parent)!r} to write {path!r} into; create it first.")


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate}


def main(argv=None) -> int:
    """Run one command; returns the exit status. Unless ``--debug``, what the frameworks print on stderr
    is held back and shown only when the command succeeds, so a failure prints exactly one line."""
    args = build_parser().parse_args(argv)
    if args.debug:
        return COMMANDS[args.command](args)
    with _held_stderr() as stderr:
        try:
            return COMMANDS[args.command](args)
        except Stopped as stop:
            stderr.show_only(f"portable-wgangp: {stop.message}")
            return stop.status
        except KeyboardInterrupt:
            stderr.show_only("portable-wgangp: interrupted (SIGINT) before training; nothing was saved")
            return EXIT_INTERRUPTED
        except Exception as error:
            message = str(error) if isinstance(error, (UserError, ValueError, OSError)) else ""
            message = message or f"{type(error).__name__}: {error}"
            stderr.show_only(f"portable-wgangp: error: {message.splitlines()[0]}")
            return EXIT_USAGE


class _HeldStderr:
    """What is written to file descriptor 2 while held: kept in a temporary file, then either replayed
    (without TensorFlow's start-up chatter) or replaced by one line."""

    def __init__(self, real_fd: int, held):
        self._real_fd = real_fd
        self._held = held
        self._only: str | None = None

    def show_only(self, line: str) -> None:
        self._only = line

    def release(self) -> None:
        from portable_wgangp._startup import without_chatter

        sys.stdout.flush()
        if self._only is not None:
            text = self._only + "\n"
        else:
            self._held.seek(0)
            text = without_chatter(self._held.read().decode(errors="replace"))
        os.write(self._real_fd, text.encode())


@contextlib.contextmanager
def _held_stderr():
    sys.stderr.flush()
    real_fd = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        stderr = _HeldStderr(real_fd, held)
        try:
            yield stderr
        finally:
            sys.stderr.flush()
            os.dup2(real_fd, 2)
            stderr.release()
            os.close(real_fd)


if __name__ == "__main__":
    sys.exit(main())
