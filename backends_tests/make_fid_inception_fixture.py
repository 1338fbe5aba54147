"""Writes ``data/fid_inception_reference.npz``: what the torch reference of the FID Inception
(`torch_fid_inception`, pytorch-fid's network) computes with seeded random weights, so that
`test_fid_inception.py` checks our Keras port on backends without torch (run again, from the repository root
where torch is, after a change to the reference or the weights:
``KERAS_BACKEND=torch PYTHONPATH=. python backends_tests/make_fid_inception_fixture.py``).

The weights are not stored (90 MB): every backend draws them again from `random_state_dict`, and the
fixture keeps a checksum of them. The random BatchNorm statistics make BatchNorm far from the identity.
"""

import pathlib
import zlib

import numpy as np

FIXTURE = pathlib.Path(__file__).resolve().parent / "data" / "fid_inception_reference.npz"
SEED = 2015


def random_state_dict(shapes: dict[str, tuple], seed: int = SEED) -> dict[str, np.ndarray]:
    """A state_dict for the given key → torch shape, each entry drawn from its own seed (seed, crc32(key)).

    Conv and fc weights: N(0, 2 / fan_in) (He; activations keep their scale through the 94 layers);
    BatchNorm: γ ~ U(0.5, 1.5), β ~ N(0, 0.1²), running mean ~ N(0, 0.1²), running var ~ U(0.5, 1.5);
    fc bias ~ N(0, 0.1²); plus BatchNorm's ``num_batches_tracked`` counters, as a real weight file has.
    """
    state_dict = {}
    for key, shape in shapes.items():
        rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
        if key.endswith(("conv.weight", "fc.weight")):
            value = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape)
        elif key.endswith(("bn.weight", "running_var")):
            value = rng.uniform(0.5, 1.5, shape)
        else:  # bn.bias, running_mean, fc.bias
            value = rng.normal(0.0, 0.1, shape)
        state_dict[key] = value.astype("float32")
        if key.endswith("bn.running_var"):
            state_dict[key.replace("running_var", "num_batches_tracked")] = np.array(100, dtype="int64")
    return state_dict


def checksum(state_dict: dict[str, np.ndarray]) -> float:
    """Σ|w| over all entries: whether the weights drawn here are those the fixture was made with."""
    return float(sum(np.abs(value.astype("float64")).sum() for value in state_dict.values()))


def fixture_images() -> np.ndarray:
    """Two non-square images ``(2, 28, 36, 3)`` in [-1, 1] (smooth, so the resize matters, plus noise)."""
    rng = np.random.default_rng(SEED)
    rows, columns = np.meshgrid(np.linspace(-1, 1, 28), np.linspace(-1, 1, 36), indexing="ij")
    smooth = np.stack([np.sin(3 * rows + c) * np.cos(2 * columns - c) for c in range(3)], axis=-1)
    images = np.stack([smooth, -smooth[::-1]]) * 0.8 + rng.uniform(-0.2, 0.2, (2, 28, 36, 3))
    return images.astype("float32")


def main() -> None:
    from torch_fid_inception import reference_outputs

    from portable_wgangp import fid_inception

    state_dict = random_state_dict(fid_inception.state_dict_shapes(fid_inception.build_model()))
    images = fixture_images()
    pool, logits = reference_outputs(state_dict, images)
    outputs = {"pool": pool.astype("float32"), "logits": logits.astype("float32")}  # torch ran in float32
    np.savez(FIXTURE, images=images, **outputs, checksum=checksum(state_dict))
    print(f"wrote {FIXTURE}: pool {pool.shape}, logits {logits.shape}")


if __name__ == "__main__":
    main()
