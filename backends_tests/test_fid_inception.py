"""The Keras FID Inception against pytorch-fid's network, without the real weights.

Every backend draws the same seeded random weights (`make_fid_inception_fixture.random_state_dict`), writes
them as pytorch-fid's state_dict in an ``.npz``, loads them into our network and compares its pool features
and logits with what the torch reference computed (``data/fid_inception_reference.npz``); where torch is
importable, also with the reference run live. Relative differences: max |ours − torch| / max |torch|.
"""

import keras
import numpy as np
import pytest
from make_fid_inception_fixture import FIXTURE, checksum, fixture_images, random_state_dict

from portable_wgangp import fid_inception, metrics

TOLERANCE = 1e-4


def relative_difference(ours, reference):
    return float(np.max(np.abs(ours - reference)) / np.max(np.abs(reference)))


@pytest.fixture(scope="module")
def state_dict():
    return random_state_dict(fid_inception.state_dict_shapes(fid_inception.build_model()))


@pytest.fixture(scope="module")
def extractor(state_dict, tmp_path_factory):
    path = tmp_path_factory.mktemp("fid") / "fid_inception.npz"
    np.savez(path, **state_dict)
    return fid_inception.FIDInception(path)


@pytest.fixture(scope="module")
def outputs(extractor):
    return extractor.features_and_logits(fixture_images())


def test_features_and_logits_match_the_torch_reference_fixture(state_dict, outputs):
    reference = np.load(FIXTURE)
    assert checksum(state_dict) == pytest.approx(float(reference["checksum"]), rel=1e-9), (
        "the seeded weights differ from those the fixture was made with; rerun make_fid_inception_fixture.py"
    )
    np.testing.assert_array_equal(reference["images"], fixture_images())
    pool, logits = outputs
    assert pool.shape == (2, 2048) and logits.shape == (2, 1008) and pool.dtype == np.float64
    assert relative_difference(pool, reference["pool"]) < TOLERANCE
    assert relative_difference(logits, reference["logits"]) < TOLERANCE


def test_features_and_logits_match_the_torch_reference_run_live(state_dict, outputs):
    pytest.importorskip("torch", reason="the live torch reference needs torch")
    from torch_fid_inception import reference_outputs

    pool, logits = reference_outputs(state_dict, fixture_images())
    assert relative_difference(outputs[0], pool) < TOLERANCE
    assert relative_difference(outputs[1], logits) < TOLERANCE
    reference = np.load(FIXTURE)  # the fixture is what the reference computes now
    assert relative_difference(reference["pool"], pool) < 1e-6
    assert relative_difference(reference["logits"], logits) < 1e-6


def torch_bilinear_matrix(in_size, out_size):
    """torch's bilinear rule (``align_corners=False``, no antialiasing) as a matrix ``(out_size, in_size)``.

    Output pixel i samples the input at s = max((i + ½)·in/out − ½, 0), computed in float32 as torch does,
    and mixes ⌊s⌋ and min(⌊s⌋ + 1, in − 1) with weights 1 − (s − ⌊s⌋) and s − ⌊s⌋.
    """
    f32 = np.float32
    scale = f32(in_size) / f32(out_size)
    source = np.maximum(scale * (np.arange(out_size, dtype=f32) + f32(0.5)) - f32(0.5), 0)
    low = np.floor(source).astype("int64")
    weight_high = (source - low).astype("float64")
    matrix = np.zeros((out_size, in_size))
    np.add.at(matrix, (np.arange(out_size), low), 1.0 - weight_high)
    np.add.at(matrix, (np.arange(out_size), np.minimum(low + 1, in_size - 1)), weight_high)
    return matrix


SIZES = [(28, 36), (1, 5), (299, 299), (450, 512)]


def random_images(height, width):
    return np.random.default_rng(height).uniform(-1, 1, (2, height, width, 3)).astype("float32")


def torch_bilinear(images):
    """Images ``(N, H, W, C)`` resized to 299×299 by `torch_bilinear_matrix` on both axes."""
    _, height, width, _ = images.shape
    rows, columns = torch_bilinear_matrix(height, 299), torch_bilinear_matrix(width, 299)
    return np.einsum("oh,nhwc,pw->nopc", rows, images, columns, optimize=True)


@pytest.mark.parametrize("height, width", SIZES)
def test_resize_is_torch_bilinear_without_align_corners(height, width):
    images = random_images(height, width)
    resized = keras.ops.convert_to_numpy(fid_inception.resize(images))
    np.testing.assert_allclose(resized, torch_bilinear(images), rtol=0, atol=2e-5)


@pytest.mark.parametrize("height, width", SIZES)
def test_the_bilinear_reference_is_torch_interpolate(height, width):
    torch = pytest.importorskip("torch", reason="the comparison with F.interpolate needs torch")
    images = random_images(height, width)
    interpolated = torch.nn.functional.interpolate(
        torch.from_numpy(images).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear", align_corners=False
    )
    np.testing.assert_allclose(torch_bilinear(images), interpolated.permute(0, 2, 3, 1).numpy(), atol=2e-5)


def test_grey_images_are_read_as_rgb(extractor):
    grey = fixture_images()[..., :1]
    np.testing.assert_array_equal(extractor(grey), extractor(np.repeat(grey, 3, axis=-1)))


def test_weights_with_missing_extra_or_misshapen_entries_are_refused_by_name(extractor, state_dict):
    model = extractor.model
    missing = {k: v for k, v in state_dict.items() if k != "Mixed_6b.branch7x7_2.conv.weight"}
    with pytest.raises(ValueError, match=r"missing Mixed_6b\.branch7x7_2\.conv\.weight, unexpected none"):
        fid_inception.load_state_dict(model, missing)
    with pytest.raises(ValueError, match=r"missing none, unexpected AuxLogits\.fc\.weight"):
        fid_inception.load_state_dict(model, {**state_dict, "AuxLogits.fc.weight": np.zeros((1008, 768))})
    misshapen = {**state_dict, "fc.weight": state_dict["fc.weight"].T}
    with pytest.raises(ValueError, match=r"shapes: fc\.weight \(2048, 1008\) \(expected \(1008, 2048\)\)"):
        fid_inception.load_state_dict(model, misshapen)


def test_weight_files_that_are_absent_or_not_npz_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloaded"):
        fid_inception.FIDInception(tmp_path / "absent.npz")
    torch_file = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch_file.write_bytes(b"")
    with pytest.raises(ValueError, match=r"not an \.npz file; convert"):
        fid_inception.FIDInception(torch_file)


@pytest.mark.parametrize(
    "images, message",
    [
        (np.zeros((2, 8, 8, 2)), r"\(N ≥ 1, H, W, 1 or 3\), got shape \(2, 8, 8, 2\)"),
        (np.zeros((0, 8, 8, 3)), r"got shape \(0, 8, 8, 3\)"),
        (np.full((1, 8, 8, 3), 255.0), r"values in \[-1, 1\], got \[255, 255\]"),
    ],
)
def test_images_of_the_wrong_shape_or_range_are_refused(extractor, images, message):
    with pytest.raises(ValueError, match=message):
        extractor(images)


def test_the_network_computes_in_float32_under_a_mixed_precision_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = fid_inception.build_model()
    finally:
        keras.config.set_dtype_policy(previous)
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    assert keras.config.dtype_policy().name == previous.name


def test_extractor_specs_name_the_extractors(tmp_path):
    assert isinstance(metrics.extractor_from_spec("pixels-8x8"), metrics.PixelFeatures)
    with pytest.raises(FileNotFoundError, match=r"absent\.npz"):
        metrics.extractor_from_spec(f"inception-fid:{tmp_path / 'absent.npz'}")
    with pytest.raises(ValueError, match="inception-fid:PATH"):
        metrics.extractor_from_spec("inception-fid")
