"""Feeding `WGANGP.fit`: real data grouped into rounds of ``n_critic`` fresh minibatches.

A round is one training step's real data, shape ``(batch, n_critic, *sample_shape)``: the batch axis
stays first so that data-parallel strategies shard it, and critic update ``k`` reads ``round[:, k]``.
The samples come from arrays or from a source of `portable_wgangp.sources` (checked and scaled there);
`Shard` says which rows of every global batch this process feeds.
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
