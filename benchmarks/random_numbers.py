"""What backend-independent random numbers cost: threefry-2x32 in keras.ops (`portable_wgangp.rng`) against
Keras's own per-backend generators (`keras.random`, what the step drew from before issue 25), on the
DCGAN-32 of `run.py` (latent 128, batch 64, n_critic 5).

    KERAS_BACKEND=torch python benchmarks/random_numbers.py --json out.json

- **draws**: the numbers of one generator step — 5 × (z ``(64, 128)``, ε ``(64,)``) + z — run as the step
  runs them (JAX: jitted; TensorFlow: a `tf.function`; torch: eagerly), median of 30 after a warm-up;
- **step**: `WGANGP.fit` per generator step, ours against a subclass drawing z and ε from `keras.random`
  (the previous code), interleaved blocks of ``--steps`` steps after a warm-up, each timed from the end of
  its first step to the end of its last, median over ``--blocks``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

import keras
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from specs import Spec

import portable_wgangp as pw
from portable_wgangp import rng

DCGAN = Spec("dcgan", 128, 64, 5, (32, 32, 3), width=64)


def draws(normal, uniform, seed):
    """The random numbers of one generator step of `DCGAN`."""
    out = []
    for _ in range(DCGAN.n_critic):
        out += [normal((DCGAN.batch, DCGAN.latent_dim), seed=seed), uniform((DCGAN.batch,), seed=seed)]
    return [*out, normal((DCGAN.batch, DCGAN.latent_dim), seed=seed)]


def as_the_step_runs(fn, seed):
    """``fn`` compiled as the backend's step is: a callable that runs it once and waits for the result."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        @jax.jit
        def pure(state):
            with keras.StatelessScope([(seed.state, state)]) as scope:
                values = fn()
            return values, scope.get_current_value(seed.state)

        def run():
            values, seed.state._value = pure(seed.state.value)  # the new state, as the trainer keeps it
            jax.block_until_ready(values)

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(fn)
        return lambda: [v.numpy() for v in compiled()][-1]
    return lambda: keras.ops.convert_to_numpy(fn()[-1])


def median_ms(run, repeats: int = 30) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


class KerasDrawn(pw.WGANGP):
    """The step as it drew before: z and ε from Keras's per-backend generators."""

    def latent_vectors(self, batch_size):
        return keras.random.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def interpolation_weights(self, batch_size):
        return keras.random.uniform((batch_size,), seed=self.seed_generator)


def step_ms(blocks: int, steps: int) -> dict:
    """ms per generator step of `WGANGP.fit`, ours and `KerasDrawn`, interleaved."""
    x = np.random.default_rng(0).uniform(-1, 1, (DCGAN.batch * DCGAN.n_critic * steps, *DCGAN.sample_shape))
    x = x.astype("float32")
    gans = {}
    for name, cls in (("threefry", pw.WGANGP), ("keras", KerasDrawn)):
        gans[name] = cls(*DCGAN.networks(), DCGAN.latent_dim, n_critic=DCGAN.n_critic, seed=0)
        gans[name].compile()
        gans[name].fit(x[: DCGAN.batch * DCGAN.n_critic], batch_size=DCGAN.batch, verbose=0)  # compile
    times = {name: [] for name in gans}
    for _ in range(blocks):
        for name, gan in gans.items():
            ends = []
            clock = keras.callbacks.LambdaCallback(
                on_train_batch_end=lambda b, logs, ends=ends: ends.append(time.perf_counter())
            )
            gan.fit(x, batch_size=DCGAN.batch, shuffle=False, verbose=0, callbacks=[clock])
            times[name].append(1e3 * (ends[-1] - ends[0]) / (steps - 1))
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--json")
    args = parser.parse_args()
    seed = keras.random.SeedGenerator(0)
    ours = median_ms(as_the_step_runs(lambda: draws(rng.normal, rng.uniform, seed), seed))
    theirs = median_ms(as_the_step_runs(lambda: draws(keras.random.normal, keras.random.uniform, seed), seed))
    steps = step_ms(args.blocks, args.steps)
    result = {
        "backend": keras.backend.backend(),
        "draws_ms": {"threefry": ours, "keras": theirs},
        "step_ms": steps,
        "extra_draw_ms_per_step_percent": 100 * (ours - theirs) / steps["threefry"],
        "step_ratio": steps["threefry"] / steps["keras"],
    }
    print(json.dumps(result, indent=1))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
