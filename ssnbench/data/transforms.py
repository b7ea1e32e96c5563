"""Image loading (decode, border crop, resize once) and the paired augmentation.

Both images of a case get the SAME geometric transform: it is applied once to the stacked pair
[2, 3, S, S], so they cannot drift apart. Photometric jitter is drawn per image (the two cameras
differ anyway). Per-item cost is a few small tensor ops, which keeps the loader far ahead of a CPU
training step.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image

from ssnbench.errors import DatasetError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: timm's interpolation names (`pretrained_cfg["interpolation"]`) -> PIL resampling filters.
INTERPOLATIONS: dict[str, int] = {
    "nearest": Image.NEAREST,
    "bilinear": Image.BILINEAR,
    "bicubic": Image.BICUBIC,
    "lanczos": Image.LANCZOS,
}

# Image-file bounds, applied by `data check` and by `run`'s pre-flight alike (through
# check_image_header); the size bounds of suite values are preflight.BOUNDS.
MIN_IMAGE_SIDE = 16
"""Shorter side (px) below which an image file is rejected."""
MAX_IMAGE_PIXELS = 64_000_000
"""Pixels (w x h) above which an image file is rejected (PIL's own bomb limit is 179 M)."""


def check_image_header(path: Path, border_crop: int = 0) -> tuple[int, int]:
    """Width and height of an image file from its header (no decoding), within the bounds that
    `data check` and `run` both apply (MIN_IMAGE_SIDE, MAX_IMAGE_PIXELS); else ONE
    DatasetError line naming the file. Call it from one thread (it scopes a warnings filter)."""
    try:
        with warnings.catch_warnings():  # PIL warns from 89 Mpx; our bound is lower and says more
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                return _check_size(path, img.size, border_crop)
    except DatasetError:
        raise
    except Exception as err:  # any decoder failure: the file is unusable
        raise _image_error(path, err) from None


def _check_size(path: Path, size: tuple[int, int], border_crop: int) -> tuple[int, int]:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise DatasetError(f"{path}: image is {w}x{h} px ({w * h / 1e6:.0f} Mpx), above the bound of "
                           f"{MAX_IMAGE_PIXELS / 1e6:.0f} Mpx per image (see docs/reliability.md)")
    if min(w, h) < MIN_IMAGE_SIDE:
        raise DatasetError(f"{path}: image is {w}x{h} px, below the minimum of {MIN_IMAGE_SIDE} px per side")
    if 2 * border_crop >= min(w, h):
        raise DatasetError(f"{path}: image is {w}x{h} px, too small for a border crop of "
                           f"{border_crop} px per side")
    return w, h


def _image_error(path: Path, err: BaseException) -> DatasetError:
    if not Path(path).is_file():
        return DatasetError(f"{path}: image not found")
    if isinstance(err, Image.DecompressionBombError):
        return DatasetError(f"{path}: image is above the bound of {MAX_IMAGE_PIXELS / 1e6:.0f} Mpx per "
                            f"image ({err}) (see docs/reliability.md)")
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
    return DatasetError(f"{path}: image unreadable ({type(err).__name__}: {reason})")


def pil_interpolation(name: str) -> int:
    """PIL filter for a timm interpolation name (`random` and unknown names fall back to bicubic,
    as timm's own `str_to_pil_interp` does for its eval transforms)."""
    return INTERPOLATIONS.get(name, Image.BICUBIC)


def load_image(path: Path, size: int, border_crop: int, interpolation: str = "bilinear") -> torch.Tensor:
    """Decode, crop `border_crop` px from each side, resize to size x size with `interpolation`
    (a timm name: the model's pretrained config says which): uint8 [3, S, S].

    JPEG draft mode lets libjpeg decode at 1/2..1/8 scale when the target is much smaller, which
    makes caching the real release (768x512 images) several times faster.
    """
    try:
        with Image.open(path) as img:
            w, h = _check_size(path, img.size, border_crop)
            inner_w, inner_h = w - 2 * border_crop, h - 2 * border_crop
            img.draft("RGB", (max(1, size * w // inner_w), max(1, size * h // inner_h)))
            img = img.convert("RGB")
            f = img.size[0] / w
            c = round(border_crop * f)
            box = (c, c, img.size[0] - c, img.size[1] - c)
            img = img.crop(box).resize((size, size), pil_interpolation(interpolation))  # crop first
            array = np.asarray(img, dtype=np.uint8)
    except DatasetError:
        raise
    except Exception as err:  # any decoder failure (incl. PIL's bomb check): one line
        raise _image_error(path, err) from None
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def load_pair_images(paths: Sequence[tuple[Path, Path]], size: int, border_crop: int,
                     workers: int | None = None, interpolation: str = "bilinear") -> torch.Tensor:
    """All (clinic, derm) pairs as one uint8 tensor [N, 2, 3, S, S]; decoding runs in threads
    (PIL releases the GIL while decoding)."""
    out = torch.empty((len(paths), 2, 3, size, size), dtype=torch.uint8)
    flat = [(i, j, p) for i, pair in enumerate(paths) for j, p in enumerate(pair)]

    def work(item: tuple[int, int, Path]) -> None:
        i, j, p = item
        out[i, j] = load_image(p, size, border_crop, interpolation)

    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(flat) < 8:
        for item in flat:
            work(item)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(work, flat))
    return out


def _uniform(low: float, high: float, generator: torch.Generator | None) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


@dataclass
class PairTransform:
    """uint8 pair [2, 3, S, S] -> (clinic, derm) float [3, S, S].

    Geometric part (shared by both images): horizontal/vertical flip, a random multiple of 90°,
    then with probability `ssr_p` one shift-scale-rotate affine (bilinear, black fill), as in
    albumentations' ShiftScaleRotate used by the Derm7pt literature. Photometric part (per image):
    brightness, contrast and saturation factors in [1 - x, 1 + x]. Normalisation uses `mean`/`std`
    (the backbone's pretrained config; ImageNet's by default).
    """

    augment: bool = True
    normalize: bool = True
    hflip: float = 0.5
    vflip: float = 0.5
    rot90: bool = True
    ssr_p: float = 0.5
    shift: float = 0.0625
    scale: float = 0.1
    rotate: float = 45.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.0
    photometric: bool = True
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD

    @classmethod
    def default(cls, augment: bool = True, normalize: bool = True) -> PairTransform:
        return cls(augment=augment, normalize=normalize)

    def geometric(self, pair: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The same random flips/rotations/affine applied to every image of `pair` [..., 3, S, S]."""
        u = torch.rand(4, generator=generator)
        if u[0] < self.hflip:
            pair = pair.flip(-1)
        if u[1] < self.vflip:
            pair = pair.flip(-2)
        if self.rot90:
            k = int(torch.randint(4, (), generator=generator))
            if k:
                pair = torch.rot90(pair, k, dims=(-2, -1))
        if u[2] < self.ssr_p:
            size = pair.shape[-1]
            angle = _uniform(-self.rotate, self.rotate, generator)
            scale = _uniform(1 - self.scale, 1 + self.scale, generator)
            tx = _uniform(-self.shift, self.shift, generator) * size
            ty = _uniform(-self.shift, self.shift, generator) * size
            pair = F.affine(pair, angle=angle, translate=[tx, ty], scale=scale, shear=[0.0, 0.0],
                            interpolation=F.InterpolationMode.BILINEAR, fill=0.0)
        return pair

    def photometric_jitter(self, image: torch.Tensor,
                           generator: torch.Generator | None = None) -> torch.Tensor:
        """Brightness/contrast/saturation jitter of one float image [3, S, S] in [0, 1]."""
        if self.brightness > 0:
            image = F.adjust_brightness(image, _uniform(1 - self.brightness, 1 + self.brightness, generator))
        if self.contrast > 0:
            image = F.adjust_contrast(image, _uniform(1 - self.contrast, 1 + self.contrast, generator))
        if self.saturation > 0:
            image = F.adjust_saturation(image, _uniform(1 - self.saturation, 1 + self.saturation, generator))
        return image

    def __call__(self, pair: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        x = pair.float().div_(255.0)
        if self.augment:
            x = self.geometric(x, generator)
            if self.photometric:
                x = torch.stack([self.photometric_jitter(img, generator) for img in x])
        if self.normalize:
            x = F.normalize(x, mean=list(self.mean), std=list(self.std))
        return x[0], x[1]
