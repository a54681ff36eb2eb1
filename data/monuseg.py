"""Convert MoNuSeg (multi-organ nuclei, Kumar et al. 2017) into the folder dataset format.

The distribution has 30 training images with binary masks and 14 test images whose nuclei are
polygons in Aperio ImageScope XML. This writes ``OUT/images/NAME.tif`` (copied),
``OUT/masks/NAME.png`` (0 = background, 1 = nucleus; the test polygons rasterised, interior and
outline) and ``OUT/splits/{train,val,test}.csv`` (test = the 14 test images, val = a seeded 20 %
of the training images), ready for ``dataset=folder``:

    python data/monuseg.py --source ../shared/data/MoNuSeg.tar.xz --out data/MoNuSeg
    python active.py with dataset=folder data_path=data/MoNuSeg image_scale=0.25
"""

from __future__ import annotations

import argparse
import lzma
import shutil
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

from data.folder import VAL_SIZE, save_png, write_folder_splits  # noqa: E402
from data.segmentation import DataError, open_image, written_to  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.io import replace_folder, staging  # noqa: E402

TRAIN_IMAGES = Path("MoNuSegTrainingData/Tissue_Images")
TRAIN_MASKS = Path("MoNuSegTrainingData/Binary_masks")
TEST_DIR = Path("MoNuSegTestData")


def polygons(xml_path: Path) -> list[list[tuple[float, float]]]:
    """Every region's vertices ``[(x, y), ...]`` in an Aperio ImageScope XML file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DataError(
            f"{xml_path} cannot be parsed ({err}); restore it from the archive"
        ) from err
    found = []
    for region in root.iterfind("./Annotation/Regions/Region"):
        try:
            vertices = [
                (float(v.get("X")), float(v.get("Y"))) for v in region.iterfind("./Vertices/Vertex")
            ]
        except (TypeError, ValueError):
            raise DataError(
                f"{xml_path}: region {region.get('Id')!r} has a vertex without numeric X and Y; "
                "restore the file from the archive"
            ) from None
        if vertices:
            found.append(vertices)
    return found


def rasterise(shapes: list[list[tuple[float, float]]], size: tuple[int, int]) -> np.ndarray:
    """A uint8 ``[H, W]`` mask (``size`` is width, height): 1 on every pixel that Pillow fills
    or outlines for any polygon.

    Pillow takes a fractional vertex at the whole pixel below it (x 4.8 draws as 4), so a nucleus
    with such vertices can cover up to a pixel more on its top and left than a pixel-centre rule
    would; the committed MoNuSeg results were computed with these masks. Overlapping nuclei
    merge, as in the binary training masks. A region of one or two vertices marks those pixels.
    """
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for vertices in shapes:
        if len(vertices) >= 3:
            draw.polygon(vertices, fill=1, outline=1)
        elif len(vertices) == 2:
            draw.line(vertices, fill=1)
        else:
            draw.point(vertices, fill=1)
    return np.asarray(canvas, dtype=np.uint8).copy()


# Left in every converted folder: only a folder that holds it (or nothing) is replaced, never
# a folder dataset of a lab's own, which has the same images/, masks/ and splits/.
MARKER = ".converted-by-monuseg-py"


def convert(source: Path, out: Path, seed: int = 0) -> dict[str, list[str]]:
    """Write the folder dataset from an extracted ``MoNuSeg/`` folder; return each split's
    image names.

    The dataset is written beside ``out`` and moved into place whole, so a conversion cut
    short leaves no folder that would load without its splits (and get random ones).
    """
    train_names = sorted(p.stem for p in (source / TRAIN_IMAGES).glob("*.tif"))
    test_names = sorted(p.stem for p in (source / TEST_DIR).glob("*.tif"))
    if not train_names or not test_names:
        raise DataError(
            f"{source} has {len(train_names)} images in {TRAIN_IMAGES} and {len(test_names)} in "
            f"{TEST_DIR}; point --source at MoNuSeg.tar.xz or the MoNuSeg folder it holds"
        )
    if out.resolve() == source.resolve():
        raise DataError(f"--out {out} is the source folder itself; name a new folder")
    if out.is_symlink():  # convert beside the folder it points to, and replace that
        out = out.resolve()
    if out.exists() and not (out.is_dir() and (not any(out.iterdir()) or (out / MARKER).exists())):
        raise DataError(
            f"--out {out} exists and is not an earlier conversion ({MARKER} is missing); name "
            "a new folder, or empty this one"
        )
    fix = "name a folder whose parent you can write to, on a disk with room for the dataset"
    with written_to(f"--out {out}", out, fix):
        with staging(out.with_name(f".{out.name}.partial")) as partial:
            splits = _write(source, partial, train_names, test_names, seed)
        replace_folder(partial, out)
    return splits


def _write(
    source: Path, out: Path, train_names: list[str], test_names: list[str], seed: int
) -> dict[str, list[str]]:
    """Images, masks and splits into ``out``."""
    for name in train_names:
        image_path = source / TRAIN_IMAGES / f"{name}.tif"
        image = open_image(image_path, "RGB", "restore it from the archive")
        mask = np.asarray(
            open_image(source / TRAIN_MASKS / f"{name}.png", "L", "restore it from the archive")
        )
        if mask.shape != (image.height, image.width):
            raise DataError(
                f"{source / TRAIN_MASKS / name}.png is not the size of its image; restore it"
            )
        shutil.copyfile(image_path, _fresh(out / "images" / f"{name}.tif"))
        save_png(out / "masks" / f"{name}.png", (mask > 0).astype(np.uint8))
    for name in test_names:
        image_path = source / TEST_DIR / f"{name}.tif"
        image = open_image(image_path, "RGB", "restore it from the archive")
        xml_path = source / TEST_DIR / f"{name}.xml"
        if not xml_path.is_file():
            raise DataError(f"{xml_path} is missing; restore it from the archive")
        shutil.copyfile(image_path, _fresh(out / "images" / f"{name}.tif"))
        save_png(out / "masks" / f"{name}.png", rasterise(polygons(xml_path), image.size))
    train, val = train_test_split(
        train_names, test_size=max(1, round(VAL_SIZE * len(train_names))), random_state=seed
    )
    splits = {"train": sorted(train), "val": sorted(val), "test": test_names}
    write_folder_splits(out / "splits", splits)
    (out / MARKER).write_text(f"data/monuseg.py converted {source} here; it may replace it.\n")
    return splits


def _fresh(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def convert_any(source: Path, out: Path, seed: int = 0) -> dict[str, list[str]]:
    """``convert`` from the archive (extracted into a temporary folder) or its folder."""
    if source.is_file():
        if not hasattr(tarfile, "data_filter"):  # Python before 3.11.4 cannot extract safely
            raise DataError(
                f"this Python ({sys.version.split()[0]}) has no safe tar extraction; extract "
                f"{source} yourself and pass the folder as --source, or use Python 3.11.4+"
            )
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(source) as archive:
                    archive.extractall(tmp, filter="data")
            except (tarfile.TarError, OSError, EOFError, lzma.LZMAError) as err:
                reason = str(err).splitlines()[0].rstrip(":") or type(err).__name__
                raise DataError(
                    f"{source} cannot be extracted ({reason}); pass MoNuSeg.tar.xz as "
                    "distributed, or the MoNuSeg folder it holds"
                ) from None
            return convert(Path(tmp) / "MoNuSeg", out, seed)
    return convert(source / "MoNuSeg" if (source / "MoNuSeg").is_dir() else source, out, seed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="MoNuSeg.tar.xz or its MoNuSeg folder")
    parser.add_argument("--out", default="data/MoNuSeg", help="the folder dataset to write")
    parser.add_argument("--seed", type=int, default=0, help="seed of the val split")
    args = parser.parse_args(argv)
    try:
        splits = convert_any(Path(args.source), Path(args.out), args.seed)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(f"{split} {len(names)}" for split, names in splits.items())
    print(f"wrote {args.out}: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
