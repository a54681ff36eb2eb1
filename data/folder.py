"""A folder of images and masks as a dataset (``dataset=folder``).

    DATA_PATH/images/NAME.{png,tif,tiff,bmp,jpg,jpeg}
    DATA_PATH/masks/NAME.{png,tif,tiff,bmp}     class indices 0..C-1 (or 0/255, or instance ids)
    DATA_PATH/groups.csv                        optional: image,group[,patient]
    SPLITS/{train,val,test}.csv                 optional: a column `image` of file stems

Without split files, ``folder_splits`` writes them once from a seed, stratified by group, and
with every patient's images in one split when ``groups.csv`` names patients. Every problem is
refused in one line that names the file and the fix: a silently skipped image would change the
pool and make runs incomparable.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from data.segmentation import (
    SPLITS,
    DataError,
    SegmentationData,
    SplitRow,
    open_image,
    require_folder,
    resize_pair,
    written_to,
)
from data.splitting import patient_split, stratified_split
from utils.config import MAX_CLASSES
from utils.io import atomic_write_bytes, atomic_write_text
from utils.runs.lock import waiting_lock
from utils.text import counted

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".bmp", ".jpg", ".jpeg")
MASK_SUFFIXES = (".png", ".tif", ".tiff", ".bmp")  # lossless only: JPEG would smear the classes
MASK_KINDS = ("class", "binary", "instance")
UNANNOTATED = 255  # a loaded mask's value where no one annotated; classes end at 254
MANY_VALUES = 32  # more values than this in one mask read as no class count
SYSTEM_FILES = ("thumbs.db", "desktop.ini")  # written by file browsers, never data
GROUPS_FILE = "groups.csv"
TEST_SIZE = 0.2  # of all masked images
VAL_SIZE = 0.2  # of the images not in test
FOLDER_HELP = (
    "put images in DATA_PATH/images/NAME.png (or .tif, .bmp, .jpg) and their masks in "
    "DATA_PATH/masks/NAME.png (docs/data.md, 'Your own images')"
)


@dataclass(frozen=True)
class FolderIndex:
    """The folder's files by stem; ``groups`` maps every image to a group index."""

    root: Path
    images: dict[str, str]  # stem -> path relative to root
    masks: dict[str, str]
    groups: dict[str, int]
    group_names: tuple[str, ...]
    patients: dict[str, str] | None = None  # stem -> patient, when groups.csv names them

    def row(self, name: str, where: str) -> SplitRow:
        if name not in self.masks:
            raise DataError(
                f"{self.root / self.images[name]} has no mask ({where} needs one): add "
                f"{self.root / 'masks' / name}.png or leave the image out"
            )
        return SplitRow(self.images[name], self.masks[name], self.groups[name])


def _files_by_stem(folder: Path, suffixes: tuple[str, ...]) -> dict[str, str]:
    """The folder's files by stem. A subfolder or a file of another format is refused, not
    skipped: a skipped mask would put a labelled image in the pool."""
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.name.lower() in SYSTEM_FILES:
            continue
        if path.is_dir():
            raise DataError(
                f"{path} is a folder; {folder} is read without its subfolders: move its files "
                f"up into {folder.name}/, or the folder out"
            )
        if path.suffix.lower() not in suffixes:
            masks = folder.name == "masks"
            # A lossy mask's edges hold values between the labels: converting keeps them.
            fix = "export it again as .png from the annotation tool" if masks else "convert it"
            raise DataError(
                f"{path} is not a {'lossless ' if masks else ''}format this reads "
                f"({', '.join(suffixes)}); {fix}, or move it out of {folder.name}/"
            )
        if path.stem in found:
            raise DataError(
                f"{path} and {folder.parent / found[path.stem]} share the name {path.stem!r}; "
                "keep one of them"
            )
        found[path.stem] = f"{folder.name}/{path.name}"
    return found


def _group_key(value: str) -> tuple[int, int | str]:
    """Numeric groups in numeric order, then the rest alphabetically."""
    return (0, int(value)) if value.lstrip("-").isdigit() else (1, value)


def _csv_rows(path: Path) -> Iterator[list[str]]:
    """``path``'s rows, as ``csv.reader`` gives them; a file that is not UTF-8 (Excel's plain
    "CSV" on Windows is cp1252) is refused in one line rather than misread."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        # The decoder counts from after a byte-order mark; the message counts in the file.
        at = err.start + (len(raw) - len(err.object))
        raise DataError(
            f"{path} is not UTF-8 text (byte {at} is {raw[at]:#04x}); save it as UTF-8 (in "
            "Excel: 'CSV UTF-8')"
        ) from None
    return csv.reader(io.StringIO(text, newline=""))


def read_groups(
    root: Path, names: list[str], required: list[str] | None = None
) -> tuple[dict[str, int], tuple[str, ...], dict[str, str] | None]:
    """``groups.csv`` as image -> group index (groups in sorted order), the group names, and
    image -> patient when it has a ``patient`` column (else None); all group 0 without it.

    Every image of ``required`` (default: all ``names``) needs a row; the others without one
    get group 0 (``suggest``'s pool, which it ranks as one).
    """
    path = root / GROUPS_FILE
    if not path.is_file():
        return {name: 0 for name in names}, ("all",), None
    raw: dict[str, str] = {}
    patients: dict[str, str] = {}
    lines: dict[str, int] = {}
    reader = _csv_rows(path)
    header = [h.strip() for h in next(reader, [])]
    if [h.lower() for h in header[:2]] != ["image", "group"]:
        # Excel in locales with a decimal comma separates by semicolons.
        semicolons = ";" in "".join(header)
        separator = "; it is separated by ';': save it with commas" if semicolons else ""
        raise DataError(
            f"{path}: header must start 'image,group' (a 'patient' column may follow), got "
            f"{','.join(header)!r}{separator}"
        )
    # Other columns are the lab's own and are ignored, except one that looks meant to keep
    # a patient's images together: ignoring it would let them leak across splits.
    named = [i for i, h in enumerate(header) if i >= 2 and h.lower() == "patient"]
    near = [h for h in header[2:] if _squeezed(h) in PATIENT_ID_NAMES]
    if near and not named:
        raise DataError(
            f"{path}: column {near[0]!r} is not read; name it 'patient' to keep each "
            "patient's images in one split, or rename it if it means something else"
        )
    used = [0, 1] + named[:1]
    columns = ",".join(header[i] for i in used)
    for line_no, fields in enumerate(reader, start=2):
        if not any(f.strip() for f in fields):
            continue
        fields = [f.strip() for f in fields]
        if len(fields) <= max(used) or not all(fields[i] for i in used):
            raise DataError(f"{path} line {line_no}: expected '{columns}', got {fields}")
        name = _stem(fields[0], names)
        if name not in names:
            raise DataError(
                f"{path} line {line_no}: no image {name!r} in {root / 'images'}; fix the "
                "name or remove the row"
            )
        if name in lines:
            raise DataError(
                f"{path} line {line_no}: {name!r} is listed again (first on line "
                f"{lines[name]}); keep one row per image"
            )
        lines[name] = line_no
        raw[name] = fields[1]
        if len(used) == 3:
            patients[name] = fields[used[2]]
    missing = [n for n in (names if required is None else required) if n not in raw]
    if missing:
        row = f"{missing[0]},GROUP" + (",PATIENT" if len(used) == 3 else "")
        raise DataError(
            f"{path} has no group for {missing[0]!r} ({counted(len(missing), 'image')} without "
            f"one); add a row '{row}' for each"
        )
    group_names = tuple(sorted(set(raw.values()), key=_group_key))
    index = {g: i for i, g in enumerate(group_names)}
    groups = {n: index[raw[n]] if n in raw else 0 for n in names}
    return groups, group_names, patients if len(used) == 3 else None


# Column names (lower case, without spaces, '_' or '-') that name a patient by another word.
PATIENT_ID_NAMES = frozenset({"patientid", "patientno", "patientnumber", "patientcode", "patients"})


def _squeezed(name: str) -> str:
    return "".join(c for c in name.lower() if c not in " _-")


def _stem(value: str, known: Collection[str]) -> str:
    """A file stem, also when the file name is given with its image suffix; a ``known`` stem is
    taken as it is, also one that ends in such a suffix itself (``x.tif`` of ``x.tif.png``)."""
    path = Path(value)
    return path.stem if value not in known and path.suffix.lower() in IMAGE_SUFFIXES else value


def index_folder(data_path: str | Path, group_every_image: bool = True) -> FolderIndex:
    """The folder's images, masks and groups. Without ``group_every_image`` only the images
    with a mask need a row in ``groups.csv``."""
    root = Path(data_path)
    require_folder(root, FOLDER_HELP)
    images = _files_by_stem(root / "images", IMAGE_SUFFIXES)
    if not images:
        raise DataError(f"{root / 'images'} holds no images; {FOLDER_HELP}")
    masks = _files_by_stem(root / "masks", MASK_SUFFIXES)
    orphans = sorted(set(masks) - set(images))
    if orphans:
        raise DataError(
            f"{root / masks[orphans[0]]} has no image of its name in {root / 'images'} (a mask "
            "is named as its image: images/NAME.jpg, masks/NAME.png); rename it, add the "
            "image, or remove the mask"
        )
    required = None if group_every_image else sorted(masks)
    groups, group_names, patients = read_groups(root, sorted(images), required)
    return FolderIndex(root, images, masks, groups, group_names, patients)


def make_folder_splits(
    index: FolderIndex, seed: int = 0, test_size: float = TEST_SIZE, val_size: float = VAL_SIZE
) -> dict[str, list[str]]:
    """Stems of each split, sorted: test ``test_size`` of the masked images, val ``val_size``
    of the rest, both stratified by group where every group has two images to split. With
    patients, each patient's images go to one split, and the sizes are those of whole patients
    (``patient_split``)."""
    unmasked = sorted(set(index.images) - set(index.masks))
    if unmasked:
        index.row(unmasked[0], "writing the splits")  # raises, naming the image
    names = sorted(index.masks)
    if len(names) < 3:
        raise DataError(
            f"{index.root / 'masks'} has {len(names)} masks; train, val and test need at least "
            "3 masked images"
        )
    if index.patients is not None:
        n_patients = len({index.patients[n] for n in names})
        if n_patients < 3:
            raise DataError(
                f"{index.root / GROUPS_FILE} names {n_patients} patient(s) among the "
                f"{len(names)} masked images; train, val and test by patient need at least 3: "
                "add patients, or write the split files yourself (docs/data.md)"
            )
        # Two patients stay for train and val.
        rest, test = patient_split(names, test_size, index.groups, index.patients, seed, 2)
        train, val = patient_split(rest, val_size, index.groups, index.patients, seed)
    else:
        rest, test = stratified_split(
            names, max(1, round(test_size * len(names))), index.groups, seed
        )
        train, val = stratified_split(rest, max(1, round(val_size * len(rest))), index.groups, seed)
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def read_folder_splits(splits_path: Path, index: FolderIndex) -> dict[str, list[str]]:
    splits: dict[str, list[str]] = {}
    seen: dict[str, str] = {}
    for split in SPLITS:
        path = splits_path / f"{split}.csv"
        reader = _csv_rows(path)
        header = [h.strip() for h in next(reader, [])]
        if "image" not in header:
            raise DataError(
                f"{path}: no column 'image' in its header {header}; write the image stems "
                "under a header 'image', or delete the split files to have them written"
            )
        column = header.index("image")
        names = []
        for line_no, fields in enumerate(reader, start=2):
            if not any(f.strip() for f in fields):
                continue
            name = _stem(fields[column].strip(), index.images) if column < len(fields) else ""
            if name not in index.images:
                raise DataError(
                    f"{path} line {line_no}: no image {name!r} in {index.root / 'images'}; "
                    "fix the name, or delete the split files to have them written"
                )
            if name in seen:
                raise DataError(
                    f"{path} line {line_no}: {name} is also in {seen[name]}.csv; an image "
                    "may be in one split only"
                )
            seen[name] = split
            names.append(name)
        if not names:
            raise DataError(f"{path} lists no images; add some or delete the split files")
        splits[split] = names
    return splits


def write_folder_splits(splits_path: Path, splits: dict[str, list[str]]) -> None:
    splits_path.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        text = "".join(f"{n}\n" for n in ["image", *splits[split]])
        atomic_write_text(splits_path / f"{split}.csv", text)


def folder_splits(index: FolderIndex, splits_path: str | Path) -> dict[str, list[SplitRow]]:
    """The rows of each split: read from ``splits_path``, or written there first (seed 0).

    Runs started together (``sweep.py --parallel``) take turns: the first writes all three files
    while the others wait, so none sees them half written.
    """
    splits_path = Path(splits_path)
    if splits_path.exists() and not splits_path.is_dir():
        raise DataError(
            f"splits_path={splits_path} is a file; name a folder for train.csv, val.csv and "
            "test.csv"
        )
    present = [s for s in SPLITS if (splits_path / f"{s}.csv").is_file()]
    if len(present) < len(SPLITS):  # none, or a run writing them: a whole set needs no lock
        fix = "set splits_path to a folder you can write, or write the split files there"
        with written_to(f"the split files in {splits_path}", splits_path, fix):
            with waiting_lock(splits_path.parent / f".{splits_path.name}.lock"):
                present = [s for s in SPLITS if (splits_path / f"{s}.csv").is_file()]
                if not present:
                    write_folder_splits(splits_path, make_folder_splits(index))
    if 0 < len(present) < len(SPLITS):
        absent = next(s for s in SPLITS if s not in present)
        raise DataError(
            f"{splits_path / absent}.csv is missing beside {present[0]}.csv; add it, or delete "
            "the split files to have all three written"
        )
    names = read_folder_splits(splits_path, index)
    _check_patients(names, index, splits_path)
    unused = sorted(set(index.masks) - {n for split in names.values() for n in split})
    if unused:
        # Not an error: a lab annotating as it goes keeps its test split while masks are added.
        print(
            f"warning: {len(unused)} masked image(s) of {index.root / 'images'} are in no split "
            f"of {splits_path} (e.g. {unused[0]}) and are not used; add them to a split file, "
            "or delete the split files to have them all written again",
            file=sys.stderr,
            flush=True,
        )
    unmasked = sorted(set(index.images) - set(index.masks) - {n for s in names.values() for n in s})
    if unmasked:
        print(
            f"warning: {len(unmasked)} image(s) of {index.root / 'images'} have no mask and are "
            f"in no split (e.g. {unmasked[0]}), so a simulated run does not use them; "
            "`active.py suggest` ranks such images for annotation",
            file=sys.stderr,
            flush=True,
        )
    return {
        split: [index.row(n, f"{splits_path / split}.csv") for n in split_names]
        for split, split_names in names.items()
    }


def _check_patients(names: dict[str, list[str]], index: FolderIndex, splits_path: Path) -> None:
    """Split files written by hand, or before ``groups.csv`` named patients, may put one
    patient's images in two splits; the test Dice would then be that of seen patients."""
    if index.patients is None:
        return
    where: dict[str, tuple[str, str]] = {}
    for split, split_names in names.items():
        for name in split_names:
            patient = index.patients[name]
            other = where.setdefault(patient, (split, name))
            if other[0] != split:
                raise DataError(
                    f"patient {patient!r} of {index.root / GROUPS_FILE} is in {other[0]}.csv "
                    f"({other[1]}) and in {split}.csv ({name}) of {splits_path}; a patient's "
                    "images go to one split: move them, or delete the split files to have them "
                    "written by patient"
                )


def _mask_array(path: Path) -> np.ndarray:
    """A mask's values as an integer array ``[H, W]``; colour masks only when grey."""
    mask = open_image(path, None, "add it or leave its image out")
    if mask.info.get("compression") in ("jpeg", "tiff_jpeg"):
        # A lossy mask's edges hold values between the labels.
        raise DataError(
            f"{path} is JPEG-compressed, which smears the classes at their edges; export it "
            "again as .png (or as a TIFF without JPEG compression)"
        )
    if mask.mode in ("RGBA", "LA", "PA"):
        if np.asarray(mask.getchannel("A")).min() < 255:
            # A transparent pixel's colour is whatever the editor left there, often 0.
            raise DataError(
                f"{path} has transparent pixels, which hold no class; flatten it and save it "
                "without transparency, every pixel a class index (or unannotated_value)"
            )
        if mask.mode != "RGBA":
            values = np.asarray(mask)[..., 0]  # the grey level, or the palette index
            return _palette_indices(path, mask, values) if mask.mode == "PA" else values
    if mask.mode == "P":  # palette PNGs: the indices are the classes, not the colours
        return _palette_indices(path, mask, np.asarray(mask))
    if mask.mode in ("RGB", "RGBA"):
        rgb = np.asarray(mask.convert("RGB"))
        if not ((rgb[..., 0] == rgb[..., 1]) & (rgb[..., 1] == rgb[..., 2])).all():
            raise DataError(
                f"{path} is a colour image; save the class indices 0..C-1 as a single-channel "
                "(greyscale or palette) image"
            )
        values = rgb[..., 0]
    else:
        values = np.asarray(mask)
    return _integer_values(path, values)


def _palette_indices(path: Path, mask: Image.Image, indices: np.ndarray) -> np.ndarray:
    """A palette mask's indices, which are its classes (the colours only show them). When the
    colours used are all grey, a reader sees their levels, so those must rise with the index:
    a 0/255 mask that an optimiser re-saved with white as index 0 would be read inverted."""
    used = np.unique(indices)
    palette = np.asarray(mask.getpalette() or [], dtype=np.int64).reshape(-1, 3)
    if len(palette) > used.max():
        colours = palette[used]
        grey = (colours[:, 0] == colours[:, 1]) & (colours[:, 1] == colours[:, 2])
        if grey.all() and len(used) > 1 and not (np.diff(colours[:, 0]) > 0).all():
            raise DataError(
                f"{path} is a palette image whose grey levels do not rise with its indices "
                f"(index {used[0]} shows as {colours[0, 0]}, index {used[-1]} as "
                f"{colours[-1, 0]}), so what it shows is not what it holds; save it as a "
                "greyscale image"
            )
    return _integer_values(path, indices.astype(np.int64))


def _integer_values(path: Path, values: np.ndarray) -> np.ndarray:
    if values.ndim != 2 or values.dtype.kind not in "biu":
        if values.ndim == 2 and values.dtype.kind == "f" and np.array_equal(values, values // 1):
            return values.astype(np.int64)
        raise DataError(
            f"{path} holds {values.dtype} values of shape {values.shape}; save the class "
            "indices as an integer single-channel image"
        )
    return values.astype(np.int64)


def load_folder_pair(
    root: Path,
    num_classes: int,
    mask_kind: str,
    row: SplitRow,
    image_scale: float,
    unannotated: int = -1,
) -> tuple[np.ndarray, np.ndarray]:
    """One image (RGB) and its mask of class indices, checked against ``num_classes``; pixels
    of the value ``unannotated`` (when not -1) come back as ``UNANNOTATED``."""
    image = open_image(root / row.image, "RGB", "restore it or remove it from the splits")
    mask_path = root / row.mask
    values = _mask_array(mask_path)
    if values.shape != (image.height, image.width):
        raise DataError(
            f"{mask_path} is {values.shape[1]}x{values.shape[0]} but its image {row.image} is "
            f"{image.width}x{image.height}; masks must match their image"
        )
    left_out = values == unannotated  # all False for -1
    values = np.where(left_out, 0, values)
    if mask_kind in ("binary", "instance"):
        values = values > 0  # every non-zero pixel, or every instance, is foreground
    else:
        _check_classes(mask_path, values, num_classes)
    mask = values.astype(np.uint8)
    mask[left_out] = UNANNOTATED
    return resize_pair(image, mask, image_scale)


def _check_classes(path: Path, values: np.ndarray, num_classes: int) -> None:
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < num_classes:
        return
    bad = high if high >= num_classes else low
    problem = (
        f"{path} holds the value {bad} but num_classes={num_classes} allows 0..{num_classes - 1}"
    )
    two_valued = low >= 0 and bool(np.isin(values, (0, high)).all())
    # Classes and one 255 for "not annotated" are no instance ids: that would make 255 foreground.
    highest_class = int(values[values != high].max(initial=0))
    only_unannotated = high == MAX_CLASSES and highest_class < num_classes
    fixes = [f"for a two-value mask (0/{high}) set mask_kind=binary"] if two_valued else []
    distinct = len(np.unique(values))
    if low >= 0 and distinct > MANY_VALUES:
        # No class count: instance ids, or a smoothed or resized mask, whose edges hold values
        # between its labels (num_classes or unannotated_value would be wrong fixes).
        raise DataError(
            f"{problem}; it holds {distinct} different values: for instance ids set "
            "mask_kind=instance; or, if it was smoothed or resized, export it again without "
            "anti-aliasing (resized by nearest neighbour), so that it holds its labels only"
        )
    if low < 0:
        # An "ignore" value such as -1: as instance ids it would become background unseen.
        fixes.append(
            f"{low} is no class index: save such pixels as a class, or as {MAX_CLASSES} with "
            f"unannotated_value={MAX_CLASSES} (active.py suggest with label_unit=region)"
        )
    elif high == MAX_CLASSES:
        more = "" if only_unannotated else f" and num_classes={highest_class + 1}"
        fixes.append(
            f"if {high} marks pixels left unannotated, set unannotated_value={high}{more} "
            "(active.py suggest with label_unit=region)"
        )
    else:
        fixes.append(f"set num_classes={high + 1}")
    if low >= 0 and not two_valued and not only_unannotated:
        fixes.append("mask_kind=instance for instance ids")
    raise DataError(f"{problem}; {'; or '.join(fixes)}")


def class_names(num_classes: int) -> tuple[str, ...]:
    return ("background", *(f"class_{c}" for c in range(1, num_classes)))


def open_folder(
    data_path: str | Path, splits_path: str | Path, num_classes: int, mask_kind: str = "class"
) -> SegmentationData:
    """The folder as the loop's dataset; its splits are written first where absent."""
    index = index_folder(data_path)
    splits = folder_splits(index, splits_path)
    return SegmentationData(
        splits=splits,
        split_files={s: Path(splits_path) / f"{s}.csv" for s in SPLITS},
        class_names=class_names(num_classes) if mask_kind == "class" else class_names(2),
        load=partial(load_folder_pair, index.root, num_classes, mask_kind),
    )


def save_png(path: Path, array: np.ndarray) -> None:
    """Write a uint8 image or mask as PNG (atomically), as a folder dataset holds them."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())
