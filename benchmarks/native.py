"""Hand-written WGAN-GP steps in one framework each: the baselines of `run.py`.

Each ``make_<backend>_step(spec, steps=1)`` returns ``(step, feed)``: ``feed(rounds)`` turns numpy rounds
``(batch, steps·n_critic, *shape)`` into the framework's input and ``step(feed_result)`` runs ``steps``
generator steps, each n_critic critic updates and one generator update (penalty on, λ 10, Adam(1e-4, 0,
0.9)), the way a user of that framework alone would write it: several steps a call as one loop of the
compiled program (JAX `lax.scan`, TensorFlow `tf.range` in a `tf.function`), torch a Python loop. The nets
have the same architecture as ours (see `spec`).
"""

from __future__ import annotations

import numpy as np

LR, BETA_1, BETA_2, EPS, LAMBDA = 1e-4, 0.0, 0.9, 1e-7, 10.0


# -- JAX: jax.jit over the whole step, jax.grad for the penalty, a hand-written Adam -------------------------


def make_jax_step(spec, steps: int = 1):
    """The nets' forward passes are the Keras models' `stateless_call`, i.e. pure jnp functions."""
    import jax
    import jax.numpy as jnp

    generator, critic = spec.networks()
    g_params = [v.value for v in generator.trainable_variables]
    c_params = [v.value for v in critic.trainable_variables]
    g_state = [v.value for v in generator.non_trainable_variables]
    c_state = [v.value for v in critic.non_trainable_variables]

    def G(params, z):
        return generator.stateless_call(params, g_state, z, training=True)[0]

    def D(params, x):
        return critic.stateless_call(params, c_state, x, training=True)[0][:, 0]

    def adam(params, grads, m, v, t):
        m = [BETA_1 * a + (1 - BETA_1) * g for a, g in zip(m, grads)]
        v = [BETA_2 * a + (1 - BETA_2) * g * g for a, g in zip(v, grads)]
        scale = jnp.sqrt(1 - BETA_2**t) / (1 - BETA_1**t)
        return [p - LR * scale * a / (jnp.sqrt(b) + EPS) for p, a, b in zip(params, m, v)], m, v

    def critic_loss(cp, gp, real, z, eps):
        fake = jax.lax.stop_gradient(G(gp, z))
        e = eps.reshape((-1,) + (1,) * (real.ndim - 1))
        x_hat = e * real + (1 - e) * fake
        grads = jax.grad(lambda x: jnp.sum(D(cp, x)))(x_hat)
        norms = jnp.sqrt(jnp.sum(grads.reshape(len(grads), -1) ** 2, axis=1) + 1e-12)
        return jnp.mean(D(cp, fake)) - jnp.mean(D(cp, real)) + LAMBDA * jnp.mean((norms - 1) ** 2)

    def generator_loss(gp, cp, z):
        return -jnp.mean(D(cp, G(gp, z)))

    def step(state, rounds, key):
        gp, cp, gm, gv, cm, cv, t = state
        for k in range(rounds.shape[1]):
            key, kz, ke = jax.random.split(key, 3)
            z = jax.random.normal(kz, (rounds.shape[0], spec.latent_dim))
            eps = jax.random.uniform(ke, (rounds.shape[0],))
            grads = jax.grad(critic_loss)(cp, gp, rounds[:, k], z, eps)
            cp, cm, cv = adam(cp, grads, cm, cv, t * rounds.shape[1] + k + 1)
        key, kz = jax.random.split(key)
        z = jax.random.normal(kz, (rounds.shape[0], spec.latent_dim))
        gp, gm, gv = adam(gp, jax.grad(generator_loss)(gp, cp, z), gm, gv, t + 1)
        return (gp, cp, gm, gv, cm, cv, t + 1), key

    zeros = lambda params: [jnp.zeros_like(p) for p in params]  # noqa: E731
    holder = {
        "state": (
            g_params,
            c_params,
            zeros(g_params),
            zeros(g_params),
            zeros(c_params),
            zeros(c_params),
            jnp.int32(0),
        )
    }
    holder["key"] = jax.random.PRNGKey(0)

    @jax.jit
    def execution(state, rounds, key):
        if steps == 1:
            return step(state, rounds, key)

        def body(carry, j):
            state, key = carry
            part = jax.lax.dynamic_slice_in_dim(rounds, j * spec.n_critic, spec.n_critic, axis=1)
            return step(state, part, key), None

        return jax.lax.scan(body, (state, key), jnp.arange(steps))[0]

    def run(rounds):
        holder["state"], holder["key"] = execution(holder["state"], rounds, holder["key"])
        jax.block_until_ready(holder["state"][0])

    return run, jnp.asarray


# -- TensorFlow: tf.function, nested GradientTape, a hand-written Adam -------------------------------------


def make_tensorflow_step(spec, steps: int = 1):
    import tensorflow as tf

    generator, critic = spec.networks()
    g_vars, c_vars = generator.trainable_variables, critic.trainable_variables
    slots = {id(v): (tf.Variable(tf.zeros(v.shape)), tf.Variable(tf.zeros(v.shape))) for v in g_vars + c_vars}
    counters = {"g": tf.Variable(0.0), "c": tf.Variable(0.0)}

    def adam(variables, grads, counter):
        counter.assign_add(1.0)
        scale = tf.sqrt(1 - BETA_2**counter) / (1 - BETA_1**counter)
        for var, g in zip(variables, grads):
            m, v = slots[id(var)]
            m.assign(BETA_1 * m + (1 - BETA_1) * g)
            v.assign(BETA_2 * v + (1 - BETA_2) * g * g)
            var.assign_sub(LR * scale * m / (tf.sqrt(v) + EPS))

    def step(rounds):
        batch = tf.shape(rounds)[0]
        for k in range(rounds.shape[1]):
            real = rounds[:, k]
            fake = generator(tf.random.normal((batch, spec.latent_dim)), training=True)
            eps = tf.reshape(tf.random.uniform((batch,)), [-1] + [1] * (len(real.shape) - 1))
            x_hat = eps * real + (1 - eps) * fake
            with tf.GradientTape() as tape:
                with tf.GradientTape() as inner:
                    inner.watch(x_hat)
                    scores = critic(x_hat, training=True)
                g = inner.gradient(scores, x_hat)
                norms = tf.sqrt(tf.reduce_sum(tf.reshape(g, [batch, -1]) ** 2, axis=1) + 1e-12)
                loss = (
                    tf.reduce_mean(critic(fake, training=True))
                    - tf.reduce_mean(critic(real, training=True))
                    + LAMBDA * tf.reduce_mean((norms - 1) ** 2)
                )
            adam(c_vars, tape.gradient(loss, c_vars), counters["c"])
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(
                critic(generator(tf.random.normal((batch, spec.latent_dim)), training=True))
            )
        adam(g_vars, tape.gradient(loss, g_vars), counters["g"])

    @tf.function
    def execution(rounds):
        if steps == 1:
            return step(rounds)
        per_step = tf.reshape(rounds, [-1, steps, spec.n_critic, *rounds.shape[2:]])
        for j in tf.range(steps):
            step(tf.gather(per_step, j, axis=1))

    return execution, tf.convert_to_tensor


def make_keras_io_step(spec):
    """The keras-io WGAN-GP example's shape: a Python loop of n_critic tapes inside `train_step`, one batch
    reused by every critic update, Keras optimizers, run by `fit`-like `train_on_batch` calls."""
    import keras
    import tensorflow as tf

    generator, critic = spec.networks()

    class KerasIoWGAN(keras.Model):
        def __init__(self):
            super().__init__()
            self.generator, self.critic = generator, critic
            self.d_optimizer = keras.optimizers.Adam(LR, beta_1=BETA_1, beta_2=BETA_2)
            self.g_optimizer = keras.optimizers.Adam(LR, beta_1=BETA_1, beta_2=BETA_2)

        def train_step(self, data):
            real = data[0] if isinstance(data, tuple) else data
            batch = tf.shape(real)[0]
            for _ in range(spec.n_critic):
                z = tf.random.normal((batch, spec.latent_dim))
                with tf.GradientTape() as tape:
                    fake = self.generator(z, training=True)
                    alpha = tf.reshape(tf.random.uniform((batch,)), [-1] + [1] * (len(real.shape) - 1))
                    x_hat = real + alpha * (fake - real)
                    with tf.GradientTape() as gp_tape:
                        gp_tape.watch(x_hat)
                        pred = self.critic(x_hat, training=True)
                    grads = gp_tape.gradient(pred, [x_hat])[0]
                    norm = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=list(range(1, len(real.shape)))))
                    d_loss = (
                        tf.reduce_mean(self.critic(fake, training=True))
                        - tf.reduce_mean(self.critic(real, training=True))
                        + LAMBDA * tf.reduce_mean((norm - 1.0) ** 2)
                    )
                d_grads = tape.gradient(d_loss, self.critic.trainable_variables)
                self.d_optimizer.apply_gradients(zip(d_grads, self.critic.trainable_variables))
            z = tf.random.normal((batch, spec.latent_dim))
            with tf.GradientTape() as tape:
                g_loss = -tf.reduce_mean(self.critic(self.generator(z, training=True), training=True))
            g_grads = tape.gradient(g_loss, self.generator.trainable_variables)
            self.g_optimizer.apply_gradients(zip(g_grads, self.generator.trainable_variables))
            return {"d_loss": d_loss, "g_loss": g_loss}

    model = KerasIoWGAN()
    model.compile()

    def run(rounds):
        model.train_on_batch(rounds[:, 0])

    return run, np.asarray


# -- PyTorch: eager torch.nn modules, autograd.grad(create_graph=True), torch.optim.Adam -------------------


def make_torch_step(spec, steps: int = 1):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Keras's torch backend puts ours
    generator, critic = (network.to(device) for network in spec.torch_networks())
    g_opt = torch.optim.Adam(generator.parameters(), lr=LR, betas=(BETA_1, BETA_2), eps=EPS)
    c_opt = torch.optim.Adam(critic.parameters(), lr=LR, betas=(BETA_1, BETA_2), eps=EPS)

    def step(rounds):
        batch = rounds.shape[0]
        for k in range(rounds.shape[1]):
            real = rounds[:, k]
            with torch.no_grad():
                fake = generator(torch.randn(batch, spec.latent_dim, device=device))
            eps = torch.rand(batch, device=device).view(-1, *[1] * (real.dim() - 1))
            x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (g,) = torch.autograd.grad(critic(x_hat).sum(), x_hat, create_graph=True)
            norms = torch.sqrt(g.flatten(1).pow(2).sum(1) + 1e-12)
            loss = critic(fake).mean() - critic(real).mean() + LAMBDA * ((norms - 1) ** 2).mean()
            c_opt.zero_grad(set_to_none=True)
            loss.backward()
            c_opt.step()
        loss = -critic(generator(torch.randn(batch, spec.latent_dim, device=device))).mean()
        g_opt.zero_grad(set_to_none=True)
        loss.backward()
        g_opt.step()

    def run(rounds):
        for j in range(steps):
            step(rounds[:, j * spec.n_critic : (j + 1) * spec.n_critic])

    def feed(rounds):
        # torch (channels first) gets NCHW images
        tensor = torch.from_numpy(np.ascontiguousarray(rounds)).to(device)
        return tensor.permute(0, 1, 4, 2, 3).contiguous() if tensor.dim() == 5 else tensor

    return run, feed


MAKERS = {"jax": make_jax_step, "tensorflow": make_tensorflow_step, "torch": make_torch_step}
