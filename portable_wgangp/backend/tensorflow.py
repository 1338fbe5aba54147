"""TensorFlow glue: nested `tf.GradientTape`s and `tf.distribute` replica contexts.

Under a strategy Keras runs ``train_step`` once per replica on that replica's shard of the global batch,
and the optimizer sums the replicas' gradients; each replica therefore scales its gradient of the local
mean loss by 1/R, and all-reduces logged values to their global mean.
"""

import tensorflow as tf

# One critic call on real and fake samples together: half the operations, which TensorFlow's executor pays
# for one by one (the toy MLP at batch 64: 27 vs 33 ms a step in two calls, benchmarks/README.md).
JOINT_SCORES = True
# A tf.data input has one signature per run: a short last execution is padded, not retraced.
FIXED_SHAPES = True


def input_gradient(fn, x):
    """∇ₓ Σ fn(x) by a tape that watches ``x``; an enclosing tape records it, so it differentiates again."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.cast(fn(x), tf.float32))
    return tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def constant(fn):
    """``fn()`` behind `tf.stop_gradient`."""
    return tf.nest.map_structure(tf.stop_gradient, fn())


def forward(model, inputs, training=None):
    """``model(inputs, training=training)``: traced once, so Keras's per-call bookkeeping costs nothing per
    step."""
    return model(inputs, training=training)


def _replica_context():
    """The replica context of a step under a strategy, else None (also outside any strategy)."""
    context = tf.distribute.get_replica_context()
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def num_replicas() -> int:
    """Replicas that each run the step on a local part of the global batch (1 without a strategy)."""
    context = _replica_context()
    return 1 if context is None else context.num_replicas_in_sync


def replica_index():
    """This replica's position in the global batch, 0 ≤ index < `num_replicas()`."""
    context = _replica_context()
    return 0 if context is None else context.replica_id_in_sync_group


def global_mean(x):
    """Mean of ``x`` over the replicas (each holds a mean over an equal shard: the global mean)."""
    context = _replica_context()
    return x if context is None else context.all_reduce(tf.distribute.ReduceOp.MEAN, x)


def value_and_grad(fn, variables):
    """``fn() -> (loss, aux)`` under a tape; returns ``(loss, aux, grads)``.

    Gradients are divided by the number of replicas, so that the optimizer's sum over replicas gives the
    gradient of the global mean loss.
    """
    with tf.GradientTape() as tape:
        loss, aux = fn()
    grads = tape.gradient(loss, variables)
    return (
        loss,
        aux,
        [tf.zeros(v.shape, v.dtype) if g is None else _per_replica(g) for v, g in zip(variables, grads)],
    )


def _per_replica(grad):
    """``grad / R``, keeping the sparse gradients of embeddings sparse."""
    replicas = num_replicas()
    if replicas == 1:
        return grad
    if isinstance(grad, tf.IndexedSlices):
        return tf.IndexedSlices(grad.values / replicas, grad.indices, grad.dense_shape)
    return grad / replicas


def apply_gradients(optimizer, grads, variables) -> None:
    """``optimizer``'s update of ``variables``."""
    optimizer.apply(grads, variables)


def synchronize(variables) -> None:
    """Mirrored variables start equal on every replica: nothing to do."""


def repeat(step, n, variables):
    """``step(j)`` for j < n as one `tf.while_loop` inside a `tf.function`.

    Under a strategy with several replicas the steps are unrolled instead: the optimizers' updates
    synchronize the replicas (``merge_call``), which TensorFlow does not allow inside a loop's body.
    """
    if n == 1 or num_replicas() > 1 or tf.executing_eagerly():
        return tf.stack([step(j) for j in range(n)])
    rows = tf.TensorArray(tf.float32, size=n)
    rows = tf.while_loop(
        lambda j, rows: j < n,
        lambda j, rows: (j + 1, rows.write(j, step(j))),
        (tf.constant(0), rows),
        parallel_iterations=1,
    )[1]
    return rows.stack()


def train_step(model, step, data):
    """Keras's TF trainer calls ``train_step(data)`` inside its `tf.function`: run the step as it is.

    Across workers, Keras 3.15 reduces logs with ``strategy.reduce(MEAN, value, axis=0)``, which needs a
    batch axis: there each (already global) logged value travels with a leading axis of one element.
    """
    logs = step(data)
    strategy = tf.distribute.get_strategy()
    if (
        isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
        and strategy.extended._in_multi_worker_mode()
    ):
        logs = {name: tf.expand_dims(value, 0) for name, value in logs.items()}
    return logs
