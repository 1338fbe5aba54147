"""Stateful Keras code as pure functions of the variables' values: what the JAX step and the captured torch
step (`torch_capture`) share.

Inside a `keras.StatelessScope` every read of a mapped variable sees the value the scope maps it to and
every write is recorded in the scope instead of applied, so a step written once, statefully, for all
backends becomes ``values -> (result, new values)``.
"""

from keras import StatelessScope
from keras.src.backend.common.stateless_scope import get_stateless_scope


def state_groups(model) -> tuple:
    """Every variable a training step reads or writes, in Keras's state order: trainable, non-trainable,
    ``model.optimizer``'s (both optimizers of a `WGANGP`), metrics'."""
    return (
        model.trainable_variables,
        model.non_trainable_variables,
        model.optimizer.variables,
        model.metrics_variables,
    )


def run_pure(fn, variables, values):
    """``fn()`` with ``variables`` reading ``values``; returns ``(fn(), new values)``, one per variable."""
    with StatelessScope(list(zip(variables, values))) as scope:
        result = fn()
    return result, [current(scope, variable, value) for variable, value in zip(variables, values)]


def current(scope, variable, value):
    """The value ``scope`` holds for ``variable`` (its last write, else its mapped input ``value``)."""
    written = scope.get_current_value(variable)
    return value if written is None else written


def value_and_grad(transform, fn, variables):
    """``fn() -> (loss, aux)`` as a pure function of ``variables``, differentiated by ``transform``.

    ``transform(pure)``: the framework's ``value_and_grad`` with ``has_aux``, returning
    ``((loss, aux), grads)`` for ``pure(values) -> (loss, aux)``. Inside a step's scope the other variables
    keep their scoped values, and any write that ``fn`` makes to them (a seed advance, a moving statistic)
    is handed back to that scope. Returns ``(loss, aux, grads)``.
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

    (loss, (aux, writes)), grads = transform(pure)([v.value for v in variables])
    if outer is not None:
        outer.state_mapping.update(writes)
    return loss, aux, grads
