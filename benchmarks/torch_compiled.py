"""A compiled torch WGAN-GP step: ours (``jit_compile=True``) beside a hand-written one, eager and compiled.

    python benchmarks/torch_compiled.py                    # the CLI's toy nets: width 128, batch 256
    python benchmarks/torch_compiled.py --width 32 --batch 64

Ours: `WGANGP.fit` on the same nets (`nets.mlp`), batch, n_critic and Adam, eagerly and with
``jit_compile=True`` (`backend.torch_capture`: the step captured by ``make_fx`` and compiled by inductor);
ms per generator step after the first 5, and the seconds of the first step (the compilation). The
hand-written step:

`torch.compile` refuses `autograd.grad(create_graph=True)` (AOTAutograd has no double backward), so the
step is written as pure functions of the weights: the penalty's input gradient by `torch.func.grad`, the
critic's weight gradient by `torch.func.grad_and_value` over it, a functional Adam. That step is run
eagerly and compiled (inductor), from the same weights, Adam slots and noise; the script prints the ms per
generator step of each, the compile time, and the largest weight difference after 5 steps (training
amplifies float32 rounding: after hundreds of steps the two runs part like any two GAN runs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

os.environ.setdefault("KERAS_BACKEND", "torch")  # ours runs on Keras's torch backend

import numpy as np
import torch
from torch.func import grad, grad_and_value

LR, BETA_1, BETA_2, EPS, LAMBDA = 2e-3, 0.0, 0.9, 1e-7, 0.1


def mlp(params: dict, x, prefix: str, depth: int):
    """``depth`` ReLU layers and a linear output: x @ w + b, weights ``{prefix}w{i}``, ``{prefix}b{i}``."""
    for i in range(depth + 1):
        x = torch.addmm(params[f"{prefix}b{i}"], x, params[f"{prefix}w{i}"])
        x = torch.relu(x) if i < depth else x
    return x


def init(prefix: str, sizes: list, generator: torch.Generator) -> dict:
    weights = {
        f"{prefix}w{i}": torch.randn(a, b, generator=generator) * a**-0.5
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }
    return weights | {f"{prefix}b{i}": torch.zeros(b) for i, b in enumerate(sizes[1:])}


def make_step(depth: int, n_critic: int):
    """``step(state, t, reals, zs, epsilons, z) -> state``: n_critic critic updates and a generator update."""

    def adam(params, grads, m, v, t):
        m = {k: BETA_1 * m[k] + (1 - BETA_1) * grads[k] for k in params}
        v = {k: BETA_2 * v[k] + (1 - BETA_2) * grads[k] ** 2 for k in params}
        alpha = LR * torch.sqrt(1 - BETA_2**t) / (1 - BETA_1**t)
        return {k: params[k] - alpha * m[k] / (torch.sqrt(v[k]) + EPS) for k in params}, m, v

    def critic_loss(critic, generator, real, z, epsilon):
        fake = mlp(generator, z, "g", depth).detach()
        mixed = epsilon[:, None] * real + (1 - epsilon[:, None]) * fake
        slopes = grad(lambda x: mlp(critic, x, "c", depth).sum())(mixed)
        norms = torch.sqrt((slopes**2).sum(1) + 1e-12)
        estimate = mlp(critic, real, "c", depth).mean() - mlp(critic, fake, "c", depth).mean()
        return -estimate + LAMBDA * ((norms - 1) ** 2).mean()

    def generator_loss(generator, critic, z):
        return -mlp(critic, mlp(generator, z, "g", depth), "c", depth).mean()

    def step(state, t, reals, zs, epsilons, z):
        critic, generator, cm, cv, gm, gv = state
        for k in range(n_critic):
            grads, _ = grad_and_value(critic_loss)(critic, generator, reals[k], zs[k], epsilons[k])
            critic, cm, cv = adam(critic, grads, cm, cv, t * n_critic + k + 1)
        grads, _ = grad_and_value(generator_loss)(generator, critic, z)
        generator, gm, gv = adam(generator, grads, gm, gv, t + 1)
        return critic, generator, cm, cv, gm, gv

    return step


def run(step, state, inputs) -> tuple:
    """(final state, ms per step after the first 5 of at least 6)."""
    for t, data in enumerate(inputs):
        if t == 5:
            started = time.perf_counter()
        state = step(state, torch.tensor(float(t)), *data)
    return state, (time.perf_counter() - started) / (len(inputs) - 5) * 1e3


def ours(args, jit_compile: bool) -> tuple[float, float]:
    """(ms per step after the first 5, seconds of the first step) of `WGANGP.fit` on these nets."""
    import keras

    import portable_wgangp as pw

    def adam():
        return keras.optimizers.Adam(LR, beta_1=BETA_1, beta_2=BETA_2, epsilon=EPS)

    networks = (pw.nets.mlp(2, out, width=args.width, depth=args.depth) for out in (2, 1))
    gan = pw.WGANGP(*networks, 2, n_critic=args.n_critic, gp_weight=LAMBDA, seed=0)
    gan.compile(adam(), adam(), jit_compile=jit_compile)
    x = np.random.default_rng(0).normal(size=(args.batch * args.n_critic * args.steps, 2)).astype("float32")
    ends = []
    clock = keras.callbacks.LambdaCallback(on_train_batch_end=lambda *_: ends.append(time.perf_counter()))
    started = time.perf_counter()
    gan.fit(x, batch_size=args.batch, epochs=1, verbose=0, callbacks=[clock])
    return (ends[-1] - ends[4]) / (len(ends) - 5) * 1e3, ends[0] - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--n-critic", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    source = torch.Generator().manual_seed(0)
    critic = init("c", [2, *[args.width] * args.depth, 1], source)
    generator = init("g", [2, *[args.width] * args.depth, 2], source)
    zeros = lambda params: {k: torch.zeros_like(w) for k, w in params.items()}  # noqa: E731
    state = (critic, generator, zeros(critic), zeros(critic), zeros(generator), zeros(generator))
    b, n = args.batch, args.n_critic
    inputs = [
        (
            torch.randn(n, b, 2, generator=source),
            torch.randn(n, b, 2, generator=source),
            torch.rand(n, b, generator=source),
            torch.randn(b, 2, generator=source),
        )
        for _ in range(args.steps)
    ]
    step = make_step(args.depth, args.n_critic)
    eager_ms = run(step, state, inputs)[1]
    started = time.perf_counter()
    compiled_step = torch.compile(step, dynamic=False)
    compiled_step(state, torch.tensor(0.0), *inputs[0])
    compile_s = time.perf_counter() - started
    compiled_ms = run(compiled_step, state, inputs)[1]
    eager, compiled = (run(f, state, inputs[:6])[0] for f in (step, compiled_step))
    difference = max(float((a[k] - c[k]).abs().max()) for a, c in zip(eager[:2], compiled[:2]) for k in a)
    row = {"torch": torch.__version__, "width": args.width, "batch": b, "n_critic": n}
    row |= {
        "eager_ms": round(eager_ms, 2),
        "compiled_ms": round(compiled_ms, 2),
        "compile_s": round(compile_s, 1),
        "max_weight_difference": difference,
    }
    (ours_eager_ms, _), (ours_compiled_ms, ours_first_s) = ours(args, False), ours(args, True)
    row |= {
        "ours_eager_ms": round(ours_eager_ms, 2),
        "ours_compiled_ms": round(ours_compiled_ms, 2),
        "ours_first_step_s": round(ours_first_s, 1),
        "ours_compiled_vs_native_compiled": round(ours_compiled_ms / compiled_ms, 2),
    }
    print(json.dumps(row))


if __name__ == "__main__":
    main()
