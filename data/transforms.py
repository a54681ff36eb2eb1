"""Training augmentation, applied jointly to image and mask with torchvision.transforms.v2."""

from __future__ import annotations

from typing import Any

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

# Colour-jitter ranges, shared with the batched jitter of data.device_augment.
BRIGHTNESS, CONTRAST, SATURATION, HUE = 0.1, 0.1, 0.1, 0.04


class RandomRot90(v2.Transform):
    """Rotate image and mask together by a random multiple of 90 degrees.

    Quarter turns of a non-square patch would change its shape and break batching, so those
    only use half turns.
    """

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = v2.query_size(flat_inputs)
        choices = 4 if height == width else 2
        k = int(torch.randint(choices, ()).item()) * (4 // choices)
        return {"k": k}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if params["k"] == 0:
            return inpt
        return tv_tensors.wrap(torch.rot90(inpt, params["k"], dims=(-2, -1)), like=inpt)


def effective_patch_size(
    patch_size: tuple[int, int], min_image_size: tuple[int, int]
) -> tuple[int, int]:
    """Shrink the crop to fit the smallest image (reduced ``image_scale`` makes images small).

    A square patch stays square so that quarter-turn rotations remain possible.
    """
    height, width = int(patch_size[0]), int(patch_size[1])
    if height == width:
        side = min(height, *min_image_size)
        return side, side
    return min(height, min_image_size[0]), min(width, min_image_size[1])


def train_transform(patch_size: tuple[int, int], crop: bool = True) -> v2.Transform:
    """Random crop, quarter turns and flips on image and mask; colour jitter on the image only.

    Cropping first keeps the other transforms cheap. ``crop=False`` leaves the crop to the caller
    (region labelling draws crops around annotated pixels).
    """
    return v2.Compose(
        [
            *([v2.RandomCrop(patch_size)] if crop else []),
            RandomRot90(),
            v2.RandomHorizontalFlip(),
            v2.RandomVerticalFlip(),
            # H&E staining varies between labs and slides; jitter makes the model less sensitive.
            v2.ColorJitter(
                brightness=BRIGHTNESS, contrast=CONTRAST, saturation=SATURATION, hue=HUE
            ),
        ]
    )
