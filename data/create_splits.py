"""Write train/val/test split CSVs for GlaS.

test = every testA and testB image; val = a fraction of the train images, stratified by grade
where the counts allow; train = the rest. Same seed, same files. ``--by-patient`` keeps each
patient's train images on one side of train and val (the challenge's test split shares 11 of its
12 patients with train, so only validation can be kept apart).

    python data/create_splits.py --data-path data/GlaS --splits-path data/splits/glas
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.glas import (  # noqa: E402
    SPLIT_HEADER,
    SPLITS,
    DataError,
    SplitRow,
    read_grade_table,
)
from data.segmentation import written_to  # noqa: E402
from data.splitting import patient_split, stratified_split  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402

NAME_PATTERN = re.compile(r"^(train|testA|testB)_(\d+)$")


def _natural_key(name: str) -> tuple[str, int]:
    prefix, number = NAME_PATTERN.match(name).groups()
    return prefix, int(number)


def _check_files(data_path: Path, names: list[str]) -> None:
    for name in names:
        for file_name in (f"{name}.bmp", f"{name}_anno.bmp"):
            if not (data_path / file_name).is_file():
                raise DataError(
                    f"{data_path / file_name} is missing but Grade.csv lists {name}; "
                    "re-extract the GlaS archive"
                )


def make_splits(
    data_path: str | Path, seed: int = 0, val_size: float = 0.2, by_patient: bool = False
) -> dict[str, list[SplitRow]]:
    """Rows of each split, sorted by name. Raises ``DataError`` on missing files or overlap.
    ``by_patient``: val is whole patients (``data.splitting.patient_split``)."""
    data_path = Path(data_path)
    table = read_grade_table(data_path)
    grades = {name: grade for name, (_, grade) in table.items()}
    unknown = [n for n in grades if not NAME_PATTERN.match(n)]
    if unknown:
        raise DataError(
            f"{data_path / 'Grade.csv'} names {unknown[0]!r}, which is not train_N, testA_N or "
            "testB_N; use the Grade.csv shipped with GlaS"
        )
    _check_files(data_path, list(grades))
    train_names = sorted((n for n in grades if n.startswith("train_")), key=_natural_key)
    test_names = sorted((n for n in grades if not n.startswith("train_")), key=_natural_key)
    if not 0.0 < val_size < 1.0:
        raise DataError(f"--val-size must be in (0, 1), got {val_size}")
    if len(train_names) < 4 or not test_names:
        raise DataError(
            f"{data_path} has {len(train_names)} train and {len(test_names)} test images; "
            "need at least 4 train and 1 test image"
        )
    if by_patient:
        patients = {name: patient for name, (patient, _) in table.items()}
        fit_names, val_names = patient_split(train_names, val_size, grades, patients, seed)
    else:
        # scikit-learn's count for a fractional test_size, so GlaS's splits stay as they were.
        n_val = math.ceil(val_size * len(train_names))
        if n_val == len(train_names):
            # Rounded down, so that its own ceil leaves an image in train.
            largest = math.floor(100 * (len(train_names) - 1) / len(train_names)) / 100
            raise DataError(
                f"--val-size {val_size} puts all {len(train_names)} train images in val and "
                f"leaves none to train on; use at most {largest:g}"
            )
        fit_names, val_names = stratified_split(train_names, n_val, grades, seed)
    names = {
        "train": sorted(fit_names, key=_natural_key),
        "val": sorted(val_names, key=_natural_key),
        "test": test_names,
    }
    seen: dict[str, str] = {}
    for split, split_names in names.items():
        for name in split_names:
            if name in seen:
                raise DataError(f"{name} would be in both {seen[name]} and {split}; refusing")
            seen[name] = split
    return {
        split: [SplitRow(f"{n}.bmp", f"{n}_anno.bmp", grades[n]) for n in split_names]
        for split, split_names in names.items()
    }


def _to_csv(rows: list[SplitRow]) -> str:
    lines = [",".join(SPLIT_HEADER)] + [f"{r.image},{r.mask},{r.label}" for r in rows]
    return "\n".join(lines) + "\n"


def write_splits(
    data_path: str | Path,
    splits_path: str | Path,
    seed: int = 0,
    val_size: float = 0.2,
    by_patient: bool = False,
    option: str = "--splits-path ",
) -> dict[str, list[SplitRow]]:
    """Write the three split CSVs; ``option`` is how a refusal names ``splits_path`` (the
    command's flag, or ``splits_path=`` for a run)."""
    splits = make_splits(data_path, seed=seed, val_size=val_size, by_patient=by_patient)
    splits_path = Path(splits_path)
    if splits_path.exists() and not splits_path.is_dir():
        raise DataError(f"{option}{splits_path} is a file; name a folder for the split CSVs")
    with written_to(f"{option}{splits_path}", splits_path, "name a folder you can write to"):
        splits_path.mkdir(parents=True, exist_ok=True)
        for split in SPLITS:
            atomic_write_text(splits_path / f"{split}.csv", _to_csv(splits[split]))
    return splits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", required=True, help="folder with GlaS's BMPs and Grade.csv")
    parser.add_argument("--splits-path", required=True, help="where to write the split CSVs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stratified val split")
    parser.add_argument("--val-size", type=float, default=0.2, help="fraction of train for val")
    parser.add_argument(
        "--by-patient", action="store_true", help="val of whole patients, none of them in train"
    )
    args = parser.parse_args(argv)
    try:
        splits = write_splits(
            args.data_path, args.splits_path, args.seed, args.val_size, args.by_patient
        )
    except DataError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = ", ".join(
        f"{split} {len(rows)} ({sum(r.label for r in rows)} malignant)"
        for split, rows in splits.items()
    )
    print(f"wrote {args.splits_path}/{{train,val,test}}.csv: {counts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
