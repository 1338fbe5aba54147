"""Sample sources: where real samples are read from, a minibatch at a time, with bounded memory.

A source is indexable data that is scaled only when it is read: ``len(source)`` samples of shape
``source.sample_shape``, ``source.labels`` (int32 ``(N,)``, or None) held in memory, and
``source.read(indices)`` → float32 ``(len(indices), *sample_shape)`` in the units the step trains on
(images in [-1, 1]); ``source.name`` names it in errors and ``source.workers`` is how many threads should
read it ahead of the step (0 for memory). Three kinds:

- `ArraySource`: samples already in memory (arrays, ``digits``, ``npz:``);
- `MemmapSource`: a ``.npy`` file memory-mapped (``npy:PATH``): integer images stay on disk at their bit
  depth (uint8, uint16) and are scaled per read, so arrays larger than memory train; on object storage
  (``npy:gs://…``) the rows of a read are fetched as byte ranges (`RemoteNpy`), never the whole file;
- `ImageFolderSource`: a folder of PNG/JPEG files (``images:DIR``, or ``images:gs://BUCKET/DIR``,
  ``s3://…``: listed once), decoded and resized per read;
- `Cifar10Source`: CIFAR-10's training split from its python archive (``cifar10:PATH``), held as uint8
  (150 MB) and scaled per read.

Only the file listing and the labels are held in memory (about 100 bytes a file): a folder of millions of
images trains in the same memory as a folder of hundreds. `portable_wgangp.rounds` draws the minibatches.
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import tarfile
from collections.abc import Sequence

import keras
import numpy as np

from portable_wgangp import datasets

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DEFAULT_WORKERS = 2  # image-decoding threads (see benchmarks/README.md, "Streaming input")
CHUNK_BYTES = 64 * 2**20  # what a validation pass over a memory-mapped array reads at a time


class ArraySource:
    """In-memory samples (already in training units) and optional labels."""

    def __init__(self, x, labels=None, name: str = "the data"):
        self.x = as_float_array(x)
        self.labels = None if labels is None else as_labels(labels, len(self.x))
        self.sample_shape = tuple(self.x.shape[1:])
        self.name = name
        self.workers = 0  # indexing memory needs no reader threads

    def __len__(self) -> int:
        return len(self.x)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return self.x[indices]


class MemmapSource:
    """A ``.npy`` array of images ``(N, H, W[, C])`` memory-mapped, scaled to [-1, 1] when read.

    uint8 and uint16 images are scaled by their bit depth (see `scale_images`); float images must
    already lie in [-1, 1] and hold no NaN, which one pass in chunks of `CHUNK_BYTES` checks when the
    source opens (bounded memory, before any run folder is written). ``labels``: an optional ``.npy``
    file of N integer labels.
    """

    def __init__(self, path: str, labels: str | None = None, workers: int = 0):
        from portable_wgangp import storage

        self.name, self.workers = storage.shown(path), workers
        try:
            self.array = (
                RemoteNpy(path) if storage.is_url(path) else np.load(path, mmap_mode="r", allow_pickle=False)
            )
        except (OSError, ValueError) as error:
            raise ValueError(
                f"Cannot read {self.name!r} as a .npy file ({numpy_reason(error)}); pass a file np.save "
                "wrote."
            ) from error
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"Images in {path!r} must have shape (N, H, W) or (N, H, W, C), got {self.array.shape}."
            )
        check_numeric(self.array, f"The images in {path!r}")
        self.sample_shape = tuple(self.array.shape[1:]) + ((1,) if self.array.ndim == 3 else ())
        if not np.issubdtype(self.array.dtype, np.unsignedinteger) or self.array.dtype.itemsize > 2:
            self._check_in_chunks()
        self.labels = None
        if labels is not None:
            try:
                values = load_array(labels)
            except (OSError, ValueError) as error:
                raise ValueError(
                    f"Cannot read the labels {storage.shown(labels)!r} ({numpy_reason(error)}); pass a "
                    ".npy file."
                ) from error
            self.labels = as_labels(values, len(self.array))

    def _check_in_chunks(self) -> None:
        """Apply `scale_images`'s dtype, range and finiteness rules to the whole file, a chunk at a
        time."""
        per_chunk = max(1, CHUNK_BYTES // max(1, self.array[:1].nbytes))
        for start in range(0, len(self.array), per_chunk):
            try:
                scale_images(np.asarray(self.array[start : start + per_chunk]))
            except ValueError as error:
                raise ValueError(f"{self.name!r}, images {start}..: {error}") from error

    def __len__(self) -> int:
        return len(self.array)

    def read(self, indices: np.ndarray) -> np.ndarray:
        indices = np.asarray(indices)
        order = np.argsort(indices, kind="stable")  # ascending reads: sequential on disk
        images = scale_images(np.asarray(self.array[indices[order]]))
        result = np.empty((len(indices), *self.sample_shape), dtype="float32")
        result[order] = images.reshape((len(indices), *self.sample_shape))
        return result


class RemoteNpy:
    """A ``.npy`` array on object storage, read by byte ranges: ``shape``, ``dtype``, ``ndim``, ``len`` and
    indexing by a slice or an integer array (what `MemmapSource` needs of a memory map). The header is
    read once (`numpy.lib.format`); a read of k rows fetches k ranges concurrently."""

    def __init__(self, url: str):
        from numpy.lib import format as npy

        from portable_wgangp import storage

        self.folder, self.object = storage.locate(url)
        with self.folder.open(self.object) as file:
            version = npy.read_magic(file)
            header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
            self.shape, fortran_order, self.dtype = header(file)
            self.offset = file.tell()
        if fortran_order or self.dtype.hasobject:
            raise ValueError("the array is in Fortran order or holds Python objects; save a C-order array")
        self.ndim = len(self.shape)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        rows = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        if isinstance(key, slice) and len(rows):  # one range for a contiguous slice
            starts, ends = (
                [self.offset + rows[0] * self.row_bytes],
                [self.offset + (rows[-1] + 1) * self.row_bytes],
            )
        else:
            starts = [self.offset + int(r) * self.row_bytes for r in rows]
            ends = [start + self.row_bytes for start in starts]
        chunks = self.folder.read_ranges(self.object, starts, ends) if len(rows) else []
        flat = np.frombuffer(b"".join(chunks), dtype=self.dtype)
        return flat.reshape((len(rows), *self.shape[1:]))


class ImageFolderSource:
    """PNG/JPEG files under ``folder``, resized to ``size``×``size`` RGB and scaled to [-1, 1] when read.

    Sub-folders are classes (labels in sorted folder order); files directly in ``folder`` are unlabelled.
    ``workers`` threads decode rounds ahead of the step (Pillow decodes without holding the GIL).
    Files are listed once, in sorted order; 16-bit PNGs keep their 16 bits (`read_image`). Opening the
    source reads the first image (a folder of unreadable files is refused before anything is written);
    a file that cannot be decoded later stops training with a ValueError naming it.
    """

    def __init__(self, folder: str, size: int = 32, workers: int = DEFAULT_WORKERS):
        from portable_wgangp import storage

        self.name, self.size, self.workers = storage.shown(folder), size, workers
        self.remote = storage.RemoteFolder(folder) if storage.is_url(folder) else None
        listing = _remote_listing(self.remote) if self.remote else _local_listing(folder)
        classes = sorted({c for c, _ in listing if c})
        if classes:
            names = [(c, name) for c, name in listing if c]
            index = {c: i for i, c in enumerate(classes)}
            self.paths = [f"{c}/{name}" for c, name in names]
            self.labels = np.array([index[c] for c, _ in names], dtype="int32")
        else:
            self.paths = [name for _, name in listing]
            self.labels = None
        if not self.paths:
            raise ValueError(f"No PNG or JPEG images in {self.name!r}.")
        self.root = folder
        self.sample_shape = (size, size, 3)
        self._read(0)

    def _read(self, index: int) -> np.ndarray:
        if self.remote is None:
            return read_image(os.path.join(self.root, self.paths[index]), self.size)
        import io

        return read_image(
            io.BytesIO(self.remote.read(self.paths[index]) or b""),
            self.size,
            self.remote.shown(self.paths[index]),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, indices: np.ndarray) -> np.ndarray:
        images = np.empty((len(indices), *self.sample_shape), dtype="float32")
        for row, index in enumerate(indices):
            images[row] = self._read(index)
        images *= 2.0  # in place: no second copy of the round
        images -= 1.0
        return images


CIFAR10_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))  # the training split, in this order
CIFAR10_HINT = "pass the cifar-10-python.tar.gz archive or its cifar-10-batches-py folder"


class Cifar10Source:
    """CIFAR-10's training split (50,000 32×32 RGB images, labels 0..9) from the python version of the
    archive: ``cifar-10-python.tar.gz`` (read in place, nothing extracted to disk), its extracted
    ``cifar-10-batches-py`` folder, or the folder that holds that one. Never downloaded.

    The batches ``data_batch_1`` … ``data_batch_5`` are concatenated in that order; the images are held as
    uint8 ``(N, 32, 32, 3)`` (channel-last, from the archive's channel-first rows) and scaled to [-1, 1]
    when read. The batch files are pickles: they are read with an unpickler that builds only dicts, lists,
    numbers, bytes and numpy arrays (`_CifarUnpickler`), so a file that asks for anything else is refused
    instead of run; still, take the archive from its official source
    (https://www.cs.toronto.edu/~kriz/cifar.html).
    """

    def __init__(self, path: str):
        self.name, self.workers = str(path), 0
        batches = _cifar10_batches(path)
        data = [batches[name][0].reshape(-1, 3, 32, 32) for name in CIFAR10_BATCHES]
        self.images = np.concatenate(data).transpose(0, 2, 3, 1).copy()  # channel-last, contiguous
        self.labels = np.concatenate([batches[name][1] for name in CIFAR10_BATCHES])
        self.sample_shape = (32, 32, 3)

    def __len__(self) -> int:
        return len(self.images)

    def read(self, indices: np.ndarray) -> np.ndarray:
        return scale_images(self.images[np.asarray(indices)])


def _cifar10_batches(path: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The data and labels (`_cifar10_batch`) of ``data_batch_1..5`` in a CIFAR-10 python archive (a tar,
    gzipped or not) or folder, each batch parsed as it is read (one batch's bytes in memory at a time)."""
    root, batches = pathlib.Path(path), {}
    if root.is_dir():
        folder = root / "cifar-10-batches-py" if (root / "cifar-10-batches-py").is_dir() else root
        for name in CIFAR10_BATCHES:
            if (folder / name).is_file():
                batches[name] = _cifar10_batch((folder / name).read_bytes(), f"{path!r}, {name}")
    elif root.is_file():
        try:
            archive = tarfile.open(root, "r:*")
        except tarfile.ReadError as error:
            raise ValueError(f"{path!r} is not a tar archive, gzipped or not; {CIFAR10_HINT}.") from error
        except OSError as error:
            raise ValueError(f"Cannot read the archive {path!r} ({error}); {CIFAR10_HINT}.") from error
        try:
            with archive:
                for member in archive:
                    name = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and name in CIFAR10_BATCHES and name not in batches:
                        content = archive.extractfile(member).read()
                        batches[name] = _cifar10_batch(content, f"{path!r}, {name}")
        except (tarfile.TarError, OSError, EOFError) as error:  # truncated or corrupt
            reason = " ".join(str(error).split())
            raise ValueError(f"Cannot read the archive {path!r} ({reason}); {CIFAR10_HINT}.") from error
    else:
        raise ValueError(f"No CIFAR-10 archive or folder at {path!r}; {CIFAR10_HINT}.")
    missing = [name for name in CIFAR10_BATCHES if name not in batches]
    if len(missing) == len(CIFAR10_BATCHES):
        raise ValueError(f"{path!r} holds no data_batch_1..5; {CIFAR10_HINT}.")
    if missing:
        raise ValueError(f"{path!r} lacks {', '.join(missing)} of data_batch_1..5; {CIFAR10_HINT}.")
    return batches


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles what a CIFAR-10 batch holds (dicts, lists, bytes, numbers, numpy arrays) and nothing else:
    any other class or function a pickle names is refused, so a tampered file cannot run code."""

    ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),  # how numpy pickles an array
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.numeric", "_frombuffer"),  # the same, pickle protocol 5
            ("numpy._core.numeric", "_frombuffer"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("_codecs", "encode"),  # bytes in a protocol-2 pickle written by Python 3
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR-10 batch never holds")
        if module.startswith(("numpy.core.", "numpy._core.")):  # numpy.core is numpy 2's numpy._core
            import importlib

            inner = module.split(".", 2)[2]
            for package in ("numpy._core", "numpy.core"):
                try:
                    return getattr(importlib.import_module(f"{package}.{inner}"), name)
                except (ImportError, AttributeError):
                    continue
        return super().find_class(module, name)


def _cifar10_batch(content: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    """The ``data`` (uint8 ``(n, 3072)``) and ``labels`` (``(n,)``, 0..9) of one pickled CIFAR-10 batch."""
    try:
        batch = _CifarUnpickler(io.BytesIO(content), encoding="bytes").load()
    except Exception as error:  # a pickle's failures are of any type
        raise ValueError(f"{what} is not a CIFAR-10 batch ({error}); {CIFAR10_HINT}.") from error
    data = batch.get(b"data") if isinstance(batch, dict) else None
    labels = batch.get(b"labels") if isinstance(batch, dict) else None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(
            f"{what} is not a CIFAR-10 batch (its data must be uint8 rows of 3072 values, found {found}); "
            f"{CIFAR10_HINT}."
        )
    try:
        labels = as_labels(np.asarray(labels), len(data), num_classes=10)
    except ValueError as error:
        raise ValueError(f"{what} is not a CIFAR-10 batch ({error}); {CIFAR10_HINT}.") from error
    return data, labels


def _is_image(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _local_listing(folder: str) -> list[tuple[str, str]]:
    """``(class, name)`` of the images of a local folder: files directly in it (class "") and in its
    sub-folders, sorted."""
    root = pathlib.Path(folder)
    if not root.is_dir():
        raise ValueError(f"No folder at {folder!r}; pass images:DIR with a folder of PNG or JPEG files.")
    listing = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir():
            listing += [
                (entry.name, e.name)
                for e in sorted(os.scandir(entry), key=lambda e: e.name)
                if e.is_file() and _is_image(e.name)
            ]
        elif entry.is_file() and _is_image(entry.name):
            listing.append(("", entry.name))
    return listing


def _remote_listing(folder) -> list[tuple[str, str]]:
    """``(class, name)`` of the images below a folder URL, from one listing of the store."""
    listing, names = [], folder.list()
    for name in names:
        parts = name.split("/")
        if len(parts) <= 2 and _is_image(parts[-1]):
            listing.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
    if not names:
        raise ValueError(
            f"No objects below {folder.shown()!r}; pass images:URL of a folder of PNG or JPEG files."
        )
    return sorted(listing)


def read_image(path, size: int, name: str | None = None) -> np.ndarray:
    """One image file (a path or a binary file object, named ``name`` in errors) as float32 RGB
    ``(size, size, 3)`` in [0, 1], resized bilinearly.

    16-bit images (PNG modes ``I;16``/``I``) are read at 16 bits and scaled by 65535, 8-bit ones by 255.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, UnidentifiedImageError) as error:
        raise ValueError(
            f"Cannot read the image {name or str(path)!r} ({error}); remove or replace it."
        ) from error
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        gray = Image.fromarray(np.asarray(image, dtype="float32") / 65535.0, mode="F")
        channel = np.asarray(gray.resize((size, size), Image.BILINEAR), dtype="float32")
        return np.repeat(channel[..., None], 3, axis=-1).clip(0.0, 1.0)
    rgb = np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR), dtype="float32")
    return rgb / 255.0


def open_source(spec: str, size: int = 32, workers: int = DEFAULT_WORKERS):
    """The source of a dataset spec: ``digits``, ``npz:PATH[:KEY]`` (in memory), ``npy:PATH[:LABELS]``
    (memory-mapped), ``images:DIR`` (streamed by ``workers`` threads) or ``cifar10:PATH`` (CIFAR-10's
    python archive or folder, `Cifar10Source`); a ValueError says what is wrong with it. npz, npy and
    images PATH and DIR may be object-storage URLs (``gs://…``, ``s3://…``)."""
    from portable_wgangp import storage

    if spec == "digits":
        return ArraySource(*datasets.digits(), name="digits")
    kind, _, rest = spec.partition(":")
    if kind == "npz" and rest:
        path, key = storage.split_spec(rest)
        return ArraySource(*load_npz(path, key or None), name=storage.shown(path))
    if kind == "npy" and rest:
        path, labels = storage.split_spec(rest)
        return MemmapSource(path, labels or None)
    if kind == "images" and rest:
        return ImageFolderSource(rest, size, workers)
    if kind == "cifar10" and rest:
        return Cifar10Source(rest)
    raise ValueError(
        f"Unknown dataset {spec!r}; use {', '.join(datasets.TOY_DATASETS)}, digits, npz:PATH[:KEY], "
        "npy:PATH[:LABELS], images:DIR or cifar10:PATH."
    )


def read_all(source, indices: Sequence[int] | None = None, chunk: int = 256) -> np.ndarray:
    """Samples ``indices`` (default: all) of ``source`` in one in-memory array, read ``chunk`` at a time
    into it (the array and one chunk are all the memory it takes)."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    samples = np.empty((len(indices), *source.sample_shape), dtype="float32")
    for start in range(0, len(indices), chunk):
        samples[start : start + chunk] = source.read(indices[start : start + chunk])
    return samples


# -- checks and scaling of what is read ------------------------------------------------------------


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


# -- whole datasets in memory ---------------------------------------------------------------------------


def load_array(path: str):
    """``np.load(path)`` without pickles, for a path or an object-store URL (read through byte ranges)."""
    from portable_wgangp import storage

    if storage.is_url(path):
        return np.load(storage.open_object(path), allow_pickle=False)
    return np.load(path, allow_pickle=False)


def numpy_reason(error: BaseException) -> str:
    """Why numpy could not read a file, in words for the user: a file of pickled Python objects is named so,
    without numpy's advice to unpickle it (unpickling an untrusted file runs its code)."""
    if any(word in str(error).lower() for word in ("pickle", "object array", "python objects")):
        return "it holds pickled Python objects, which are never loaded: unpickling runs code; store numbers"
    return str(error)


def load_npz(path: str, key: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (and labels, if the file has ``labels`` or ``y``) from a ``.npz`` file.

    ``key`` names the image array (default: ``x``, ``images`` or the only array). Images of shape
    ``(N, H, W)`` gain a channel axis; integer images are scaled to [-1, 1] by their bit depth.
    """
    from portable_wgangp import storage

    shown = storage.shown(path)
    try:
        archive = load_array(path)
        names = list(archive.files)
    except (OSError, ValueError, AttributeError) as error:
        raise ValueError(
            f"Cannot read {shown!r} as a .npz file ({numpy_reason(error)}); pass a file np.savez wrote."
        ) from error
    if key is None:
        key = next((k for k in ("x", "images") if k in names), names[0] if len(names) == 1 else None)
    if key not in names:
        raise ValueError(f"{shown!r} holds arrays {names}; name the images with npz:{shown}:KEY.")
    try:
        images = archive[key]
    except ValueError as error:  # object arrays need pickles, which are never loaded
        raise ValueError(f"{shown!r}: array {key!r} cannot be read ({numpy_reason(error)}).") from error
    if images.ndim not in (3, 4):
        raise ValueError(
            f"Images in {shown!r} must have shape (N, H, W) or (N, H, W, C), got {images.shape}."
        )
    images = images[..., None] if images.ndim == 3 else images
    label_key = next((k for k in ("labels", "y") if k in names and k != key), None)
    images = scale_images(images)
    return images, None if label_key is None else as_labels(archive[label_key], len(images))


def load_images(spec: str, size: int = 32) -> tuple[np.ndarray, np.ndarray | None]:
    """Images (all of them, in memory) and labels (or None) of ``digits``, ``npz:PATH[:KEY]``,
    ``npy:PATH[:LABELS]``, ``images:DIR`` or ``cifar10:PATH``; training streams them instead
    (`sources.open_source`)."""
    source = open_source(spec, size)
    return read_all(source), source.labels
