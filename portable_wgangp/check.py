"""`portable-wgangp check`: prove replica invariance on the user's own hardware before a long run.

On whatever it runs on (a TPU VM or pod slice, several GPUs, torchrun processes, CPU), `run_check`

(a) trains two small WGAN-GPs with the chosen strategy on R replicas, then on one device, from the same
    weights and the same global batch — the **linear** case (linear generator and critic, fixed noise,
    SGD: one step with a closed form, computed here in float64 numpy) and the **mlp** case (tanh MLPs,
    random noise from the model's seed, SGD, 3 steps) — and reports the largest differences of the
    weights and of every logged metric, and of the linear step against its closed form;
(b) compares the gradient penalty of an MLP critic under the active dtype policy (bfloat16, float16)
    with float32;
(c) times a step on one replica and on R (scaling efficiency);
(d) passes when every difference is within tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise.

The distributed runs come first: TensorFlow's logical CPUs and `MultiWorkerMirroredStrategy` must be set
up before TensorFlow starts, and torch's process group is gone again (so the one-device runs are local)
when its `pw.distribute` block ends.

`run_reference_check` (``check --reference cpu``) instead trains the mlp case for K generator steps on the
user's devices and strategy, under the active dtype policy, and the same K steps in float32 on the host
CPU in a child process (every accelerator hidden from it), and compares the final weights and every
step's metrics within the tolerance of the precision the device computes in: the coarser of its float32
matmuls (`device_facts`: TPUs multiply float32 in one bfloat16 pass and recent NVIDIA GPUs in
TensorFloat-32 unless told otherwise) and the policy's compute dtype.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

from portable_wgangp import datasets, distribution
from portable_wgangp.distribution import distribute
from portable_wgangp.model import WGANGP
from portable_wgangp.nets import mlp
from portable_wgangp.penalties import gradient_penalty

RTOL, ATOL = 1e-5, 1e-6
# Penalty under a 16-bit policy vs float32: the critic's forward runs in 16 bits, the penalty in float32.
PENALTY_RTOL = {"float32": 1e-6, "bfloat16": 3e-2, "float16": 5e-3}
MLP_GLOBAL_BATCH, MLP_N_CRITIC, MLP_STEPS, MLP_LATENT = 8, 2, 3, 3


# -- the cases --------------------------------------------------------------------------------------------


class FixedNoiseWGANGP(WGANGP):
    """Draws the given z and ε instead of random ones, so a step has a closed form."""

    def __init__(self, *args, z, epsilon, **kwargs):
        super().__init__(*args, **kwargs)
        self.fixed_z = np.asarray(z, dtype="float32")
        self.fixed_epsilon = np.asarray(epsilon, dtype="float32")

    def latent_vectors(self, batch_size):
        return keras.ops.convert_to_tensor(self.fixed_z)

    def interpolation_weights(self, batch_size):
        return keras.ops.convert_to_tensor(self.fixed_epsilon)


def linear_case(seed: int = 20260511) -> dict:
    """Linear generator G(z) = zA + c and linear critic f(x) = x·w + b, trained by SGD, noise fixed."""
    rng = np.random.default_rng(seed)
    batch, latent, dim, n_critic = 8, 3, 2, 2
    return {
        "A": rng.normal(size=(latent, dim)),
        "c": rng.normal(size=(dim,)),
        "w": rng.normal(size=(dim,)) * 2.0,
        "b": np.array([0.3]),
        "z": rng.normal(size=(batch, latent)),
        "epsilon": rng.uniform(size=(batch,)),
        "rounds": rng.normal(size=(batch, n_critic, dim)) + np.array([2.0, -1.0]),
        "n_critic": n_critic,
        "gp_weight": 10.0,
        "lr": 0.05,
    }


def linear_closed_form(case: dict) -> dict:
    """One WGANGP step of `linear_case` in closed form (n_critic SGD critic updates, then one SGD
    generator update), float64. The penalty of a linear critic is (‖w‖ − 1)², its gradient
    2(‖w‖ − 1)w/‖w‖, whatever ε; the same z serves every draw of the step."""
    A, c, w, b = (case[k].copy() for k in ("A", "c", "w", "b"))
    z, lr, lam = case["z"], case["lr"], case["gp_weight"]
    fake_mean = (z @ A + c).mean(axis=0)
    for k in range(case["n_critic"]):
        real_mean = case["rounds"][:, k].mean(axis=0)
        norm = np.linalg.norm(w)
        estimate = real_mean @ w - fake_mean @ w
        gp = (norm - 1.0) ** 2
        logs = {"critic_loss": -estimate + lam * gp, "gradient_penalty": gp, "wasserstein_estimate": estimate}
        w = w - lr * (-(real_mean - fake_mean) + lam * 2.0 * (norm - 1.0) * w / norm)
    logs["generator_loss"] = -(fake_mean @ w + b[0])
    A = A - lr * (-np.outer(z.mean(axis=0), w))
    c = c - lr * (-w)
    return {"A": A, "c": c, "w": w, "b": b, "logs": {k: float(v) for k, v in logs.items()}}


def linear_gan(case: dict, **kwargs) -> FixedNoiseWGANGP:
    """The WGANGP of `linear_case`, compiled with SGD."""
    generator = keras.Sequential([keras.Input((case["A"].shape[0],)), keras.layers.Dense(case["A"].shape[1])])
    generator.set_weights([case["A"].astype("float32"), case["c"].astype("float32")])
    critic = keras.Sequential([keras.Input((case["w"].shape[0],)), keras.layers.Dense(1)])
    critic.set_weights([case["w"].reshape(-1, 1).astype("float32"), case["b"].astype("float32")])
    gan = FixedNoiseWGANGP(
        generator,
        critic,
        case["A"].shape[0],
        n_critic=case["n_critic"],
        gp_weight=case["gp_weight"],
        z=case["z"],
        epsilon=case["epsilon"],
        **kwargs,
    )
    gan.compile(
        generator_optimizer=keras.optimizers.SGD(case["lr"]),
        critic_optimizer=keras.optimizers.SGD(case["lr"]),
    )
    return gan


def linear_run() -> tuple:
    """``(gan, x, global_batch)`` of the linear case: minibatch k of the data is ``rounds[:, k]``."""
    case = linear_case()
    rounds = case["rounds"].astype("float32")
    return linear_gan(case), np.swapaxes(rounds, 0, 1).reshape(-1, rounds.shape[-1]), rounds.shape[0]


def _zeros_mlp(input_dim: int, output_dim: int, width: int = 16, depth: int = 2) -> keras.Sequential:
    """`nets.mlp`'s ReLU MLP with zero initial weights: nothing drawn (JAX compiles every eager draw), as
    its weights are set right after."""
    dense = functools.partial(keras.layers.Dense, kernel_initializer="zeros", bias_initializer="zeros")
    hidden = [dense(width, activation="relu") for _ in range(depth)]
    return keras.Sequential([keras.Input((input_dim,)), *hidden, dense(output_dim)])


def mlp_run(steps: int = MLP_STEPS, batch: int = MLP_GLOBAL_BATCH):
    """``(gan, x, global_batch)``: ReLU MLPs (2 × 16) from fixed initial weights on fixed data, SGD,
    random noise (model seed 7), ``steps`` generator steps of global batch ``batch``. Build it inside the
    distribution."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(batch * MLP_N_CRITIC * steps, 2)) * 0.3 + [1.0, -0.5]).astype("float32")
    generator, critic = _zeros_mlp(MLP_LATENT, 2), _zeros_mlp(2, 1)
    for net in (generator, critic):  # the same initial weights whatever the strategy
        net.set_weights([rng.normal(size=w.shape).astype("float32") * 0.4 for w in net.get_weights()])
    gan = WGANGP(generator, critic, MLP_LATENT, n_critic=MLP_N_CRITIC, gp_weight=1.0, seed=7)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    return gan, x, batch


CASES = {"linear": linear_run, "mlp": mlp_run}


@dataclasses.dataclass
class Run:
    """What one training run of a case left: every step's logs and the final weights (float64)."""

    names: list[str]
    logs: np.ndarray  # (steps, metrics)
    weights: list[np.ndarray]
    model: WGANGP


@contextlib.contextmanager
def dtype_policy(name: str):
    """The global Keras dtype policy set to ``name`` for the duration of the block."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def train_case(name: str, build=None, policy: str = "float32") -> Run:
    """Build and train case ``name`` (or what ``build() -> (gan, x, global_batch)`` makes) under the dtype
    policy ``policy`` (float32), inside whatever distribution is in force."""
    with dtype_policy(policy):
        gan, x, batch_size = (build or CASES[name])()
    history: list[dict] = []

    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            history.append({k: float(v) for k, v in (logs or {}).items()})

    gan.fit(x, batch_size=batch_size, epochs=1, shuffle=False, verbose=0, callbacks=[Record()])
    names = sorted(history[0])
    weights = gan.generator.get_weights() + gan.critic.get_weights()
    if gan.ema_generator is not None:
        weights += gan.ema_generator.get_weights()
    return Run(
        names,
        np.array([[step[k] for k in names] for step in history], dtype="float64"),
        [np.asarray(w, dtype="float64") for w in weights],
        gan,
    )


# -- comparisons ------------------------------------------------------------------------------------------


def excess(actual, expected) -> float:
    """How far ``actual`` is outside the tolerance of ``expected``: max(|a − b| / (atol + rtol·|b|)).
    ≤ 1 passes."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    return float(np.max(np.abs(actual - expected) / (ATOL + RTOL * np.abs(expected)), initial=0.0))


def max_abs_diff(pairs) -> float:
    """The largest |a − b| over pairs of arrays."""
    return max((float(np.max(np.abs(np.subtract(a, b)), initial=0.0)) for a, b in pairs), default=0.0)


def compare(distributed: Run, single: Run) -> dict:
    """Largest differences of weights and metrics between the R-replica and the one-device run."""
    if distributed.names != single.names:
        raise RuntimeError(f"The runs logged different metrics: {distributed.names} and {single.names}.")
    weights = list(zip(distributed.weights, single.weights))
    return {
        "max_weight_diff": max_abs_diff(weights),
        "max_metric_diff": max_abs_diff([(distributed.logs, single.logs)]),
        "excess": max([excess(a, b) for a, b in weights] + [excess(distributed.logs, single.logs)]),
    }


def compare_closed_form(run: Run) -> dict:
    """The linear case's one-device step against its float64 closed form."""
    expected = linear_closed_form(linear_case())
    weights = [(run.weights[0], expected["A"]), (run.weights[1], expected["c"])]
    weights += [(run.weights[2][:, 0], expected["w"]), (run.weights[3], expected["b"])]
    logs = [(run.logs[0][run.names.index(k)], v) for k, v in expected["logs"].items()]
    return {
        "max_diff": max_abs_diff(weights + logs),
        "excess": max(excess(a, b) for a, b in weights + logs),
    }


def penalty_under_policy() -> dict:
    """The penalty of a tanh MLP critic under the active dtype policy against float32."""
    policy = keras.config.dtype_policy().name
    rng = np.random.default_rng(3)
    real = rng.normal(size=(64, 2)).astype("float32")
    fake = (rng.normal(size=(64, 2)) + 1.0).astype("float32")
    epsilon = rng.uniform(size=(64,)).astype("float32")
    values = {}
    for name in ("float32", policy):
        with dtype_policy(name):
            critic = mlp(2, 1, width=32, depth=2, activation="tanh")
            draw = np.random.default_rng(4)
            critic.set_weights(
                [draw.normal(size=w.shape).astype("float32") * 0.5 for w in critic.get_weights()]
            )
            values[name] = float(
                keras.ops.convert_to_numpy(gradient_penalty(critic, real, fake, epsilon=epsilon))
            )
            compute_dtype = critic.layers[0].compute_dtype
    relative = abs(values[policy] - values["float32"]) / abs(values["float32"])
    return {
        "policy": policy,
        "compute_dtype": compute_dtype,
        "float32": values["float32"],
        "policy_value": values[policy],
        "relative_diff": relative,
        "tolerance": PENALTY_RTOL.get(compute_dtype, 3e-2),
    }


# -- timing -----------------------------------------------------------------------------------------------


def step_time(replicas: int, steps: int = 10) -> float:
    """Milliseconds per generator step of the paper's toy setting with 3×256 MLPs (n_critic 5, Adam),
    global batch 256 (a multiple of ``replicas``), after 2 warm-up steps (compilation)."""
    batch = 256 // replicas * replicas
    with dtype_policy("float32"):
        gan = WGANGP(mlp(2, 2, width=256), mlp(2, 1, width=256), 2, n_critic=5, seed=0)
        gan.compile()
    x = datasets.toy_samples("gaussians8", batch * 5 * (steps + 2), np.random.default_rng(0))
    gan.fit(x, batch_size=batch, epochs=1, steps_per_epoch=2, shuffle=False, verbose=0)
    started = time.perf_counter()
    gan.fit(x, batch_size=batch, epochs=1, steps_per_epoch=steps, shuffle=False, verbose=0)
    return (time.perf_counter() - started) / steps * 1e3


# -- the whole check --------------------------------------------------------------------------------------


def default_devices(strategy: str, replicas: int) -> list[str] | None:
    """TF "mirrored" without two GPUs: ``replicas`` logical CPUs; otherwise all devices (None)."""
    if keras.backend.backend() == "tensorflow" and strategy == "mirrored":
        import tensorflow as tf

        if len(tf.config.list_physical_devices("GPU")) < 2:
            return [f"/cpu:{i}" for i in range(replicas)]
    return None


def run_check(
    strategy: str = "auto", devices: list[str] | None = None, *, replicas: int = 2, timing: bool = True
) -> dict:
    """The report of (a)–(d) above as a JSON-ready dict; ``report["passed"]`` is the verdict.

    ``devices``: as `pw.distribute` takes them (None: all; TF "mirrored" on a machine without two GPUs:
    ``replicas`` logical CPUs).
    """
    devices = devices or default_devices(strategy, replicas)
    distributed, times = {}, {}
    with distribute(strategy, devices) as dist:
        num_replicas, num_processes = dist.num_replicas, distribution.process_count()
        index = distribution.process_index()
        for name in CASES:
            distributed[name] = train_case(name)
        if timing:
            times["replicas_ms"] = step_time(num_replicas)
    cases = {name: compare(run, train_case(name)) for name, run in distributed.items()}
    closed_form = compare_closed_form(distributed["linear"])
    penalty = penalty_under_policy()
    if timing:
        times["one_device_ms"] = step_time(1)
        times["efficiency"] = times["one_device_ms"] / (num_replicas * times["replicas_ms"])
    passed = (
        all(case["excess"] <= 1.0 for case in cases.values())
        and closed_form["excess"] <= 1.0
        and penalty["relative_diff"] <= penalty["tolerance"]
    )
    return {
        "passed": bool(passed),
        "backend": keras.backend.backend(),
        "strategy": dist.strategy,
        "num_replicas": num_replicas,
        "num_processes": num_processes,
        "process_index": index,
        "max_weight_diff": max(case["max_weight_diff"] for case in cases.values()),
        "max_metric_diff": max(case["max_metric_diff"] for case in cases.values()),
        "max_closed_form_diff": closed_form["max_diff"],
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "cases": cases,
        "closed_form": closed_form,
        "penalty": penalty,
        "timing": times,
        "linear_logs": dict(zip(distributed["linear"].names, distributed["linear"].logs[0].tolist())),
    }


def format_report(report: dict) -> str:
    """The report as a table, ending in PASS or FAIL."""
    verdict = {True: "PASS", False: "FAIL"}

    def row(what: str, diff: float, tolerance: str, ok: bool) -> str:
        return f"{what:<40} {diff:>11.3g}  {tolerance:>22}  {verdict[ok]}"

    tolerance = f"{ATOL:g} + {RTOL:g}·|ref|"
    rows = [
        f"portable-wgangp check: {report['backend']} backend, strategy {report['strategy']}, "
        f"{report['num_replicas']} replicas in {report['num_processes']} process(es)",
        f"{'what':<40} {'max |diff|':>11}  {'tolerance':>22}  result",
    ]
    for name, case in report["cases"].items():
        ok = case["excess"] <= 1.0
        rows.append(row(f"{name}: weights, R replicas vs 1", case["max_weight_diff"], tolerance, ok))
        rows.append(row(f"{name}: metrics, R replicas vs 1", case["max_metric_diff"], tolerance, ok))
    closed = report["closed_form"]
    rows.append(row("linear: step vs closed form", closed["max_diff"], tolerance, closed["excess"] <= 1.0))
    penalty = report["penalty"]
    rows.append(
        row(
            f"penalty: {penalty['policy']} vs float32 (rel.)",
            penalty["relative_diff"],
            f"{penalty['tolerance']:g}",
            penalty["relative_diff"] <= penalty["tolerance"],
        )
    )
    if report["timing"]:
        t = report["timing"]
        rows.append(
            f"step time (3×256 MLP, batch 256): 1 device {t['one_device_ms']:.1f} ms, "
            f"{report['num_replicas']} replicas {t['replicas_ms']:.1f} ms, scaling efficiency "
            f"{100 * t['efficiency']:.0f} %"
        )
    rows.append(verdict[report["passed"]])
    return "\n".join(rows)


# -- against the host CPU (`check --reference cpu`) -------------------------------------------------------

REFERENCE_STEPS = 20
# The precisions a run's arithmetic can have, finest first, each with the tolerance t of
# |device − cpu| <= t·(1 + |cpu|) after REFERENCE_STEPS generator steps (K steps: t·max(1, K / 20)).
# Measured, 20 steps, each backend on CPU: two processes differ by 0; initial weights 1 ulp apart end
# ≤ 4e-7 apart; mixed_float16 ≤ 1.5e-2 and mixed_bfloat16 ≤ 3e-2 from float32 (in t's units).
PRECISION_TOLERANCE = {
    "float32": 1e-4,
    "bfloat16_3x": 1e-3,  # TPU "high": three bfloat16 passes
    "tensorfloat32": 5e-2,  # NVIDIA Ampere and later: inputs of float32 matmuls rounded to 10 bits
    "float16": 1e-1,
    "bfloat16": 1e-1,
}
PRECISIONS = tuple(PRECISION_TOLERANCE)
_NAMES = {
    "float32": "float32",
    "bfloat16_3x": "three bfloat16 passes",
    "tensorfloat32": "TensorFloat-32",
    "float16": "float16",
    "bfloat16": "bfloat16",
}
_MATMULS = {**_NAMES, "bfloat16": "one bfloat16 pass"}
# What a child process would inherit and must not: the run's processes, its devices.
_DISTRIBUTED_VARIABLES = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "ROLE_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TF_CONFIG",
    "TPU_NAME",
    "KERAS_DISTRIBUTION_JOB_ADDRESSES",
    "KERAS_DISTRIBUTION_NUM_PROCESSES",
    "KERAS_DISTRIBUTION_PROCESS_ID",
)
_CPU_ONLY = {
    "JAX_PLATFORMS": "cpu",
    "CUDA_VISIBLE_DEVICES": "",
    "HIP_VISIBLE_DEVICES": "",
    "ROCR_VISIBLE_DEVICES": "",
    "KERAS_TORCH_DEVICE": "cpu",
    "JAX_DEFAULT_MATMUL_PRECISION": "highest",  # the CPU ignores it; the reference is float32 regardless
}
REFERENCE_CHILD = "import sys; from portable_wgangp import check; check.reference_child(sys.argv[1])"
REFERENCE_TIMEOUT = 900  # seconds the CPU run may take


def coarser(a: str, b: str) -> str:
    """The less precise of two `PRECISIONS`."""
    return max(a, b, key=PRECISIONS.index)


def reference_tolerance(precision: str, steps: int) -> float:
    """t of |device − cpu| <= t·(1 + |cpu|) for a device run in ``precision`` over ``steps`` steps."""
    return PRECISION_TOLERANCE[precision] * max(1.0, steps / REFERENCE_STEPS)


def reference_batch(num_replicas: int) -> int:
    """The global batch: at least `MLP_GLOBAL_BATCH`, a multiple of the replicas."""
    return num_replicas * -(-MLP_GLOBAL_BATCH // num_replicas)


def device_facts(strategy: str = "none", native=None) -> dict:
    """Where this process's runs compute and how its float32 matmuls multiply: ``kind`` (the device's
    name), ``platform`` (cpu, gpu, tpu, cuda, …), ``matmul_precision`` (one of `PRECISIONS`),
    ``matmul_setting`` (the setting that decides it) and ``float32_setting`` (what gives float32 matmuls;
    "" when they are). ``strategy``, ``native``: the `Distribution`'s."""
    backend = keras.backend.backend()
    if backend == "jax":
        return _jax_facts()
    if backend == "tensorflow":
        return _tensorflow_facts(strategy, native)
    return _torch_facts()


def _tf32_overridden() -> bool:
    """NVIDIA_TF32_OVERRIDE=0: cuBLAS and cuDNN never use TensorFloat-32, whatever a framework asks."""
    return os.environ.get("NVIDIA_TF32_OVERRIDE") == "0"


# How each framework multiplies float32 matrices, as pure functions of what it reports (tested on every
# backend). ``capability``: an NVIDIA GPU's compute capability, (major, minor); TF32 needs (8, 0) on.


def jax_matmul_precision(platform: str, setting, capability=(8, 0)) -> str:
    """JAX: ``jax_default_matmul_precision`` on ``platform`` (cpu, gpu, cuda, rocm, tpu). Its levels
    (`jax.lax.Precision`): DEFAULT (None, default, fastest, bfloat16): one bfloat16 pass on TPUs,
    TensorFloat-32 on GPUs that have it; HIGH (high, bfloat16_3x, tensorfloat32): three bfloat16 passes on
    TPUs, TensorFloat-32 on GPUs; HIGHEST (highest, float32): float32 (six passes on TPUs). Or the name
    of a dot algorithm (`jax.lax.DotAlgorithmPreset`), which says its precision itself."""
    value = str(setting or "default").lower()
    algorithms = {"f32_f32_f32": "float32", "bf16_bf16_f32_x6": "float32", "bf16_bf16_f32_x9": "float32"}
    algorithms.update(bf16_bf16_f32="bfloat16", bf16_bf16_f32_x3="bfloat16_3x", tf32_tf32_f32="tensorfloat32")
    algorithms.update(tf32_tf32_f32_x3="bfloat16_3x", f16_f16_f32="float16")
    if platform not in ("gpu", "cuda", "rocm", "tpu") or value in ("highest", "float32"):
        return "float32"  # XLA:CPU multiplies float32 in float32 whatever the setting
    if value in algorithms:
        return algorithms[value]
    high = value in ("high", "bfloat16_3x", "tensorfloat32")
    if platform == "tpu":
        return "bfloat16_3x" if high else "bfloat16"
    if platform == "rocm":
        return "float32"
    return "tensorfloat32" if tuple(capability) >= (8, 0) else "float32"


def tensorflow_matmul_precision(
    platform: str, tf32_enabled: bool, capability=(8, 0), overridden=False
) -> str:
    """TensorFlow: ``tf.config.experimental.tensor_float_32_execution_enabled()`` on ``platform``; on TPUs
    it also selects XLA's DEFAULT precision (one bfloat16 pass) over HIGHEST."""
    if platform == "tpu":
        return "bfloat16" if tf32_enabled else "float32"
    if platform == "gpu" and tf32_enabled and not overridden and tuple(capability) >= (8, 0):
        return "tensorfloat32"
    return "float32"


def torch_matmul_precision(device_type: str, setting: str, capability=(8, 0), overridden=False) -> str:
    """torch: ``torch.get_float32_matmul_precision()`` (highest, high, medium) on a ``device_type``
    device; only CUDA heeds it."""
    if device_type != "cuda" or setting == "highest" or overridden or tuple(capability) < (8, 0):
        return "float32"
    return "bfloat16" if setting == "medium" else "tensorfloat32"


FLOAT32_SETTINGS = {
    "jax": "JAX_DEFAULT_MATMUL_PRECISION=highest in the environment "
    "(or jax.config.update('jax_default_matmul_precision', 'highest'))",
    "tensorflow": "tf.config.experimental.enable_tensor_float_32_execution(False) before the run",
    "tensorflow-gpu": "NVIDIA_TF32_OVERRIDE=0 in the environment "
    "(or tf.config.experimental.enable_tensor_float_32_execution(False) before the run)",
    "torch": "torch.set_float32_matmul_precision('highest') (or NVIDIA_TF32_OVERRIDE=0 in the environment)",
}


def _jax_facts() -> dict:
    import jax

    device = jax.devices()[0]
    setting = jax.config.jax_default_matmul_precision
    capability = tuple(int(p) for p in str(getattr(device, "compute_capability", "8.0")).split(".")[:2])
    precision = jax_matmul_precision(device.platform, setting, capability)
    return {
        "kind": device.device_kind,
        "platform": device.platform,
        "matmul_precision": precision,
        "matmul_setting": f"jax_default_matmul_precision={setting!r}",
        "float32_setting": "" if precision == "float32" else FLOAT32_SETTINGS["jax"],
    }


def _tensorflow_facts(strategy: str, native) -> dict:
    import tensorflow as tf

    enabled = tf.config.experimental.tensor_float_32_execution_enabled()
    kind, platform, capability = "CPU", "cpu", (8, 0)
    gpus = tf.config.list_physical_devices("GPU")
    devices = list(native.extended.worker_devices) if native is not None else []
    if strategy == "tpu":
        kind, platform = "TPU core", "tpu"
    elif gpus and (any("GPU" in d.upper() for d in devices) if devices else True):
        details = tf.config.experimental.get_device_details(gpus[0])
        kind, platform = details.get("device_name", "GPU"), "gpu"
        capability = details.get("compute_capability") or capability
    precision = tensorflow_matmul_precision(platform, enabled, capability, _tf32_overridden())
    fix = FLOAT32_SETTINGS["tensorflow-gpu" if platform == "gpu" else "tensorflow"]
    return {
        "kind": kind,
        "platform": platform,
        "matmul_precision": precision,
        "matmul_setting": f"tf.config.experimental.tensor_float_32_execution_enabled()={enabled}",
        "float32_setting": "" if precision == "float32" else fix,
    }


def _torch_facts() -> dict:
    import torch

    device = keras.ops.convert_to_tensor(0.0).device
    setting = torch.get_float32_matmul_precision()
    kind, capability = device.type, (0, 0)
    if device.type == "cuda":
        kind, capability = torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)
    precision = torch_matmul_precision(device.type, setting, capability, _tf32_overridden())
    return {
        "kind": kind,
        "platform": device.type,
        "matmul_precision": precision,
        "matmul_setting": f"torch.get_float32_matmul_precision()={setting!r}",
        "float32_setting": "" if precision == "float32" else FLOAT32_SETTINGS["torch"],
    }


def _device_name(facts: dict) -> str:
    """The device's kind, and its platform where that differs: "NVIDIA H100 (gpu)", "TPU v4 (tpu)", "cpu"."""
    kind, platform = facts["kind"], facts["platform"]
    return kind if kind.lower() == platform.lower() else f"{kind} ({platform})"


def reference_child(spec: str) -> None:
    """The CPU side of `run_reference_check`, in its own process: train the mlp case in float32 without a
    distribution and save its metrics, weights and device to ``spec["out"]`` (an .npz)."""
    spec = json.loads(spec)
    run = train_case("mlp", build=lambda: mlp_run(spec["steps"], spec["batch"]))
    generator = len(run.model.generator.get_weights())
    facts = device_facts()
    np.savez(
        spec["out"],
        names=np.array(run.names),
        logs=run.logs,
        generator=np.array(generator),
        platform=np.array(facts["platform"]),
        device=np.array(_device_name(facts)),
        **{f"w{i}": w for i, w in enumerate(run.weights)},
    )


def _start_reference(folder: pathlib.Path, steps: int, batch: int):
    """Start the CPU run of `run_reference_check` in a child process; ``(process, out, log)``."""
    env = {k: v for k, v in os.environ.items() if k not in _DISTRIBUTED_VARIABLES}
    package_root = str(pathlib.Path(__file__).resolve().parents[1])  # the folder that holds portable_wgangp
    env.update(_CPU_ONLY, KERAS_BACKEND=keras.backend.backend())
    env["PYTHONPATH"] = os.pathsep.join([package_root, *filter(None, [env.get("PYTHONPATH")])])
    out, log = folder / "reference.npz", folder / "reference.log"
    spec = json.dumps({"out": str(out), "steps": steps, "batch": batch})
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-c", REFERENCE_CHILD, spec], env=env, stdout=output, stderr=subprocess.STDOUT
        )
    return process, out, log


def _finish_reference(process, out: pathlib.Path, log: pathlib.Path) -> dict:
    """Wait for the child of `_start_reference`; its saved arrays."""
    try:
        status = process.wait(timeout=REFERENCE_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise RuntimeError(f"The CPU reference run took over {REFERENCE_TIMEOUT} s; stopped it.") from None
    if status != 0 or not out.is_file():
        lines = log.read_text(errors="replace").strip().splitlines()
        last = lines[-1] if lines else "(no output)"
        raise RuntimeError(f"The CPU reference run failed (exit status {status}): {last}")
    with np.load(out) as saved:
        return {key: saved[key] for key in saved.files}


def run_reference_check(
    strategy: str = "auto",
    devices: list[str] | None = None,
    *,
    steps: int = REFERENCE_STEPS,
    replicas: int = 2,
    precision: str = "auto",
) -> dict:
    """`check --reference cpu`: the report of K = ``steps`` steps of the mlp case on this process's devices
    (``strategy``, ``devices`` as `run_check` takes them; the active dtype policy) against the same steps
    in float32 on the host CPU, as a JSON-ready dict; ``report["passed"]`` is the verdict.

    ``precision``: the precision whose tolerance applies ("auto": the one the device computes in, the
    coarser of its float32 matmuls and the dtype policy; "float32": demand float32 agreement).
    """
    if steps < 1:
        raise ValueError(f"The reference check needs at least 1 step, got {steps}.")
    if precision != "auto" and precision not in PRECISIONS:
        raise ValueError(f"Unknown precision {precision!r}; choose auto or one of {', '.join(PRECISIONS)}.")
    devices = devices or default_devices(strategy, replicas)
    policy = keras.config.dtype_policy()
    with tempfile.TemporaryDirectory(prefix="wgangp-reference-") as folder:
        with distribute(strategy, devices) as dist:
            num_replicas, num_processes = dist.num_replicas, distribution.process_count()
            index = distribution.process_index()
            batch = reference_batch(num_replicas)
            child = _start_reference(pathlib.Path(folder), steps, batch)  # runs while the device trains
            try:
                facts = device_facts(dist.strategy, dist.native)
                device = train_case("mlp", build=lambda: mlp_run(steps, batch), policy=policy.name)
            except BaseException:
                child[0].kill()
                child[0].wait()
                raise
        reference = _finish_reference(*child)
    if reference["platform"].item() != "cpu":
        raise RuntimeError(
            f"The reference run was meant for the CPU but ran on {reference['device'].item()}."
        )
    names = [str(n) for n in reference["names"]]
    if names != device.names:
        raise RuntimeError(f"The runs logged different metrics: {device.names} and {names}.")
    cpu_weights = [reference[f"w{i}"] for i in range(len(device.weights))]
    compute = {"bfloat16": "bfloat16", "float16": "float16"}.get(policy.compute_dtype, "float32")
    computed = coarser(facts["matmul_precision"], compute)
    held_to = computed if precision == "auto" else precision
    t = reference_tolerance(held_to, steps)
    split = int(reference["generator"])
    rows = {
        "generator weights": list(zip(device.weights[:split], cpu_weights[:split])),
        "critic weights": list(zip(device.weights[split:], cpu_weights[split:])),
    }
    rows.update({name: [(device.logs[:, j], reference["logs"][:, j])] for j, name in enumerate(names)})
    figures = {
        what: {"max_diff": max_abs_diff(pairs), "excess": max(_excess(a, b, t) for a, b in pairs)}
        for what, pairs in rows.items()
    }
    passed = all(f["excess"] <= 1.0 for f in figures.values())
    report = {
        "passed": bool(passed),
        "reference": "cpu",
        "backend": keras.backend.backend(),
        "strategy": dist.strategy,
        "num_replicas": num_replicas,
        "num_processes": num_processes,
        "process_index": index,
        "steps": steps,
        "batch_size": batch,
        "device": f"{num_replicas} × {_device_name(facts)}",
        "platform": facts["platform"],
        "matmul_precision": facts["matmul_precision"],
        "matmul_setting": facts["matmul_setting"],
        "dtype_policy": policy.name,
        "compute_dtype": policy.compute_dtype,
        "precision": computed,
        "tolerance": {"precision": held_to, "rtol": t, "atol": t},
        "max_weight_diff": max(figures[k]["max_diff"] for k in ("generator weights", "critic weights")),
        "max_metric_diff": max(figures[k]["max_diff"] for k in names),
        "max_metric_diff_by_name": {k: figures[k]["max_diff"] for k in names},
        "excess": max(f["excess"] for f in figures.values()),
        "rows": figures,
        "reference_device": str(reference["device"].item()),
        "reference_platform": str(reference["platform"].item()),
    }
    report["hint"] = reference_hint(report, facts["float32_setting"])
    return report


def _excess(actual, expected, t: float) -> float:
    """max |a − b| / (t·(1 + |b|)); ≤ 1 passes."""
    actual, expected = np.asarray(actual, "float64"), np.asarray(expected, "float64")
    return float(np.max(np.abs(actual - expected) / (t * (1.0 + np.abs(expected))), initial=0.0))


def reference_hint(report: dict, float32_setting: str) -> str:
    """What the differences of a reference report say, and which settings give float32 agreement."""
    reasons = []
    if report["matmul_precision"] != "float32":
        reasons.append(
            f"the {report['platform'].upper()} multiplies float32 matrices in "
            f"{_MATMULS[report['matmul_precision']]} ({report['matmul_setting']}); {float32_setting} "
            "gives float32 matmuls"
        )
    if report["compute_dtype"] != "float32":
        reasons.append(
            f"the dtype policy {report['dtype_policy']} computes in {report['compute_dtype']}; the float32 "
            "policy (leave out --dtype-policy) computes in float32"
        )
    held_to = report["tolerance"]["precision"]
    if report["passed"]:
        if not reasons and held_to == "float32":
            return "the device computes what the CPU computes, to float32 rounding"
        if not reasons:
            return (
                f"within the {held_to} tolerance asked for; the device computes in float32, and without "
                "--precision it is held to float32's"
            )
        return (
            f"within {_NAMES[held_to]} rounding; for float32 agreement (and a tolerance of "
            f"{reference_tolerance('float32', report['steps']):g}): " + "; ".join(reasons)
        )
    if PRECISIONS.index(report["precision"]) > PRECISIONS.index(held_to):
        return (
            f"the device computes in {_NAMES[report['precision']]}, coarser than the {held_to} asked for: "
            + "; ".join(reasons)
        )
    return (
        f"the device run differs from the CPU's by more than {_NAMES[held_to]} rounding, which no precision "
        "setting explains: its kernels, the strategy or the data it was fed compute something else; "
        "`portable-wgangp check` (without --reference) compares the strategy with one device"
    )


def format_reference_report(report: dict) -> str:
    """A reference report as a table, ending in PASS or FAIL."""
    verdict = {True: "PASS", False: "FAIL"}
    t = report["tolerance"]
    tolerance = f"{t['atol']:g}·(1 + |cpu|)"
    rows = [
        f"portable-wgangp check --reference cpu: {report['backend']} backend, strategy "
        f"{report['strategy']}, {report['num_replicas']} replicas in {report['num_processes']} "
        f"process(es), {report['steps']} steps",
        f"device: {report['device']}; float32 matmuls in {_MATMULS[report['matmul_precision']]} "
        f"({report['matmul_setting']}); dtype policy {report['dtype_policy']}",
        f"reference: the same steps in float32 on {report['reference_device']}, in another process",
        f"tolerance: of {t['precision']}"
        + (" (what the device computes in)" if t["precision"] == report["precision"] else " (asked for)"),
        f"{'device vs CPU':<22} {'max |diff|':>11}  {'tolerance':>22}  result",
    ]
    for what, figure in report["rows"].items():
        ok = figure["excess"] <= 1.0
        rows.append(f"{what:<22} {figure['max_diff']:>11.3g}  {tolerance:>22}  {verdict[ok]}")
    rows.append(f"hint: {report['hint']}")
    rows.append(verdict[report["passed"]])
    return "\n".join(rows)
