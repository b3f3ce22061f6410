"""Image transforms: evaluation's resize and training's mild, reproducible crop.

Augmentation is deliberately mild: no horizontal flip (it would falsify "left of" captions) and no
colour jitter (it would falsify colour words); a RandomResizedCrop with scale >= 0.85 keeps objects
in view. A frozen tower's training images are not cropped at all (`TrainConfig.frozen_features_mb`).
"""

from __future__ import annotations

import random

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

# BLIP / CLIP normalisation
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def eval_transform(image, image_size: int) -> torch.Tensor:
    """Resize to the model resolution (bicubic), to tensor, normalise."""
    image = TF.resize(image, [image_size, image_size], interpolation=InterpolationMode.BICUBIC, antialias=True)
    return TF.normalize(TF.to_tensor(image), MEAN, STD)


class TrainTransform:
    """Mild RandomResizedCrop whose randomness is a function of (seed, epoch, key): reproducible
    whatever the number of workers and across resumes. `crop_scale_min=None`: no crop, the image
    resized whole as `eval_transform` does (a frozen tower's images, TrainConfig.frozen_features_mb)."""

    def __init__(self, image_size: int, crop_scale_min: float | None, seed: int) -> None:
        self.image_size, self.seed, self.epoch = image_size, seed, 0
        self.scale = None if crop_scale_min is None else (crop_scale_min, 1.0)

    def crop(self, width: int, height: int, key: str) -> tuple[int, int, int, int]:
        """(top, left, crop height, crop width) of `key`'s crop this epoch."""
        if self.scale is None:
            return 0, 0, height, width
        g = random.Random(f"{self.seed}/{self.epoch}/{key}")
        area = width * height * g.uniform(*self.scale)
        ratio = g.uniform(0.9, 1.1)
        cw, ch = min(width, round((area * ratio) ** 0.5)), min(height, round((area / ratio) ** 0.5))
        return g.randint(0, height - ch), g.randint(0, width - cw), ch, cw

    def __call__(self, image, key: str) -> torch.Tensor:
        top, left, ch, cw = self.crop(*image.size, key)
        image = TF.resized_crop(
            image, top, left, ch, cw, [self.image_size] * 2, interpolation=InterpolationMode.BICUBIC, antialias=True
        )
        return TF.normalize(TF.to_tensor(image), MEAN, STD)

    def crop_boxes(self, boxes: list[list[float]], width: int, height: int, key: str) -> list[list[float]]:
        """Boxes (x0, y0, x1, y1 as fractions of the image) as fractions of `key`'s crop, as the
        detection transforms move boxes with their image; a box may now reach past [0, 1]."""
        top, left, ch, cw = self.crop(width, height, key)
        return [[(x0 * width - left) / cw, (y0 * height - top) / ch, (x1 * width - left) / cw,
                 (y1 * height - top) / ch] for x0, y0, x1, y1 in boxes]  # fmt: skip
