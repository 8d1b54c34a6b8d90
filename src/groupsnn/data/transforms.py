"""Image transforms on CHW tensors (no torchvision): crops, flips, Cutout, AutoAugment, normalisation.

Geometric and colour ops take and return uint8 images; ``ToFloat`` + ``Normalize`` end a pipeline.
Every transform is called as ``t(img, generator=None)``: randomness comes from ``generator`` when
given, else from torch's global RNG (which DataLoader seeds per worker), so seeds reproduce runs.
"""
import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

Generator = Optional[torch.Generator]


def _rand(generator: Generator) -> float:
    return torch.rand((), generator=generator).item()


def _randint(high: int, generator: Generator) -> int:
    """Uniform integer in [0, high)."""
    return int(torch.randint(high, (), generator=generator))


class Compose:
    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        for t in self.transforms:
            img = t(img, generator)
        return img

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class ToFloat:
    """uint8 [0, 255] -> float32 [0, 1]."""

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        return img.float().div_(255)


class Normalize:
    """Per-channel ``(x - mean) / std``."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor(mean).view(-1, 1, 1)
        self.std = torch.tensor(std).view(-1, 1, 1)

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        return (img - self.mean) / self.std


class RandomCrop:
    """Zero-pad each side by ``padding``, then crop a random ``size`` x ``size`` window."""

    def __init__(self, size: int, padding: int = 0):
        self.size, self.padding = size, padding

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        if self.padding:
            img = F.pad(img, [self.padding] * 4)
        i = _randint(img.shape[-2] - self.size + 1, generator)
        j = _randint(img.shape[-1] - self.size + 1, generator)
        return img[..., i:i + self.size, j:j + self.size]


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        return img.flip(-1) if _rand(generator) < self.p else img


class Cutout:
    """Zero one ``length`` x ``length`` square at a random centre, clipped at the border (DeVries & Taylor, 2017)."""

    def __init__(self, length: int = 16):
        self.length = length

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        h, w = img.shape[-2:]
        y, x = _randint(h, generator), _randint(w, generator)
        half = self.length // 2
        img = img.clone()
        img[..., max(0, y - half):y + half, max(0, x - half):x + half] = 0
        return img


# ---- resizing (ImageNet) ---------------------------------------------------------------------

def resize(img: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear, antialiased resize of a uint8 CHW image to ``size`` = (height, width)."""
    out = F.interpolate(img[None].float(), size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0].round_().clamp_(0, 255).to(img.dtype)


class Resize:
    """Scale the shorter side to ``size``, keeping the aspect ratio."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        h, w = img.shape[-2:]
        short, long = min(h, w), max(h, w)
        new_long = int(self.size * long / short)
        return resize(img, (self.size, new_long) if h <= w else (new_long, self.size))


class CenterCrop:
    def __init__(self, size: int):
        self.size = size

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        h, w = img.shape[-2:]
        i, j = round((h - self.size) / 2), round((w - self.size) / 2)
        return img[..., i:i + self.size, j:j + self.size]


class RandomResizedCrop:
    """Crop a random area fraction in ``scale`` with aspect ratio in ``ratio`` and resize it (Szegedy et al.)."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = size, scale, ratio

    def window(self, height: int, width: int, generator: Generator = None) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop; after 10 failed draws, the centred crop closest to ``ratio``."""
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            area = height * width * (self.scale[0] + (self.scale[1] - self.scale[0]) * _rand(generator))
            aspect = math.exp(log_lo + (log_hi - log_lo) * _rand(generator))
            w, h = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < w <= width and 0 < h <= height:
                return _randint(height - h + 1, generator), _randint(width - w + 1, generator), h, w
        aspect = min(max(width / height, self.ratio[0]), self.ratio[1])
        w, h = (width, round(width / aspect)) if width / height <= aspect else (round(height * aspect), height)
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        top, left, h, w = self.window(*img.shape[-2:], generator)
        return resize(img[..., top:top + h, left:left + w], (self.size, self.size))


# ---- AutoAugment (Cubuk et al., CVPR 2019), CIFAR-10 policy -------------------------------------
# Op semantics and magnitudes follow torchvision's tensor implementation of AutoAugment.

def _warp(img: Tensor, matrix: list[list[float]]) -> Tensor:
    """Nearest-neighbour resample: output pixel p reads input pixel ``matrix @ [p, 1]``.

    Coordinates are in pixels, measured from the image centre; pixels mapped from outside are 0.
    (The same pixels as ``affine_grid`` + ``grid_sample(mode="nearest")``, without their
    normalised coordinates, and about twice as fast on a 32x32 image.)
    """
    h, w = img.shape[-2:]
    y, x = torch.meshgrid(torch.arange(h) - (h - 1) / 2, torch.arange(w) - (w - 1) / 2, indexing="ij")
    (a, b, c), (d, e, f) = matrix
    src_x = torch.round(a * x + b * y + c + (w - 1) / 2).long()
    src_y = torch.round(d * x + e * y + f + (h - 1) / 2).long()
    inside = (src_x >= 0) & (src_x < w) & (src_y >= 0) & (src_y < h)
    return img[..., src_y.clamp(0, h - 1), src_x.clamp(0, w - 1)] * inside


def _shear_x(img: Tensor, m: float) -> Tensor:  # about the top-left corner, like PIL's AutoAugment
    return _warp(img, [[1, m, m * img.shape[-2] / 2], [0, 1, 0]])


def _shear_y(img: Tensor, m: float) -> Tensor:
    return _warp(img, [[1, 0, 0], [m, 1, m * img.shape[-1] / 2]])


def _translate_x(img: Tensor, m: float) -> Tensor:  # m: signed fraction of the width
    return _warp(img, [[1, 0, -int(m * img.shape[-1])], [0, 1, 0]])


def _translate_y(img: Tensor, m: float) -> Tensor:
    return _warp(img, [[1, 0, 0], [0, 1, -int(m * img.shape[-2])]])


def _rotate(img: Tensor, degrees: float) -> Tensor:  # counter-clockwise about the centre
    cos, sin = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return _warp(img, [[cos, -sin, 0], [sin, cos, 0]])


def _blend(img: Tensor, other: Tensor, factor: float) -> Tensor:
    """``factor * img + (1 - factor) * other``: 0 gives ``other``, 1 the image, > 1 extrapolates."""
    return (factor * img + (1 - factor) * other).clamp(0, 255).to(img.dtype)


def _grayscale(img: Tensor) -> Tensor:
    r, g, b = img.float().unbind(-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).to(img.dtype).unsqueeze(-3)


def _contrast(img: Tensor, factor: float) -> Tensor:
    return _blend(img, _grayscale(img).float().mean(), factor)


def _sharpness(img: Tensor, factor: float) -> Tensor:
    """Blend with a copy smoothed by the 3x3 kernel [[1,1,1],[1,5,1],[1,1,1]]/13; borders stay sharp."""
    x, (h, w) = img.float(), img.shape[-2:]
    box = sum(x[..., i:h - 2 + i, j:w - 2 + j] for i in range(3) for j in range(3))
    smooth = img.clone()
    smooth[..., 1:-1, 1:-1] = ((box + 4 * x[..., 1:-1, 1:-1]) / 13).round().to(img.dtype)
    return _blend(img, smooth, factor)


def _posterize(img: Tensor, bits: float) -> Tensor:
    return img & ((0xFF << (8 - int(bits))) & 0xFF)


def _autocontrast(img: Tensor, _: float = 0.0) -> Tensor:
    """Stretch each channel to [0, 255]; constant channels are left as they are."""
    lo = img.amin(dim=(-2, -1), keepdim=True).float()
    hi = img.amax(dim=(-2, -1), keepdim=True).float()
    flat = hi == lo
    scale = torch.where(flat, 1.0, 255 / (hi - lo).clamp(min=1))
    lo = torch.where(flat, 0.0, lo)
    return ((img - lo) * scale).clamp(0, 255).to(img.dtype)


def _equalize_channel(channel: Tensor) -> Tensor:
    hist = torch.bincount(channel.flatten().long(), minlength=256)
    step = hist[hist > 0][:-1].sum() // 255  # PIL's ImageOps.equalize: ignore the last used bin
    if step == 0:
        return channel
    lut = (torch.cumsum(hist, 0) + step // 2) // step
    lut = F.pad(lut, [1, 0])[:-1].clamp(0, 255)
    return lut[channel.long()].to(channel.dtype)


def _equalize(img: Tensor, _: float = 0.0) -> Tensor:
    return torch.stack([_equalize_channel(c) for c in img])


def _bins(end: float, start: float = 0.0) -> list[float]:
    return torch.linspace(start, end, 10).tolist()


# name: (op(img, magnitude), magnitude of bins 0..9 (None: takes none), random sign?)
AUGMENT_OPS: dict[str, tuple[Callable[[Tensor, float], Tensor], Optional[list], bool]] = {
    "ShearX": (_shear_x, _bins(0.3), True),
    "ShearY": (_shear_y, _bins(0.3), True),
    "TranslateX": (_translate_x, _bins(150 / 331), True),
    "TranslateY": (_translate_y, _bins(150 / 331), True),
    "Rotate": (_rotate, _bins(30.0), True),
    "Brightness": (lambda img, m: _blend(img, torch.zeros_like(img), 1 + m), _bins(0.9), True),
    "Color": (lambda img, m: _blend(img, _grayscale(img), 1 + m), _bins(0.9), True),
    "Contrast": (lambda img, m: _contrast(img, 1 + m), _bins(0.9), True),
    "Sharpness": (lambda img, m: _sharpness(img, 1 + m), _bins(0.9), True),
    "Posterize": (_posterize, (8 - (torch.arange(10) / (9 / 4)).round()).tolist(), False),
    "Solarize": (lambda img, m: torch.where(img >= m, 255 - img, img), _bins(0.0, start=255.0), False),
    "AutoContrast": (_autocontrast, None, False),
    "Equalize": (_equalize, None, False),
    "Invert": (lambda img, m: 255 - img, None, False),
}

# 25 sub-policies of (op, probability, magnitude bin), as torchvision's AutoAugmentPolicy.CIFAR10.
CIFAR10_POLICY = [
    (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
    (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
    (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
    (("Color", 0.9, 9), ("Equalize", 0.6, None)),
    (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, None), ("Invert", 0.1, None)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
]


def apply_op(img: Tensor, name: str, magnitude_bin: Optional[int] = None, negate: bool = False) -> Tensor:
    """Apply AutoAugment op ``name`` at ``magnitude_bin`` (0..9), negated if ``negate`` and the op is signed."""
    op, magnitudes, signed = AUGMENT_OPS[name]
    magnitude = 0.0 if magnitudes is None else magnitudes[magnitude_bin]
    return op(img, -magnitude if signed and negate else magnitude)


class AutoAugment:
    """Pick one sub-policy at random; apply each of its two ops with its probability (uint8 RGB CHW)."""

    def __init__(self, policy: Sequence = CIFAR10_POLICY):
        self.policy = policy

    def __call__(self, img: Tensor, generator: Generator = None) -> Tensor:
        for name, p, magnitude_bin in self.policy[_randint(len(self.policy), generator)]:
            if _rand(generator) < p:
                img = apply_op(img, name, magnitude_bin, negate=_rand(generator) < 0.5)
        return img
