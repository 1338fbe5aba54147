"""PyTorch glue: `torch.autograd.grad`, with ``create_graph=True`` for the input gradient.

When a `torch.distributed` process group is initialized (``pw.distribute("ddp")`` or `torchrun`), every
process is handed the same global batch and trains on its rank's consecutive share; gradients and logged
values are all-reduced to their global means, and the variables start from rank 0's values. No
`DistributedDataParallel` wrapper is used: it does not support the double backward of the penalty.
"""

import torch
import torch.distributed as dist


def input_gradient(fn, x):
    """∇ₓ Σ fn(x) with ``create_graph=True``, so the result is differentiable w.r.t. the weights again."""
    x = torch.as_tensor(x)
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


def local_data(x):
    """This rank's consecutive share of the global batch ``x`` (leading axis)."""
    replicas = num_replicas()
    if replicas == 1:
        return x
    share = x.shape[0] // replicas
    return x[replica_index() * share : (replica_index() + 1) * share]


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
    """
    loss, aux = fn()
    params = [v.value for v in variables]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return loss, aux, grads if num_replicas() == 1 else _all_reduce_mean(grads)


def apply_gradients(optimizer, grads, variables) -> None:
    """``optimizer``'s update of ``variables``."""
    optimizer.apply(grads, variables)


def synchronize(variables) -> None:
    """Copy rank 0's values of ``variables`` to every process."""
    if num_replicas() > 1:
        for variable in variables:
            dist.broadcast(variable.value.data, src=0)


def train_step(model, step, data):
    """Keras's torch trainer calls ``train_step(data)`` eagerly: run the step as it is."""
    return step(data)
