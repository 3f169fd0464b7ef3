"""Augmentation, decided in one place: the `aug=` config group becomes one `Augmentation`
(`build_augmentation`), which the training loader calls on every uint8 batch and whose mix, with the
loss it needs, the training step calls on the normalised batch.

- `AUGMENTS` (`aug.name`): none, flip_shift, keras, cutout, random_erasing; each builder returns a `Transform` (or None),
  made of the pure batch functions of `geometric.py` and the flips of `flip.py`;
- `MIXES` (`aug.mix`, null for none): mixup, cutmix, mixup_cutmix, bc; each entry's arguments are the
  group's `mix_<argument>` fields (`aug.mix_alpha`, `aug.mix_cutmix_alpha`, `aug.mix_switch_prob`); `mix.py` holds them and their criteria (`NoMix` without a mix);
- `tta.py`: the test-time views (`trainer.tta`), which evaluation sums over.

Choice arguments are `Literal[...]` (`flip`, `pad_mode`), so validate checks them (Registry.choices)
before any data loads. Every random draw comes from the generator the caller passes (the loader's
augmentation generator, one stream per process, saved in checkpoints), none from the global RNG.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cifarbench.aug.flip import AlternatingFlip, Flip
from cifarbench.aug.geometric import (PAD_MODES, ErasingFill, PadMode, check_pad_mode, cutout_squares, keras_affine,
                                      random_erasing, translate_flip)
from cifarbench.aug.mix import BetweenClass, CutMix, Mix, Mixup, MixupCutMix, NoMix
from cifarbench.core.registry import Registry

# transform(images, indices, generator, epoch) -> images: a uint8 batch (B, C, H, W) on the training device,
# the images' positions (B,) int64 in the loader's dataset (the same for an image every epoch), the
# augmentation generator (on that device) to draw from, and the loader's epoch (1 for the first) →
# the augmented uint8 batch (B, C, H, W).
Transform = Callable[[torch.Tensor, torch.Tensor, torch.Generator, int], torch.Tensor]

AUGMENTS = Registry("augmentation")
MIXES = Registry("mix")
SUPPLIED = ("num_images", "seed")  # builder arguments the run supplies (build_augmentation), not config fields
COMMON = ("name", "mix", "per_epoch")  # every entry's fields beside its builder's (and the mixes' mix_*)

__all__ = ["AUGMENTS", "COMMON", "MIXES", "PAD_MODES", "SUPPLIED", "Augmentation", "Flip", "Mix", "PadMode", "Transform",
           "build_augmentation", "cutout", "erasing", "flip_shift", "keras", "mix_fields"]


@AUGMENTS.register("none")
def no_augment() -> None:
    """No augmentation (study §1's baseline, docs/studies.md)."""
    return None


@AUGMENTS.register("flip_shift")
def flip_shift(max_shift: int = 4, flip: Flip = True, pad_mode: PadMode = "zeros", *, num_images: int = 0,
               seed: int = 0) -> Transform:
    """The standard CIFAR augmentation (He et al. 2016): translate by up to ±max_shift px (pad-and-crop,
    `geometric.translate_flip`), mirror each image with p = ½ (`flip=True`) or on alternate epochs
    (`flip="alternating"`, Jordan 2024: `flip.AlternatingFlip`, whose phase is drawn from `seed` for the
    `num_images` images of the dataset; the mirror comes before the shift)."""
    alternating = AlternatingFlip(num_images, seed) if flip == "alternating" else None
    random_flip = flip is True
    check_pad_mode(pad_mode)

    def transform(images, indices, generator, epoch):
        if alternating is not None:
            images = alternating(images, indices, epoch)
        return translate_flip(images, generator, max_shift, random_flip, pad_mode)

    return transform


@AUGMENTS.register("keras")
def keras(rotation: float = 0.0, width_shift: float = 0.0, height_shift: float = 0.0, shear: float = 0.0,
          zoom: float = 0.0, channel_shift: float = 0.0, horizontal_flip: bool = True) -> Transform:
    """Keras ImageDataGenerator's transforms (`geometric.keras_affine`), as study §1 and §2 use them
    (docs/studies.md)."""
    return lambda images, indices, generator, epoch: keras_affine(
        images, generator, rotation, width_shift, height_shift, shear, zoom, channel_shift, horizontal_flip)


@AUGMENTS.register("cutout")
def cutout(size: int = 16, max_shift: int = 4, flip: Flip = True, pad_mode: PadMode = "zeros", *,
           num_images: int = 0, seed: int = 0) -> Transform:
    """flip_shift, then a size×size cutout square per image (DeVries & Taylor 2017,
    `geometric.cutout_squares`)."""
    base = flip_shift(max_shift, flip, pad_mode, num_images=num_images, seed=seed)
    return lambda images, indices, generator, epoch: cutout_squares(base(images, indices, generator, epoch),
                                                                    generator, size)


@AUGMENTS.register("random_erasing")
def erasing(probability: float = 0.5, scale: tuple[float, float] = (0.02, 0.4),
            ratio: tuple[float, float] = (0.3, 1 / 0.3), fill: ErasingFill = "random", max_shift: int = 4,
            flip: Flip = True, pad_mode: PadMode = "zeros", *, num_images: int = 0, seed: int = 0) -> Transform:
    """flip_shift, then random erasing (Zhong et al. 2020, `geometric.random_erasing`): with probability
    `probability` per image, a rectangle of area fraction in `scale` and aspect (height/width) in `ratio`
    filled with random values or the per-channel mean (`fill`)."""
    base = flip_shift(max_shift, flip, pad_mode, num_images=num_images, seed=seed)
    scale, ratio = tuple(scale), tuple(ratio)
    return lambda images, indices, generator, epoch: random_erasing(base(images, indices, generator, epoch),
                                                                    generator, probability, scale, ratio, fill)


MIXES.register("mixup", info="Zhang et al. 2018")(Mixup)
MIXES.register("bc", info="Tokozume et al. 2018")(BetweenClass)
MIXES.register("cutmix", info="Yun et al. 2019")(CutMix)
MIXES.register("mixup_cutmix", info="timm's Mixup: mixup or CutMix per batch")(MixupCutMix)


def mix_fields() -> tuple[str, ...]:
    """The aug group's fields of the mixes: `mix_<argument>` for each argument of a MIXES entry
    (beside the `num_classes` and `label_smoothing` the run supplies)."""
    return tuple(dict.fromkeys(f"mix_{field}" for name in MIXES.names() for field in MIXES.fields(name)))


@dataclass(frozen=True)
class Augmentation:
    """What `aug=` decides for a run (build it with `build_augmentation`).

    Called by the training loader on every batch: `augmentation(images, indices, generator, epoch)`, a
    `Transform` (uint8 (B, C, H, W) → uint8 (B, C, H, W); the identity for `aug=none`), or with
    `per_epoch` (`aug.per_epoch`) once per epoch on the whole training set (data.DeviceLoader). `mix` is
    called by the training step on the normalised batch, `mix(images, labels, generator)`, and
    `mix.criterion` is the loss the step trains with (cross-entropy with label smoothing without a mix;
    see aug/mix.py).
    """
    transform: Transform | None
    mix: Mix
    per_epoch: bool = False

    def __call__(self, images: torch.Tensor, indices: torch.Tensor, generator: torch.Generator,
                 epoch: int) -> torch.Tensor:
        return images if self.transform is None else self.transform(images, indices, generator, epoch)


def build_augmentation(cfg, num_classes: int, num_images: int, seed: int = 0,
                       label_smoothing: float = 0.0) -> Augmentation:
    """The `aug` config group as an Augmentation, for a training set of `num_images` images in
    `num_classes` classes, a run seeded with `seed` (the alternating flip's phase) and trained with
    `label_smoothing` (the criterion's). Null fields take the builders' defaults. Raises ConfigError for an
    unknown name or field."""
    fields = {k: v for k, v in cfg.items() if k not in COMMON and not k.startswith("mix_")}
    declared = AUGMENTS.fields(cfg.name)
    supplied = {k: v for k, v in {"num_images": num_images, "seed": seed}.items() if declared is None or k in declared}
    transform = AUGMENTS.build(cfg.name, **fields, **supplied)
    kind, per_epoch = cfg.get("mix"), bool(cfg.get("per_epoch"))
    if kind is None:
        return Augmentation(transform, NoMix(label_smoothing), per_epoch)
    own = MIXES.fields(kind)
    arguments = {k[len("mix_"):]: v for k, v in cfg.items() if k.startswith("mix_")}
    mix = MIXES.build(kind, num_classes, label_smoothing,
                      **{k: v for k, v in arguments.items() if own is None or k in own})
    return Augmentation(transform, mix, per_epoch)
