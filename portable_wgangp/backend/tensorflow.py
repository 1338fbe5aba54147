"""TensorFlow glue: nested `tf.GradientTape`s; Keras's TF trainer already runs `train_step(data)`."""

import tensorflow as tf


def input_gradient(fn, x):
    """∇ₓ Σ fn(x) by a tape that watches ``x``; an enclosing tape records it, so it differentiates again."""
    x = tf.convert_to_tensor(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(tf.cast(fn(x), tf.float32))
    return tape.gradient(total, x, unconnected_gradients=tf.UnconnectedGradients.ZERO)


def value_and_grad(fn, variables):
    """``fn() -> (loss, aux)`` under a tape; returns ``(loss, aux, grads)``."""
    with tf.GradientTape() as tape:
        loss, aux = fn()
    grads = tape.gradient(loss, variables)
    return loss, aux, [tf.zeros(v.shape, v.dtype) if g is None else g for v, g in zip(variables, grads)]


def train_step(model, step, data):
    """Keras's TF trainer calls ``train_step(data)`` inside its `tf.function`: run the step as it is."""
    return step(data)
