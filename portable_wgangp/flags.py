"""What each flag of the command line means, for ``--help``: the group of every `train` setting, what it
does with its unit, the values it takes (``metavar``), and three examples per command.

The choices of a closed set are shown in the metavar (``{two_sided,one_sided,zero_centered}``) but checked
by `config.validate`, so a wrong value gets the same message from a flag and from a ``--config`` file.
"""

from __future__ import annotations

from portable_wgangp.config import CHOICES, EXTRACTORS, IMAGE_DEFAULTS, TrainConfig

GROUPS = {
    "data": "data",
    "networks": "networks",
    "training": "training",
    "lipschitz": "Lipschitz constraint",
    "distribution": "distribution",
    "evaluation": "evaluation",
    "run": "run folder",
}

# setting: (group, metavar or None, what it does)
TRAIN = {
    "dataset": (
        "data",
        "DATA",
        "the real samples: gaussians8, gaussians25, swissroll (2-D toys, generated), digits (scikit-learn's "
        "8x8), npz:PATH[:KEY] (arrays in memory), npy:PATH[:LABELS] (memory-mapped), images:DIR (PNG/JPEG, "
        "sub-folders are classes, streamed), cifar10:PATH (CIFAR-10's training split and labels from "
        "cifar-10-python.tar.gz or its cifar-10-batches-py folder, never downloaded); npz, npy and images "
        "PATH and DIR may be gs:// or s3:// URLs",
    ),
    "image_size": ("data", "PIXELS", "images:DIR only: images are resized to PIXELS x PIXELS"),
    "workers": ("data", "N", "threads that read and decode images ahead of the step (0: read in the step)"),
    "conditional": ("data", None, "train on the data's class labels (a conditional generator and critic)"),
    "critic_head": (
        "networks",
        "{projection,ac}",
        "--conditional only: how the critic takes the labels: projection (a projection term, Miyato & Koyama "
        "2018) or ac (an auxiliary classifier, the paper's AC-WGAN)",
    ),
    "model": (
        "networks",
        "{mlp,dcgan,resnet}",
        "the networks: mlp for 2-D data; dcgan (8x8 to 64x64) or resnet (the paper's 32x32) for images",
    ),
    "width": ("networks", "UNITS", "mlp only: units per hidden layer"),
    "depth": ("networks", "LAYERS", "mlp only: hidden layers"),
    "base": ("networks", "CHANNELS", "dcgan and resnet: channels of the first (widest-resolution) layer"),
    "latent_dim": ("networks", "DIMS", "size of the generator's noise vector z"),
    "steps": ("training", "N", "generator steps (each after --n-critic critic steps)"),
    "batch_size": ("training", "N", "global batch per step, whatever the number of replicas"),
    "n_critic": ("training", "N", "critic updates per generator update"),
    "lr": ("training", "RATE", "Adam's learning rate for both networks (see --lr-critic, --lr-generator)"),
    "lr_critic": ("training", "RATE", "the critic's learning rate (two time-scale updates; default --lr)"),
    "lr_generator": ("training", "RATE", "the generator's learning rate (default --lr)"),
    "lr_decay": (
        "training",
        "{linear,constant}",
        "learning-rate schedule: linear to 0 over --steps, or none",
    ),
    "beta_1": ("training", "BETA", "Adam's first-moment decay, in [0, 1)"),
    "beta_2": ("training", "BETA", "Adam's second-moment decay, in [0, 1)"),
    "seed": (
        "training",
        "N",
        "seed of the weights, the noise and the data order, 0..2**32-1 (the same run on every backend)",
    ),
    "ema": ("training", None, "sample and evaluate with an exponential moving average of the generator"),
    "ema_decay": ("training", "DECAY", "--ema's decay per step, in [0, 1)"),
    "augment": (
        "training",
        "POLICY",
        "DiffAugment for images: comma-separated color, translation, cutout, applied to real and fake "
        "(default none)",
    ),
    "steps_per_execution": (
        "training",
        "N",
        "generator steps per call of the compiled step; every step is still logged. Raise it (8-32) on "
        "TPUs and for small networks, where the host's cost per call rivals the step's maths; checkpoints, "
        "--eval-every and signals act at the end of a call",
    ),
    "jit_compile": (
        "training",
        None,
        "torch: run the whole step as one program compiled by torch.compile (JAX and TensorFlow always "
        "compile it). Pays on GPUs and in long runs: the first step compiles for 1-3 min on a CPU (cached "
        "for later runs), then the toy step runs ~3x faster; the step runs eagerly, with a warning, where "
        "it cannot be captured",
    ),
    "lipschitz": (
        "lipschitz",
        "{penalty,clip,spectral}",
        "how the critic is kept 1-Lipschitz: the gradient penalty, weight clipping (the original WGAN, "
        "RMSprop at 5e-5) or spectral normalization",
    ),
    "penalty": (
        "lipschitz",
        "{" + ",".join(CHOICES["penalty"]) + "}",
        "two_sided (||grad||-1)^2 (the paper), one_sided max(0, ||grad||-1)^2, zero_centered ||grad||^2",
    ),
    "gp_weight": ("lipschitz", "LAMBDA", "the penalty's weight (lambda), >= 0"),
    "gp_every": ("lipschitz", "K", "lazy penalty: on every K-th critic update only, weighted by K"),
    "clip_value": ("lipschitz", "C", "--lipschitz clip: critic weights are clipped to [-C, C]"),
    "strategy": (
        "distribution",
        "STRATEGY",
        "data parallelism: auto or none on every backend; tensorflow: tpu, mirrored, multi_worker; jax: "
        "data_parallel; torch: ddp (under torchrun). May change on --resume",
    ),
    "eval_every": (
        "evaluation",
        "N",
        "measure quality every N generator steps (0: at the end only); the best model goes to OUT/best.keras",
    ),
    "extractor": (
        "evaluation",
        "NAME",
        "image features for FID/KID: " + ", ".join(EXTRACTORS) + " (PATH: the FID Inception's converted "
        "weights, for FID comparable with papers; default: the data's)",
    ),
    "checkpoint_every": (
        "run",
        "N",
        "save OUT/checkpoint.keras every N generator steps, in the background; with --steps-per-execution "
        "M, at the end of the call that reaches each multiple of N (exactly every N when M divides N)",
    ),
}

# --preset's help: the presets and the data each is for (config.PRESETS holds their settings).
PRESET = (
    "paper: gan_toy.py's exact setting (2-D toys); cifar10, cifar10-conditional: gan_cifar_resnet.py's "
    "ResNet, unconditional or AC-WGAN (cifar10:PATH; see docs/images.md). Flags override a preset"
)

EXAMPLES = {
    "train": [
        "portable-wgangp train --out runs/demo",
        "portable-wgangp train --dataset images:photos/ --model resnet --conditional --out runs/photos",
        "portable-wgangp train --resume --steps 20000 --out gs://my-bucket/runs/photos",
    ],
    "sample": [
        "portable-wgangp sample --checkpoint runs/demo/checkpoint.keras --out samples.png",
        "portable-wgangp sample --checkpoint runs/digits/checkpoint.keras --label 7 --n 64 --out sevens.png",
        "portable-wgangp sample --checkpoint gs://b/runs/x/checkpoint.keras --n 10000 --out x.npy",
    ],
    "evaluate": [
        "portable-wgangp evaluate --checkpoint runs/demo/checkpoint.keras",
        "portable-wgangp evaluate --checkpoint runs/digits/checkpoint.keras --dataset digits --n 1000",
        "portable-wgangp evaluate --checkpoint runs/c/checkpoint.keras --dataset images:cifar/ --stats s.npz",
    ],
    "check": [
        "portable-wgangp check",
        "portable-wgangp check --strategy mirrored --replicas 4 --dtype-policy mixed_float16 --no-timing",
        "portable-wgangp check --reference cpu --json reference.json",
    ],
    "stats": [
        "portable-wgangp stats --dataset images:photos/ --out photos-stats.npz",
        "portable-wgangp stats --dataset npz:faces.npz:x --extractor inception-v3 --out faces-stats.npz",
        "portable-wgangp stats --dataset digits --out digits-stats.npz",
    ],
}


def help_text(name: str) -> str:
    """``name``'s help: what it does, then its default (and the images' default where it differs)."""
    text = TRAIN[name][2]
    default = getattr(TrainConfig(), name)
    if isinstance(default, bool):
        return f"{text} (default off)"
    if default in ("", None):  # the text says what an unset value means
        return text
    images = IMAGE_DEFAULTS.get(name)
    return f"{text} (default {default}" + (f"; images {images})" if images is not None else ")")


def epilog(command: str) -> str:
    return "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command])
