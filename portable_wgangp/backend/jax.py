"""JAX glue: pure functions over `keras.StatelessScope`s.

Keras's JAX trainer is pure: ``train_step(state, data) -> (logs, state)`` with ``state`` = (trainable,
non-trainable, optimizer, metrics variable values). The step itself is written once, statefully, for all
backends; here it runs inside a `StatelessScope` that maps every variable to its value in ``state``, so its
reads see the traced values and its writes (optimizer updates, seed advances) are collected, not applied.
``model.optimizer`` is the model's pair of optimizers, so both optimizers' slots travel in that state.

Under `keras.distribution.DataParallel` the step sees global arrays and jit inserts the collectives, so
there is one replica as far as the step's code is concerned.
"""

import itertools

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras.src.backend.common.stateless_scope import get_stateless_scope

from portable_wgangp.backend import stateless

# Two critic calls, for real and for fake samples: XLA fuses the step either way, and its CPU convolutions
# run one batch of 2B slower than two of B (DCGAN-32: 4.64 vs 4.45 s a step, benchmarks/README.md).
JOINT_SCORES = False
# jit compiles one program per input shape: a short last execution is padded, not recompiled.
FIXED_SHAPES = True


def input_gradient(fn, x):
    """∇ₓ Σ fn(x) by `jax.grad`; weights that ``fn`` reads are closed over, so it differentiates again."""
    return jax.grad(lambda points: jnp.sum(fn(points).astype(jnp.float32)))(jnp.asarray(x))


def constant(fn):
    """``fn()`` behind `jax.lax.stop_gradient`."""
    return jax.tree_util.tree_map(jax.lax.stop_gradient, fn())


def forward(model, inputs, training=None):
    """``model(inputs, training=training)``: traced once, so Keras's per-call bookkeeping costs nothing per
    step."""
    return model(inputs, training=training)


def num_replicas() -> int:
    """The step sees global arrays (jit shards them): one replica as far as its code is concerned."""
    return 1


def replica_index() -> int:
    return 0


def global_mean(x):
    """Means over global arrays are global already."""
    return x


def synchronize(variables) -> None:
    """Replicated variables are equal on every device: nothing to do."""


def value_and_grad(fn, variables):
    """``fn() -> (loss, aux)`` as a pure function of ``variables`` under `jax.value_and_grad`
    (`stateless.value_and_grad`: writes to other variables go to the step's scope)."""
    return stateless.value_and_grad(lambda pure: jax.value_and_grad(pure, has_aux=True), fn, variables)


def drop_compiled() -> None:
    """Drop every compiled executable: JAX compiles each eager operation (the initializers, the optimizers'
    slots) for its shapes and keeps it, ~190 MB once the 64×64 DCGAN is built; what runs again compiles
    again."""
    jax.clear_caches()


def apply_gradients(optimizer, grads, variables) -> None:
    """``optimizer``'s update of ``variables``, recorded in the step's scope.

    Goes through `stateless_apply`: stateful updates inside a `lax.cond` (loss scaling, gradient
    accumulation) would leak tracers out of the branch.
    """
    scope = get_stateless_scope()
    if scope is None:
        optimizer.apply(grads, variables)
        return
    new_values, new_slots = optimizer.stateless_apply(
        [v.value for v in optimizer.variables], grads, [v.value for v in variables]
    )
    for variable, value in zip([*variables, *optimizer.variables], [*new_values, *new_slots]):
        scope.add_update((variable, value))


def train_step(model, step, state, data):
    """Run the stateful ``step(data) -> logs`` as Keras's pure JAX ``train_step(state, data)``."""
    groups = stateless.state_groups(model)
    variables = [variable for group in groups for variable in group]
    logs, values = stateless.run_pure(lambda: step(data), variables, [v for part in state for v in part])
    sizes = np.cumsum([0, *map(len, groups)])
    return logs, tuple(values[start:end] for start, end in itertools.pairwise(sizes))


def place(batch):
    """``batch`` (numpy arrays) sent to the devices the step reads it from, the copies started, not awaited
    (`jax.device_put` is asynchronous): under a `keras.distribution`, sharded by its data layout (the
    batch axis split over the devices), else on the default device — except on a CPU, where the step
    reads host memory and Keras copies nothing ahead either. With several processes each holds only its
    share of the global batch: left as it is, for Keras to assemble the global arrays."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return batch if jax.default_backend() == "cpu" else jax.device_put(batch)
    if jax.process_count() > 1:
        return batch
    return jax.tree_util.tree_map(
        lambda x: jax.device_put(x, distribution.get_data_layout(x.shape).backend_layout), batch
    )


def with_host_logs(train_function, to_host):
    """Keras's ``train_function(state, data) -> (logs, state)`` with its logs passed through ``to_host``."""

    def function(state, data):
        logs, state = train_function(state, data)
        return to_host(logs), state

    return function


def repeat(step, n, variables):
    """``step(j)`` for j < n as one `jax.lax.scan`, the variables' values its carry.

    Inside a step's `StatelessScope` each iteration runs in a scope of its own that maps ``variables`` to
    the carried values; the final values are handed back to the enclosing scope.
    """
    outer = get_stateless_scope()
    if outer is None or n == 1:
        return jnp.stack([step(j) for j in range(n)])

    def body(values, j):
        row, values = stateless.run_pure(lambda: step(j), variables, values)
        return values, row

    final, rows = jax.lax.scan(body, [v.value for v in variables], np.arange(n))
    for variable, value in zip(variables, final):
        outer.add_update((variable, value))
    return rows
