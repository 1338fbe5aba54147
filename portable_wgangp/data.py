"""Feeding `WGANGP.fit`: real data grouped into rounds of ``n_critic`` fresh minibatches.

A round is one training step's real data, shape ``(batch, n_critic, *sample_shape)``: the batch axis
stays first so that data-parallel strategies shard it, and critic update ``k`` reads ``round[:, k]``.
"""

from __future__ import annotations

import itertools
import pathlib
from collections.abc import Iterable, Iterator

import keras
import numpy as np

DEFAULT_BATCH_SIZE = 64


def is_array(x) -> bool:
    """Numpy arrays, lists and framework tensors (anything with ``__array__`` and a shape)."""
    return isinstance(x, list) or (hasattr(x, "__array__") and hasattr(x, "shape"))


def process_share(rounds, shard: tuple[int, int]):
    """Rows ``[index * b / count, (index + 1) * b / count)`` of each array of a round of global batch b."""
    index, count = shard
    if count == 1:
        return rounds
    return tuple(r[index * (len(r) // count) : (index + 1) * (len(r) // count)] for r in rounds)


def as_labels(y, n: int, num_classes: int | None = None) -> np.ndarray:
    """Class labels as int32 of shape ``(n,)``; a ValueError when they do not match the samples or (with
    ``num_classes``) lie outside 0..num_classes − 1."""
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"Labels must be integers of shape ({n},), one per sample; got {y.dtype} {y.shape}.")
    if num_classes is not None and n and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(
            f"Labels must lie in 0..{num_classes - 1} (num_classes {num_classes}), got values "
            f"{_some_values(y)}; relabel the data or raise num_classes."
        )
    return y.astype("int32")


MAX_CLASSES = 10_000


def count_classes(y: np.ndarray, source: str = "the data") -> int:
    """K for labels that are exactly the integers 0..K−1, each present; a ValueError otherwise (negative,
    sparse or huge labels would build a model with classes that never occur)."""
    values = np.unique(y)
    if len(values) == 0 or values[0] != 0 or values[-1] != len(values) - 1 or len(values) > MAX_CLASSES:
        raise ValueError(
            f"Class labels of {source} must be the integers 0..K-1 (K at most {MAX_CLASSES}), each present; "
            f"found {len(values)} distinct values {_some_values(values)}; relabel them as 0..K-1."
        )
    return len(values)


def _some_values(values: np.ndarray, shown: int = 8) -> str:
    values = np.unique(values)
    listed = ", ".join(str(v) for v in values[:shown])
    return f"[{listed}{', ...' if len(values) > shown else ''}]"


def check_numeric(x: np.ndarray, what: str = "Real samples") -> None:
    """Refuse arrays that are not real numbers (bool, complex, strings, objects) or have no sample axis."""
    if x.dtype == bool or not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(
            f"{what} must be real numbers, got an array of dtype {x.dtype}; convert them to float32."
        )
    if x.ndim < 2 or len(x) == 0:
        raise ValueError(
            f"{what} must have shape (N, *sample_shape) with N >= 1 and a sample axis, got shape {x.shape}; "
            "e.g. reshape 1-D data to (N, 1)."
        )


def check_finite(x: np.ndarray, what: str = "The data") -> None:
    """Refuse NaN or inf anywhere in ``x``, naming the first sample that holds one."""
    finite = np.isfinite(x)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise ValueError(
            f"{what}: {len(bad)} NaN or infinite value(s), the first in sample {bad[0][0]} at index "
            f"{tuple(int(i) for i in bad[0])}; remove or replace them before training."
        )


def as_float_array(x) -> np.ndarray:
    """Samples as a float32 numpy array; raises a ValueError for non-numeric or non-finite data."""
    x = np.asarray(x)
    check_numeric(x)
    x = x.astype(keras.config.floatx(), copy=False)
    check_finite(x, "The real samples")
    return x


class ArrayRounds(keras.utils.PyDataset):
    """Rounds drawn from in-memory samples (and labels ``y``) without replacement, reshuffled every epoch.

    Each epoch holds ``len(x) // (batch_size * n_critic)`` rounds; the few samples left over differ from
    epoch to epoch when ``shuffle`` is on. Epoch e's order is a permutation drawn from ``(seed, e)``
    alone, so a run resumed at epoch e (`set_epoch`) sees the rounds the uninterrupted run saw. A round is
    ``(x_round,)``, or ``(x_round, y_round)`` with labels of shape ``(batch, n_critic)``.
    """

    def __init__(
        self,
        x: np.ndarray,
        batch_size: int,
        n_critic: int,
        shuffle: bool = True,
        seed=None,
        shard=(0, 1),
        y: np.ndarray | None = None,
    ):
        super().__init__()
        self.shard = shard
        self.x = as_float_array(x)
        self.y = None if y is None else as_labels(y, len(self.x))
        self.batch_size = batch_size
        self.n_critic = n_critic
        self.shuffle = shuffle
        self._seed = np.random.SeedSequence(seed).entropy  # seed None: a base drawn once, here
        self.set_epoch(0)
        per_round = batch_size * n_critic
        if len(self.x) < per_round:
            raise ValueError(
                f"A training step needs batch_size * n_critic = {batch_size} * {n_critic} = {per_round} "
                f"samples, but only {len(self.x)} were given; lower batch_size or n_critic."
            )

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``'s rounds from now on."""
        self.epoch = epoch
        if self.shuffle:
            self._order = np.random.default_rng([self._seed, epoch]).permutation(len(self.x))
        else:
            self._order = np.arange(len(self.x))

    def __len__(self) -> int:
        return len(self.x) // (self.batch_size * self.n_critic)

    def __getitem__(self, index: int) -> tuple:
        per_round = self.batch_size * self.n_critic
        picked = self._order[index * per_round : (index + 1) * per_round]
        arrays = (self.x,) if self.y is None else (self.x, self.y)
        # Sample i of critic update k is picked[k * batch_size + i]: consecutive minibatches.
        rounds = tuple(
            np.swapaxes(a[picked].reshape((self.n_critic, self.batch_size, *a.shape[1:])), 0, 1)
            for a in arrays
        )
        return process_share(rounds, self.shard)

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


def group_minibatches(
    batches: Iterable, n_critic: int, num_replicas: int = 1, shard=(0, 1)
) -> Iterator[tuple]:
    """Stack ``n_critic`` consecutive minibatches ``(batch, ...)`` into rounds ``(batch, n_critic, ...)``.

    ``batches`` is re-iterated when a pass ends (a `DataLoader` or `tf.data.Dataset` starts a new epoch);
    an incomplete round at the end of a pass is dropped, and so is a minibatch smaller than the pass's
    first (the remainder of a loader without ``drop_last``), so every step has the same static shape
    (what XLA and TPUs compile for). Minibatches may be arrays or tuples of arrays; rounds are tuples, as
    Keras expects from a generator.
    """
    while True:
        source = batches.as_numpy_iterator() if hasattr(batches, "as_numpy_iterator") else batches
        group, rounds, size = [], 0, None
        for batch in source:
            batch = tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)
            size = len(batch[0]) if size is None else size
            if len(batch[0]) != size:
                continue
            check_divisible(size, num_replicas)
            group.append(batch)
            if len(group) == n_critic:
                stacked = tuple(
                    np.stack([np.asarray(b[i]) for b in group], axis=1) for i in range(len(group[0]))
                )
                yield process_share(stacked, shard)
                group, rounds = [], rounds + 1
        if rounds == 0:
            raise ValueError(
                f"The data ran out: a pass over it gave fewer than n_critic = {n_critic} minibatches, "
                "and each training step needs n_critic of them."
            )


def check_divisible(batch_size: int, num_replicas: int) -> None:
    """A global batch must split evenly over the replicas (each replica's mean is then a fair share)."""
    if batch_size % num_replicas:
        raise ValueError(
            f"The global batch size {batch_size} does not divide by the {num_replicas} replicas; "
            f"use a multiple of {num_replicas}."
        )


def critic_rounds(
    x,
    *,
    batch_size: int | None,
    n_critic: int,
    shuffle: bool = True,
    seed=None,
    num_replicas: int = 1,
    shard: tuple[int, int] = (0, 1),
    y=None,
):
    """``(rounds, steps_per_epoch)`` for `WGANGP.fit` from arrays or an iterable of minibatches.

    Arrays are split into minibatches of ``batch_size`` (default 64). An iterable of minibatches (tf.data,
    torch `DataLoader`, Python generator) keeps its own batch size; its steps per epoch are
    ``len(x) // n_critic`` when it has a length, else None (pass ``steps_per_epoch``). Batch sizes are
    global and must divide by ``num_replicas``; this process feeds the share ``shard = (index, count)``
    of each round (see `portable_wgangp.distribution.input_shard`). ``y``: labels of array data.
    """
    if is_array(x):
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        check_divisible(batch_size, num_replicas)
        return ArrayRounds(x, batch_size, n_critic, shuffle=shuffle, seed=seed, shard=shard, y=y), None
    if batch_size is not None:
        raise ValueError(
            "batch_size applies to array data only; an iterable of minibatches keeps its own batch size."
        )
    try:
        steps = len(x) // n_critic
    except TypeError:  # a generator, or a dataset of unknown or infinite cardinality
        steps = None
    return group_minibatches(x, n_critic, num_replicas, shard), steps


# -- toy distributions (the paper's gan_toy.py construction) ----------------------------------------------

TOY_DATASETS = ("gaussians8", "gaussians25", "swissroll")


def toy_centres(name: str) -> np.ndarray:
    """Mode centres of a toy distribution, in its scaled units, shape ``(n_modes, 2)``."""
    if name == "gaussians8":
        s = 1.0 / np.sqrt(2.0)
        centres = 2.0 * np.array([(1, 0), (-1, 0), (0, 1), (0, -1), (s, s), (s, -s), (-s, s), (-s, -s)])
        return centres / 1.414
    if name == "gaussians25":
        return np.array([(2.0 * i, 2.0 * j) for i in range(-2, 3) for j in range(-2, 3)]) / 2.828
    raise ValueError(
        f"{name!r} has no discrete modes; the toy datasets with modes are gaussians8, gaussians25."
    )


def toy_noise_std(name: str) -> float:
    """Standard deviation of each mode after scaling (σ of the quality metrics)."""
    return {"gaussians8": 0.02 / 1.414, "gaussians25": 0.05 / 2.828}[name]


def toy_samples(name: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points of a toy distribution, float32 ``(n, 2)``, exactly as ``gan_toy.py`` builds them."""
    if name == "swissroll":
        from sklearn.datasets import make_swiss_roll

        points = make_swiss_roll(n_samples=n, noise=0.25, random_state=int(rng.integers(2**31)))[0]
        return (points[:, [0, 2]] / 7.5).astype("float32")
    if name not in ("gaussians8", "gaussians25"):
        raise ValueError(f"Unknown toy dataset {name!r}; choose one of {', '.join(TOY_DATASETS)}.")
    scale = {"gaussians8": 1.414, "gaussians25": 2.828}[name]
    raw_std = {"gaussians8": 0.02, "gaussians25": 0.05}[name]
    centres = toy_centres(name) * scale
    points = centres[rng.integers(len(centres), size=n)] + raw_std * rng.standard_normal((n, 2))
    return (points / scale).astype("float32")


def toy_quality(name: str, samples: np.ndarray, seed: int = 0) -> dict:
    """The pinned quality figures of ``samples`` of a toy distribution (see `portable_wgangp.metrics`).

    ``emd`` is measured against as many fresh real samples (drawn with ``seed``); the mode figures are
    None for swissroll, which has no discrete modes.
    """
    from portable_wgangp import metrics

    real = toy_samples(name, len(samples), np.random.default_rng(seed))
    quality = {"modes_covered": None, "n_modes": None, "high_quality_fraction": None}
    if name != "swissroll":
        quality = metrics.mode_quality(samples, toy_centres(name), toy_noise_std(name))
    return {**quality, "emd": metrics.earth_movers_distance(samples, real)}


def toy_minibatches(name: str, batch_size: int, seed: int = 0, start: int = 0) -> Iterator[np.ndarray]:
    """An endless stream of fresh minibatches ``(batch_size, 2)`` of a toy distribution.

    Minibatch ``i`` depends only on ``(seed, i)``, so a run resumed at minibatch ``start`` sees the same
    data as an uninterrupted one.
    """
    for index in itertools.count(start):
        yield toy_samples(name, batch_size, np.random.default_rng([seed, index]))


# -- image data ------------------------------------------------------------------------------------------


def scale_images(images: np.ndarray) -> np.ndarray:
    """Images as float32 in [-1, 1]. Unsigned integer images are scaled by their bit depth's range
    (uint8: 0..255, uint16: 0..65535); float images are taken as already scaled and must lie in [-1, 1].

    Other integer types, where the bit depth is unknown, bool, complex and non-finite values are refused
    with a ValueError that says how to convert.
    """
    images = np.asarray(images)
    check_numeric(images, "Images")
    if images.dtype in (np.uint8, np.uint16):
        return (images.astype("float32") / (np.iinfo(images.dtype).max / 2.0) - 1.0).astype("float32")
    if np.issubdtype(images.dtype, np.integer):
        raise ValueError(
            f"Integer images must be uint8 (0..255) or uint16 (0..65535) so that their scale is known, got "
            f"{images.dtype}; cast them to the bit depth they have, or to floats in [-1, 1]."
        )
    images = images.astype("float32")
    check_finite(images, "The images")
    if images.min() < -1.0 - 1e-6 or images.max() > 1.0 + 1e-6:
        raise ValueError(
            f"Float images must lie in [-1, 1], got values in [{images.min():.3g}, {images.max():.3g}]; "
            "scale them (x / 127.5 - 1 for 0..255) or pass uint8 images."
        )
    return images


def digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8×8 digits (on disk, no download): images ``(1797, 8, 8, 1)`` in [-1, 1], labels."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.reshape(-1, 8, 8, 1) / 8.0 - 1.0  # pixel values are 0..16
    return images.astype("float32"), bunch.target.astype("int32")


def load_npz(path: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels, if the file has ``labels`` or ``y``) from a ``.npz`` file.

    ``key`` names the image array (default: ``x``, ``images`` or the only array). Images of shape
    ``(N, H, W)`` gain a channel axis; integer images are scaled to [-1, 1] by their bit depth.
    """
    try:
        archive = np.load(path, allow_pickle=False)
        names = list(archive.files)
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(
            f"Cannot read {path!r} as a .npz file ({error}); pass a file np.savez wrote."
        ) from error
    if key is None:
        key = next((k for k in ("x", "images") if k in names), names[0] if len(names) == 1 else None)
    if key not in names:
        raise ValueError(f"{path!r} holds arrays {names}; name the images with npz:{path}:KEY.")
    try:
        images = archive[key]
    except ValueError as error:  # object arrays need pickles, which are never loaded
        raise ValueError(f"{path!r}: array {key!r} cannot be read ({error}); store numbers.") from error
    if images.ndim not in (3, 4):
        raise ValueError(f"Images in {path!r} must have shape (N, H, W) or (N, H, W, C), got {images.shape}.")
    images = images[..., None] if images.ndim == 3 else images
    label_key = next((k for k in ("labels", "y") if k in names and k != key), None)
    images = scale_images(images)
    return images, None if label_key is None else as_labels(archive[label_key], len(images))


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def read_image(path, size: int) -> np.ndarray:
    """One image file as float32 RGB ``(size, size, 3)`` in [0, 1], resized bilinearly.

    16-bit images (PNG modes ``I;16``/``I``) are read at 16 bits and scaled by 65535, 8-bit ones by 255.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(f"Cannot read the image {str(path)!r} ({error}); remove or replace it.") from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = Image.fromarray(np.asarray(image, dtype="float32") / 65535.0, mode="F")
        channel = np.asarray(gray.resize((size, size), Image.BILINEAR), dtype="float32")
        return np.repeat(channel[..., None], 3, axis=-1).clip(0.0, 1.0)
    rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype="float32")
    return rgb / 255.0


def load_image_folder(folder: str, size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """PNG/JPEG images under ``folder``, resized to ``size``×``size`` RGB, scaled to [-1, 1].

    Sub-folders are classes (labels in sorted folder order); images directly in ``folder`` are
    unlabelled. 16-bit PNGs keep their 16 bits (see `read_image`). Needs Pillow.
    """
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"No folder at {folder!r}; pass images:DIR with a folder of PNG or JPEG files.")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    sources = [(p, classes.index(p.parent.name)) for c in classes for p in sorted((root / c).iterdir())]
    if not classes:
        sources = [(p, None) for p in sorted(root.iterdir())]
    sources = [(p, label) for p, label in sources if p.suffix.lower() in IMAGE_SUFFIXES]
    if not sources:
        raise ValueError(f"No PNG or JPEG images in {folder!r}.")
    images = np.stack([read_image(p, size) for p, _ in sources]) * 2.0 - 1.0
    labels = None if not classes else np.array([label for _, label in sources], dtype="int32")
    return images.astype("float32"), labels


def load_images(spec: str, size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Images and labels (or None) for ``digits``, ``npz:PATH[:KEY]`` or ``images:DIR``."""
    if spec == "digits":
        return digits()
    kind, _, rest = spec.partition(":")
    if kind == "npz" and rest:
        path, _, key = rest.partition(":")
        return load_npz(path, key or None)
    if kind == "images" and rest:
        return load_image_folder(rest, size)
    raise ValueError(
        f"Unknown dataset {spec!r}; use {', '.join(TOY_DATASETS)}, digits, npz:PATH[:KEY] or images:DIR."
    )


def array_minibatches(x: np.ndarray, y: np.ndarray | None, batch_size: int, seed: int = 0, start: int = 0):
    """An endless stream of minibatches of in-memory data, each pass in a fresh order.

    Minibatch ``i`` depends only on ``(seed, i)`` (pass ``i // per_pass`` is shuffled with
    ``default_rng([seed, pass])``), so a resumed run sees the same data. Yields ``x_batch`` or
    ``(x_batch, y_batch)``.
    """
    per_pass = len(x) // batch_size
    if per_pass == 0:
        raise ValueError(f"batch_size {batch_size} exceeds the {len(x)} samples; lower it.")
    for index in itertools.count(start):
        number, position = divmod(index, per_pass)
        picked = np.random.default_rng([seed, number]).permutation(len(x))[position * batch_size :][
            :batch_size
        ]
        yield x[picked] if y is None else (x[picked], y[picked])
