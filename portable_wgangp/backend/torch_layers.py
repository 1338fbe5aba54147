"""Keras models run by fused torch calls: what `backend.torch.forward` executes in a training step.

Eager torch pays for everything a Keras layer does on every call, and a WGAN-GP step calls its networks
17 times (n_critic = 5). Three costs dominate a DCGAN step on CPU, none of them in the maths:

- Keras's ``__call__`` bookkeeping, ≈ 0.1 ms a layer a call (and the Dense ``kernel`` property's
  quantization checks);
- BatchNormalization's moments as separate ``mean`` / ``square`` / ``mean`` passes and a four-op
  normalization, where torch has one ``native_batch_norm`` (≈ 50 ms of a 1 s DCGAN-32 step);
- convolutions' layout work: channels_last inputs copied to NCHW and back to NHWC memory, kernels
  re-laid out at every call, "same" transposed convolutions computed at full size and then cropped, and
  bias added by a separate pass.

For a built `keras.Sequential` or functional `keras.Model` whose layers are all in the table below, held
in float32 and neither quantized nor LoRA-adapted, `run` executes the graph itself and calls each layer's
torch equivalent: the same weights, the same maths (to float32 rounding: tested against the Keras call,
gradients included), Keras's moving-statistics update for BatchNormalization. Any other model returns
``None`` and is called by Keras as usual.
"""

from __future__ import annotations

import functools
import weakref

import keras
import torch
import torch.nn.functional as F

from portable_wgangp.backend import torch_capture

try:  # Keras's own crop of torch's full transposed-convolution output (Keras 3.15)
    from keras.src.backend.common.backend_utils import compute_conv_transpose_output_crops_for_torch
except ImportError:  # another Keras: its transposed convolutions run by Keras's call
    compute_conv_transpose_output_crops_for_torch = None


def run(model, inputs, training=None):
    """``model(inputs, training=training)`` by the fused layer calls, or None where they do not apply."""
    if not _runnable(model):
        return None
    flat = [keras.ops.convert_to_tensor(x) for x in keras.tree.flatten(inputs)]
    expected = keras.tree.flatten(model.inputs) if model.inputs else [None]
    if len(flat) != len(expected) or any(
        spec is not None
        and (x.ndim != len(spec.shape) or keras.backend.standardize_dtype(x.dtype) != spec.dtype)
        for x, spec in zip(flat, expected)
    ):
        return None  # Keras would adjust the ranks or cast: let it
    if isinstance(model, keras.Sequential):
        (x,) = flat
        for layer in model.layers:
            x = _call(layer, training, x)
        return x
    outputs = model._run_through_graph(
        flat, operation_fn=lambda layer: functools.partial(_call, layer, training)
    )
    return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs


def _runnable(model) -> bool:
    """A built Sequential or plain functional Model of `_FUSED` and `_PLAIN` layers in float32."""
    if type(model) not in (keras.Sequential, _functional_class()) or not model.built:
        return False
    if not isinstance(model, keras.Sequential) and not hasattr(model, "_run_through_graph"):
        return False  # a Keras whose functional models run otherwise
    return all(_plain_layer(layer) for layer in model.layers)


@functools.cache
def _functional_class() -> type:
    """The class of a functional ``keras.Model(inputs, outputs)`` (Keras swaps it in)."""
    x = keras.Input((1,))
    return type(keras.Model(x, x))


def _plain_layer(layer) -> bool:
    return (
        (type(layer) in _FUSED or type(layer) in _PLAIN)
        and layer.dtype_policy.name == "float32"
        and layer.activity_regularizer is None
        and getattr(layer, "quantization_mode", None) is None
        and not getattr(layer, "lora_enabled", False)
        and not getattr(layer, "mask_zero", False)
    )


def _call(layer, training, *args, **kwargs):
    """One graph node: the fused call, or the layer's ``call`` with the graph's arguments (``mask=None``
    recorded at construction dropped) and the training flag where it takes one."""
    kwargs = {name: value for name, value in kwargs.items() if value is not None}
    fused = _FUSED.get(type(layer))
    if fused is not None and not kwargs:
        return fused(layer, args[0], training)
    if layer._call_has_training_arg:
        kwargs.setdefault("training", training)
    return layer.call(*args, **kwargs)


# -- the fused layers: (layer, x, training) -> outputs -------------------------------------------------------


def _dense(layer, x, training):
    """``x @ kernel + bias`` as one ``addmm`` for 2-d inputs (the ``kernel`` property's checks skipped)."""
    if x.ndim != 2:
        return layer.call(x)
    kernel = layer._kernel.value
    y = x @ kernel if layer.bias is None else torch.addmm(layer.bias.value, x, kernel)
    return y if layer.activation is None else layer.activation(y)


def _batch_norm(layer, x, training):
    """Training mode: one ``native_batch_norm`` over the channel axis, then Keras's moving-statistics update

        moving ← momentum · moving + (1 − momentum) · batch statistic   (biased variance, as Keras)

    with the batch variance recovered from the kernel's 1/√(var + ε). Inference and renorm: Keras's call.
    """
    if not (training and layer.trainable) or layer.renorm:
        return layer.call(x, training=training)
    axis = layer.axis % x.ndim
    channels_at_1 = x if axis == 1 else torch.movedim(x, axis, 1)  # a view: NHWC stays channels_last memory
    gamma = layer.gamma.value if layer.scale else None
    beta = layer.beta.value if layer.center else None
    y, mean, inverse_std = torch.native_batch_norm(
        channels_at_1, gamma, beta, None, None, True, 0.0, layer.epsilon
    )
    with torch.no_grad():
        variance = inverse_std.pow(-2) - layer.epsilon
        for moving, batch in ((layer.moving_mean, mean), (layer.moving_variance, variance)):
            moving.assign(moving.value * layer.momentum + batch * (1.0 - layer.momentum))
    return y if axis == 1 else torch.movedim(y, 1, axis)


def _conv(layer, x, training):
    """A 2-d convolution with bias in one ``conv2d`` call on an NCHW view of the input (no layout copies);
    "same" padding as Keras's (falls back to Keras's call where that padding is asymmetric)."""
    if layer.rank != 2 or layer.groups != 1 or layer.padding not in ("same", "valid"):
        return layer.call(x)
    padding = [0, 0]
    if layer.padding == "same":
        spatial = x.shape[1:3] if layer.data_format == "channels_last" else x.shape[2:]
        pads = [
            _same_padding(size, kernel, stride, dilation)
            for size, kernel, stride, dilation in zip(
                spatial, layer.kernel_size, layer.strides, layer.dilation_rate
            )
        ]
        if any(left != right for left, right in pads):
            return layer.call(x)
        padding = [left for left, _ in pads]
    return _on_nchw(
        layer,
        x,
        lambda h, kernel, bias: F.conv2d(h, kernel, bias, layer.strides, padding, layer.dilation_rate),
    )


def _same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """Keras's "same" padding (left, right) of an axis: (⌈n/s⌉ − 1)·s + k_eff − n, more on the right."""
    effective = (kernel - 1) * dilation + 1
    total = max(0, (-(-size // stride) - 1) * stride + effective - size)
    return total // 2, total - total // 2


def _conv_transpose(layer, x, training):
    """A 2-d transposed convolution with bias in one ``conv_transpose2d`` call, cropped by torch's own
    ``padding`` where Keras's crop is symmetric (Keras computes the full output, then slices it)."""
    if layer.rank != 2 or compute_conv_transpose_output_crops_for_torch is None:
        return layer.call(x)
    crops = compute_conv_transpose_output_crops_for_torch(
        input_shape=x.shape,
        kernel_shape=layer.kernel.shape,
        strides=layer.strides,
        padding=layer.padding,
        output_padding=layer.output_padding,
        dilation_rate=layer.dilation_rate,
    )
    if any(left != right or left < 0 for left, right in crops):
        return layer.call(x)
    padding = [left for left, _ in crops]
    return _on_nchw(
        layer,
        x,
        lambda h, kernel, bias: F.conv_transpose2d(
            h, kernel, bias, layer.strides, padding, 0, 1, layer.dilation_rate
        ),
    )


def _on_nchw(layer, x, convolve):
    """``layer.activation(convolve(h, kernel, bias))`` with ``h`` an NCHW view of ``x`` (a channels_last
    tensor's memory stays as it is: torch convolves channels_last memory natively), back in ``x``'s layout."""
    channels_last = layer.data_format == "channels_last"
    bias = layer.bias.value if layer.use_bias else None
    y = convolve(x.permute(0, 3, 1, 2) if channels_last else x, _torch_kernel(layer), bias)
    y = y.permute(0, 2, 3, 1) if channels_last else y
    return y if layer.activation is None else layer.activation(y)


_KERNELS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _torch_kernel(layer) -> torch.Tensor:
    """The layer's kernel (kh, kw, a, b) in torch's layout (b, a, kh, kw).

    Where no gradient is recorded (the generator making the critic's fakes) and the kernel is a real tensor
    (not one of a capture), the contiguous copy is kept until the weights change (torch bumps a tensor's
    version at every in-place update): the first transposed convolution of a DCGAN generator re-lays out
    8 MB at each call otherwise.
    """
    kernel = layer.kernel.value
    torch_layout = kernel.permute(3, 2, 0, 1)
    if (torch.is_grad_enabled() and kernel.requires_grad) or torch_capture.traced(kernel):
        return torch_layout
    key = (kernel.data_ptr(), kernel._version)
    cached = _KERNELS.get(layer)
    if cached is None or cached[0] != key:
        cached = _KERNELS[layer] = (key, torch_layout.contiguous())
    return cached[1]


_FUSED = {
    keras.layers.Dense: _dense,
    keras.layers.BatchNormalization: _batch_norm,
    keras.layers.Conv2D: _conv,
    keras.layers.Conv2DTranspose: _conv_transpose,
}

# Layers whose ``call`` is all that ``__call__`` does for float32 tensors without masks.
_PLAIN = (
    keras.layers.InputLayer,  # never called: the graph starts at its output
    keras.layers.Activation,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.Flatten,
    keras.layers.Reshape,
    keras.layers.Permute,
    keras.layers.LayerNormalization,
    keras.layers.Add,
    keras.layers.Multiply,
    keras.layers.Concatenate,
    keras.layers.Dot,
    keras.layers.Embedding,
    keras.layers.Rescaling,
    keras.layers.UpSampling2D,
    keras.layers.AveragePooling2D,
    keras.layers.GlobalAveragePooling2D,
)
