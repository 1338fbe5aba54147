"""Quality during training (`--eval-every`, best.keras), FID statistics files (`stats`, `evaluate --stats`)
and the extractor choice, through the CLI (in-process)."""

import json

import keras
import numpy as np
import pytest
from test_input_validation import one_line_error

from portable_wgangp import cli, data, files, metrics

TOY = ["--steps", "6", "--batch-size", "16", "--width", "8", "--depth", "1", "--quiet"]


def test_eval_every_logs_quality_and_keeps_the_best_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), *TOY, "--eval-every", "3"]) == 0
    records = files.read_records(out / "metrics.jsonl")
    evaluated = [r["step"] for r in records if "eval_emd" in r]
    assert evaluated == [3, 6]
    assert {"eval_modes_covered", "eval_high_quality_fraction"} <= set(records[2])
    best_step = min((r["eval_emd"], r["step"]) for r in records if "eval_emd" in r)[1]
    quality = json.loads((out / "quality.json").read_text())
    assert quality["best_step"] == best_step and quality["best_emd"] == min(
        r["eval_emd"] for r in records[2::3]
    )
    best = keras.models.load_model(out / "best.keras")
    assert int(best.generator_optimizer.iterations) == best_step


def test_a_resumed_run_keeps_the_best_of_its_earlier_evaluations(tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", "--out", str(out), *TOY, "--eval-every", "3"]) == 0
    before = (out / "best.keras").read_bytes()
    records = files.read_records(out / "metrics.jsonl")
    earlier = min(r["eval_emd"] for r in records if "eval_emd" in r)
    assert cli.main(["train", "--resume", "--out", str(out), "--steps", "9", "--quiet"]) == 0
    quality = json.loads((out / "quality.json").read_text())
    latest = files.read_records(out / "metrics.jsonl")[-1]["eval_emd"]
    assert quality["best_emd"] == min(earlier, latest)
    assert ((out / "best.keras").read_bytes() == before) == (latest >= earlier)


def test_stats_writes_the_feature_statistics_and_evaluate_uses_them(tmp_path, capfd):
    stats = tmp_path / "digits.npz"
    assert cli.main(["stats", "--dataset", "digits", "--out", str(stats)]) == 0
    features = metrics.DigitsFeatures()(data.digits()[0])
    with np.load(stats) as saved:
        np.testing.assert_allclose(saved["mu"], features.mean(axis=0), rtol=1e-10)
        np.testing.assert_allclose(saved["sigma"], np.cov(features, rowvar=False), rtol=1e-10)
        reference = {"mu": saved["mu"], "sigma": saved["sigma"]}
    out = tmp_path / "run"
    flags = ["--steps", "2", "--base", "4", "--batch-size", "16", "--n-critic", "1", "--quiet"]
    assert cli.main(["train", "--dataset", "digits", "--out", str(out), *flags]) == 0
    capfd.readouterr()
    checkpoint = str(out / "checkpoint.keras")
    assert (
        cli.main(
            [
                "evaluate",
                "--checkpoint",
                checkpoint,
                "--dataset",
                "digits",
                "--n",
                "300",
                "--stats",
                str(stats),
            ]
        )
        == 0
    )
    figures = json.loads(capfd.readouterr().out)
    generated = keras.models.load_model(checkpoint).sample(300, seed=0)
    expected = metrics.frechet_distance(reference, metrics.DigitsFeatures()(generated))
    assert figures["fid"] == pytest.approx(expected, rel=1e-6)


class LogitFeatures:
    """A stand-in for the FID Inception: features and class logits of flattened images."""

    name = "logits-stand-in"

    def __call__(self, images):
        return np.asarray(images, "float64").reshape(len(images), -1)

    def features_and_logits(self, images):
        features = self(images)
        return features, features[:, :3] * 4.0


def test_an_extractor_with_logits_adds_the_inception_score():
    rng = np.random.default_rng(0)
    real, generated = rng.uniform(-1, 1, (40, 2, 2, 1)), rng.uniform(-1, 1, (40, 2, 2, 1))
    figures = metrics.image_quality(real, generated, LogitFeatures())
    expected = metrics.inception_score(generated.reshape(40, -1)[:, :3] * 4.0, splits=10)
    assert (figures["inception_score"], figures["inception_score_std"]) == pytest.approx(expected)
    assert figures["extractor"] == "logits-stand-in"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--dataset", "digits", "--extractor", "resnet50"], "Unknown --extractor 'resnet50'"),
        (["train", "--dataset", "digits", "--extractor", "inception-fid:/no/such.npz"], "No weight file"),
        (["train", "--extractor", "pixels-8x8"], "--extractor measures images"),
        (["train", "--eval-every", "-1"], "--eval-every must be at least 0"),
        (["stats", "--dataset", "gaussians8", "--out", "{tmp}/s.npz"], "stats measures image features"),
        (["stats", "--dataset", "digits", "--out", "{tmp}/s.txt"], "--out must end in .npz"),
    ],
)
def test_evaluation_settings_are_checked(tmp_path, capfd, argv, message):
    argv = [a.format(tmp=tmp_path) for a in argv]
    out = ["--out", str(tmp_path / "o")] if argv[0] == "train" else []
    assert message in one_line_error(capfd, *argv, *out)
