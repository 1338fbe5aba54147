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
import re
import sys
import tempfile

from portable_wgangp import flags, host_memory
from portable_wgangp.config import FIELDS, MAX_SEED, PRESETS, RESUMABLE, TrainConfig, flag
from portable_wgangp.errors import UserError
from portable_wgangp.runs import Stopped

EXIT_USAGE = 2
STATS_CHUNK = 1000  # images read and passed through the extractor at a time by `stats`
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse with usage errors as one line on stderr (exit status 2), like every other error."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="portable-wgangp", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = _command(commands, "train", "train a WGAN-GP; write metrics, pictures, quality and checkpoints")
    groups = {key: train.add_argument_group(title) for key, title in flags.GROUPS.items()}
    for name, kind in FIELDS.items():
        group, metavar, _ = flags.TRAIN[name]
        if kind == "bool":
            groups[group].add_argument(
                flag(name), action=argparse.BooleanOptionalAction, default=None, help=flags.help_text(name)
            )
        else:
            groups[group].add_argument(
                flag(name), type=_PARSERS[kind], default=None, metavar=metavar, help=flags.help_text(name)
            )
    train = groups["run"]
    train.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help=flags.PRESET,
    )
    train.add_argument("--config", metavar="TOML", help="a TOML file of the flags above (flags override it)")
    train.add_argument(
        "--out",
        default="runs/demo",
        help="output folder, or an object-store URL: gs://BUCKET/PATH, s3://BUCKET/PATH (default runs/demo)",
    )
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its checkpoint (only "
        f"{', '.join(map(flag, RESUMABLE))} may change)",
    )
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = _command(commands, "sample", "draw samples from a checkpoint")
    sample.add_argument("--checkpoint", required=True, help="a .keras file written by train, or its URL")
    sample.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--seed", type=int, default=0, help="seed of the latent vectors (default 0)")
    sample.add_argument("--label", type=int, help="the class to draw, for a conditional model")
    sample.add_argument("--out", required=True, help="F.png (a picture) or F.npy (the raw samples)")
    sample.add_argument("--raw", action="store_true", help="use the raw generator, not its EMA")

    check = _command(
        commands,
        "check",
        "replica-invariance self-test of this machine: R replicas vs one device, or with --reference cpu "
        "its devices vs the host CPU (exit 0 = pass)",
    )
    check.add_argument("--strategy", default="auto", help="the strategy to check (default auto)")
    check.add_argument("--devices", nargs="+", help="device names, as pw.distribute takes them (default all)")
    check.add_argument(
        "--replicas",
        type=int,
        default=2,
        help="replicas to create where there are not that many devices: TF logical CPUs for mirrored, "
        "JAX host devices on CPU (default 2)",
    )
    check.add_argument(
        "--dtype-policy",
        help="check the penalty under this policy, e.g. mixed_bfloat16 (--reference: train the device's "
        "run under it)",
    )
    check.add_argument("--no-timing", action="store_true", help="skip the step timings")
    check.add_argument("--json", help="also write the report to this JSON file")
    check.add_argument(
        "--reference",
        choices=["cpu"],
        help="instead, train a small WGAN-GP on these devices (--strategy, --dtype-policy) and in float32 "
        "on the host CPU in another process, and compare weights and metrics",
    )
    check.add_argument(
        "--steps",
        type=int,
        metavar="K",
        help="--reference: generator steps of each run (default 20; the tolerance grows with K/20)",
    )
    check.add_argument(
        "--precision",
        choices=["auto", "float32", "bfloat16_3x", "tensorfloat32", "float16", "bfloat16"],
        help="--reference: the precision whose tolerance applies; auto (default): the one the device "
        "computes in (its float32 matmuls, the dtype policy); float32 demands float32 agreement",
    )

    evaluate = _command(commands, "evaluate", "print the quality figures of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="a .keras file written by train, or its URL")
    evaluate.add_argument("--dataset", default="gaussians8", help="the data it was trained on")
    evaluate.add_argument(
        "--n", type=int, default=2000, help="samples to measure (default 2000; images: at most the dataset's)"
    )
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the samples (default 0)")
    evaluate.add_argument("--raw", action="store_true", help="use the raw generator, not its EMA")
    evaluate.add_argument(
        "--extractor", default="", help="feature extractor (default: the run's, or the data's)"
    )
    evaluate.add_argument(
        "--stats", help="real-data FID statistics (a stats.npz of `stats`, pytorch-fid or TTUR)"
    )

    stats = _command(commands, "stats", "FID statistics (mu, sigma) of a dataset's features, as stats.npz")
    stats.add_argument(
        "--dataset",
        required=True,
        help="digits, npz:PATH[:KEY], npy:PATH[:LABELS], images:DIR or cifar10:PATH",
    )
    stats.add_argument("--out", required=True, help="the .npz file to write (arrays mu and sigma)")
    stats.add_argument("--extractor", default="", help="feature extractor (default: the data's)")
    stats.add_argument(
        "--image-size",
        type=int,
        default=32,
        metavar="PIXELS",
        help="images:DIR only: images are resized to PIXELS x PIXELS (default 32)",
    )
    return parser


_PARSERS = {"int": int, "float": float, "str": str}


def _command(commands, name: str, text: str) -> argparse.ArgumentParser:
    """A sub-command whose help ends with its examples (`flags.EXAMPLES`)."""
    return commands.add_parser(
        name,
        help=text,
        description=text[0].upper() + text[1:] + ".",
        epilog=flags.epilog(name),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


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

    from portable_wgangp import checkpoints, files, plots, storage

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
    print(f"wrote {storage.shown(args.out)}")
    return 0


def evaluate(args) -> int:
    """The quality figures of a checkpoint (of its generator EMA when it has one, unless ``--raw``); its
    run's config.json (beside it) gives the settings."""
    from portable_wgangp import checkpoints, config, tasks

    _check_count_and_seed(args)
    gan = checkpoints.load(args.checkpoint)
    values = config.dataset_defaults(args.dataset)
    values.update(_run_config_beside(args.checkpoint))
    values.update(dataset=args.dataset, seed=args.seed, conditional=gan.num_classes is not None)
    if config.is_toy(args.dataset):
        values.update(model="mlp")
    elif values.get("model") == "mlp":
        values["model"] = config.IMAGE_DEFAULTS["model"]
    if args.extractor:
        values["extractor"] = args.extractor
    settings = TrainConfig(**values)
    config.validate(settings)
    if config.is_toy(args.dataset):  # 2-D points, no data to load
        if args.stats:
            raise UserError("--stats holds image features; the toy datasets are measured without it.")
        checkpoints.check_sample_shape(gan, tasks.ToyTask.sample_shape, args.dataset)
        task = tasks.ToyTask(settings)
    else:
        task = tasks.make_task(settings)
        checkpoints.check_sample_shape(gan, task.sample_shape, args.dataset)
    reference = _read_stats(args.stats) if args.stats else None
    use_ema = False if args.raw else None
    print(json.dumps(task.quality(gan, args.n, reference=reference, use_ema=use_ema), indent=1))
    return 0


def _run_config_beside(checkpoint: str) -> dict:
    """The settings in the config.json beside a checkpoint (a file or a URL), or {} when there is none."""
    from portable_wgangp import config, storage

    if storage.is_url(checkpoint):
        beside = storage.join(storage.parent(checkpoint), "config.json")
        with storage.local_copy(beside, missing_ok=True) as saved:
            return dataclasses.asdict(config.load_saved(saved)) if saved else {}
    saved = pathlib.Path(checkpoint).with_name("config.json")
    return dataclasses.asdict(config.load_saved(saved)) if saved.is_file() else {}


def stats(args) -> int:
    """Write the FID statistics of a dataset's features (pytorch-fid's and TTUR's format: mu, sigma), read
    and extracted `STATS_CHUNK` images at a time (bounded memory for a folder or a memory-mapped array)."""
    import keras
    import numpy as np

    from portable_wgangp import config, files, metrics, storage, tasks

    if not args.out.endswith(".npz"):
        raise UserError(f"--out must end in .npz, got {args.out!r}.")
    _check_parent_folder(args.out)
    if config.is_toy(args.dataset):
        raise UserError(
            f"stats measures image features; {args.dataset} is 2-D points: use digits, npz:, npy: or images:."
        )
    settings = TrainConfig(
        **{
            **config.dataset_defaults(args.dataset),
            "dataset": args.dataset,
            "image_size": args.image_size,
            "batch_size": 1,  # nothing is trained: any number of images will do
        },
        extractor=args.extractor,
    )
    config.validate(settings)
    task = tasks.ImageTask(settings)
    source, chunk = task.source, STATS_CHUNK
    progress = keras.utils.Progbar(len(source), unit_name="image", verbose=1 if len(source) > chunk else 0)

    def features():
        for start in range(0, len(source), chunk):
            yield task.extractor(source.read(np.arange(start, min(start + chunk, len(source)))))
            progress.add(min(chunk, len(source) - start))

    mu, sigma = metrics.streamed_feature_statistics(features())
    with files.atomic_path(args.out) as temporary, open(temporary, "wb") as file:
        np.savez(file, mu=mu, sigma=sigma)
    name = task.extractor.name
    shape = f"mu {mu.shape}, sigma {sigma.shape}"
    print(f"wrote {storage.shown(args.out)}: {shape} of {len(source)} images ({name})")
    return 0


def _read_stats(path) -> dict:
    from portable_wgangp import sources, storage

    try:
        with sources.load_array(path) as archive:
            return {"mu": archive["mu"], "sigma": archive["sigma"]}
    except (OSError, ValueError, KeyError, AttributeError) as error:
        raise UserError(
            f"Cannot read FID statistics from {storage.shown(path)!r} ({sources.numpy_reason(error)}); "
            "pass a .npz with arrays mu and sigma."
        ) from error


def _check_count_and_seed(args) -> None:
    if args.n < 1:
        raise UserError(f"--n must be at least 1, got {args.n}.")
    if not 0 <= args.seed <= MAX_SEED:
        raise UserError(f"--seed must lie in 0..{MAX_SEED}, got {args.seed}.")


def _check_parent_folder(path) -> None:
    from portable_wgangp import storage

    if storage.is_url(path):  # object stores have no folders to create
        return
    parent = pathlib.Path(path).resolve().parent
    if not parent.is_dir():
        raise UserError(f"No folder {str(parent)!r} to write {path!r} into; create it first.")


def check(args) -> int:
    """Exit status 0 when every difference is within tolerance, 1 otherwise (see `portable_wgangp.check`)."""
    import keras

    from portable_wgangp import check as self_test
    from portable_wgangp import distribution, files

    if args.replicas < 1:
        raise UserError(f"--replicas must be at least 1, got {args.replicas}.")
    if not args.reference and (args.steps is not None or args.precision is not None):
        raise UserError("--steps and --precision belong to --reference cpu; add it, or leave them out.")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be at least 1, got {args.steps}.")
    if args.json:
        _check_parent_folder(args.json)
    distribution.check_strategy(args.strategy)
    if keras.backend.backend() == "jax" and "KERAS_DISTRIBUTION_JOB_ADDRESSES" not in os.environ:
        _force_host_devices(args.replicas)
    if args.dtype_policy:
        try:
            keras.config.set_dtype_policy(args.dtype_policy)
        except ValueError as error:
            raise UserError(f"Unknown --dtype-policy {args.dtype_policy!r}; e.g. mixed_bfloat16.") from error
    if args.reference:
        report = self_test.run_reference_check(
            args.strategy,
            args.devices,
            steps=args.steps or self_test.REFERENCE_STEPS,
            replicas=args.replicas,
            precision=args.precision or "auto",
        )
        form = self_test.format_reference_report
    else:
        report = self_test.run_check(
            args.strategy, args.devices, replicas=args.replicas, timing=not args.no_timing
        )
        form = self_test.format_report
    if report["process_index"] == 0:  # one table and one file per run, not one per process
        print(form(report), flush=True)
        if args.json:
            files.write_json(args.json, report)
    return 0 if report["passed"] else 1


def _force_host_devices(count: int) -> None:
    """JAX on a CPU host shows one device; ``count`` host devices make data parallelism checkable there.
    Harmless on accelerators (only the host platform is affected). Must run before JAX starts."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={count}".strip()


COMMANDS = {"train": train, "sample": sample, "evaluate": evaluate, "check": check, "stats": stats}


def main(argv=None) -> int:
    """Run one command; returns the exit status. Unless ``--debug``, what the frameworks print on stderr
    is held back and shown only when the command succeeds, so a failure prints exactly one line."""
    args = build_parser().parse_args(argv)
    host_memory.configure_process()  # KERAS_BACKEND is chosen: importing portable_wgangp did it
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
            failed_allocation = _failed_allocation(error)
            if failed_allocation:
                message = (
                    f"out of memory ({failed_allocation}); lower --batch-size or --image-size, or give "
                    "the process more memory, then continue a run with --resume (its last checkpoint is "
                    "kept) or start it again with --overwrite."
                )
            stderr.show_only(f"portable-wgangp: error: {message.splitlines()[0]}")
            return EXIT_USAGE


# What each framework says when an allocation fails (its exception types differ, and Keras re-raises
# torch's inside a RuntimeError about the layer): Python, torch (CPU, CUDA), XLA, TensorFlow, protobuf.
_OUT_OF_MEMORY = (
    "can't allocate memory",
    "out of memory",
    "resource_exhausted",
    "oom when allocating",
    "arena alloc failed",
)


def _chain(error: BaseException):
    """``error`` and the exceptions it was raised from or during."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _failed_allocation(error: BaseException) -> str | None:
    """When ``error`` or one it was raised from says an allocation failed: the line that says so
    (without terminal colours), or ``MemoryError``; else None."""
    memory_error = None
    for e in _chain(error):
        for line in str(e).splitlines():
            if any(marker in line.lower() for marker in _OUT_OF_MEMORY):
                return re.sub(r"\x1b\[[0-9;]*m", "", line).strip()[:200]
        if isinstance(e, MemoryError):
            memory_error = type(e).__name__
    return memory_error


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


def entry_point() -> None:
    """The console script (and ``python -m portable_wgangp``): `main`, then file descriptor 2 closed for
    the interpreter's shutdown (unless ``--debug``), where TensorFlow's C++ runtime may still print (a
    dataset iterator finalized after Python is gone), so an error or a preemption stays one line."""
    status = main()
    if "--debug" not in sys.argv[1:]:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
