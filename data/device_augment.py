"""Training augmentation of whole batches on the device (GPU), for when the CPU is the bottleneck.

The same augmentations as ``data.transforms.train_transform`` (random crop, quarter turns, flips,
colour jitter), applied to a batch of labelled images that already live on the device as uint8.
Random parameters come from a CPU ``torch.Generator``, so a seeded run draws the same crops and
turns on any device. The colour jitter applies brightness, contrast, saturation and hue in that
fixed order (torchvision's ``ColorJitter`` shuffles the order per image).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms.v2 import functional as TF

from data.transforms import BRIGHTNESS, CONTRAST, HUE, SATURATION


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)


def _grey(images: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma, as torchvision's ``rgb_to_grayscale``: ``[B, 1, H, W]``."""
    weights = torch.tensor([0.2989, 0.587, 0.114], device=images.device, dtype=images.dtype)
    return (images * weights.view(1, 3, 1, 1)).sum(1, keepdim=True)


class DeviceAugmenter:
    """Augmented batches ``(images float [B, 3, h, w] in [0, 1], masks int64 [B, h, w])``.

    ``images`` and ``masks`` are the labelled images (uint8 ``[3, H, W]`` and ``[H, W]``), moved
    to ``device`` once; ``batch(indices)`` crops and augments the listed ones.
    """

    def __init__(
        self,
        images: Sequence[torch.Tensor],
        masks: Sequence[torch.Tensor],
        patch: tuple[int, int],
        device: torch.device,
        generator: torch.Generator,
    ):
        self.images = [image.to(device, non_blocking=True) for image in images]
        self.masks = [mask.to(device, non_blocking=True) for mask in masks]
        self.patch = patch
        self.generator = generator

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        height, width = self.patch
        turns = 4 if height == width else 2  # quarter turns would change a non-square shape
        g = self.generator
        crops, labels = [], []
        for index in indices:
            image, mask = self.images[index], self.masks[index]
            top = int(torch.randint(image.shape[1] - height + 1, (), generator=g))
            left = int(torch.randint(image.shape[2] - width + 1, (), generator=g))
            k = int(torch.randint(turns, (), generator=g)) * (4 // turns)
            flips = torch.rand(2, generator=g) < 0.5
            crop = image[:, top : top + height, left : left + width]
            label = mask[top : top + height, left : left + width]
            if k:
                crop, label = crop.rot90(k, (-2, -1)), label.rot90(k, (-2, -1))
            if flips[0]:
                crop, label = crop.flip(-1), label.flip(-1)
            if flips[1]:
                crop, label = crop.flip(-2), label.flip(-2)
            crops.append(crop)
            labels.append(label)
        images = torch.stack(crops).float().div_(255.0)  # [B, 3, h, w]
        return self.jitter(images), torch.stack(labels).long()

    def jitter(self, images: torch.Tensor) -> torch.Tensor:
        """Per-image brightness, contrast, saturation and hue factors, vectorised but for hue."""
        n, g = images.shape[0], self.generator
        shape = (n, 1, 1, 1)
        brightness = _uniform(n, 1 - BRIGHTNESS, 1 + BRIGHTNESS, g).to(images).view(shape)
        contrast = _uniform(n, 1 - CONTRAST, 1 + CONTRAST, g).to(images).view(shape)
        saturation = _uniform(n, 1 - SATURATION, 1 + SATURATION, g).to(images).view(shape)
        hue = _uniform(n, -HUE, HUE, g).tolist()
        images = (images * brightness).clamp_(0.0, 1.0)
        mean = _grey(images).mean((1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
        images = (contrast * images + (1 - contrast) * mean).clamp_(0.0, 1.0)
        images = (saturation * images + (1 - saturation) * _grey(images)).clamp_(0.0, 1.0)
        # torchvision's hue shift takes one factor per call; a loop of B small kernels.
        return torch.stack([TF.adjust_hue(image, h) for image, h in zip(images, hue, strict=True)])
