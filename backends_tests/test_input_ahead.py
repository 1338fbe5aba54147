"""Input on the device ahead of time: the next execution's data is placed on the step's device(s) while
the current one runs (`data.placed_ahead` with `backend.place`), and training sees the same numbers."""

import contextlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import BACKEND

import portable_wgangp as pw
from portable_wgangp import backend, data


class Items(keras.utils.PyDataset):
    """Item i is the array [i] (the epoch added after the first), read in order by the caller's thread."""

    def __init__(self, length: int, workers: int = 0):
        super().__init__(workers=workers)
        self.length, self.epoch = length, 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index):
        return np.array([index + 10 * self.epoch])

    def on_epoch_end(self) -> None:
        self.epoch += 1


def recorded(events: list):
    """A ``place`` that records each item it places."""

    def place(item):
        events.append(("placed", int(item[0])))
        return item

    return place


def test_a_dataset_read_in_order_has_its_next_item_placed_before_the_step_takes_this_one():
    events = []
    placed = data.placed_ahead(Items(3), recorded(events))
    for _ in range(2):
        for index in range(len(placed)):
            events.append(("taken", int(placed[index][0])))
        placed.on_epoch_end()
    first = [("placed", 0), ("placed", 1), ("taken", 0), ("placed", 2), ("taken", 1), ("taken", 2)]
    # the next epoch's items are read afresh: the dataset reorders them at on_epoch_end
    second = [("placed", 10), ("placed", 11), ("taken", 10), ("placed", 12), ("taken", 11), ("taken", 12)]
    assert events == first + second


def test_a_dataset_read_by_reader_threads_is_placed_by_them_once_an_item():
    events = []
    placed = data.placed_ahead(Items(3, workers=2), recorded(events))
    assert [int(placed[i][0]) for i in range(3)] == [0, 1, 2]
    assert events == [("placed", 0), ("placed", 1), ("placed", 2)]


def test_an_iterable_has_its_next_item_placed_before_this_one_is_yielded():
    events = []
    for item in data.placed_ahead(iter([np.array([i]) for i in range(3)]), recorded(events)):
        events.append(("taken", int(item[0])))
    assert events == [("placed", 0), ("placed", 1), ("taken", 0), ("placed", 2), ("taken", 1), ("taken", 2)]
    assert list(data.placed_ahead([], recorded(events))) == []


def test_an_iterable_that_fails_fails_when_the_failing_item_is_asked_for():
    def two_then_broken():
        yield np.array([0])
        yield np.array([1])
        raise ValueError("the data ran out")

    placed = data.placed_ahead(two_then_broken(), lambda item: item)
    assert [int(next(placed)[0]) for _ in range(2)] == [0, 1]
    with pytest.raises(ValueError, match="ran out"):
        next(placed)


def trained_weights(n: int, source: str) -> list:
    """A small WGAN-GP after 5 steps at ``n`` steps per call, fed from arrays or from a generator."""
    keras.utils.set_random_seed(0)
    gan = pw.WGANGP(
        pw.nets.mlp(2, 2, width=16, depth=2), pw.nets.mlp(2, 1, width=16, depth=2), 2, n_critic=2, seed=1
    )
    gan.compile(steps_per_execution=n)
    x = np.random.default_rng(0).normal(size=(32 * 2 * 5, 2)).astype("float32")
    if source == "arrays":
        gan.fit(x, batch_size=32, verbose=0)
    else:
        gan.fit(iter(np.split(x, 10)), steps_per_epoch=5, verbose=0)
    return gan.get_weights()


@pytest.mark.skipif(
    BACKEND == "tensorflow",
    reason="TensorFlow has no backend.place: Keras's tf.data pipeline prefetches to the devices itself",
)
@pytest.mark.parametrize(("n", "source"), [(1, "arrays"), (2, "arrays"), (2, "iterable")])
def test_training_on_placed_input_gives_the_same_weights(n, source, monkeypatch):
    # JAX places only under a distribution on the CPU (else the step reads host memory): use one
    scope = keras.distribution.DataParallel().scope() if BACKEND == "jax" else contextlib.nullcontext()
    placed_types, place = set(), backend.place

    def recording(batch):
        placed = place(batch)
        placed_types.update(type(x).__name__ for x in keras.tree.flatten(placed))
        return placed

    with scope:
        monkeypatch.setattr(backend, "place", recording)
        ahead = trained_weights(n, source)
        monkeypatch.setattr(backend, "place", None)  # the data as Keras converts it at each step
        converted = trained_weights(n, source)
    assert placed_types == ({"ArrayImpl"} if BACKEND == "jax" else {"ndarray"})
    for a, c in zip(ahead, converted):
        np.testing.assert_array_equal(a, c)


PLACED_ON_FOUR_DEVICES = """
import json, keras, numpy as np
from portable_wgangp import backend
keras.distribution.set_distribution(keras.distribution.DataParallel())
batch = ({"rounds": np.zeros((8, 6, 2), "float32"), "active": np.ones((8, 3), "float32")},)
placed = backend.place(batch)[0]
print(json.dumps({name: [len(x.sharding.device_set), [s.data.shape[0] for s in x.addressable_shards]]
                  for name, x in placed.items()}))
"""


@pytest.mark.skipif(BACKEND != "jax", reason="the sharded placement is JAX's; the others are tested above")
def test_jax_places_an_execution_sharded_over_the_devices_of_the_distribution():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "KERAS_BACKEND": "jax"}
    result = subprocess.run(
        [sys.executable, "-c", PLACED_ON_FOUR_DEVICES], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    shards = json.loads(result.stdout.strip().splitlines()[-1])
    assert shards == {"rounds": [4, [2, 2, 2, 2]], "active": [4, [2, 2, 2, 2]]}


@pytest.mark.skipif(BACKEND != "torch", reason="torch's placement; JAX's is tested above, TF has none")
def test_torch_on_the_cpu_leaves_the_input_to_keras():
    batch = (np.zeros((4, 2), "float32"),)
    assert backend.place(batch) is batch  # pinned memory and non-blocking copies are for CUDA devices
