"""GlaS as distributed: file layout, Grade.csv, split CSVs and the preloaded dataset.

The Warwick GlaS release is one flat folder of ``NAME.bmp`` images with ``NAME_anno.bmp`` instance
masks (0 = background, 1..K = glands) and a ``Grade.csv`` with bare-CR line endings and a space
after every comma but the first. Everything here fails loudly on a missing or mismatched file:
a silently skipped image would change the pool and make runs incomparable.
"""

from __future__ import annotations

import csv
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.segmentation import (  # SPLITS, DataError and SplitRow: also imported from here
    SPLITS,  # noqa: F401
    DataError,
    SegmentationData,
    SegmentationDataset,
    SplitRow,
    require_folder,
    resize_pair,
)
from data.segmentation import ImageStore as _ImageStore

# Grade.csv's first line as GlaS distributes it, and its fields.
GRADE_HEADER_LINE = "name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"
GRADE_HEADER = [f.strip() for f in GRADE_HEADER_LINE.split(",")]
GRADE_LABELS = {"benign": 0, "malignant": 1}
SPLIT_HEADER = ["image", "mask", "label"]
CLASS_NAMES = ("background", "gland")
GLAS_HELP = (
    "download GlaS (Warwick QU, MICCAI 2015 gland segmentation challenge) and extract it so that "
    "DATA_PATH/train_1.bmp and DATA_PATH/Grade.csv exist (see docs/data.md, 'GlaS'); "
    "`python active.py with demo` runs on built-in synthetic data without it"
)


def read_grades(data_path: str | Path) -> dict[str, int]:
    """Map image name -> 0 (benign) / 1 (malignant) from GlaS's ``Grade.csv``."""
    return {name: grade for name, (_, grade) in read_grade_table(data_path).items()}


def read_grade_table(data_path: str | Path) -> dict[str, tuple[str, int]]:
    """Map image name -> (patient ID, 0 benign / 1 malignant) from GlaS's ``Grade.csv``.

    The real file ends lines with a bare CR and puts a space after each comma, so we split on any
    line ending and strip every field.
    """
    path = Path(data_path) / "Grade.csv"
    require_folder(data_path, GLAS_HELP)
    if not path.is_file():
        raise DataError(f"{path} is missing: {GLAS_HELP}")
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    if not lines or [f.strip() for f in lines[0].split(",")] != GRADE_HEADER:
        raise DataError(
            f"{path}: header must be '{','.join(GRADE_HEADER)}', got {lines[:1]!r}; "
            "use the Grade.csv shipped with GlaS"
        )
    grades: dict[str, tuple[str, int]] = {}
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 4 or not fields[0] or not fields[1]:
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
        if fields[0] in grades:
            raise DataError(
                f"{path} line {line_no}: {fields[0]} is listed again; use the Grade.csv shipped "
                "with GlaS"
            )
        grades[fields[0]] = (fields[1], GRADE_LABELS[grade])
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
    # UTF-8 with or without a byte-order mark, as a spreadsheet saves a split edited by hand.
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != SPLIT_HEADER:
            raise DataError(
                f"{path}: header must be '{','.join(SPLIT_HEADER)}', got {header}; "
                "rerun data/create_splits.py"
            )
        rows = []
        for line_no, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
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
    return resize_pair(image, (np.asarray(mask) > 0).astype(np.uint8), image_scale)


class ImageStore(_ImageStore):
    """The decoded images and masks of GlaS split rows, read from ``data_path``."""

    def __init__(self, data_path: str | Path, rows: list[SplitRow], image_scale: float = 1.0):
        super().__init__(rows, partial(load_pair, data_path), image_scale)


GlasDataset = SegmentationDataset  # the name the benches and tests know


def open_glas(
    data_path: str | Path, splits_path: str | Path, splits: tuple[str, ...]
) -> SegmentationData:
    """GlaS as the loop's dataset: ``Grade.csv`` checked, the rows of ``splits`` read."""
    grades = read_grades(data_path)  # fails early, with instructions, when GlaS is not there
    rows = {split: read_split(splits_path, split) for split in splits}
    seen: dict[str, str] = {}
    for split, split_rows in rows.items():
        for row in split_rows:
            # Splits written for another GlaS (a regenerated synthetic one): the labels that the
            # initial set and balanced acquisition stratify by would be wrong.
            if row.name not in grades:
                raise DataError(
                    f"{split_csv_path(splits_path, split)} lists {row.name}, which "
                    f"{Path(data_path) / 'Grade.csv'} does not grade; the splits are another "
                    "GlaS's: rerun data/create_splits.py"
                )
            if grades[row.name] != row.label:
                raise DataError(
                    f"{split_csv_path(splits_path, split)} gives {row.name} the label "
                    f"{row.label} but {Path(data_path) / 'Grade.csv'} grades it "
                    f"{grades[row.name]}; the splits are another GlaS's: rerun "
                    "data/create_splits.py"
                )
            other = seen.setdefault(row.name, split)
            if other != split:  # a hand-edited or stale file: the test Dice would be of seen images
                raise DataError(
                    f"{row.name} is in both {split_csv_path(splits_path, other)} and "
                    f"{split_csv_path(splits_path, split)}; an image may be in one split only: "
                    "rerun data/create_splits.py"
                )
    return SegmentationData(
        splits=rows,
        split_files={split: split_csv_path(splits_path, split) for split in splits},
        class_names=CLASS_NAMES,
        load=partial(load_pair, data_path),
    )
