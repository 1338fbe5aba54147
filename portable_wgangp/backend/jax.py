"""JAX glue: pure functions over `keras.StatelessScope`s.

Keras's JAX trainer is pure: ``train_step(state, data) -> (logs, state)`` with ``state`` = (trainable,
non-trainable, optimizer, metrics variable values). The step itself is written once, statefully, for all
backends; here it runs inside a `StatelessScope` that maps every variable to its value in ``state``, so its
reads see the traced values and its writes (optimizer updates, seed advances) are collected, not applied.
``model.optimizer`` is the model's pair of optimizers, so both optimizers' slots travel in that state.

Under `keras.distribution.DataParallel` the step sees global arrays and jit inserts the collectives, so
there is one replica as far as the step's code is concerned.
"""

import jax
import jax.numpy as jnp
import keras
import numpy as np
from keras import StatelessScope
from keras.src.backend.common.stateless_scope import get_stateless_scope

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
    """``fn() -> (loss, aux)`` as a pure function of ``variables`` under `jax.value_and_grad`.

    Inside a step's `StatelessScope`, the other variables keep their scoped values, and any write that
    ``fn`` makes to them (a seed advance, a moving statistic) is handed back to that scope.
    """
    outer = get_stateless_scope()
    inherited = dict(outer.state_mapping) if outer is not None else {}
    differentiated = {id(v) for v in variables}

    def pure(values):
        with StatelessScope(list(zip(variables, values))) as scope:
            scope.state_mapping = {**inherited, **scope.state_mapping}
            loss, aux = fn()
        writes = {
            key: value
            for key, value in scope.state_mapping.items()
            if key not in differentiated and value is not inherited.get(key)
        }
        return loss, (aux, writes)

    (loss, (aux, writes)), grads = jax.value_and_grad(pure, has_aux=True)([v.value for v in variables])
    if outer is not None:
        outer.state_mapping.update(writes)
    return loss, aux, grads


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
    references = (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )
    mapping = [pair for refs, values in zip(references, state) for pair in zip(refs, values)]
    with StatelessScope(mapping) as scope:
        logs = step(data)
    new_state = tuple(
        [_current(scope, ref, value) for ref, value in zip(refs, values)]
        for refs, values in zip(references, state)
    )
    return logs, new_state


def _current(scope, variable, value):
    """The value ``scope`` holds for ``variable`` (its last write, else its mapped input ``value``)."""
    current = scope.get_current_value(variable)
    return value if current is None else current


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
        with StatelessScope(list(zip(variables, values))) as scope:
            row = step(j)
        return [_current(scope, v, value) for v, value in zip(variables, values)], row

    final, rows = jax.lax.scan(body, [v.value for v in variables], np.arange(n))
    for variable, value in zip(variables, final):
        outer.add_update((variable, value))
    return rows
