"""The only package that imports a framework: one module per Keras backend, chosen by `KERAS_BACKEND`.

Each module provides the same three functions:

- ``input_gradient(fn, x)``: ∇ₓ Σ fn(x), shape of ``x``, differentiable again w.r.t. the weights that
  ``fn`` reads (the double backward the gradient penalty needs).
- ``value_and_grad(fn, variables)``: ``fn() -> (loss, aux)`` evaluated once; returns
  ``(loss, aux, grads)`` with one gradient per variable (zeros where ``loss`` does not depend on it).
- ``train_step(model, step, *args)``: adapts a stateful step ``step(data) -> logs`` to the signature that
  Keras's trainer of this backend calls (``(data)`` on TensorFlow and torch, ``(state, data)`` on JAX).
"""

import keras

_BACKEND = keras.backend.backend()

if _BACKEND == "tensorflow":
    from portable_wgangp.backend.tensorflow import input_gradient, train_step, value_and_grad
elif _BACKEND == "jax":
    from portable_wgangp.backend.jax import input_gradient, train_step, value_and_grad
elif _BACKEND == "torch":
    from portable_wgangp.backend.torch import input_gradient, train_step, value_and_grad
else:
    raise ImportError(
        f"portable_wgangp supports the Keras backends tensorflow, jax and torch, not {_BACKEND!r}; "
        "set KERAS_BACKEND to one of them before importing keras."
    )

__all__ = ["input_gradient", "train_step", "value_and_grad"]
