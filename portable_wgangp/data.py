"""Feeding `WGANGP.fit`: real data grouped into rounds of ``n_critic`` fresh minibatches.

A round is one training step's real data, shape ``(batch, n_critic, *sample_shape)``: the batch axis
stays first so that data-parallel strategies shard it, and critic update ``k`` reads ``round[:, k]``.
"""

from __future__ import annotations

import itertools
from typing import Iterable, Iterator

import keras
import numpy as np
from keras import tree

DEFAULT_BATCH_SIZE = 64


def _is_array(x) -> bool:
    """Numpy arrays, lists and framework tensors (anything with ``__array__`` and a shape)."""
    return isinstance(x, list) or (hasattr(x, "__array__") and hasattr(x, "shape"))


def as_float_array(x) -> np.ndarray:
    """Samples as a float32 numpy array; raises a ValueError for non-numeric data."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"Real samples must be numeric, got an array of dtype {x.dtype}.")
    return x.astype(keras.config.floatx(), copy=False)


class ArrayRounds(keras.utils.PyDataset):
    """Rounds drawn from in-memory samples without replacement, reshuffled every epoch.

    Each epoch holds ``len(x) // (batch_size * n_critic)`` rounds; the few samples left over differ from
    epoch to epoch when ``shuffle`` is on.
    """

    def __init__(self, x: np.ndarray, batch_size: int, n_critic: int, shuffle: bool = True, seed=None):
        super().__init__()
        self.x = as_float_array(x)
        self.batch_size = batch_size
        self.n_critic = n_critic
        self.shuffle = shuffle
        self._rng = np.random.default_rng(seed)
        self._order = self._new_order()
        per_round = batch_size * n_critic
        if len(self.x) < per_round:
            raise ValueError(
                f"A training step needs batch_size * n_critic = {batch_size} * {n_critic} = {per_round} "
                f"samples, but only {len(self.x)} were given; lower batch_size or n_critic."
            )

    def _new_order(self) -> np.ndarray:
        return self._rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))

    def __len__(self) -> int:
        return len(self.x) // (self.batch_size * self.n_critic)

    def __getitem__(self, index: int) -> np.ndarray:
        per_round = self.batch_size * self.n_critic
        picked = self.x[self._order[index * per_round : (index + 1) * per_round]]
        # Sample i of critic update k is picked[k * batch_size + i]: consecutive minibatches.
        return np.swapaxes(picked.reshape((self.n_critic, self.batch_size) + self.x.shape[1:]), 0, 1)

    def on_epoch_end(self) -> None:
        self._order = self._new_order()


def group_minibatches(batches: Iterable, n_critic: int) -> Iterator:
    """Stack every ``n_critic`` consecutive minibatches ``(batch, ...)`` into a round ``(batch, n_critic, ...)``.

    ``batches`` is re-iterated when it runs out (a `DataLoader` or `tf.data.Dataset` starts a new epoch);
    an incomplete round at the end of a pass is dropped. Minibatches may be arrays or tuples of arrays.
    """
    while True:
        passed = 0
        iterator = iter(batches.as_numpy_iterator() if hasattr(batches, "as_numpy_iterator") else batches)
        for group in iter(lambda: list(itertools.islice(iterator, n_critic)), []):
            if len(group) < n_critic:
                break
            passed += 1
            yield tree.map_structure(lambda *parts: np.stack([np.asarray(p) for p in parts], axis=1), *group)
        if passed == 0:
            raise ValueError(
                f"The data yielded fewer than n_critic = {n_critic} minibatches in a whole pass; "
                "a training step needs n_critic of them."
            )


def critic_rounds(x, *, batch_size: int | None, n_critic: int, shuffle: bool = True, seed=None):
    """``(rounds, steps_per_epoch)`` for `WGANGP.fit` from arrays or an iterable of minibatches.

    Arrays are split into minibatches of ``batch_size`` (default 64). An iterable of minibatches (tf.data,
    torch `DataLoader`, Python generator) keeps its own batch size; its steps per epoch are
    ``len(x) // n_critic`` when it has a length, else None (pass ``steps_per_epoch``).
    """
    if _is_array(x):
        return ArrayRounds(x, batch_size or DEFAULT_BATCH_SIZE, n_critic, shuffle=shuffle, seed=seed), None
    if batch_size is not None:
        raise ValueError(
            "batch_size applies to array data only; an iterable of minibatches keeps its own batch size."
        )
    try:
        steps = len(x) // n_critic
    except TypeError:  # a generator, or a dataset of unknown or infinite cardinality
        steps = None
    return group_minibatches(x, n_critic), steps
