"""What the active-learning loop needs from a dataset, whichever dataset it is.

A dataset is split rows (image, mask, group), a way to decode one row into an image and a mask
of class indices, and the names of its classes. ``data/glas.py`` reads GlaS as distributed,
``data/folder.py`` a folder of images and masks; the loop sees only ``SegmentationData``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from utils.errors import UserError

SPLITS = ("train", "val", "test")


class DataError(UserError, ValueError):
    """A data problem, with a one-line message that names the file and the fix."""


@dataclass(frozen=True)
class SplitRow:
    image: str  # file name relative to the data folder
    mask: str
    label: int  # the image's group (GlaS: 0 = benign, 1 = malignant)

    @property
    def name(self) -> str:
        return Path(self.image).stem


# Decodes one row at a scale: uint8 image [H, W, 3] and uint8 mask [H, W] of class indices.
PairLoader = Callable[[SplitRow, float], tuple[np.ndarray, np.ndarray]]


# PIL converts these to RGB by clipping at 255, not by scaling: most of an image would turn white.
WIDE_GREY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
EXIF_ORIENTATION = 0x0112  # 1: stored as shown


def require_folder(path: str | Path, fix: str) -> None:
    """``DataError`` naming ``fix`` when the data folder ``path`` does not exist."""
    if not Path(path).is_dir():
        raise DataError(f"data folder {path} does not exist; {fix}")


@contextmanager
def written_to(what: str, fallback: Path, fix: str) -> Iterator[None]:
    """Turn a failed write into one line: ``{what} cannot be written (reason: file); {fix}``
    (``fallback`` names the file when the error does not)."""
    try:
        yield
    except UserError:
        raise
    except OSError as err:
        raise DataError(
            f"{what} cannot be written ({err.strerror or err}: {err.filename or fallback}); {fix}"
        ) from None


def open_image(path: Path, mode: str | None, missing_fix: str) -> Image.Image:
    """Decode ``path`` (converted to ``mode`` unless None); ``DataError`` when it is absent or
    cannot be decoded."""
    if not path.is_file():
        raise DataError(f"{path} is missing; {missing_fix}")
    try:
        with Image.open(path) as im:
            orientation = im.getexif().get(EXIF_ORIENTATION, 1)
            im.load()
            image = im.copy()
    except Image.DecompressionBombError as err:
        raise DataError(
            f"{path} is larger than Pillow opens ({err}); cut it into tiles of a few thousand "
            "pixels a side, each its own image"
        ) from None
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(
            f"{path} cannot be decoded ({err}); the file is corrupt, truncated, or of a variant "
            "Pillow does not read (float RGB, say): replace it, or save it as "
            + ("8-bit RGB" if mode == "RGB" else "an 8-bit single-channel PNG")
        ) from err
    if orientation not in (0, 1):
        # Viewers and annotation tools show the image turned, its pixels are read as stored:
        # a mask drawn on what was shown would be read turned against its image.
        raise DataError(
            f"{path} is stored turned and shown upright by its EXIF orientation "
            f"({orientation}); save it upright without the tag (PIL.ImageOps.exif_transpose), "
            "and check that its mask matches it"
        )
    if mode == "RGB" and image.mode in WIDE_GREY_MODES:
        raise DataError(
            f"{path} is a {image.mode} image (16-bit or float grey), whose values 8-bit RGB "
            "would clip; save it as 8-bit RGB, its range scaled to 0-255"
        )
    return image.convert(mode) if mode is not None else image


def resize_pair(
    image: Image.Image, mask: np.ndarray, scale: float
) -> tuple[np.ndarray, np.ndarray]:
    """Resize an RGB image (bilinear) and its uint8 mask of class indices (nearest)."""
    labels = Image.fromarray(mask)
    if scale != 1.0:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        labels = labels.resize(size, Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8).copy(), np.asarray(labels, dtype=np.uint8).copy()


class ImageStore:
    """Decoded images and masks of one split, kept in memory as uint8 tensors.

    ``labels`` holds each image's group (GlaS's grade), which initial sets and balanced
    acquisition stratify by. Immutable once built, so ``deepcopy`` (which baal's pool does on
    every cycle) shares it instead of copying every image.
    """

    def __init__(self, rows: list[SplitRow], load: PairLoader, image_scale: float = 1.0):
        self.rows = list(rows)
        self.names = [r.name for r in self.rows]
        self.labels = np.array([r.label for r in self.rows], dtype=np.int64)
        self.images: list[torch.Tensor] = []  # each uint8 [3, H, W]
        self.masks: list[torch.Tensor] = []  # each uint8 [H, W]
        for row in self.rows:
            image, mask = load(row, image_scale)
            self.images.append(torch.from_numpy(image).permute(2, 0, 1).contiguous())
            self.masks.append(torch.from_numpy(mask))

    def __len__(self) -> int:
        return len(self.rows)

    def __deepcopy__(self, memo: dict) -> ImageStore:
        return self

    @property
    def pixels(self) -> np.ndarray:
        """Pixels of each image, ``[N]`` int64: what labelling it whole costs."""
        return np.array([im.shape[1] * im.shape[2] for im in self.images], dtype=np.int64)

    @property
    def min_size(self) -> tuple[int, int]:
        return min(im.shape[1] for im in self.images), min(im.shape[2] for im in self.images)


class SegmentationDataset(Dataset):
    """Yields ``(image float32 [3,H,W] in [0,1], mask int64 [H,W] of class indices, group,
    name)``.

    ``transform`` (a torchvision v2 transform) sees the uint8 image as ``tv_tensors.Image`` and
    the mask as ``tv_tensors.Mask``, so geometric augmentation moves both together while colour
    jitter touches the image only. Set ``transform=None`` for whole, unaugmented images.
    """

    def __init__(self, store: ImageStore, transform: v2.Transform | None = None):
        self.store = store
        self.transform = transform

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int, str]:
        image = tv_tensors.Image(self.store.images[index])
        mask = tv_tensors.Mask(self.store.masks[index])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        image = image.as_subclass(torch.Tensor).float().div_(255.0)
        mask = mask.as_subclass(torch.Tensor).long()
        return image, mask, int(self.store.labels[index]), self.store.names[index]


@dataclass(frozen=True)
class SegmentationData:
    """A dataset as the loop sees it: the rows of each split read, the images not yet decoded.

    ``split_files`` name where each split's rows came from, for messages; ``class_names`` has
    one name per class, background first.
    """

    splits: dict[str, list[SplitRow]]
    split_files: dict[str, Path]
    class_names: tuple[str, ...]
    load: PairLoader

    def store(self, split: str, image_scale: float = 1.0) -> ImageStore:
        return ImageStore(self.splits[split], self.load, image_scale)
