"""GlaS as distributed: file layout, Grade.csv, split CSVs and the preloaded dataset.

The Warwick GlaS release is one flat folder of ``NAME.bmp`` images with ``NAME_anno.bmp`` instance
masks (0 = background, 1..K = glands) and a ``Grade.csv`` with bare-CR line endings and a space
after every comma. Everything here fails loudly on a missing or mismatched file: a silently
skipped image would change the pool and make runs incomparable.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

GRADE_HEADER = ["name", "patient ID", "grade (GlaS)", "grade (Sirinukunwattana et al. 2015)"]
GRADE_LABELS = {"benign": 0, "malignant": 1}
SPLIT_HEADER = ["image", "mask", "label"]
SPLITS = ("train", "val", "test")
GLAS_HELP = (
    "download GlaS (Warwick QU, MICCAI 2015 gland segmentation challenge) and extract it so that "
    "DATA_PATH/train_1.bmp and DATA_PATH/Grade.csv exist (see README, 'Getting GlaS'); "
    "`python active.py with demo` runs on built-in synthetic data without it"
)


class DataError(ValueError):
    """A data problem, with a one-line message that names the file and the fix."""


@dataclass(frozen=True)
class SplitRow:
    image: str  # file name relative to the data folder
    mask: str
    label: int  # 0 = benign, 1 = malignant

    @property
    def name(self) -> str:
        return Path(self.image).stem


def read_grades(data_path: str | Path) -> dict[str, int]:
    """Map image name -> 0 (benign) / 1 (malignant) from GlaS's ``Grade.csv``.

    The real file ends lines with a bare CR and puts a space after each comma, so we split on any
    line ending and strip every field.
    """
    path = Path(data_path) / "Grade.csv"
    if not Path(data_path).is_dir():
        raise DataError(f"data folder {data_path} does not exist: {GLAS_HELP}")
    if not path.is_file():
        raise DataError(f"{path} is missing: {GLAS_HELP}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or [f.strip() for f in lines[0].split(",")] != GRADE_HEADER:
        raise DataError(
            f"{path}: header must be '{','.join(GRADE_HEADER)}', got {lines[:1]!r}; "
            "use the Grade.csv shipped with GlaS"
        )
    grades: dict[str, int] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0]:
            raise DataError(
                f"{path} line {line_no}: malformed row {line!r}, expected 4 comma-separated "
                "fields 'name,patient ID, grade, grade'; fix or restore the file"
            )
        grade = fields[2].lower()
        if grade not in GRADE_LABELS:
            raise DataError(
                f"{path} line {line_no}: unknown grade {fields[2]!r} for {fields[0]}, expected "
                f"one of {sorted(GRADE_LABELS)}; fix or restore the file"
            )
        grades[fields[0]] = GRADE_LABELS[grade]
    if not grades:
        raise DataError(f"{path} lists no images; use the Grade.csv shipped with GlaS")
    return grades


def split_csv_path(splits_path: str | Path, split: str) -> Path:
    return Path(splits_path) / f"{split}.csv"


def read_split(splits_path: str | Path, split: str) -> list[SplitRow]:
    """Rows of ``{splits_path}/{split}.csv`` written by ``data/create_splits.py``."""
    path = split_csv_path(splits_path, split)
    if not path.is_file():
        raise DataError(
            f"split file {path} is missing: run `python data/create_splits.py --data-path "
            f"DATA_PATH --splits-path {splits_path}` first"
        )
    with path.open(newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != SPLIT_HEADER:
            raise DataError(
                f"{path}: header must be '{','.join(SPLIT_HEADER)}', got {header}; "
                "rerun data/create_splits.py"
            )
        rows = []
        for line_no, fields in enumerate(reader, start=2):
            if len(fields) != 3 or fields[2] not in ("0", "1"):
                raise DataError(
                    f"{path} line {line_no}: malformed row {fields}; rerun data/create_splits.py"
                )
            rows.append(SplitRow(fields[0], fields[1], int(fields[2])))
    if not rows:
        raise DataError(f"split {path} is empty; rerun data/create_splits.py")
    return rows


def _open_bmp(path: Path, mode: str) -> Image.Image:
    if not path.is_file():
        raise DataError(
            f"{path} is missing; every GlaS image needs NAME.bmp and NAME_anno.bmp "
            "(re-extract the dataset or rerun data/create_splits.py)"
        )
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert(mode)
    except (OSError, UnidentifiedImageError, ValueError) as err:
        raise DataError(
            f"{path} cannot be decoded ({err}); the file is corrupt or truncated, re-extract it"
        ) from err


def load_pair(
    data_path: str | Path, row: SplitRow, image_scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Decode one image and its mask: uint8 ``[H, W, 3]`` and binary uint8 ``[H, W]``.

    ``image_scale`` resizes both (bilinear for the image, nearest for the mask) so that CPU users
    can work at 1/2 or 1/4 resolution.
    """
    data_path = Path(data_path)
    image = _open_bmp(data_path / row.image, "RGB")
    mask = _open_bmp(data_path / row.mask, "L")
    if image.size != mask.size:
        raise DataError(
            f"{data_path / row.mask} is {mask.size[0]}x{mask.size[1]} but its image "
            f"{row.image} is {image.size[0]}x{image.size[1]}; masks must match their image"
        )
    # Instance labels collapse to gland / background before any resampling.
    binary = Image.fromarray(((np.asarray(mask) > 0) * 255).astype(np.uint8))
    if image_scale != 1.0:
        size = (max(1, round(image.width * image_scale)), max(1, round(image.height * image_scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        binary = binary.resize(size, Image.Resampling.NEAREST)
    return np.asarray(image, dtype=np.uint8).copy(), (np.asarray(binary) > 0).astype(np.uint8)


class ImageStore:
    """Decoded images and masks of one split, kept in memory as uint8 tensors.

    Immutable once built, so ``deepcopy`` (which baal's pool does on every cycle) shares it
    instead of copying every image.
    """

    def __init__(self, data_path: str | Path, rows: list[SplitRow], image_scale: float = 1.0):
        self.rows = list(rows)
        self.names = [r.name for r in self.rows]
        self.labels = np.array([r.label for r in self.rows], dtype=np.int64)
        self.images: list[torch.Tensor] = []  # each uint8 [3, H, W]
        self.masks: list[torch.Tensor] = []  # each uint8 [H, W]
        for row in self.rows:
            image, mask = load_pair(data_path, row, image_scale)
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


class GlasDataset(Dataset):
    """Yields ``(image float32 [3,H,W] in [0,1], mask int64 [H,W] in {0,1}, label, name)``.

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
