"""Sample sources: where real samples are read from, a minibatch at a time, with bounded memory.

A source is indexable data that is scaled only when it is read: ``len(source)`` samples of shape
``source.sample_shape``, ``source.labels`` (int32 ``(N,)``, or None) held in memory, and
``source.read(indices)`` → float32 ``(len(indices), *sample_shape)`` in the units the step trains on
(images in [-1, 1]); ``source.name`` names it in errors and ``source.workers`` is how many threads should
read it ahead of the step (0 for memory). Three kinds:

- `ArraySource`: samples already in memory (arrays, ``digits``, ``npz:``);
- `MemmapSource`: a ``.npy`` file memory-mapped (``npy:PATH``): integer images stay on disk at their bit
  depth (uint8, uint16) and are scaled per read, so arrays larger than memory train;
- `ImageFolderSource`: a folder of PNG/JPEG files (``images:DIR``), decoded and resized per read.

Only the file listing and the labels are held in memory (about 100 bytes a file): a folder of millions of
images trains in the same memory as a folder of hundreds. `portable_wgangp.data` draws the minibatches.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

import numpy as np

from portable_wgangp import data

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_WORKERS = 2  # image-decoding threads (see benchmarks/README.md, "Streaming input")
CHUNK_BYTES = 64 * 2**20  # what a validation pass over a memory-mapped array reads at a time


class ArraySource:
    """In-memory samples (already in training units) and optional labels."""

    def __init__(self, x, labels=None, name: str = "the data"):
        self.x = data.as_float_array(x)
        self.labels = None if labels is None else data.as_labels(labels, len(self.x))
        self.sample_shape = tuple(self.x.shape[1:])
        self.name = name
        self.workers = 0  # indexing memory needs no reader threads

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.x[indices]


class MemmapSource:
    """A ``.npy`` array of images ``(N, H, W[, C])`` memory-mapped, scaled to [-1, 1] when read.

    uint8 and uint16 images are scaled by their bit depth (see `data.scale_images`); float images must
    already lie in [-1, 1] and hold no NaN, which one pass in chunks of `CHUNK_BYTES` checks when the
    source opens (bounded memory, before any run folder is written). ``labels``: an optional ``.npy``
    file of N integer labels.
    """

    def __init__(self, path: str, labels: str | None = None, workers: int = 0):
        self.name, self.workers = path, workers
        try:
            self.array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Cannot read {path!r} as a .npy file ({error}); pass a file np.save wrote."
            ) from error
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"Images in {path!r} must have shape (N, H, W) or (N, H, W, C), got {self.array.shape}."
            )
        data.check_numeric(self.array, f"The images in {path!r}")
        self.sample_shape = tuple(self.array.shape[1:]) + ((1,) if self.array.ndim == 3 else ())
        if not np.issubdtype(self.array.dtype, np.unsignedinteger) or self.array.dtype.itemsize > 2:
            self._check_in_chunks()
        self.labels = None
        if labels is not None:
            try:
                values = np.load(labels, allow_pickle=False)
            except (OSError, ValueError) as error:
                raise ValueError(f"Cannot read the labels {labels!r} ({error}); pass a .npy file.") from error
            self.labels = data.as_labels(values, len(self.array))

    def _check_in_chunks(self) -> None:
        """Apply `data.scale_images`'s dtype, range and finiteness rules to the whole file, a chunk at a
        time."""
        per_chunk = max(1, CHUNK_BYTES // max(1, self.array[:1].nbytes))
        for start in range(0, len(self.array), per_chunk):
            try:
                data.scale_images(np.asarray(self.array[start : start + per_chunk]))
            except ValueError as error:
                raise ValueError(f"{self.name!r}, images {start}..: {error}") from error

    def __len__(self) -> int:
        return len(self.array)

    def read(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        order = np.argsort(indices, kind="stable")  # ascending reads: sequential on disk
        images = data.scale_images(np.asarray(self.array[indices[order]]))
        result = np.empty((len(indices), *self.sample_shape), dtype="float32")
        result[order] = images.reshape((len(indices), *self.sample_shape))
        return result


class ImageFolderSource:
    """PNG/JPEG files under ``folder``, resized to ``size``×``size`` RGB and scaled to [-1, 1] when read.

    Sub-folders are classes (labels in sorted folder order); files directly in ``folder`` are unlabelled.
    ``workers`` threads decode rounds ahead of the step (Pillow decodes without holding the GIL).
    Files are listed once, in sorted order; 16-bit PNGs keep their 16 bits (`read_image`). Opening the
    source reads the first image (a folder of unreadable files is refused before anything is written);
    a file that cannot be decoded later stops training with a ValueError naming it.
    """

    def __init__(self, folder: str, size: int = 32, workers: int = DEFAULT_WORKERS):
        root = pathlib.Path(folder)
        if not root.is_dir():
            raise ValueError(f"No folder at {folder!r}; pass images:DIR with a folder of PNG or JPEG files.")
        self.name, self.size, self.workers = folder, size, workers
        classes = sorted(entry.name for entry in os.scandir(root) if entry.is_dir())
        if classes:
            listed = [(c, _image_names(root / c)) for c in classes]
            self.paths = [str(root / c / name) for c, names in listed for name in names]
            self.labels = np.repeat(np.arange(len(classes), dtype="int32"), [len(n) for _, n in listed])
        else:
            self.paths = [str(root / name) for name in _image_names(root)]
            self.labels = None
        if not self.paths:
            raise ValueError(f"No PNG or JPEG images in {folder!r}.")
        self.sample_shape = (size, size, 3)
        read_image(self.paths[0], size)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: np.ndarray) -> np.ndarray:
        images = np.empty((len(indices), *self.sample_shape), dtype="float32")
        for row, index in enumerate(indices):
            images[row] = read_image(self.paths[index], self.size)
        images *= 2.0  # in place: no second copy of the round
        images -= 1.0
        return images


def _image_names(folder: pathlib.Path) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES
    )


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


def open_source(spec: str, size: int = 32, workers: int = DEFAULT_WORKERS):
    """The source of a dataset spec: ``digits``, ``npz:PATH[:KEY]`` (in memory), ``npy:PATH[:LABELS]``
    (memory-mapped) or ``images:DIR`` (streamed by ``workers`` threads); a ValueError says what is wrong
    with it."""
    if spec == "digits":
        return ArraySource(*data.digits(), name="digits")
    kind, _, rest = spec.partition(":")
    if kind == "npz" and rest:
        path, _, key = rest.partition(":")
        return ArraySource(*data.load_npz(path, key or None), name=spec)
    if kind == "npy" and rest:
        path, _, labels = rest.partition(":")
        return MemmapSource(path, labels or None)
    if kind == "images" and rest:
        return ImageFolderSource(rest, size, workers)
    raise ValueError(
        f"Unknown dataset {spec!r}; use {', '.join(data.TOY_DATASETS)}, digits, npz:PATH[:KEY], "
        "npy:PATH[:LABELS] or images:DIR."
    )


def read_all(source, indices: Sequence[int] | None = None, chunk: int = 256) -> np.ndarray:
    """Samples ``indices`` (default: all) of ``source`` in one in-memory array, read ``chunk`` at a time
    into it (the array and one chunk are all the memory it takes)."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    samples = np.empty((len(indices), *source.sample_shape), dtype="float32")
    for start in range(0, len(indices), chunk):
        samples[start : start + chunk] = source.read(indices[start : start + chunk])
    return samples
