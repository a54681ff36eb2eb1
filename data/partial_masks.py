"""Training on images that are labelled only in part (region labelling).

Each training sample is a crop that contains annotated pixels: an annotated pixel is drawn
uniformly (a labelled region weighted by its area, then a pixel inside it) and a crop that holds
it is drawn around it. Pixels outside the labelled regions get the mask value ``IGNORE`` and
never reach the loss (``utils.loop.metrics.soft_dice_loss``).
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from data.regions import IGNORE, RegionLabels
from data.segmentation import ImageStore


class PartialMaskDataset(Dataset):
    """``(image float [3, h, w], mask int64 [h, w] with IGNORE outside annotation, label, name)``.

    Its length is the labelled pixels in units of an average image, so that an epoch costs the
    same per labelled pixel as in image mode. The index does not pick the sample: image and crop
    are drawn from torch's generator, which the loop seeds per run and cycle.
    """

    def __init__(
        self,
        store: ImageStore,
        labels: RegionLabels,
        patch: tuple[int, int],
        transform: v2.Transform | None,
        mean_image_pixels: float,
    ):
        self.store, self.patch, self.transform = store, patch, transform
        regions = [
            (image, index)
            for image in labels.images_with_labels()
            for index in sorted(labels.labelled[image])
        ]
        self.tiles = [(image, labels.boxes[image][index]) for image, index in regions]
        self.weights = torch.tensor([float(labels.areas[image][index]) for image, index in regions])
        # Superpixels: the offsets of each region's pixels inside its box ([n, 2]); a tile's
        # pixels are its whole box (None), drawn uniformly inside it.
        self.pixels = [
            None if mask is None else torch.from_numpy(mask).nonzero()
            for mask in (labels.region_mask(image, index) for image, index in regions)
        ]
        self.annotated = {
            image: torch.from_numpy(labels.annotated(image))
            for image in labels.images_with_labels()
        }
        self.length = max(1, round(float(self.weights.sum()) / mean_image_pixels))

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        region = int(torch.multinomial(self.weights, 1))
        image_index, (y0, y1, x0, x1) = self.tiles[region]
        pixels = self.pixels[region]
        if pixels is None:
            py = y0 + int(torch.randint(y1 - y0, ()))
            px = x0 + int(torch.randint(x1 - x0, ()))
        else:
            dy, dx = pixels[int(torch.randint(len(pixels), ()))].tolist()
            py, px = y0 + dy, x0 + dx
        image = self.store.images[image_index]
        height, width = image.shape[1:]
        ph, pw = self.patch
        top = int(torch.randint(max(0, py - ph + 1), min(py, height - ph) + 1, ()))
        left = int(torch.randint(max(0, px - pw + 1), min(px, width - pw) + 1, ()))
        crop = (slice(top, top + ph), slice(left, left + pw))
        # A copy, always: IGNORE is written into it, never into the store's ground truth.
        mask = self.store.masks[image_index][crop].to(torch.int64, copy=True)
        mask[~self.annotated[image_index][crop]] = IGNORE
        picture = tv_tensors.Image(image[:, crop[0], crop[1]])
        label = tv_tensors.Mask(mask)
        if self.transform is not None:
            picture, label = self.transform(picture, label)
        return (
            picture.as_subclass(torch.Tensor).float().div_(255.0),
            label.as_subclass(torch.Tensor).long(),
            int(self.store.labels[image_index]),
            self.store.names[image_index],
        )
