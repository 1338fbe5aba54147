"""PyTorch glue: `torch.autograd.grad`, with ``create_graph=True`` for the input gradient."""

import torch


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


def value_and_grad(fn, variables):
    """``fn() -> (loss, aux)`` evaluated eagerly; gradients by `torch.autograd.grad` (no ``.grad`` state)."""
    loss, aux = fn()
    params = [v.value for v in variables]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return loss, aux, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def train_step(model, step, data):
    """Keras's torch trainer calls ``train_step(data)`` eagerly: run the step as it is."""
    return step(data)
