"""PyTorch glue: `torch.autograd.grad`, with ``create_graph=True`` for the input gradient.

When a `torch.distributed` process group is initialized (``pw.distribute("ddp")`` or `torchrun`), every
process is fed only its rank's consecutive share of the global batch (`distribution.input_shard`);
gradients and logged values are all-reduced to their global means, and the variables start from rank 0's
values. No `DistributedDataParallel` wrapper is used: it does not support the double backward of the
penalty.
"""

import functools

import keras
import torch
import torch.distributed as dist
from keras.src.backend.torch import core as torch_core

from portable_wgangp.backend import stateless, torch_capture, torch_layers

# One critic call on real and fake samples together: half the eager calls (DCGAN-32: 2 % faster a step).
JOINT_SCORES = True
# Eager: a short last execution simply runs fewer steps.
FIXED_SHAPES = False


def input_gradient(fn, x):
    """∇ₓ Σ fn(x) with ``create_graph=True``, so the result is differentiable w.r.t. the weights again
    (`torch.func.grad` while a step is captured: `torch_capture`)."""
    x = torch.as_tensor(x)
    if torch_capture.active():
        return torch.func.grad(lambda points: fn(points).float().sum())(x)
    with torch.enable_grad():
        if not x.requires_grad:
            x = x.detach().requires_grad_(True)
        total = fn(x).float().sum()
        if not total.requires_grad:
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(total, x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def num_replicas() -> int:
    """Processes of the initialized process group (1 without one)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def replica_index() -> int:
    return dist.get_rank() if num_replicas() > 1 else 0


def _all_reduce_mean(tensors):
    """All-reduce a list of tensors to their mean over the processes, in one flat buffer."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= num_replicas()
    return [part.view_as(t) for part, t in zip(torch.split(flat, [t.numel() for t in tensors]), tensors)]


def global_mean(x):
    """Mean of ``x`` over the processes (each holds a mean over an equal shard: the global mean)."""
    return x if num_replicas() == 1 else _all_reduce_mean([x.detach()])[0]


def value_and_grad(fn, variables):
    """``fn() -> (loss, aux)`` evaluated eagerly; gradients by `torch.autograd.grad` (no ``.grad`` state).

    In a process group, the gradients are the mean over the processes: the gradient of the global loss.
    While a step is captured (`torch_capture`): a pure function of the variables' values under
    `torch.func.grad_and_value`.
    """
    if torch_capture.active():
        return stateless.value_and_grad(_grad_and_value, fn, variables)
    loss, aux = fn()
    params = [v.value for v in variables]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return loss, aux, grads if num_replicas() == 1 else _all_reduce_mean(grads)


def _grad_and_value(pure):
    """`torch.func.grad_and_value` of ``pure(values) -> (loss, aux)``, returning ``((loss, aux), grads)``."""
    transformed = torch.func.grad_and_value(pure, has_aux=True)

    def function(values):
        grads, (loss, aux) = transformed(values)
        return (loss, aux), grads

    return function


def constant(fn):
    """``fn()`` under `torch.no_grad`: no graph is recorded for it."""
    with torch.no_grad():
        return fn()


def forward(model, inputs, training=None):
    """``model(inputs, training=training)``; on Keras layers torch has fused kernels for, run by them.

    See `torch_layers`: a Sequential or functional model of the layers it knows, in float32, runs by
    fused torch calls (one ``native_batch_norm``, ``conv2d`` with bias on an NCHW view, ``addmm``), with
    Keras's ``__call__`` bookkeeping skipped; any other model is called by Keras.
    """
    outputs = torch_layers.run(model, inputs, training)
    return model(inputs, training=training) if outputs is None else outputs


def apply_gradients(optimizer, grads, variables) -> None:
    """``optimizer``'s update of ``variables``; a plain Keras Adam runs as ONE fused kernel.

    Keras's torch Adam makes a dozen passes over the weights with temporaries (25 ms per update for a
    3.8 M-parameter generator on 2 CPU cores); `torch._fused_adam_` makes one (1.4 ms). Keras's update is

        m ← β₁ m + (1 − β₁) g,   v ← β₂ v + (1 − β₂) g²,   w ← w − α m / (√v + ε),
        α = lr √(1 − β₂ᵗ) / (1 − β₁ᵗ),

    while torch's divides by √v / √(1 − β₂ᵗ) + ε (another ε placement). Handing the fused kernel the
    learning rate α (a tensor, computed on the device: no host sync) and a step count so large that its
    own bias corrections are 1 makes it compute Keras's update exactly. Any other optimizer, or an Adam with
    extras (amsgrad, weight decay, clipping, EMA, accumulation, loss scaling), goes through Keras.
    """
    weights = [v.value for v in variables]
    if not _fusable_adam(optimizer, grads, weights):
        if torch_capture.active():
            raise torch_capture.NotCapturable(
                f"its {type(optimizer).__name__} is not a plain Keras Adam, the one optimizer a captured "
                "step updates"
            )
        optimizer.apply(grads, variables)
        return
    if torch_capture.active():
        _adam_in_scope(optimizer, grads, variables)
        return
    slots = [optimizer._get_variable_index(v) for v in variables]  # Keras keeps the slots by index
    alpha = _adam_step_size(optimizer, weights[0].dtype)
    with torch.no_grad():
        torch._fused_adam_(
            weights,
            # laid out as their weights, which the CUDA kernel requires (a conv kernel's gradient comes
            # back permuted: Keras stores the kernel as (h, w, in, out), torch convolves with (out, in, h, w))
            [g.to(w.dtype).contiguous() for g, w in zip(grads, weights)],
            [optimizer._momentums[i].value for i in slots],
            [optimizer._velocities[i].value for i in slots],
            [],
            [_unbiased_step(weights[0].device)] * len(weights),
            lr=alpha.to(weights[0].device).reshape(()),
            beta1=float(optimizer.beta_1),
            beta2=float(optimizer.beta_2),
            weight_decay=0.0,
            eps=float(optimizer.epsilon),
            amsgrad=False,
            maximize=False,
        )
    _count_writes(weights)  # the fused kernel does not
    optimizer.iterations.assign_add(1)


def _adam_step_size(optimizer, dtype):
    """Keras's bias-corrected step size α = lr √(1 − β₂ᵗ) / (1 − β₁ᵗ) of the coming update t, a tensor."""
    step = (optimizer.iterations.value + 1).to(dtype)
    learning_rate = keras.ops.convert_to_tensor(optimizer.learning_rate, dtype)
    return learning_rate * torch.sqrt(1 - optimizer.beta_2**step) / (1 - optimizer.beta_1**step)


def _adam_in_scope(optimizer, grads, variables) -> None:
    """Keras's Adam update (as in `apply_gradients`) as tensor maths, its writes recorded by the captured
    step's `StatelessScope`."""
    alpha = _adam_step_size(optimizer, variables[0].value.dtype)
    for variable, grad in zip(variables, grads):
        index = optimizer._get_variable_index(variable)
        momentum, velocity = optimizer._momentums[index], optimizer._velocities[index]
        m = momentum.value * optimizer.beta_1 + grad * (1 - optimizer.beta_1)
        v = velocity.value * optimizer.beta_2 + grad * grad * (1 - optimizer.beta_2)
        momentum.assign(m)
        velocity.assign(v)
        variable.assign(variable.value - m * alpha / (torch.sqrt(v) + optimizer.epsilon))
    optimizer.iterations.assign(optimizer.iterations.value + 1)


@functools.cache
def _unbiased_step(device) -> torch.Tensor:
    """A step count at which 1 − βᵗ is 1 in float32 for any β ≤ 1 − 1e-7 (the fused kernel only reads it)."""
    return torch.full((), 2.0**30, device=device)


@functools.cache
def _keras_adam_class() -> type:
    """The class of `keras.optimizers.Adam()` on torch (Keras swaps in its torch subclass in ``__new__``),
    found without building one: a built optimizer makes variables, which a captured step's scope refuses."""
    return type(keras.optimizers.Adam.__new__(keras.optimizers.Adam))


def _fusable_adam(optimizer, grads, weights) -> bool:
    """A built, plain Keras Adam over dense float ``weights`` (tensors) on one device."""
    return (
        type(optimizer) is _keras_adam_class()
        and optimizer.built
        and not optimizer.amsgrad
        and optimizer.weight_decay is None
        and optimizer.clipnorm is None
        and optimizer.clipvalue is None
        and optimizer.global_clipnorm is None
        and not optimizer.use_ema
        and not optimizer.gradient_accumulation_steps
        and optimizer.loss_scale_factor is None
        and len({(w.device, w.dtype) for w in weights}) == 1
        and weights[0].is_floating_point()
        and all(g is not None and g.layout == torch.strided for g in grads)
    )


def synchronize(variables) -> None:
    """Copy rank 0's values of ``variables`` to every process."""
    if num_replicas() > 1:
        for variable in variables:
            dist.broadcast(variable.value.data, src=0)
        _count_writes([variable.value for variable in variables])  # writes through .data are not counted


def _count_writes(tensors) -> None:
    """Bump the version counters of ``tensors`` after an in-place write torch did not count, as autograd's
    checks and `torch_layers`' kernel cache rely on them."""
    for tensor in tensors:
        torch.autograd.graph.increment_version(tensor)


def host_value(x):
    """``x`` as a numpy array when reading it makes nobody wait: an eager tensor on the CPU (not one that
    `torch.compile`, `torch.func` or a capture traces); else None."""
    if (
        torch.compiler.is_compiling()
        or not isinstance(x, torch.Tensor)
        or x.device.type != "cpu"
        or torch_capture.traced(x)
    ):
        return None
    return x.detach().numpy()


def place(batch):
    """On a CUDA device: ``batch`` copied to pinned (page-locked) host memory and sent to the GPU by a
    non-blocking copy, which the host queues and does not wait for. On the CPU, ``batch`` as it is."""
    device = torch_core.get_device()
    if not str(device).startswith("cuda"):
        return batch
    return keras.tree.map_structure(
        lambda x: torch.as_tensor(x).pin_memory().to(device, non_blocking=True), batch
    )


def repeat(step, n, variables):
    """``step(j)`` for j < n, eagerly (there is no compiled program to keep small)."""
    return torch.stack([step(j) for j in range(n)])


def forget_step(model) -> None:
    """Keras made a new train function for ``model``: its captured programs are stale (`torch_capture`)."""
    torch_capture.forget(model)


def train_step(model, step, data):
    """Keras's torch trainer calls ``train_step(data)`` eagerly: run the step as it is, or, with
    ``jit_compile=True``, as one compiled program per generator step (`torch_capture`)."""
    if model.jit_compile:
        logs = torch_capture.run(model, step, data, num_replicas())
        if logs is not None:
            return logs
    return step(data)
