"""Regions: square tiles of each image's grid, the unit a pathologist outlines in region mode.

A train image of ``H x W`` pixels is cut into tiles of ``tile = (h, w)`` in row-major order;
tiles on the right and bottom edges are clipped to the image. A region is ``(image, tile)``;
its pixels are what labelling it costs.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)
IGNORE = -1  # mask value of pixels nobody annotated: they never reach the loss


def tile_boxes(height: int, width: int, tile: tuple[int, int]) -> list[Box]:
    """The tiles of an ``height x width`` image, row-major, edge tiles clipped."""
    th, tw = tile
    return [
        (y, min(y + th, height), x, min(x + tw, width))
        for y in range(0, height, th)
        for x in range(0, width, tw)
    ]


def box_area(box: Box) -> int:
    y0, y1, x0, x1 = box
    return (y1 - y0) * (x1 - x0)


def pool_regions(
    pixel_map: torch.Tensor,
    probs: torch.Tensor,
    boxes: list[Box],
    reduce: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> np.ndarray:
    """One score per box: ``reduce`` (a reduction with its settings bound) over the box's part of
    the map ``[1, H, W]`` and of the probabilities ``[1, C, H, W, T]``: ``[len(boxes)]``."""
    scores = [
        float(reduce(pixel_map[:, y0:y1, x0:x1], probs[:, :, y0:y1, x0:x1]))
        for y0, y1, x0, x1 in boxes
    ]
    return np.asarray(scores, dtype=np.float64)


def pool_features(
    features: torch.Tensor, boxes: list[Box], image_hw: tuple[int, int]
) -> np.ndarray:
    """Per-box mean of a coarse feature map ``[D, h, w]`` over the cells the box overlaps:
    ``[len(boxes), D]``."""
    _, h, w = features.shape
    height, width = image_hw
    rows = []
    for y0, y1, x0, x1 in boxes:
        r0, c0 = y0 * h // height, x0 * w // width
        r1 = max(r0 + 1, -(-y1 * h // height))  # ceil, at least one cell
        c1 = max(c0 + 1, -(-x1 * w // width))
        rows.append(features[:, r0:r1, c0:c1].float().mean((1, 2)).cpu().numpy())
    return np.stack(rows).astype(np.float64)


def annotated_mask(shape: tuple[int, int], boxes: list[Box], labelled: list[int]) -> np.ndarray:
    """Boolean ``[H, W]``: True inside the labelled tiles."""
    mask = np.zeros(shape, dtype=bool)
    for index in labelled:
        y0, y1, x0, x1 = boxes[index]
        mask[y0:y1, x0:x1] = True
    return mask


def regions_per_grade(n_images: int, mean_image_pixels: float, mean_region_pixels: float) -> int:
    """Regions a cycle labels per grade so that it spends the pixels of ``n_images`` average
    images: region and image curves then spend the same budget. ``mean_region_pixels`` is the
    mean area of the pool's tiles, clipped edge tiles included."""
    return max(1, round(n_images * mean_image_pixels / mean_region_pixels))


class RegionLabels:
    """Which tiles of which train images are labelled, and what they cost in pixels.

    ``shapes[i]`` is train image i's ``(H, W)``; a whole labelled image has all its tiles.
    """

    def __init__(self, shapes: list[tuple[int, int]], tile: tuple[int, int]):
        self.shapes = shapes
        self.tile = tile
        self.boxes = [tile_boxes(h, w, tile) for h, w in shapes]
        self.labelled: list[set[int]] = [set() for _ in shapes]

    def label_image(self, image: int) -> None:
        self.labelled[image] = set(range(len(self.boxes[image])))

    def label(self, regions: list[tuple[int, int]]) -> None:
        for image, tile in regions:
            if tile in self.labelled[image]:
                raise ValueError(f"region {tile} of image {image} is labelled already")
            self.labelled[image].add(tile)

    def pool(self) -> list[tuple[int, int]]:
        """Every unlabelled region, image by image, tiles in row-major order."""
        return [
            (image, tile)
            for image, boxes in enumerate(self.boxes)
            for tile in range(len(boxes))
            if tile not in self.labelled[image]
        ]

    def annotated(self, image: int) -> np.ndarray:
        return annotated_mask(self.shapes[image], self.boxes[image], sorted(self.labelled[image]))

    def images_with_labels(self) -> list[int]:
        return [image for image, tiles in enumerate(self.labelled) if tiles]

    def labelled_pixels(self) -> int:
        return sum(
            box_area(self.boxes[image][tile])
            for image, tiles in enumerate(self.labelled)
            for tile in tiles
        )

    def total_pixels(self) -> int:
        return sum(h * w for h, w in self.shapes)

    def mean_region_pixels(self) -> float:
        return self.total_pixels() / sum(len(boxes) for boxes in self.boxes)

    def to_json(self, names: list[str]) -> dict[str, list[int]]:
        return {names[i]: sorted(tiles) for i, tiles in enumerate(self.labelled) if tiles}

    def restore(self, saved: dict[str, list[int]], names: list[str]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self.labelled = [set() for _ in self.shapes]
        for name, tiles in saved.items():
            self.labelled[index[name]] = set(tiles)
