"""Classify image files with a trained checkpoint, as study §3 does with photos from the web.

    cifarbench predict ckpt=outputs/.../checkpoints/best.pt images=[car.jpg,jet.png] [topk=3] [json=out.json]

`images` takes files, folders (their image files, by extension) and glob patterns (`'photos/*.jpg'`,
`photos/**/*.png`), each expanded in sorted order; at the end a line counts what was classified and
what was skipped (files of a folder or pattern that are not images by their extension, and files
that could not be read). Each image is converted to the run's dataset's form (RGB for CIFAR and SVHN,
grey for MNIST and Fashion-MNIST), resized to its size (32×32 or 28×28, Lanczos) and normalised exactly
as in training (the checkpoint carries the fitted normalisation). A missing or unreadable file is reported and the
others are still classified; the exit code is 1 if any failed.

What photo libraries write is read as it looks: the EXIF orientation is applied; 16-bit channels
are scaled to 8 bits (not clipped); palette, CMYK and greyscale images become RGB; transparent
pixels are composited on white (a viewer shows them on white; dropping alpha would expose whatever
colour the editor left under them); an animation (GIF, APNG) gives its first frame. Images larger
than Pillow's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`) are refused, not decoded.
"""
from __future__ import annotations

import contextlib
import glob
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch import nn

from cifarbench.run.checkpoint import load_checkpoint
from cifarbench.data import dataset_source
from cifarbench.data.preprocess import restore_preprocess
from cifarbench.aug.tta import tta_logits
from cifarbench.commands.args import key_value_args
from cifarbench.core.device import resolve_amp
from cifarbench.engine.precision import half_network
from cifarbench.core.files import atomic_write_json
from cifarbench.core.registry import ConfigError
from cifarbench.models import build_model


@dataclass
class Trained:
    """A checkpoint's model set up to evaluate as its run did: `weights` "ema" (the averaged weights,
    which the run evaluated) or "model", the run's `tta` mode, its fitted `preprocess`, its
    `memory_format` (the inputs' layout, channels_last or not), `shape`, its dataset's (C, H, W), and
    `amp`: the autocast dtype its `trainer.amp` means on this device (None: fp32), so a bf16 run is
    evaluated in bf16 as its run was; where that differs from the run (fp16 without CUDA, or `auto`
    trained on a GPU), `describe` says which precision was used. A `trainer.precision=half` run's
    `model` is the half network in that dtype (`half`; norm layers fp32, no autocast), as its run
    evaluated; its EMA weights, which the run kept and evaluated in fp32, evaluate in fp32."""
    model: nn.Module
    preprocess: nn.Module
    classes: list[str]
    config: dict
    weights: str
    tta: str
    memory_format: torch.memory_format
    shape: tuple[int, int, int]
    amp: torch.dtype | None = None
    half: torch.dtype | None = None

    def autocast(self):
        """The autocast context of `amp` on the model's device (a no-op for fp32)."""
        device = next(self.model.parameters()).device
        return torch.autocast(device.type, dtype=self.amp) if self.amp else contextlib.nullcontext()

    def describe(self) -> str:
        """One line saying how this model evaluates, for the output of inspect and predict."""
        dtype = self.half or self.amp
        precision = (str(dtype).removeprefix("torch.") if dtype else "fp32") + (" network" if self.half else "")
        return (f"evaluated as its run did: {'EMA' if self.weights == 'ema' else 'trained'} weights, "
                f"trainer.tta={self.tta}, data.preprocess={self.config['data']['preprocess']} "
                f"(statistics fitted by the run), precision {precision} "
                f"(trainer.amp={self.config['trainer'].get('amp', 'off')} on {self.config['trainer'].get('device')})")


def load_trained(path: str | Path, device: str = "cpu") -> Trained:
    """The model of a checkpoint, in eval mode, as its run evaluated it: its EMA weights when it was
    trained with EMA, its TTA mode and memory format. Raises CheckpointError for an unusable file."""
    checkpoint = load_checkpoint(path, map_location=device)
    config = checkpoint.config
    shape = dataset_source(config["data"]).shape
    model = build_model(OmegaConf.create(config["model"]), len(checkpoint.classes), shape)
    weights = "ema" if checkpoint.ema else "model"
    model.load_state_dict(checkpoint.ema["module"] if weights == "ema" else checkpoint.model)
    memory_format = torch.channels_last if config["trainer"].get("channels_last") else torch.contiguous_format
    try:
        amp = resolve_amp(config["trainer"].get("amp", "off"), torch.device(device))
    except ConfigError:  # fp16 on a device without CUDA: fp32 here, and `describe` names both
        amp = None
    model, half = model.to(device, memory_format=memory_format), None
    if config["trainer"].get("precision") == "half":
        amp, half = None, (amp if weights == "model" else None)
        model = half_network(model, half) if half else model
    return Trained(model.eval(), restore_preprocess(checkpoint.preprocess).to(device), checkpoint.classes, config,
                   weights, config["trainer"].get("tta", "none"), memory_format, shape, amp, half)


def read_image(path: str | Path, shape: tuple[int, int, int] = (3, 32, 32)) -> np.ndarray:
    """An image file as a viewer shows it, as `shape` (C, H, W) uint8: RGB for 3 channels, grey (ITU-R
    601 luma, Pillow's "L") for 1; resized with Lanczos as study §3 does.

    Raises ValueError with one line naming the file when it is missing, not an image, in a form
    with no defined 8-bit meaning, or a possible decompression bomb.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)  # over the limit: refuse, don't decode
            with Image.open(path) as image:  # positioned on the first frame of an animation
                rgb = _to_rgb(ImageOps.exif_transpose(image))
                size = (shape[2], shape[1])  # Pillow's (width, height)
                pixels = (rgb if shape[0] == 3 else rgb.convert("L")).resize(size, Image.Resampling.LANCZOS)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"{path}: refused as a possible decompression bomb ({e})") from None
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"{path}: not an image that Pillow can read ({e})") from None
    except ValueError as e:  # a mode Pillow opens but cannot convert to RGB
        raise ValueError(f"{path}: {e}") from None
    pixels = np.asarray(pixels)
    return (pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)).copy()


# Pillow's modes for 16-bit greyscale (PNG, TIFF); 32-bit "I" is read on the same 16-bit scale.
_SIXTEEN_BIT_GREY = ("I", "I;16", "I;16L", "I;16B", "I;16N")


def _to_rgb(image):
    """8-bit RGB of a decoded PIL image: 16-bit grey scaled by 255/65535, transparency composited on white."""
    from PIL import Image

    if image.mode == "F":
        raise ValueError("floating-point pixels have no standard range; save it with 8 or 16 bits per channel")
    if image.mode in _SIXTEEN_BIT_GREY:
        grey = np.clip(np.asarray(image, dtype=np.float64), 0, 65535)
        image = Image.fromarray(np.rint(grey / 257).astype(np.uint8))
    # (16-bit RGB(A) and grey+alpha PNGs are already 8-bit here: Pillow keeps their high bytes.)
    if image.has_transparency_data:  # an alpha channel, or a transparent palette entry or colour
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba).convert("RGB")
    return image.convert("RGB")


@torch.no_grad()
def classify(trained: Trained, images: np.ndarray, topk: int = 3) -> list[list[tuple[str, float]]]:
    """The `topk` (class, probability) pairs of each of `images` ((N, C, H, W) uint8, the run's shape), best first:
    softmax of the logits summed over the run's TTA views, as the run's evaluation computes them."""
    batch = torch.from_numpy(images).to(next(trained.model.parameters()).device)
    inputs = trained.preprocess(batch).contiguous(memory_format=trained.memory_format)
    with trained.autocast():
        logits = tta_logits(trained.model, inputs, trained.tta)
    probabilities = logits.float().softmax(1)
    top = probabilities.topk(min(topk, probabilities.shape[1]), dim=1)
    return [[(trained.classes[i], p) for p, i in zip(ps.tolist(), idx.tolist())] for ps, idx in zip(*top)]


USAGE = "usage: cifarbench predict ckpt=PATH images=[a.jpg,photos/,'photos/*.png'] [topk=3] [json=out.json]"


def expand_images(specs: list[str]) -> tuple[list[str], list[str], list[str]]:
    """Files, folders and glob patterns → (files to read, in order; files passed over because their
    extension is not an image format's; one-line errors for folders and patterns that give nothing).
    A folder gives its image files, a pattern its matches (`**` recursive), each sorted; a plain
    path is kept as it is (read_image reports it if it is missing or not an image)."""
    from PIL import Image

    image_suffixes = set(Image.registered_extensions())
    files, passed_over, errors = [], [], []
    for spec in specs:
        if Path(spec).is_dir():
            found = sorted(str(p) for p in Path(spec).iterdir() if p.is_file())
        elif glob.has_magic(spec):
            found = sorted(p for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            files.append(spec)
            continue
        images = [p for p in found if Path(p).suffix.lower() in image_suffixes]
        files += images
        passed_over += [p for p in found if p not in images]
        if not images:
            errors.append(f"{spec}: no image files {'in this folder' if Path(spec).is_dir() else 'match'}")
    return files, passed_over, errors


def main(argv: list[str] | None = None) -> int:
    """Classify the images of `images=` with `ckpt=`; exit 1 if any could not be read."""
    args = key_value_args(list(argv if argv is not None else sys.argv[1:]), USAGE, required=("ckpt", "images"))
    specs = [str(p) for p in (args.images if OmegaConf.is_list(args.images) else [args.images])]
    paths, passed_over, errors = expand_images(specs)
    trained = load_trained(args.ckpt)
    print(f"{args.ckpt}: {trained.describe()}")
    results, images, readable = {}, [], []
    for path in paths:
        try:
            images.append(read_image(path, trained.shape))
            readable.append(path)
        except ValueError as e:
            errors.append(str(e))
            results[path] = {"error": str(e)}
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    if images:
        for path, top in zip(readable, classify(trained, np.stack(images), int(args.get("topk", 3)))):
            results[path] = {"prediction": top[0][0], "top": [{"class": c, "probability": p} for c, p in top]}
            print(f"{path}: {top[0][0]}   " + "  ".join(f"{c} {p:.1%}" for c, p in top))
    unreadable = len(paths) - len(readable)
    print(f"classified {len(readable)} image(s); skipped {unreadable} unreadable and {len(passed_over)} not an "
          f"image by extension" + (f" ({', '.join(passed_over)})" if passed_over else ""))
    if args.get("json"):
        atomic_write_json(args.json, {p: results[p] for p in paths})
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
