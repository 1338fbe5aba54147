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
"""

from __future__ import annotations

import contextlib
import dataclasses
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


def mlp_run():
    """``(gan, x, global_batch)``: ReLU MLPs (2 × 16) from fixed initial weights on fixed data, SGD,
    random noise (model seed 7), 3 steps. Build it inside the distribution."""
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(MLP_GLOBAL_BATCH * MLP_N_CRITIC * MLP_STEPS, 2)) * 0.3 + [1.0, -0.5]).astype(
        "float32"
    )
    generator = mlp(MLP_LATENT, 2, width=16, depth=2)
    critic = mlp(2, 1, width=16, depth=2)
    for net in (generator, critic):  # the same initial weights whatever the strategy
        net.set_weights([rng.normal(size=w.shape).astype("float32") * 0.4 for w in net.get_weights()])
    gan = WGANGP(generator, critic, MLP_LATENT, n_critic=MLP_N_CRITIC, gp_weight=1.0, seed=7)
    gan.compile(generator_optimizer=keras.optimizers.SGD(0.01), critic_optimizer=keras.optimizers.SGD(0.01))
    return gan, x, MLP_GLOBAL_BATCH


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


def train_case(name: str, build=None) -> Run:
    """Build and train case ``name`` (or what ``build() -> (gan, x, global_batch)`` makes) in float32,
    inside whatever distribution is in force."""
    with dtype_policy("float32"):
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
