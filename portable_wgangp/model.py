"""`WGANGP`: a `keras.Model` that trains a generator against a critic with a gradient penalty.

One training step (one call of Keras's ``train_step``) is one generator update preceded by ``n_critic``
critic updates (Gulrajani et al. 2017, Algorithm 1). The step receives the real data of a whole round,
shape ``(batch, n_critic, *sample_shape)`` (see :mod:`portable_wgangp.rounds`): critic update ``k`` uses the
fresh minibatch ``data[:, k]``. The step is written once, statefully, in `keras.ops`; the per-backend glue
(gradients, the trainer's calling convention) lives in :mod:`portable_wgangp.backend`.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops
from keras.src.utils.tracking import no_automatic_dependency_tracking

from portable_wgangp import augment as augmentation
from portable_wgangp import backend, distribution, rng, sources
from portable_wgangp.callbacks import EpochOrder, NonFiniteGuard, StepByStep
from portable_wgangp.losses import drift, generator_loss, wasserstein_estimate
from portable_wgangp.penalties import check_mode, gradient_norms, penalty_from_norms, uniform_epsilon
from portable_wgangp.rounds import (
    EpochRounds,
    StreamRounds,
    critic_rounds,
    executions,
    is_array,
    is_source,
    placed_ahead,
)

_SEED_STATE = "seed_generator_state"
# How the critic is kept (close to) 1-Lipschitz: the gradient penalty, weight clipping (the original
# WGAN) or spectral normalization of its layers (Miyato et al. 2018).
LIPSCHITZ = ("penalty", "clip", "spectral")
SAMPLE_VALUES = 2**20  # output values `WGANGP.sample` makes per generator call (see its docstring)


def default_optimizer() -> keras.optimizers.Optimizer:
    """The paper's optimizer for WGAN-GP: Adam(1e-4, β₁ = 0, β₂ = 0.9)."""
    return keras.optimizers.Adam(learning_rate=1e-4, beta_1=0.0, beta_2=0.9)


class OptimizerPair:
    """What Keras's trainers see as ``model.optimizer``: both optimizers, generator's variables first.

    Keras threads ``model.optimizer.variables`` through its (JAX: pure) training state and builds
    ``model.optimizer`` before the first step; a GAN has two optimizers, so this object presents both.
    """

    def __init__(self, model: WGANGP):
        self._model = model

    @property
    def variables(self) -> list:
        return self._model.generator_optimizer.variables + self._model.critic_optimizer.variables

    @property
    def iterations(self):
        """Generator steps taken (what Keras callbacks such as `TensorBoard` use as the step)."""
        return self._model.generator_optimizer.iterations

    @property
    def built(self) -> bool:
        return self._model.generator_optimizer.built and self._model.critic_optimizer.built

    def build(self, _variables=None) -> None:
        """Build each optimizer on its own network's trainable variables (Keras passes all of them)."""
        model = self._model
        model.generator_optimizer.build(model.generator.trainable_variables)
        model.critic_optimizer.build(model.critic.trainable_variables)


def _loss_scaled(optimizer):
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer
    return keras.optimizers.LossScaleOptimizer(optimizer)


def _backend_neutral(config):
    """An optimizer's serialized config with Keras's backend-specific classes named by their public module.

    On torch, ``keras.optimizers.Adam()`` is a subclass that Keras serializes under
    ``keras.src.backend.torch.optimizers``, which a process without torch cannot import; stored under
    ``keras.optimizers``, the checkpoint loads on every backend.
    """
    if isinstance(config, dict):
        config = {key: _backend_neutral(value) for key, value in config.items()}
        if str(config.get("module", "")).startswith("keras.src.backend.") and hasattr(
            keras.optimizers, config.get("class_name", "")
        ):
            config["module"] = "keras.optimizers"
    return config


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return int(value)


def _check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    return float(value)


def _check_no_cross_batch_layers(critic: keras.Model) -> None:
    """The per-sample penalty assumes the critic scores each sample on its own: no batch normalization."""
    for layer in critic._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            raise ValueError(
                f"The critic contains BatchNormalization layer {layer.name!r}, which mixes samples and "
                "breaks the per-sample gradient penalty; use keras.layers.LayerNormalization instead."
            )


@keras.saving.register_keras_serializable(package="portable_wgangp")
class WGANGP(keras.Model):
    """Wasserstein GAN with gradient penalty, the same on TensorFlow, JAX and PyTorch.

    Args:
        generator: a Keras model mapping latent vectors ``(batch, latent_dim)`` to samples.
        critic: a Keras model mapping samples to scores ``(batch,)`` or ``(batch, 1)``; no BatchNorm.
        latent_dim: size of the latent vectors, z ~ N(0, I).
        n_critic: critic updates per generator update, each on a fresh real minibatch.
        gp_weight: λ, the penalty's weight in the critic's objective.
        penalty: ``"two_sided"``, ``"one_sided"`` or ``"zero_centered"`` (see `gradient_penalty`).
        drift_weight: ε_drift, weight of ProGAN's ``mean(D(real)²)`` in the critic's objective.
        penalty_target: t, the target gradient norm of the two- and one-sided penalties.
        seed: seed of the latent vectors, interpolation weights, DiffAugment draws and data order, drawn
            by threefry-2x32 (`portable_wgangp.rng`): the same numbers on every backend and replica count.
        num_classes: for a class-conditional GAN: the generator takes ``[z, labels]``, the critic
            ``[samples, labels]`` (labels: integers of shape ``(batch,)``); fit takes ``(x, y)``. A critic
            with two outputs ``[scores, class_logits]`` and samples alone as input is an auxiliary
            classifier (AC-WGAN, the paper's conditional CIFAR-10 model) instead.
        ac_weight: AC-WGAN only: weight of the class cross-entropy on real samples in the critic's
            objective (paper: 1).
        ac_generator_weight: AC-WGAN only: weight of the class cross-entropy on fake samples in the
            generator's objective (paper: 0.1).
        ema_decay: β of a generator EMA (``ema_generator``, a non-trainable clone of the generator)
            updated after every generator update t = 0, 1, …: w_ema ← β_t·w_ema + (1 − β_t)·w with
            β_t = min(β, (1 + t)/(10 + t)) (a ramp-up, so early weights do not linger); non-trainable
            weights (BatchNorm moving statistics) are copied, as StyleGAN2 does for buffers. None: no EMA.
        gp_every: K, lazy regularization (StyleGAN2): the penalty enters only critic updates whose index
            (``critic_optimizer.iterations``, from 0) is a multiple of K, weighted by K·λ, so its average
            weight stays λ. When K divides ``n_critic`` the choice is static per update of the round (no
            branch in the compiled step); otherwise it is an ``ops.cond`` on the update index.
        augment: a DiffAugment policy (`portable_wgangp.augment`), e.g. ``"translation,cutout,color"``:
            the critic sees real and fake images only augmented (independent draws per sample), the
            penalty included (x̂ interpolates the augmented samples), and the generator's gradient flows
            through the augmentation. Images only.
        lipschitz: ``"penalty"`` (the gradient penalty), ``"clip"`` (the original WGAN: every critic weight
            clipped to ±``clip_value`` after each critic update, no penalty) or ``"spectral"`` (the
            critic's layers wrapped in `keras.layers.SpectralNormalization`, e.g. by
            ``nets.mlp(..., spectral=True)``; no penalty). Each training call of such a layer runs one
            power iteration, so a step runs ``n_critic + 1`` of them on every backend: the critic scores
            real and fake samples in one call (`_paired_scores`), and the generator update calls it once.
            (The updated weights still differ on JAX: the layer's in-place rescaling of its kernel is
            dropped inside the differentiated objective there, which differentiates through it instead.)
        clip_value: c, the clipping bound of ``lipschitz="clip"``.

    The critic minimises ``mean(D(fake)) − mean(D(real)) + λ·penalty + ε_drift·mean(D(real)²)``; the
    generator minimises ``−mean(D(G(z)))``. Every step also logs ``gradient_norm``: the mean over the global
    batch of ‖∇D(x̂)‖ at the interpolates of the round's last critic update (taken from the penalty's own
    input gradient when that update is penalised, else measured without it, whatever the constraint).
    The logged ``critic_loss`` is the objective with λ·penalty at that update (λ = 0 without the penalty),
    also when the lazy schedule skipped the penalty there.
    """

    def __init__(
        self,
        generator: keras.Model,
        critic: keras.Model,
        latent_dim: int,
        *,
        n_critic: int = 5,
        gp_weight: float = 10.0,
        penalty: str = "two_sided",
        drift_weight: float = 0.0,
        penalty_target: float = 1.0,
        seed: int | None = None,
        num_classes: int | None = None,
        ac_weight: float = 1.0,
        ac_generator_weight: float = 0.1,
        ema_decay: float | None = None,
        gp_every: int = 1,
        augment: str | None = None,
        lipschitz: str = "penalty",
        clip_value: float = 0.01,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.latent_dim = _check_positive_int("latent_dim", latent_dim)
        self.n_critic = _check_positive_int("n_critic", n_critic)
        if not (
            math.isfinite(gp_weight) and gp_weight >= 0 and math.isfinite(drift_weight) and drift_weight >= 0
        ):
            raise ValueError(
                f"gp_weight and drift_weight must be finite and >= 0, got {gp_weight!r} and {drift_weight!r}."
            )
        if not (math.isfinite(penalty_target) and penalty_target > 0):
            raise ValueError(f"penalty_target must be a finite number > 0, got {penalty_target!r}.")
        self.gp_weight = float(gp_weight)
        self.drift_weight = float(drift_weight)
        self.penalty = check_mode(penalty)
        self.penalty_target = float(penalty_target)
        self.seed = seed
        self.num_classes = None if num_classes is None else _check_positive_int("num_classes", num_classes)
        self.auxiliary_classifier = self.num_classes is not None and len(critic.outputs) == 2
        self.ac_weight = float(ac_weight)
        self.ac_generator_weight = float(ac_generator_weight)
        self.ema_decay = None if ema_decay is None else _check_fraction("ema_decay", ema_decay)
        self.gp_every = _check_positive_int("gp_every", gp_every)
        self.augment = augmentation.parse_policy(augment)
        if lipschitz not in LIPSCHITZ:
            raise ValueError(f"Unknown lipschitz {lipschitz!r}; choose one of {', '.join(LIPSCHITZ)}.")
        self.lipschitz = lipschitz
        if not (math.isfinite(clip_value) and clip_value > 0):
            raise ValueError(f"clip_value must be a finite number > 0, got {clip_value!r}.")
        self.clip_value = float(clip_value)
        if self.gp_every > 1 and lipschitz != "penalty":
            raise ValueError(
                f"gp_every schedules the penalty, which lipschitz={lipschitz!r} does without; drop gp_every."
            )
        _check_no_cross_batch_layers(critic)
        if lipschitz == "spectral" and not any(
            isinstance(layer, keras.layers.SpectralNormalization)
            for layer in critic._flatten_layers(include_self=False)
        ):
            raise ValueError(
                "lipschitz='spectral' needs a critic whose layers are wrapped in "
                "keras.layers.SpectralNormalization, e.g. pw.nets.mlp(..., spectral=True)."
            )
        self.generator = generator
        self.critic = critic
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.generator_optimizer = None
        self.critic_optimizer = None
        self.execution_steps = 1  # generator steps per compiled call (`compile`'s steps_per_execution)
        self._keep(
            _critic_index=0,  # the position in the round of the critic update being built
            log_names=[],  # the names of the logged values, in the order the step packs them
            step_logs=[],  # the last call's logs, one dict per generator step (`host_logs`)
        )
        self._build_networks()
        if self.augment and len(self.sample_shape) != 3:
            raise ValueError(
                f"DiffAugment transforms images (height, width, channels), but the generator makes samples "
                f"of shape {self.sample_shape}; drop augment for non-image data."
            )
        self.ema_generator = None if self.ema_decay is None else self._ema_copy(generator)

    def _build_networks(self) -> None:
        """Build both networks on one latent vector; check that the critic accepts the generator's output."""
        labels = ops.zeros((1,), dtype="int32")
        expected = getattr(self.generator, "inputs", None)
        if expected and expected[0].shape[-1] not in (None, self.latent_dim):
            raise ValueError(
                f"latent_dim is {self.latent_dim} but the generator takes latent vectors of size "
                f"{expected[0].shape[-1]}; pass latent_dim={expected[0].shape[-1]}."
            )
        fake = self.generator(self._conditioned(ops.zeros((1, self.latent_dim)), labels))
        if isinstance(fake, (list, tuple, dict)):
            raise ValueError(
                f"The generator must return one tensor of samples, got {type(fake).__name__} of "
                f"{len(fake)}; give it a single output."
            )
        self.sample_shape = tuple(fake.shape[1:])
        try:
            scores = self.critic(fake if self.auxiliary_classifier else self._conditioned(fake, labels))
        except Exception as error:
            raise ValueError(
                f"The critic does not accept the generator's output of shape {tuple(fake.shape)}: {error}"
            ) from error
        if self.auxiliary_classifier:
            scores = scores[0]
        if isinstance(scores, (list, tuple, dict)) or tuple(scores.shape) not in ((1,), (1, 1)):
            shape = type(scores).__name__ if isinstance(scores, (list, tuple, dict)) else tuple(scores.shape)
            raise ValueError(
                f"The critic must return one score per sample, shape (batch,) or (batch, 1), but gives "
                f"{shape} for a batch of 1; end it with Dense(1) (or [scores, class_logits] for AC-WGAN)."
            )
        self.built = True

    @staticmethod
    def _ema_copy(generator: keras.Model) -> keras.Model:
        """A non-trainable clone of ``generator`` holding its current weights, variable for variable."""
        copy = keras.models.clone_model(generator)
        if [tuple(w.shape) for w in copy.weights] != [tuple(w.shape) for w in generator.weights]:
            raise ValueError(
                f"keras.models.clone_model does not reproduce the generator {generator.name!r} variable "
                "for variable; give it a get_config/from_config, or train without the EMA."
            )
        copy.set_weights(generator.get_weights())
        copy.trainable = False
        return copy

    def call(self, z, training=False):
        """Samples for latent vectors ``z`` ``(batch, latent_dim)``; ``[z, labels]`` if conditional."""
        return self.generator(z, training=training)

    def _conditioned(self, inputs, labels):
        """A network's input: ``inputs`` alone, or ``[inputs, labels]`` for a conditional GAN."""
        return inputs if self.num_classes is None else [inputs, labels]

    def critic_of(self, labels):
        """The critic's scores as a function of the samples alone, the labels held fixed (what the
        penalty needs)."""
        if self.num_classes is None:
            return lambda samples, **kwargs: backend.forward(self.critic, samples, **kwargs)
        if self.auxiliary_classifier:
            return lambda samples, **kwargs: backend.forward(self.critic, samples, **kwargs)[0]
        return lambda samples, **kwargs: backend.forward(self.critic, [samples, labels], **kwargs)

    def _paired_scores(self, real, fake, labels):
        """Critic scores of ``real`` and ``fake``: one critic call on both halves where the backend gains
        from fewer, larger operations (`backend.JOINT_SCORES`), else one call each. Exact either way, as
        the critic scores each sample on its own. A spectrally normalized critic is always called once:
        each training call of `keras.layers.SpectralNormalization` runs a power iteration and rescales
        the kernel, so two calls would score real and fake samples with differently normalized kernels
        and run two power iterations per update (one on the other backends)."""
        fake = ops.cast(fake, real.dtype)
        if not backend.JOINT_SCORES and self.lipschitz != "spectral":
            critic = self.critic_of(labels)
            return critic(real, training=True), critic(fake, training=True)
        batch_size = ops.shape(real)[0]
        paired_labels = None if labels is None else ops.concatenate([labels, labels], axis=0)
        scores = self.critic_of(paired_labels)(ops.concatenate([real, fake], axis=0), training=True)
        return scores[:batch_size], scores[batch_size:]

    def _class_loss(self, samples, labels):
        """AC-WGAN: mean cross-entropy of the critic's class logits for ``samples`` against ``labels``."""
        logits = ops.cast(backend.forward(self.critic, samples, training=True)[1], "float32")
        return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))

    def compile(
        self, generator_optimizer=None, critic_optimizer=None, steps_per_execution: int = 1, **kwargs
    ) -> None:
        """Set both optimizers (None → Adam(1e-4, β₁ = 0, β₂ = 0.9)); other arguments go to Keras.

        ``steps_per_execution`` (N): generator steps per call of the compiled step, on every backend. The
        weights are those of N single steps, and every step's logs still reach the callbacks one step at a
        time (`callbacks.StepByStep`), read from the device once per call. Callbacks that act on the model
        (checkpoints, evaluations, signals) act at the end of a call. Larger N pays where the host's cost
        per call is large next to the step's maths: TPUs, small networks, a slow host.
        No loss or metrics are compiled: the step computes and logs its own.
        """
        for name in ("optimizer", "loss", "metrics"):
            if kwargs.get(name) is not None:
                raise ValueError(
                    f"WGANGP.compile() takes no {name!r}; pass generator_optimizer= and critic_optimizer=."
                )
        # Keras runs one call per step; the N steps of a call are this model's own loop (`train_execution`).
        self.execution_steps = _check_positive_int("steps_per_execution", steps_per_execution)
        super().compile(optimizer=None, steps_per_execution=1, **kwargs)
        self.generator_optimizer = keras.optimizers.get(generator_optimizer) or default_optimizer()
        self.critic_optimizer = keras.optimizers.get(critic_optimizer) or default_optimizer()
        if self.generator_optimizer is self.critic_optimizer:
            raise ValueError("The generator and the critic need two distinct optimizer instances.")
        if self.dtype_policy.name == "mixed_float16":  # float16 gradients underflow without loss scaling
            self.generator_optimizer = _loss_scaled(self.generator_optimizer)
            self.critic_optimizer = _loss_scaled(self.critic_optimizer)
        self.optimizer = OptimizerPair(self)
        self.optimizer.build()

    # -- training ---------------------------------------------------------------------------------

    def fit(
        self,
        x=None,
        y=None,
        batch_size: int | None = None,
        epochs: int = 1,
        *,
        shuffle: bool = True,
        **kwargs,
    ):
        """Train on real samples ``x``; ``batch_size`` (default 64) is the critic minibatch size.

        ``x``: a numpy array (or anything array-like) of samples; a sample source of
        `portable_wgangp.sources` (a memory-mapped ``.npy``, an image folder: read a round at a time,
        with bounded memory); or a `tf.data.Dataset`, torch `DataLoader` or Python iterable of
        minibatches (``(samples, labels)`` pairs if conditional);
        ``y``: the class labels of array samples, for a conditional GAN. Each Keras step consumes
        ``n_critic`` minibatches (one per critic update) and makes one generator update;
        ``steps_per_epoch`` counts generator steps. Other arguments (``callbacks``, ``verbose``, ...)
        go to `keras.Model.fit`. The first non-finite logged value stops training with
        `FloatingPointError` (see `NonFiniteGuard`).
        """
        if not self.compiled:
            raise RuntimeError(
                "Call WGANGP.compile() before fit(), e.g. gan.compile() for the default optimizers."
            )
        if batch_size is not None:
            _check_positive_int("batch_size", batch_size)
        if is_array(x):
            self._check_array_data(np.asarray(x), y)
        elif is_source(x) or isinstance(x, StreamRounds):
            self._check_source(getattr(x, "source", x), y)
        elif y is not None:
            raise ValueError(
                "y= goes with array samples; an iterable of minibatches yields (samples, labels)."
            )
        rounds, steps = critic_rounds(
            x,
            batch_size=batch_size,
            n_critic=self.n_critic,
            shuffle=shuffle,
            seed=self.seed,
            num_replicas=distribution.num_replicas(),
            shard=distribution.input_shard(),
            y=y,
            labelled=self.num_classes is not None,
        )
        backend.synchronize(self.variables + self.optimizer.variables)
        if distribution.process_index() > 0:  # one progress bar per run, not one per process
            kwargs["verbose"] = 0
        steps = kwargs.get("steps_per_epoch") or steps
        stepwise = [NonFiniteGuard(), *(kwargs.get("callbacks") or [])]
        if isinstance(rounds, EpochRounds):
            stepwise.append(EpochOrder(rounds))
        # Keras's own History and progress bar see each call's last step; the others see every step.
        keras_own = (keras.callbacks.History, keras.callbacks.ProgbarLogger)
        kept = [c for c in stepwise if isinstance(c, keras_own)]
        kwargs["callbacks"] = [StepByStep([c for c in stepwise if c not in kept]), *kept]
        if self.execution_steps > 1:
            rounds, steps = executions(rounds, self.execution_steps, steps, padded=backend.FIXED_SHAPES)
        if backend.place is not None:
            rounds = placed_ahead(rounds, backend.place)
        kwargs["steps_per_epoch"] = steps
        return super().fit(rounds, epochs=epochs, shuffle=False, **kwargs)  # rounds come shuffled

    def _check_array_data(self, x: np.ndarray, y) -> None:
        """Refuse array data the step cannot train on, before the first step (see `sources.check_numeric`)."""
        sources.check_numeric(x)
        if np.issubdtype(x.dtype, np.integer):
            raise ValueError(
                f"The samples are integers ({x.dtype}) but the generator makes floats; scale "
                "images with pw.data.scale_images(x) (0..255 → [-1, 1]) or cast other data to float32."
            )
        if tuple(x.shape[1:]) != self.sample_shape:
            raise ValueError(
                f"The data's samples have shape {tuple(x.shape[1:])} but the generator makes "
                f"{self.sample_shape}; reshape the data to (N, {', '.join(map(str, self.sample_shape))}) or "
                "change the generator's output."
            )
        if (y is None) != (self.num_classes is None):
            raise ValueError(
                "A conditional WGANGP (num_classes set) trains on samples and labels (y=) and an "
                "unconditional one on samples alone; pass y= exactly when num_classes is set."
            )
        if y is not None:
            sources.as_labels(y, len(x), self.num_classes)

    def _check_source(self, source, y) -> None:
        """Refuse a sample source whose samples or labels do not fit the networks."""
        if y is not None:
            raise ValueError("y= goes with array samples; a sample source brings its own labels (or none).")
        if tuple(source.sample_shape) != self.sample_shape:
            raise ValueError(
                f"{source.name} holds samples of shape {tuple(source.sample_shape)} but the generator makes "
                f"{self.sample_shape}; resize the data (image_size) or change the generator's output."
            )
        if self.num_classes is not None:
            if source.labels is None:
                raise ValueError(
                    f"A conditional WGANGP (num_classes set) trains on labelled data, but {source.name} has "
                    "no labels; use class sub-folders (images), a labels file (npy:PATH:LABELS) or arrays."
                )
            sources.as_labels(source.labels, len(source), self.num_classes)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras's TF trainer hook: nothing to build from data (the networks are built at construction,
        the optimizers at compile), so no batch is pulled and reduced (which MultiWorkerMirroredStrategy
        cannot do with Keras 3.15)."""
        self._symbolic_build(data_batch=data_batch)

    def _initialize_ddp(self) -> None:
        """Keras ≥ 3.16's torch trainer wraps the whole model in `DistributedDataParallel` whenever a process
        group exists (keras PR #23316). Our step never calls that wrapper (DDP has no double backward; the
        gradients are all-reduced by `backend.value_and_grad`), so the wrapper would only broadcast every
        weight and hold gradient buckets the size of both networks: opt out."""

    def _should_torch_compile(self) -> bool:
        """Keras's torch trainer would hand the step to `torch.compile`, which cannot compile the penalty's
        double backward: with ``jit_compile=True`` the step is captured and compiled by
        `backend.train_step` instead (`backend.torch_capture`)."""
        return False

    def train_step(self, *args):
        """Keras's hook: ``(data)`` on TensorFlow and torch, ``(state, data)`` on JAX."""
        return backend.train_step(self, self.train_execution, *args)

    def make_train_function(self, force: bool = False):
        """Keras's compiled step, its logs read to the host once per call (`host_logs`)."""
        made = super().make_train_function(force)
        if not getattr(self.train_function, "reads_logs_once", False):  # a new one: Keras rebuilt it
            backend.forget_step(self)
            self.train_function = backend.with_host_logs(self.train_function, self.host_logs)
            self.train_function.reads_logs_once = True
        return made if made is None else self.train_function

    def train_execution(self, data) -> dict:
        """The generator steps of one call: rounds of ``n_critic`` critic updates and one generator update.

        ``data``: real samples of shape ``(batch, m·n_critic, *sample_shape)`` for m steps (alone or as
        Keras's ``(x,)`` or ``(x, labels)`` tuple; labels ``(batch, m·n_critic)``); step j trains on
        updates ``j·n_critic …``. A padded execution (`executions`) comes as ``{"rounds": x, "active":
        a}``: step j changes nothing where ``a[:, j]`` is 0. Returns ``{"steps": (m, K + 1)}``: per step, the
        K logged values named by ``log_names`` (global-batch means) and the ``active`` flag.
        """
        rounds, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        if (labels is None) != (self.num_classes is None):
            raise ValueError(
                "A conditional WGANGP (num_classes set) trains on (samples, labels) and an unconditional one "
                "on samples alone; pass y= (or pairs) exactly when num_classes is set."
            )
        active = None
        if isinstance(rounds, dict):
            rounds, active = rounds["rounds"], rounds["active"]
        steps = self.execution_steps if rounds.shape[1] is None else rounds.shape[1] // self.n_critic

        def updates(x, j):  # the n_critic minibatches of step j: x[:, j·n_critic : (j + 1)·n_critic]
            start = (0, j * self.n_critic) + (0,) * (len(x.shape) - 2)
            return ops.slice(x, start, (ops.shape(x)[0], self.n_critic, *x.shape[2:]))

        def step(j):  # generator step j of the call: its logs and whether it trained, as one row
            part, part_labels = updates(rounds, j), None if labels is None else updates(labels, j)
            if active is None:
                logs, flag = self.train_round(part, part_labels), ops.ones((), "float32")
            else:
                flag = ops.take(active[0], j)
                logs = self._masked(lambda: self.train_round(part, part_labels), flag > 0)
            self._keep(log_names=sorted(logs))
            return ops.stack([ops.cast(logs[name], "float32") for name in self.log_names] + [flag])

        rows = backend.repeat(step, steps, [*self.variables, *self.optimizer.variables])
        return {"steps": backend.global_mean(backend.constant(lambda: rows))}

    def _masked(self, train, keep):
        """``train()``'s logs; its writes to the model's and optimizers' variables kept only where the
        boolean tensor ``keep`` holds (else every variable keeps its value from before)."""
        state = [*self.variables, *self.optimizer.variables]
        before = [ops.copy(v.value) for v in state]
        logs = train()
        for variable, value in zip(state, before):
            variable.assign(ops.where(keep, variable.value, value))
        return logs

    @no_automatic_dependency_tracking
    def _keep(self, **values) -> None:
        """Set the step's bookkeeping attributes (plain Python values) without Keras's attribute tracking,
        which would wrap every new list and dict it is given, at every call (≈ 0.3 ms a call)."""
        for name, value in values.items():
            setattr(self, name, value)

    def host_logs(self, logs: dict) -> dict:
        """The compiled call's logs read to the host in one transfer: every step's values in
        ``step_logs`` (a list of dicts, for `callbacks.StepByStep`); returns the last step's."""
        steps = np.asarray(ops.convert_to_numpy(logs["steps"]), "float64")
        steps = steps.reshape(-1, len(self.log_names) + 1)
        self._keep(
            step_logs=[dict(zip(self.log_names, map(float, row[:-1]))) for row in steps if row[-1] > 0]
        )
        return dict(self.step_logs[-1])

    def train_round(self, rounds, labels=None) -> dict:
        """``n_critic`` critic updates, then one generator update; returns the step's logs.

        ``rounds``: real samples of shape ``(batch, n_critic, *sample_shape)``; ``labels``: their classes
        ``(batch, n_critic)`` for a conditional GAN. Logged values are this replica's means: those of the
        last critic update and of the generator update.
        """
        for k in range(self.n_critic):
            self._keep(_critic_index=k)
            logs = self.critic_update(rounds[:, k], None if labels is None else labels[:, k])
        logs["generator_loss"] = self.generator_update(
            ops.shape(rounds)[0], None if labels is None else labels[:, 0]
        )
        if self.ema_generator is not None:
            self.update_ema()
        return logs

    def update_ema(self) -> None:
        """After generator update t (``generator_optimizer.iterations`` = t + 1): w_ema ← β_t·w_ema +
        (1 − β_t)·w, β_t = min(β, (1 + t)/(10 + t)), for trainable weights; others copied."""
        t = ops.cast(self.generator_optimizer.iterations, "float32") - 1.0
        beta = ops.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
        pairs = list(zip(self.ema_generator.weights, self.generator.weights))

        def averaged():
            return [
                ops.cast(beta, w.dtype) * e + (1.0 - ops.cast(beta, w.dtype)) * w if w.trainable else w.value
                for e, w in pairs
            ]

        for (e, _), value in zip(pairs, backend.constant(averaged)):
            e.assign(value)

    def latent_vectors(self, batch_size):
        """z ~ N(0, I) of shape ``(batch_size, latent_dim)`` for a GLOBAL batch of ``batch_size``.

        Override to control the noise (tests do); each replica trains on its own slice of these rows.
        """
        return rng.normal((batch_size, self.latent_dim), seed=self.seed_generator)

    def interpolation_weights(self, batch_size):
        """ε ~ U[0, 1] of shape ``(batch_size,)`` for a GLOBAL batch: the weight of each real sample."""
        return uniform_epsilon(batch_size, seed=self.seed_generator)

    def augmentation_draws(self, batch_size):
        """The uniform numbers of one DiffAugment of a GLOBAL batch: ``(batch_size, augment.DRAWS)``."""
        return augmentation.draw(batch_size, seed=self.seed_generator)

    def _augmented(self, samples, batch_size):
        """``samples`` as the critic sees them: through this replica's rows of a fresh DiffAugment."""
        if not self.augment:
            return samples
        draws = self._local_noise(self.augmentation_draws, batch_size)
        return augmentation.apply(samples, self.augment, draws)

    def _penalised(self, k: int):
        """Whether critic update ``k`` of the round carries the penalty: a Python bool when the lazy
        schedule is static per ``k`` (K = 1, or K divides n_critic: the round starts at a multiple of
        n_critic), else a boolean tensor of the update index."""
        if self.lipschitz != "penalty" or not self.gp_weight:
            return False
        if self.n_critic % self.gp_every == 0:
            return k % self.gp_every == 0
        return ops.equal(ops.mod(self.critic_optimizer.iterations, self.gp_every), 0)

    def _local_noise(self, draw, local_batch_size):
        """This replica's rows of noise drawn for the global batch.

        Every replica draws the same global noise (same seed state) and keeps its own consecutive rows,
        so replicas never share noise and R replicas reproduce the single-device step exactly.
        """
        replicas = backend.num_replicas()
        noise = draw(local_batch_size * replicas)
        if replicas == 1:
            return noise
        start = (backend.replica_index() * local_batch_size,) + (0,) * (len(noise.shape) - 1)
        return ops.slice(noise, start, (local_batch_size, *noise.shape[1:]))

    def critic_update(self, real, labels=None) -> dict:
        """One critic update on this replica's real minibatch ``real`` ``(batch, *sample_shape)``.

        A conditional GAN generates its fakes for the real minibatch's ``labels`` ``(batch,)``, and the
        penalty differentiates the critic w.r.t. the samples with those labels held fixed. The update's
        position in the round (``self._critic_index``, set by `train_round`) decides the lazy penalty.
        """
        k = self._critic_index
        batch_size = ops.shape(real)[0]
        z = self._local_noise(self.latent_vectors, batch_size)
        fake = backend.constant(
            lambda: backend.forward(self.generator, self._conditioned(z, labels), training=True)
        )
        epsilon = self._local_noise(self.interpolation_weights, batch_size)
        real = self._augmented(real, batch_size)
        fake = self._augmented(ops.cast(fake, real.dtype), batch_size)
        critic = self.critic_of(labels)
        penalised = self._penalised(k)
        logged = k == self.n_critic - 1  # train_round logs the round's last update

        def norms():  # differentiable w.r.t. the critic's weights (double backward)
            return gradient_norms(critic, real, fake, epsilon=epsilon, loss_scale=self._penalty_loss_scale())

        def measured():  # for the logs only: first order, no graph
            return backend.constant(norms) if logged else ops.zeros((batch_size,), "float32")

        def objective():
            real_scores, fake_scores = self._paired_scores(real, fake, labels)
            estimate = wasserstein_estimate(real_scores, fake_scores)
            if isinstance(penalised, bool):
                gradient_norm = norms() if penalised else measured()
            else:
                gradient_norm = ops.cond(penalised, norms, measured)
            penalty = penalty_from_norms(gradient_norm, mode=self.penalty, target=self.penalty_target)
            weight = self.gp_weight * self.gp_every * ops.cast(penalised, "float32")
            loss = -estimate
            if self.drift_weight:
                loss = loss + self.drift_weight * drift(real_scores)
            if self.auxiliary_classifier:
                loss = loss + self.ac_weight * self._class_loss(real, labels)
            logged_loss = loss + (self.gp_weight if self.lipschitz == "penalty" else 0.0) * penalty
            loss = loss + weight * penalty
            return self.critic_optimizer.scale_loss(loss), (logged_loss, estimate, penalty, gradient_norm)

        variables = self.critic.trainable_variables
        _, (loss, estimate, penalty, gradient_norm), grads = backend.value_and_grad(objective, variables)
        backend.apply_gradients(self.critic_optimizer, grads, variables)
        if self.lipschitz == "clip":
            for variable in variables:
                variable.assign(ops.clip(variable, -self.clip_value, self.clip_value))
        return {
            "critic_loss": loss,
            "gradient_penalty": penalty,
            "wasserstein_estimate": estimate,
            "gradient_norm": ops.mean(gradient_norm),
        }

    def _penalty_loss_scale(self):
        """The critic optimizer's loss scale under float16 (`LossScaleOptimizer`), else None."""
        optimizer = self.critic_optimizer
        return optimizer.dynamic_scale if isinstance(optimizer, keras.optimizers.LossScaleOptimizer) else None

    def generator_update(self, batch_size, labels=None):
        """One generator update on this replica's ``batch_size`` latent vectors; returns its loss."""
        z = self._local_noise(self.latent_vectors, batch_size)
        draws = self._local_noise(self.augmentation_draws, batch_size) if self.augment else None
        critic = self.critic_of(labels)

        def objective():
            fake = backend.forward(self.generator, self._conditioned(z, labels), training=True)
            fake = augmentation.apply(fake, self.augment, draws)
            loss = generator_loss(critic(fake, training=True))
            if self.auxiliary_classifier:
                loss = loss + self.ac_generator_weight * self._class_loss(fake, labels)
            return self.generator_optimizer.scale_loss(loss), loss

        variables = self.generator.trainable_variables
        _, loss, grads = backend.value_and_grad(objective, variables)
        backend.apply_gradients(self.generator_optimizer, grads, variables)
        return loss

    # -- sampling ---------------------------------------------------------------------------------

    def sample(
        self,
        n: int,
        seed: int | None = None,
        batch_size: int | None = None,
        labels=None,
        use_ema: bool | None = None,
    ) -> np.ndarray:
        """``n`` generator outputs as a float32 numpy array, from z ~ N(0, I) drawn by numpy with ``seed``.

        The generator runs on ``batch_size`` latent vectors at a time (default: as many as make about
        `SAMPLE_VALUES` output values, at most 1024: eager JAX holds ~300 bytes of temporaries per output
        value of a DCGAN, 1.2 GB for 128 images of 64×64×3, so sampling stays within training's memory).

        The latent vectors come from numpy, so the same weights and seed give the same samples on
        every backend. Conditional GANs take ``labels``: one class for all, or ``n`` of them (default:
        the classes in turn, 0, 1, …). ``use_ema``: draw from ``ema_generator`` (None: when there is
        one) or from the raw generator (False).
        """
        if use_ema and self.ema_generator is None:
            raise ValueError("This WGANGP has no generator EMA (ema_decay=None); sample without use_ema.")
        if use_ema is None:
            use_ema = self.ema_generator is not None
        generator = self.ema_generator if use_ema else self.generator
        if batch_size is None:
            batch_size = min(1024, max(1, SAMPLE_VALUES // math.prod(self.sample_shape)))
        n, batch_size = _check_positive_int("n", n), _check_positive_int("batch_size", batch_size)
        z = np.random.default_rng(seed).standard_normal((n, self.latent_dim)).astype("float32")
        if self.num_classes is None:
            if labels is not None:
                raise ValueError("This WGANGP is unconditional (no num_classes); call sample without labels.")
        else:
            labels = np.arange(n) % self.num_classes if labels is None else np.broadcast_to(labels, (n,))
            labels = np.asarray(labels, dtype="int32")
            if labels.min() < 0 or labels.max() >= self.num_classes:
                raise ValueError(
                    f"Labels must lie in 0..{self.num_classes - 1}, got {labels.min()}..{labels.max()}."
                )
        samples = np.empty((n, *self.sample_shape), "float32")
        for i in range(0, n, batch_size):
            part = self._conditioned(
                z[i : i + batch_size], None if labels is None else labels[i : i + batch_size]
            )
            drawn = ops.cast(generator(part, training=False), "float32")
            samples[i : i + batch_size] = ops.convert_to_numpy(drawn)
        return samples

    # -- serialization ----------------------------------------------------------------------------

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "generator": keras.saving.serialize_keras_object(self.generator),
            "critic": keras.saving.serialize_keras_object(self.critic),
            "latent_dim": self.latent_dim,
            "n_critic": self.n_critic,
            "gp_weight": self.gp_weight,
            "penalty": self.penalty,
            "drift_weight": self.drift_weight,
            "penalty_target": self.penalty_target,
            "seed": self.seed,
            "num_classes": self.num_classes,
            "ac_weight": self.ac_weight,
            "ac_generator_weight": self.ac_generator_weight,
            "ema_decay": self.ema_decay,
            "gp_every": self.gp_every,
            "augment": ",".join(self.augment) or None,
            "lipschitz": self.lipschitz,
            "clip_value": self.clip_value,
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for name in ("generator", "critic"):
            config[name] = keras.saving.deserialize_keras_object(config[name])
        return cls(**config)

    def save_own_variables(self, store) -> None:
        """Keras saves no `SeedGenerator` state; ours is saved too, so a resumed run draws the same noise."""
        super().save_own_variables(store)
        store[_SEED_STATE] = ops.convert_to_numpy(self.seed_generator.state.value)

    def load_own_variables(self, store) -> None:
        keys = list(store.keys())
        if _SEED_STATE in keys:
            self.seed_generator.state.assign(store[_SEED_STATE])
        super().load_own_variables({key: store[key] for key in keys if key != _SEED_STATE})

    def get_compile_config(self) -> dict | None:
        if not self.compiled:
            return None
        return {
            name: _backend_neutral(keras.saving.serialize_keras_object(getattr(self, name)))
            for name in ("generator_optimizer", "critic_optimizer")
        }

    def compile_from_config(self, config: dict) -> None:
        self.compile(**{name: keras.saving.deserialize_keras_object(value) for name, value in config.items()})
