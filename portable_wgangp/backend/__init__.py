"""The only package that imports a framework: one module per Keras backend, chosen by `KERAS_BACKEND`.

Each module provides the same functions:

- ``input_gradient(fn, x)``: ∇ₓ Σ fn(x), shape of ``x``, differentiable again w.r.t. the weights that
  ``fn`` reads (the double backward the gradient penalty needs).
- ``value_and_grad(fn, variables)``: ``fn() -> (loss, aux)`` evaluated once; returns
  ``(loss, aux, grads)`` with one gradient per variable (zeros where ``loss`` does not depend on it).
  Under data parallelism, the gradients that make the optimizer's update that of the global mean loss.
- ``apply_gradients(optimizer, grads, variables)``: the optimizer's update, inside or outside a step.
- ``constant(fn)``: ``fn()`` as a constant of the step: no gradient flows back through it (torch does not
  even record its graph).
- ``forward(model, inputs, training=None)``: ``model(inputs, training=training)``, the way the step calls
  its networks (torch runs the layers it knows by fused torch calls: `torch_layers`).
- ``JOINT_SCORES``: whether the step scores real and fake samples in one critic call (fewer, larger
  operations) or in two; the same numbers either way, the faster on this backend.
- ``FIXED_SHAPES``: whether a compiled step takes one input shape per run (JAX, TensorFlow): then a short
  last execution of ``steps_per_execution`` is padded to full length and its extra steps masked out
  (`WGANGP.train_execution`); torch runs a short execution as it is.
- ``repeat(step, n, variables)``: ``step(j) -> row`` for j = 0 … n − 1, one after the other, as ONE loop of
  the compiled program (its size and compile time independent of n); returns the rows stacked, ``(n, …)``.
  ``variables``: every variable a step reads or writes.
- ``place(batch)``: ``batch`` (numpy arrays) on the device(s) the step reads it from, the copy started and
  not awaited, so that placing the next execution overlaps the current one (`data.placed_ahead`). None on
  TensorFlow, whose input pipeline already does it: Keras feeds the step from a prefetching `tf.data`
  dataset, distributed by the strategy, which fetches to the devices ahead.
- ``with_host_logs(train_function, to_host)``: Keras's ``train_function`` with the logs it returns
  replaced by ``to_host(logs)`` (the one read of device values per call: `WGANGP.host_logs`).
- ``host_value(x)``: ``x`` as a numpy array where reading it costs no wait on a device and no break in a
  traced step (torch's eager CPU tensors), else None (JAX and TensorFlow run the step compiled: None).
- ``forget_step(model)``: Keras made a new train function for ``model`` (a new ``compile``): drop what
  this module compiled for its old one (torch's captured programs; JAX and TensorFlow keep theirs in
  Keras's train function: `_forget_nothing`).
- ``drop_compiled()``: free what the frameworks keep compiled for operations already run (JAX: one
  executable per eager operation; the others keep nothing worth freeing: `_nothing`).
- ``train_step(model, step, *args)``: adapts a stateful step ``step(data) -> logs`` to the signature that
  Keras's trainer of this backend calls (``(data)`` on TensorFlow and torch, ``(state, data)`` on JAX).

and the replica view of a data-parallel step (one replica when the step sees global arrays):

- ``num_replicas()``, ``replica_index()``: the replicas that each hold a local part of the global batch.
- ``global_mean(x)``: the mean of a per-replica value over the replicas.
- ``synchronize(variables)``: make every replica start from the same values.
"""

import sys

import keras
from keras.src.utils import module_utils

_BACKEND = keras.backend.backend()


class _TensorFlowIfLoaded(module_utils.LazyModule):
    """Keras's lazy ``tensorflow`` module, reported available only once something else imported TensorFlow.

    Keras asks ``tensorflow.available`` (which imports it whenever it is installed) to seed TensorFlow's
    generator in `keras.utils.set_random_seed` and to recognise TensorFlow types while serializing: on the
    JAX and torch backends that would load all of TensorFlow (≈ 500 MB, seconds) into every run of an
    environment that has it. A user's own TensorFlow objects (a tf.data input) still work: they import it.
    """

    @property
    def available(self):
        return "tensorflow" in sys.modules and super().available


if _BACKEND != "tensorflow" and module_utils.tensorflow.module is None:
    module_utils.tensorflow.__class__ = _TensorFlowIfLoaded

if _BACKEND == "tensorflow":
    from portable_wgangp.backend import tensorflow as _module
elif _BACKEND == "jax":
    from portable_wgangp.backend import jax as _module
elif _BACKEND == "torch":
    from portable_wgangp.backend import torch as _module
else:
    raise ImportError(
        f"portable_wgangp supports the Keras backends tensorflow, jax and torch, not {_BACKEND!r}; "
        "set KERAS_BACKEND to one of them before importing keras."
    )


def _nothing() -> None:
    """Nothing to free."""


def _forget_nothing(model) -> None:
    """Nothing kept outside Keras's train function."""


def _not_on_host(x) -> None:
    """None: ``x`` is read only inside the compiled step."""


def _logs_returned(train_function, to_host):
    """Keras's ``train_function(data) -> logs`` (TensorFlow, torch), its logs passed through ``to_host``."""
    return lambda data: to_host(train_function(data))


FIXED_SHAPES = _module.FIXED_SHAPES
JOINT_SCORES = _module.JOINT_SCORES
apply_gradients = _module.apply_gradients
constant = _module.constant
drop_compiled = getattr(_module, "drop_compiled", _nothing)
forget_step = getattr(_module, "forget_step", _forget_nothing)
forward = _module.forward
global_mean = _module.global_mean
host_value = getattr(_module, "host_value", _not_on_host)
input_gradient = _module.input_gradient
num_replicas = _module.num_replicas
place = getattr(_module, "place", None)
repeat = _module.repeat
replica_index = _module.replica_index
synchronize = _module.synchronize
train_step = _module.train_step
value_and_grad = _module.value_and_grad
with_host_logs = getattr(_module, "with_host_logs", _logs_returned)

__all__ = [
    "FIXED_SHAPES",
    "JOINT_SCORES",
    "apply_gradients",
    "constant",
    "drop_compiled",
    "forget_step",
    "forward",
    "global_mean",
    "host_value",
    "input_gradient",
    "num_replicas",
    "place",
    "repeat",
    "replica_index",
    "synchronize",
    "train_step",
    "value_and_grad",
    "with_host_logs",
]
