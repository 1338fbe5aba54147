"""Feeding `WGANGP.fit`: real data grouped into rounds of ``n_critic`` fresh minibatches.

A round is one training step's real data, shape ``(batch, n_critic, *sample_shape)``: the batch axis
stays first so that data-parallel strategies shard it, and critic update ``k`` reads ``round[:, k]``.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import keras
import numpy as np

DEFAULT_BATCH_SIZE = 64


def is_source(x) -> bool:
    """A sample source of `portable_wgangp.sources` (``read``, ``sample_shape``, ``labels``)."""
    return all(hasattr(x, name) for name in ("read", "sample_shape", "labels"))


def is_array(x) -> bool:
    """Numpy arrays, lists and framework tensors (anything with ``__array__`` and a shape)."""
    return isinstance(x, list) or (hasattr(x, "__array__") and hasattr(x, "shape"))


class Shard(NamedTuple):
    """The share of every global batch that this process feeds: rows ``[index·b/count, (index+1)·b/count)``.

    ``padded``: the process still feeds global-shape batches, its share in place and zeros elsewhere (TF's
    multi-worker strategies split the global batch themselves and keep exactly these rows on this
    worker), so readers read only the share either way.
    """

    index: int = 0
    count: int = 1
    padded: bool = False

    def rows(self, batch: int) -> slice:
        """This process's rows of a global batch of ``batch`` rows."""
        share = batch // self.count
        return slice(self.index * share, (self.index + 1) * share)


ONE_PROCESS = Shard()


def process_share(rounds, shard: Shard):
    """This process's rows of each array of a round of global batch b (the whole round when ``padded``:
    the strategy picks the rows)."""
    if shard.count == 1 or shard.padded:
        return rounds
    return tuple(r[shard.rows(len(r))] for r in rounds)


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


def read_round(source, picked: np.ndarray, shard: Shard, labelled: bool) -> tuple:
    """One round from ``source``: ``picked[k, i]`` is sample i of critic update k (``(n_critic, batch)``
    indices). Only this process's share of the batch (`Shard`) is read. Returns ``(x_round,)``, or with
    ``labelled`` ``(x_round, y_round)``; shapes ``(share, n_critic, ...)`` and ``(share, n_critic)``
    (``(batch, n_critic, ...)`` with zeros outside the share when the shard is ``padded``)."""
    rows = shard.rows(picked.shape[1])
    mine = picked[:, rows]
    arrays = [source.read(mine.reshape(-1)).reshape((*mine.shape, *source.sample_shape))]
    if labelled:
        arrays.append(source.labels[mine])
    if shard.padded:
        arrays = [_placed(a, rows, picked.shape[1]) for a in arrays]
    return tuple(np.swapaxes(a, 0, 1) for a in arrays)


def _placed(share: np.ndarray, rows: slice, batch: int) -> np.ndarray:
    """``share`` (axis 1) at ``rows`` of a zero array of ``batch`` rows."""
    full = np.zeros((share.shape[0], batch, *share.shape[2:]), dtype=share.dtype)
    full[:, rows] = share
    return full


class SourceRounds(keras.utils.PyDataset):
    """What `EpochRounds` and `StreamRounds` share: rounds of ``n_critic`` minibatches of ``batch_size``
    read from a sample source, this process's `Shard` only, by ``workers`` threads ahead of the step
    (default: the source's; Keras's `PyDataset` enqueuer keeps their order, 0 reads each round when the
    step asks), with labels when ``labelled`` (default: when the source has labels; an unconditional
    model ignores a labelled source's labels)."""

    def __init__(self, source, batch_size: int, n_critic: int, shard: Shard, workers, labelled):
        workers = source.workers if workers is None else workers
        super().__init__(workers=workers, max_queue_size=max(1, 2 * workers))
        self.source, self.shard = source, shard
        self.batch_size, self.n_critic = batch_size, n_critic
        self.labelled = source.labels is not None if labelled is None else labelled

    def _read(self, picked: np.ndarray) -> tuple:
        return read_round(self.source, picked, self.shard, self.labelled)


class EpochRounds(SourceRounds):
    """Rounds drawn from a sample source (`portable_wgangp.sources`) without replacement, reshuffled every
    epoch: what `WGANGP.fit` makes of arrays and sources.

    Each epoch holds ``len(source) // (batch_size * n_critic)`` rounds; the few samples left over differ
    from epoch to epoch when ``shuffle`` is on. Epoch e's order is a permutation drawn from ``(seed, e)``
    alone, so a run resumed at epoch e (`set_epoch`) sees the rounds the uninterrupted run saw. A round is
    ``(x_round,)`` or ``(x_round, y_round)`` (see `SourceRounds`).
    """

    def __init__(
        self,
        source,
        batch_size: int,
        n_critic: int,
        shuffle: bool = True,
        seed=None,
        shard: Shard = ONE_PROCESS,
        workers: int | None = None,
        labelled: bool | None = None,
    ):
        super().__init__(source, batch_size, n_critic, shard, workers, labelled)
        self.shuffle = shuffle
        self._seed = np.random.SeedSequence(seed).entropy  # seed None: a base drawn once, here
        self.set_epoch(0)
        check_enough(len(source), batch_size, n_critic)

    def set_epoch(self, epoch: int) -> None:
        """Serve epoch ``epoch``'s rounds from now on."""
        self.epoch = epoch
        if self.shuffle:
            self._order = np.random.default_rng([self._seed, epoch]).permutation(len(self.source))
        else:
            self._order = np.arange(len(self.source))

    def __len__(self) -> int:
        return len(self.source) // (self.batch_size * self.n_critic)

    def __getitem__(self, index: int) -> tuple:
        per_round = self.batch_size * self.n_critic
        # Sample i of critic update k is picked[k * batch_size + i]: consecutive minibatches.
        picked = self._order[index * per_round : (index + 1) * per_round]
        return self._read(picked.reshape(self.n_critic, self.batch_size))

    def on_epoch_end(self) -> None:
        self.set_epoch(self.epoch + 1)


class StreamRounds(SourceRounds):
    """``steps`` rounds of the endless minibatch stream of a sample source, from step ``first_step``:
    what `portable-wgangp train` feeds.

    Minibatch m of the stream holds positions ``[p·b, (p+1)·b)`` of pass ``m // per_pass``'s order, a
    permutation drawn from ``(seed, pass)`` alone (``per_pass = len(source) // b``, p = m mod per_pass);
    step s's round stacks minibatches ``s·n_critic … s·n_critic + n_critic − 1``. Any round is a function
    of ``(seed, step)``, so a resumed run reads exactly what the uninterrupted run read, and this process
    reads only its ``shard`` of each round (see `SourceRounds`); memory holds the listing, one pass's order
    (8 bytes a sample) and ``2·workers`` rounds.
    """

    def __init__(
        self,
        source,
        batch_size: int,
        n_critic: int,
        *,
        steps: int,
        first_step: int = 0,
        seed=0,
        workers: int | None = None,
        labelled: bool | None = None,
    ):
        super().__init__(source, batch_size, n_critic, ONE_PROCESS, workers, labelled)
        check_enough(len(source), batch_size, 1)
        self.steps, self.first_step, self.seed = steps, first_step, seed
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.steps

    def _order(self, number: int) -> np.ndarray:
        """Pass ``number``'s permutation; the last two passes are kept (threads read near the boundary)."""
        order = self._orders.get(number)
        if order is None:
            order = np.random.default_rng([self.seed, number]).permutation(len(self.source))
            self._orders = {n: o for n, o in self._orders.items() if n >= number - 1} | {number: order}
        return order

    def __getitem__(self, index: int) -> tuple:
        if not 0 <= index < self.steps:
            raise IndexError(f"Round {index} of {self.steps}.")
        per_pass, b = len(self.source) // self.batch_size, self.batch_size
        first = (self.first_step + index) * self.n_critic
        picked = np.stack(
            [
                self._order(m // per_pass)[(m % per_pass) * b : (m % per_pass + 1) * b]
                for m in range(first, first + self.n_critic)
            ]
        )
        return self._read(picked)


def check_enough(samples: int, batch_size: int, n_critic: int) -> None:
    """A step needs ``batch_size * n_critic`` samples (distinct within an epoch of `EpochRounds`)."""
    per_round = batch_size * n_critic
    if samples < per_round:
        if n_critic > 1:
            what, lower = (
                f"batch_size * n_critic = {batch_size} * {n_critic} = {per_round}",
                "batch_size or n_critic",
            )
        else:
            what, lower = f"batch_size {batch_size}", "batch_size"
        raise ValueError(
            f"A training step needs {what} samples, but only {samples} were given; lower {lower}."
        )


def group_minibatches(
    batches: Iterable, n_critic: int, num_replicas: int = 1, shard: Shard = ONE_PROCESS
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
    shard: Shard = ONE_PROCESS,
    y=None,
    labelled: bool | None = None,
):
    """``(rounds, steps_per_epoch)`` for `WGANGP.fit` from arrays, a sample source or an iterable of
    minibatches.

    Arrays and sources (`portable_wgangp.sources`: a memory-mapped ``.npy``, an image folder) are split
    into minibatches of ``batch_size`` (default 64) by `EpochRounds`. An iterable of minibatches
    (tf.data, torch `DataLoader`, Python generator) keeps its own batch size; its steps per epoch are
    ``len(x) // n_critic`` when it has a length, else None (pass ``steps_per_epoch``). `StreamRounds` are
    taken as they are. Batch sizes are global and must divide by ``num_replicas``; this process feeds
    (and a source reads) only its `Shard` of each round (see `portable_wgangp.distribution.input_shard`).
    ``y``: labels of array data; ``labelled``: whether the labels are fed (default: when there are any).
    """
    if isinstance(x, StreamRounds):
        check_divisible(x.batch_size, num_replicas)
        x.shard = shard
        return x, len(x)
    if is_array(x) or is_source(x):
        from portable_wgangp import sources

        source = x if is_source(x) else sources.ArraySource(x, y)
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        check_divisible(batch_size, num_replicas)
        rounds = EpochRounds(
            source, batch_size, n_critic, shuffle=shuffle, seed=seed, shard=shard, labelled=labelled
        )
        return rounds, None
    if batch_size is not None:
        raise ValueError(
            "batch_size applies to array data only; an iterable of minibatches keeps its own batch size."
        )
    try:
        steps = len(x) // n_critic
    except TypeError:  # a generator, or a dataset of unknown or infinite cardinality
        steps = None
    return group_minibatches(x, n_critic, num_replicas, shard), steps


def executions(rounds, steps_per_execution: int, steps_per_epoch: int | None, padded: bool):
    """``(executions, executions_per_epoch)``: ``rounds`` grouped ``steps_per_execution`` (N) at a time, what
    one call of the compiled step trains on (`WGANGP.compile(steps_per_execution=N)`).

    An execution stacks N consecutive rounds along the round axis, ``(batch, N·n_critic, ...)``, so the
    batch axis stays first for the strategies to shard and step j reads updates ``j·n_critic …``. Each
    epoch of ``steps_per_epoch`` rounds (default: the dataset's length) ends with a short execution when N
    does not divide it. With ``padded`` (a compiled step of one input shape: `backend.FIXED_SHAPES`) that
    execution is filled up with copies of its last round, and every execution comes as
    ``({"rounds": x, "active": a}, *labels)`` with ``a`` of shape ``(batch, N)``: 1 for the steps to train,
    0 for the padding. A sample source's rounds (a `keras.utils.PyDataset`) stay one; their reader threads
    now read executions ahead.
    """
    grouping = _Grouping(steps_per_execution, padded)
    if isinstance(rounds, keras.utils.PyDataset):
        length = len(rounds) if steps_per_epoch is None else steps_per_epoch
        if length > len(rounds):
            raise ValueError(
                f"steps_per_epoch {length} exceeds the {len(rounds)} steps an epoch of this data holds; pass "
                f"steps_per_epoch <= {len(rounds)}, or more epochs."
            )
        return ExecutionRounds(rounds, grouping, length), None
    if steps_per_epoch is None:
        return map(grouping.stack, _chunked(iter(rounds), steps_per_execution)), None
    per_epoch = -(-steps_per_epoch // steps_per_execution)
    return _epoch_executions(iter(rounds), grouping, steps_per_epoch), per_epoch


class _Grouping(NamedTuple):
    """How rounds become one execution (see `executions`)."""

    steps: int
    padded: bool

    def stack(self, group: list[tuple]) -> tuple:
        """One execution of the rounds in ``group`` (1 ≤ len ≤ steps), padded if ``padded``."""
        count = len(group)
        if self.padded:
            group = group + [group[-1]] * (self.steps - count)
        arrays = tuple(np.concatenate([r[i] for r in group], axis=1) for i in range(len(group[0])))
        if not self.padded:
            return arrays
        active = np.zeros((len(arrays[0]), self.steps), "float32")
        active[:, :count] = 1.0
        return ({"rounds": arrays[0], "active": active}, *arrays[1:])


def _chunked(iterator: Iterator, size: int) -> Iterator[list]:
    """Lists of ``size`` consecutive items of ``iterator`` (the last may be shorter)."""
    while group := list(itertools.islice(iterator, size)):
        yield group


def _epoch_executions(iterator: Iterator, grouping: _Grouping, steps_per_epoch: int) -> Iterator[tuple]:
    """Executions of ``iterator``'s rounds, epoch after epoch of ``steps_per_epoch`` rounds each."""
    while True:
        epoch = itertools.islice(iterator, steps_per_epoch)
        yield from map(grouping.stack, _chunked(epoch, grouping.steps))


class _RoundsView(keras.utils.PyDataset):
    """A `keras.utils.PyDataset` made of another one's ``rounds``: read by their reader settings (threads,
    queue), its epochs ending with theirs."""

    def __init__(self, rounds: keras.utils.PyDataset):
        super().__init__(
            workers=rounds.workers,
            use_multiprocessing=rounds.use_multiprocessing,
            max_queue_size=rounds.max_queue_size,
        )
        self.rounds = rounds

    def on_epoch_end(self) -> None:
        self.rounds.on_epoch_end()


class ExecutionRounds(_RoundsView):
    """The executions of a `keras.utils.PyDataset` of rounds, ``length`` rounds an epoch (see `executions`);
    read ahead by the rounds' own threads, one execution per read."""

    def __init__(self, rounds: keras.utils.PyDataset, grouping: _Grouping, length: int):
        super().__init__(rounds)
        self.grouping, self.length = grouping, length

    def __len__(self) -> int:
        return -(-self.length // self.grouping.steps)

    def __getitem__(self, index: int) -> tuple:
        first = index * self.grouping.steps
        return self.grouping.stack(
            [self.rounds[i] for i in range(first, min(first + self.grouping.steps, self.length))]
        )


def placed_ahead(rounds, place):
    """``rounds`` (a `keras.utils.PyDataset` or an iterable) with each item passed through ``place``
    (`backend.place`: onto the step's device(s), without waiting) one item before the step asks for it,
    so that the copy of the next execution runs while the current one trains. The same items, in the
    same order."""
    if isinstance(rounds, keras.utils.PyDataset):
        return PlacedRounds(rounds, place)
    return _one_ahead(map(place, rounds))


_NOTHING = object()


def _one_ahead(items: Iterable) -> Iterator:
    """``items``, each one taken from its source (and so placed) before the one before it is yielded.

    An error taking an item is raised when that item is asked for, not one early: a finite iterable
    that ends before the run does fails where it would have failed without the look-ahead (the item read
    early is otherwise lost to a later `fit` on the same iterator, as with Keras's own look-ahead)."""
    items = iter(items)
    previous = next(items, _NOTHING)
    while previous is not _NOTHING:
        try:
            item = next(items, _NOTHING)
        except Exception:
            yield previous
            raise
        yield previous
        previous = item


class PlacedRounds(_RoundsView):
    """A `keras.utils.PyDataset` of rounds or executions, each item passed through ``place`` ahead of
    the step (see `placed_ahead`). Read in order by the step's thread (``workers`` ≤ 1), item i + 1 is
    placed when item i is handed out; read by Keras's reader threads (``workers`` > 1), each item is
    placed by the thread that reads it, which runs ahead of the step already."""

    def __init__(self, rounds: keras.utils.PyDataset, place):
        super().__init__(rounds)
        self.place = place
        self._ahead: dict = {}

    def __len__(self) -> int:
        return len(self.rounds)

    def __getitem__(self, index: int):
        item = self._ahead.pop(index, _NOTHING)
        if item is _NOTHING:
            item = self.place(self.rounds[index])
        if self.workers <= 1 and index + 1 < len(self):
            self._ahead = {index + 1: self.place(self.rounds[index + 1])}
        return item

    def on_epoch_end(self) -> None:
        self._ahead = {}  # the next epoch's items may differ (reshuffled)
        super().on_epoch_end()


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
    ``npy:PATH[:LABELS]`` or ``images:DIR``; training streams them instead (`sources.open_source`)."""
    from portable_wgangp import sources

    source = sources.open_source(spec, size)
    return sources.read_all(source), source.labels
