"""Every private Keras (and framework) name portable_wgangp relies on, checked by name.

When a Keras release moves one of them, this test fails naming it and the place that uses it, instead of
a training step failing (or silently running slower) somewhere deep inside. Names are checked on the
backend that uses them.
"""

import importlib
import inspect

import keras
import pytest
from conftest import BACKEND

# (backend or "all", "module:attribute.path", where we use it)
PRIVATE_NAMES = [
    ("all", "keras:Layer._flatten_layers", "model._check_no_cross_batch_layers (no BatchNorm in the critic)"),
    ("all", "keras:Model._symbolic_build", "WGANGP._maybe_symbolic_build (TF trainer hook)"),
    (
        "tensorflow",
        "keras:Model._maybe_symbolic_build",  # the TF trainer's (TensorFlowTrainer in 3.15, Trainer in 3.16)
        "WGANGP._maybe_symbolic_build overrides it (no data pulled to build the model)",
    ),
    (
        "tensorflow",
        "tensorflow.python.distribute.collective_all_reduce_strategy:CollectiveAllReduceExtended._in_multi_worker_mode",
        "backend/tensorflow.py (multi-worker detection)",
    ),
    ("jax", "keras.src.backend.common.stateless_scope:get_stateless_scope", "backend/jax.py (the pure step)"),
    ("torch", "keras.optimizers:Optimizer._get_variable_index", "backend/torch.py (fused Adam's slots)"),
    ("torch", "torch:_fused_adam_", "backend/torch.py (fused Adam)"),
    (
        "torch",
        "torch.autograd.graph:increment_version",
        "backend/torch.py (after fused Adam)",
    ),
    ("torch", "keras.src.ops.function:Function._run_through_graph", "backend/torch_layers.py (fused calls)"),
    (
        "torch",
        "keras.src.backend.common.backend_utils:compute_conv_transpose_output_crops_for_torch",
        "backend/torch_layers.py (transposed convolutions' padding)",
    ),
]


def resolve(spec: str):
    module, _, path = spec.partition(":")
    value = importlib.import_module(module)
    for name in path.split("."):
        value = getattr(value, name)
    return value


@pytest.mark.parametrize(
    ("spec", "where"), [(s, w) for b, s, w in PRIVATE_NAMES if b in ("all", BACKEND)], ids=lambda v: str(v)
)
def test_private_name_still_exists(spec, where):
    try:
        resolve(spec)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"Keras {keras.__version__} no longer has {spec} ({error}), used by {where}.")


@pytest.mark.skipif(BACKEND != "torch", reason="Adam's slot lists are read by the torch fused Adam only")
def test_adam_keeps_its_slots_where_the_fused_adam_reads_them():
    optimizer = keras.optimizers.Adam()
    optimizer.build([keras.Variable([1.0])])
    for name in ("_momentums", "_velocities"):
        assert hasattr(optimizer, name), f"keras.optimizers.Adam lost {name}, read by backend/torch.py"


def test_layers_still_record_whether_call_takes_training():
    assert hasattr(keras.layers.Dense(1), "_call_has_training_arg"), (
        "Keras layers lost _call_has_training_arg, read by backend/torch_layers.py"
    )


def test_the_ddp_hook_we_override_is_keras_own_or_absent():
    """Keras 3.16's torch trainer calls `_initialize_ddp` before training; WGANGP overrides it with a no-op
    (tested under a process group in test_distribution's ddp runs, which assert no `ddp_model`). If Keras
    renames the hook, the override silently stops working: fail here instead."""
    if BACKEND != "torch":
        pytest.skip("only the torch trainer wraps models in DistributedDataParallel")
    trainer = next(c for c in keras.Model.__mro__ if c.__module__ == "keras.src.backend.torch.trainer")
    if "DistributedDataParallel" in inspect.getsource(trainer):
        assert hasattr(trainer, "_initialize_ddp"), "Keras's torch trainer wraps in DDP by another hook"
