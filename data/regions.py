"""Regions: the unit a pathologist outlines in region mode.

Two shapes. Tiles: a train image of ``H x W`` pixels is cut into tiles of ``tile = (h, w)`` in
row-major order; tiles on the right and bottom edges are clipped to the image, or widened when
the remainder is under half a tile. Superpixels: SLIC
segments of about one tile's area each, which follow tissue boundaries. A region is
``(image, index)``; its pixels are what labelling it costs, and its box is its bounding box.
"""

from __future__ import annotations

import hashlib

import numpy as np
import torch

Box = tuple[int, int, int, int]  # y0, y1, x0, x1 (half-open)
IGNORE = -1  # mask value of pixels nobody annotated: they never reach the loss


def _spans(length: int, side: int) -> list[tuple[int, int]]:
    """``[0, length)`` cut every ``side`` pixels. The last piece is clipped to ``length``; a
    remainder under half a side joins the piece before it instead, because a strip a few pixels
    wide is nothing a pathologist would outline (GlaS images at every scale leave one)."""
    starts = list(range(0, length, side))
    if len(starts) > 1 and length - starts[-1] < side / 2:
        starts.pop()
    return list(zip(starts, [*starts[1:], length], strict=True))


def tile_boxes(height: int, width: int, tile: tuple[int, int]) -> list[Box]:
    """The tiles of an ``height x width`` image, row-major. Edge tiles are clipped, or widened by
    a remainder under half a tile, so every side lies in ``[side / 2, 3 * side / 2)``, but on
    an image shorter than half a tile, whose one tile is that short too."""
    return [
        (y0, y1, x0, x1) for y0, y1 in _spans(height, tile[0]) for x0, x1 in _spans(width, tile[1])
    ]


# SLIC settings for H&E. With scikit-image's default compactness (10) the colour term dominates
# on this texture, segments fragment, and connectivity enforcement merges them into 2-11 of the 25
# asked for on GlaS train images (full and quarter scale). Compactness 30 after a Gaussian blur of
# a thirty-second of the region side gives 80-90 % of the count, with areas varying by about 20 %
# (coefficient of variation) while still following tissue edges; 100 gives a near-square grid.
SLIC_COMPACTNESS = 30.0
SLIC_SIGMA_PER_SIDE = 1 / 32


def superpixel_segments(image: torch.Tensor, tile: tuple[int, int]) -> np.ndarray:
    """SLIC superpixels (Achanta et al., TPAMI 2012) of about one tile's area each.

    ``image`` uint8 ``[3, H, W]`` -> int32 ``[H, W]`` labels ``0..K-1`` in order of appearance,
    row-major, so that a region's index does not depend on SLIC's internal numbering. Segments
    are connected; K comes out somewhat below ``H * W / tile area``.
    """
    from skimage.segmentation import slic

    height, width = image.shape[1:]
    n_segments = max(1, round(height * width / (tile[0] * tile[1])))
    labels = slic(
        image.permute(1, 2, 0).numpy(),
        n_segments=n_segments,
        compactness=SLIC_COMPACTNESS,
        sigma=SLIC_SIGMA_PER_SIDE * (tile[0] * tile[1]) ** 0.5,
        start_label=0,
        channel_axis=-1,
    )
    _, first, inverse = np.unique(labels.ravel(), return_index=True, return_inverse=True)
    rank = np.argsort(np.argsort(first))  # each label's rank by its first pixel, row-major
    return rank[inverse].reshape(height, width).astype(np.int32)


def segment_boxes(segments: np.ndarray) -> list[Box]:
    """Bounding box of each label ``0..K-1`` of ``segments`` ``[H, W]``."""
    from scipy.ndimage import find_objects

    return [
        (rows.start, rows.stop, cols.start, cols.stop) for rows, cols in find_objects(segments + 1)
    ]


def box_area(box: Box) -> int:
    y0, y1, x0, x1 = box
    return (y1 - y0) * (x1 - x0)


def annotated_mask(shape: tuple[int, int], boxes: list[Box], labelled: list[int]) -> np.ndarray:
    """Boolean ``[H, W]``: True inside the labelled tiles."""
    mask = np.zeros(shape, dtype=bool)
    for index in labelled:
        y0, y1, x0, x1 = boxes[index]
        mask[y0:y1, x0:x1] = True
    return mask


class RegionLabels:
    """Which tiles of which train images are labelled, and what they cost in pixels.

    ``shapes[i]`` is train image i's ``(H, W)``; a whole labelled image has all its tiles.
    """

    def __init__(
        self,
        shapes: list[tuple[int, int]],
        tile: tuple[int, int],
        segments: list[np.ndarray] | None = None,
    ):
        self.shapes = shapes
        self.tile = tile
        # None: tiles; else each train image's superpixel labels [H, W], one region per label.
        self.segments = segments
        if segments is None:
            self.boxes = [tile_boxes(h, w, tile) for h, w in shapes]
            self.areas = [[box_area(box) for box in boxes] for boxes in self.boxes]
        else:
            self.boxes = [segment_boxes(labels) for labels in segments]
            self.areas = [np.bincount(labels.ravel()).tolist() for labels in segments]
        self.labelled: list[set[int]] = [set() for _ in shapes]

    def digest(self) -> str:
        """Fingerprint of the superpixels ('' for tiles, which the config fixes): a resumed run
        must find the segments its saved region indices refer to."""
        if self.segments is None:
            return ""
        hasher = hashlib.sha256()
        for labels in self.segments:
            hasher.update(str(labels.shape).encode())
            hasher.update(np.ascontiguousarray(labels, dtype=np.int32).tobytes())
        return hasher.hexdigest()[:16]

    def region_mask(self, image: int, index: int) -> np.ndarray | None:
        """Bool ``[h, w]`` of the region's pixels inside its box; None when it fills the box."""
        if self.segments is None:
            return None
        y0, y1, x0, x1 = self.boxes[image][index]
        return self.segments[image][y0:y1, x0:x1] == index

    def covered(self, image: int, annotated: np.ndarray) -> list[int]:
        """The image's regions whose every pixel is True in ``annotated`` (bool ``[H, W]``)."""
        found = []
        for index, (y0, y1, x0, x1) in enumerate(self.boxes[image]):
            inside = annotated[y0:y1, x0:x1]
            region = self.region_mask(image, index)
            if (inside if region is None else inside[region]).all():
                found.append(index)
        return found

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
        if self.segments is not None:
            return np.isin(self.segments[image], sorted(self.labelled[image]))
        return annotated_mask(self.shapes[image], self.boxes[image], sorted(self.labelled[image]))

    def images_with_labels(self) -> list[int]:
        return [image for image, tiles in enumerate(self.labelled) if tiles]

    def area(self, region: tuple[int, int]) -> int:
        image, index = region
        return self.areas[image][index]

    def labelled_pixels(self) -> int:
        return sum(
            self.areas[image][tile] for image, tiles in enumerate(self.labelled) for tile in tiles
        )

    def total_pixels(self) -> int:
        return sum(h * w for h, w in self.shapes)

    def to_json(self, names: list[str]) -> dict[str, list[int]]:
        return {names[i]: sorted(tiles) for i, tiles in enumerate(self.labelled) if tiles}

    def restore(self, saved: dict[str, list[int]], names: list[str]) -> None:
        index = {name: i for i, name in enumerate(names)}
        self.labelled = [set() for _ in self.shapes]
        for name, tiles in saved.items():
            self.labelled[index[name]] = set(tiles)
