"""Write a copy of GlaS resized once, so that runs at a reduced scale skip the resize at load time.

Loading the copy with ``image_scale=1`` gives exactly the arrays that loading the original with
``image_scale=SCALE`` gives: the copy is made by the loader's own ``load_pair`` and saved as
lossless BMP. Masks are saved as gland / background (0 / 255), which is all the loader keeps of
the instance labels. The copy is also small enough to move to a GPU machine (quarter scale:
about 17 MB of BMPs).

    python data/prescale.py --data-path data/GlaS --scale 0.25 --out data/GlaS_quarter
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from data.glas import DataError, SplitRow, load_pair, read_grades  # noqa: E402
from data.segmentation import written_to  # noqa: E402
from utils.io import atomic_write_bytes  # noqa: E402


def _bmp_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="BMP")
    return buffer.getvalue()


MARKER = ".prescaled"  # in every copy this writes: what it was made from


def prescale_glas(data_path: str | Path, scale: float, out: str | Path) -> int:
    """Write each image of ``Grade.csv`` and its mask at ``scale`` into ``out``; return how many."""
    data_path, out = Path(data_path), Path(out)
    if not 0.0 < scale <= 1.0:
        raise DataError(f"--scale must lie in (0, 1], got {scale}; 0.5 is half resolution")
    if out.resolve() == data_path.resolve():
        raise DataError(f"--out {out} is the data folder itself; name a new folder")
    names = sorted(read_grades(data_path))
    grade_csv = (data_path / "Grade.csv").read_bytes()
    if out.exists() and not out.is_dir():
        raise DataError(f"--out {out} is a file; name a folder for the copy")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        # Another dataset, a full-resolution GlaS say, whose images this would overwrite.
        raise DataError(
            f"--out {out} holds files that no run of prescale wrote; name a new folder, or "
            "empty this one first"
        )
    with written_to(
        f"--out {out}", out, "name a folder you can write to, on a disk with room for the copy"
    ):
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(out / MARKER, f"{data_path.resolve()} at scale {scale}\n".encode())
        # Grade.csv marks a complete copy: one from an earlier pass (another scale) must go
        # before this pass overwrites any image, or a pass cut off part-way would leave a mix.
        (out / "Grade.csv").unlink(missing_ok=True)
        for name in names:
            row = SplitRow(f"{name}.bmp", f"{name}_anno.bmp", 0)
            image, mask = load_pair(data_path, row, scale)
            atomic_write_bytes(out / row.image, _bmp_bytes(Image.fromarray(image, "RGB")))
            atomic_write_bytes(out / row.mask, _bmp_bytes(Image.fromarray(mask * 255, "L")))
        # Grade.csv last, and whole: a copy cut off part-way, even within Grade.csv itself (a
        # cut at a row boundary would read as a shorter list), has none and is refused.
        atomic_write_bytes(out / "Grade.csv", grade_csv)
    return len(names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True, help="GlaS as distributed")
    parser.add_argument("--scale", type=float, required=True, help="e.g. 0.5 or 0.25")
    parser.add_argument("--out", required=True, help="folder for the resized copy")
    args = parser.parse_args(argv)
    try:
        count = prescale_glas(args.data_path, args.scale, args.out)
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"prescale: wrote {count} images and masks at scale {args.scale} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
