"""The command line, end to end on the active backend (few steps, into a temporary folder)."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND

import portable_wgangp  # noqa: F401  (registers WGANGP for load_model)
from portable_wgangp.config import requested_values, resolve

RUN_FILES = ("checkpoint.keras", "metrics.jsonl", "quality.json", "samples.png", "losses.png", "config.json")


def run_cli(*args, check=True):
    """``python -m portable_wgangp ARGS`` in a subprocess with the active backend."""
    result = subprocess.run(
        [sys.executable, "-m", "portable_wgangp", *args],
        env={**os.environ, "KERAS_BACKEND": BACKEND},
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    result = run_cli(
        "train", "--steps", "60", "--checkpoint-every", "25", "--batch-size", "32", "--out", str(out)
    )
    return out, result


def test_train_writes_every_file_and_a_summary(short_run):
    out, result = short_run
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 61))
    assert {"critic_loss", "gradient_penalty", "wasserstein_estimate", "generator_loss"} <= set(records[0])
    quality = json.loads((out / "quality.json").read_text())
    assert set(quality) == {"modes_covered", "n_modes", "high_quality_fraction", "emd"}
    assert f"{BACKEND} backend" in result.stdout and "done in" in result.stdout


def test_sample_writes_pictures_and_arrays(short_run, tmp_path):
    out, _ = short_run
    run_cli(
        "sample", "--checkpoint", str(out / "checkpoint.keras"), "--n", "50", "--out", str(tmp_path / "s.npy")
    )
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and samples.dtype == np.float32
    run_cli(
        "sample", "--checkpoint", str(out / "checkpoint.keras"), "--n", "50", "--out", str(tmp_path / "s.png")
    )
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_evaluate_prints_the_quality_figures(short_run):
    out, _ = short_run
    result = run_cli("evaluate", "--checkpoint", str(out / "checkpoint.keras"), "--dataset", "gaussians8")
    assert json.loads(result.stdout)["n_modes"] == 8


def test_resume_continues_from_the_saved_step(short_run, tmp_path):
    out, _ = short_run
    for name in ("checkpoint.keras", "config.json", "metrics.jsonl"):
        (tmp_path / name).write_bytes((out / name).read_bytes())
    run_cli("train", "--resume", "--steps", "80", "--out", str(tmp_path))
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 81))
    gan = keras.models.load_model(tmp_path / "checkpoint.keras")
    assert gan.generator_optimizer.get_config()["learning_rate"]["config"]["decay_steps"] == 80  # re-planned


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--dataset", "mnist", "--out", "{tmp}"], "Unknown dataset 'mnist'"),
        (["sample", "--checkpoint", "{tmp}/missing.keras", "--out", "{tmp}/x.png"], "No checkpoint at"),
        (
            ["sample", "--checkpoint", "{tmp}/corrupt.keras", "--out", "{tmp}/x.png"],
            "is not a portable-wgangp checkpoint",
        ),
        (["train", "--resume", "--out", "{tmp}/empty"], "Nothing to resume"),
    ],
)
def test_errors_are_one_line_with_exit_status_2(args, message, tmp_path):
    (tmp_path / "corrupt.keras").write_bytes(b"not a zip file")
    result = run_cli(*[a.format(tmp=tmp_path) for a in args], check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and message in result.stderr
    assert "Traceback" not in result.stderr


def test_config_resolution_order(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text("lr = 0.01\nn-critic = 3\nwidth = 64\n")
    config = resolve(requested_values({"width": 32, "lr": None}, str(toml), "paper"), "paper")
    assert (config.lr, config.n_critic, config.width) == (0.01, 3, 32)  # flag > file > preset
    assert (config.beta_1, config.gp_weight, config.steps) == (0.5, 0.1, 100000)  # from the paper preset
    defaults = resolve(requested_values({}))
    assert (defaults.width, defaults.n_critic, defaults.gp_weight, defaults.lr) == (128, 2, 0.1, 2e-3)


def test_conditional_digits_end_to_end(tmp_path):
    out = tmp_path / "digits"
    run_cli(
        "train", "--dataset", "digits", "--conditional", "--steps", "20", "--base", "8", "--out", str(out)
    )
    quality = json.loads((out / "quality.json").read_text())
    assert {"fid", "fid_initial", "kid", "precision", "recall", "extractor", "label_accuracy"} <= set(quality)
    assert quality["extractor"] == "digits-mlp64"
    run_cli(
        "sample",
        "--checkpoint",
        str(out / "checkpoint.keras"),
        "--label",
        "3",
        "--n",
        "12",
        "--out",
        str(out / "3.npy"),
    )
    samples = np.load(out / "3.npy")
    assert samples.shape == (12, 8, 8, 1) and samples.min() >= -1 and samples.max() <= 1


@pytest.mark.parametrize("fixture", ["toy_tensorflow", "digits_torch"])
def test_a_checkpoint_written_on_another_backend_samples_the_same(fixture, tmp_path):
    """`train` checkpoints written on TensorFlow (toy MLP) and on torch (a channels_first DCGAN) give,
    through `sample` here, the samples the writing backend drew (see make_cli_fixtures.py)."""
    data = pathlib.Path(__file__).resolve().parent / "data"
    out = tmp_path / "samples.npy"
    run_cli(
        "sample",
        "--checkpoint",
        str(data / f"{fixture}.keras"),
        "--n",
        "16",
        "--seed",
        "3",
        "--out",
        str(out),
    )
    expected = np.load(data / f"{fixture}_samples.npy")
    assert np.load(out).shape == expected.shape
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-5)


def test_every_flag_of_every_command_says_what_it_does_and_every_example_parses():
    import argparse
    import re
    import shlex

    from portable_wgangp import cli, flags

    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(flags.EXAMPLES)
    for name, command in commands.items():
        for action in command._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            words = re.sub(r"\(default [^)]*\)", "", action.help or "").strip()
            assert len(words.split()) >= 3, (name, action.option_strings, action.help)
        assert len(flags.EXAMPLES[name]) == 3 and "examples:" in command.format_help()
        for example in flags.EXAMPLES[name]:
            assert parser.parse_args(shlex.split(example)[1:]).command == name
    titles = [group.title for group in commands["train"]._action_groups]
    assert set(flags.GROUPS.values()) <= set(titles)


def test_evaluate_leaves_the_defaults_of_later_runs_alone(tmp_path, capsys):
    """evaluate reads the run's config.json beside the checkpoint; the defaults of the toy data stay as
    they were for every later command of the process."""
    from portable_wgangp import cli, config

    before = config.resolve({})
    out = tmp_path / "run"
    flags = ["--steps", "4", "--batch-size", "16", "--width", "8", "--lr", "3e-4", "--checkpoint-every", "2"]
    assert cli.main(["train", "--out", str(out), "--quiet", *flags]) == 0
    assert cli.main(["evaluate", "--checkpoint", str(out / "checkpoint.keras"), "--n", "100"]) == 0
    assert config.resolve({}) == before
