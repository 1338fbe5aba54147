"""The whole torch step as ONE compiled program: ``gan.compile(jit_compile=True)`` on the torch backend.

Eager torch launches every operation of a step from Python: a WGAN-GP step is thousands of them (n_critic
critic updates, each with the penalty's double backward, a generator update, two Adams, the noise), and a
GPU waits on that launch cost. `torch.compile` cannot take the step as it is: AOTAutograd has no double
backward for ``autograd.grad(create_graph=True)`` (pytorch #91469), and Dynamo breaks its graph on Keras's
Python. So the step is *captured* instead:

1. run once as a pure function ``(values, data) -> (rows, new values)`` of every variable's value (a
   `StatelessScope`, as on JAX: `stateless.run_pure`), its gradients by `torch.func` — the weight gradient
   ``grad_and_value`` around the penalty's input gradient ``grad`` (`active` switches `backend.torch` to
   these forms), the Adam updates written as tensor maths;
2. recorded by ``make_fx`` on fake tensors: a graph of aten operations only, Keras's Python gone;
3. compiled by `torch.compile` (``COMPILER``), one program per input shape.

The N steps of an execution are N calls of the one-step program (its compile time independent of N); the
new values are copied into the variables after each. Where a step cannot be captured (a process group,
an optimizer other than a plain Adam, a value read on the host inside the step, a custom op that fake
tensors do not support) the step runs eagerly, and a warning names the reason once.
"""

from __future__ import annotations

import contextlib
import warnings
import weakref

import keras
import torch
from torch._subclasses.fake_tensor import DataDependentOutputException
from torch.fx.experimental.proxy_tensor import make_fx
from torch.fx.experimental.symbolic_shapes import GuardOnDataDependentSymNode

from portable_wgangp.backend import stateless

# The `torch.compile` backend that compiles the captured graph: inductor (fused C++ on CPU, Triton on
# CUDA). None runs the captured graph as recorded: what the tests check (compiling it is torch's part).
COMPILER: str | None = "inductor"

_capturing = False
_programs: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> _Programs


class NotCapturable(Exception):
    """Why a step cannot be captured, in one sentence."""


def active() -> bool:
    """Whether a step is being captured: the backend's functions then take their functional forms."""
    return _capturing


def traced(x) -> bool:
    """Whether ``x`` is a tensor of a capture or of a `torch.func` transform rather than a real one."""
    return isinstance(x, torch._subclasses.FakeTensor) or torch._C._functorch.is_functorch_wrapped_tensor(x)


@contextlib.contextmanager
def _capture_mode():
    global _capturing
    _capturing = True
    try:
        yield
    finally:
        _capturing = False


class _Programs:
    """A model's compiled programs, one per input signature, and the state they read and write.

    ``inputs``: the tensors behind ``variables``, detached (what a program reads; no autograd graph), kept
    from the first step on: Keras assigns a variable in place, so they stay the variables' storage, and
    looking them up again (Keras's ``value`` property) would cost ~10 µs a variable a step.
    """

    def __init__(self, model):
        self.variables = [variable for group in stateless.state_groups(model) for variable in group]
        self.inputs = [v.value.detach() for v in self.variables]
        self.by_signature: dict = {}


def forget(model) -> None:
    """Drop ``model``'s programs: Keras made a new train function (a new ``compile``: other optimizers or
    settings, which a captured program holds as constants), so the step is captured again."""
    _programs.pop(model, None)


def programs(model) -> dict:
    """``model``'s programs so far: input signature -> the compiled program, or the reason (a str) why
    the step of those inputs runs eagerly."""
    return dict(_programs[model].by_signature) if model in _programs else {}


def run(model, step, data, num_replicas: int):
    """``step(data)``'s logs ``{"steps": (m, K + 1)}``, by the compiled one-step program called once per
    generator step of ``data``; None where the step cannot be captured (then warned once, run eagerly)."""
    if model not in _programs:
        _programs[model] = _Programs(model)
    state = _programs[model]
    leaves = [torch.as_tensor(x) for x in keras.tree.flatten(data)]
    per_step = model.n_critic
    steps = leaves[0].shape[1] // per_step
    signature = tuple(((x.shape[0], per_step, *x.shape[2:]), x.dtype) for x in leaves)
    if signature not in state.by_signature:
        state.by_signature[signature] = _compiled(state, step, data, leaves, per_step, num_replicas)
    program = state.by_signature[signature]
    if isinstance(program, str):
        return None
    rows = []
    for j in range(steps):
        row, new_values = program(state.inputs, *_step_inputs(leaves, j, per_step))
        with torch.no_grad():
            torch._foreach_copy_(state.inputs, list(new_values))
        rows.append(row)
    return {"steps": torch.cat(rows)}


def _step_inputs(leaves, j: int, per_step: int) -> list:
    """Generator step ``j``'s slice of each input (axis 1: ``per_step`` = n_critic minibatches a step), laid
    out contiguously: the compiled program is specialized to its inputs' strides as well as their shapes."""
    return [x[:, j * per_step : (j + 1) * per_step].contiguous() for x in leaves]


def _compiled(state: _Programs, step, data, leaves, per_step: int, num_replicas: int):
    """The compiled one-step program of ``step`` for these input shapes, or the reason it has none."""
    structure, variables = data, state.variables

    def pure(values, *step_leaves):
        one_step = keras.tree.pack_sequence_as(structure, list(step_leaves))
        logs, new_values = stateless.run_pure(lambda: step(one_step), variables, values)
        return logs["steps"], new_values

    reason = None
    try:
        if num_replicas > 1:
            raise NotCapturable("a process group is initialized (the captured step has no collectives)")
        with _capture_mode():
            graph = make_fx(pure, tracing_mode="fake")(state.inputs, *_step_inputs(leaves, 0, per_step))
    except NotCapturable as error:
        reason = str(error)
    except (GuardOnDataDependentSymNode, DataDependentOutputException):
        reason = (
            "the step reads a tensor's value in Python (a branch on data, such as a lazy penalty whose "
            "gp_every does not divide n_critic)"
        )
    except Exception as error:  # any other failure to capture falls back to the eager step
        reason = (
            str(error).strip().splitlines()[0].rstrip(".") if str(error).strip() else type(error).__name__
        )
    if reason is not None:
        warnings.warn(f"jit_compile=True: the torch step runs eagerly: {reason}.", stacklevel=2)
        return reason
    return graph if COMPILER is None else torch.compile(graph, dynamic=False, backend=COMPILER)
