"""A pre-scaled copy loads to exactly what the loader's own resize gives."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import data.prescale
from data.glas import DataError, ImageStore, read_grades, read_split
from data.prescale import prescale_glas


def test_prescaled_copy_equals_scaling_at_load_time(synthetic_root: Path, tmp_path: Path) -> None:
    data, splits = synthetic_root / "GlaS", synthetic_root / "splits"
    count = prescale_glas(data, 0.5, tmp_path / "half")
    rows = [row for split in ("train", "val", "test") for row in read_split(splits, split)]
    assert count == len(rows)
    scaled_at_load = ImageStore(data, rows, image_scale=0.5)
    prescaled = ImageStore(tmp_path / "half", rows, image_scale=1.0)
    original = ImageStore(data, rows[:1])
    # The scale took effect (48x64 -> 24x32), and both routes agree bit for bit.
    assert tuple(prescaled.images[0].shape[1:]) == (24, 32) != tuple(original.images[0].shape[1:])
    for a, b in zip(
        scaled_at_load.images + scaled_at_load.masks,
        prescaled.images + prescaled.masks,
        strict=True,
    ):
        assert np.array_equal(a.numpy(), b.numpy())
    assert (tmp_path / "half" / "Grade.csv").read_bytes() == (data / "Grade.csv").read_bytes()


@pytest.mark.parametrize("scale", [0.0, 1.5])
def test_scale_out_of_range_is_refused(synthetic_root: Path, tmp_path: Path, scale: float) -> None:
    with pytest.raises(DataError, match="--scale must lie in"):
        prescale_glas(synthetic_root / "GlaS", scale, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cli_names_a_missing_data_folder(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [
            sys.executable,
            "data/prescale.py",
            "--data-path",
            str(tmp_path / "nope"),
            "--scale",
            "0.5",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip().startswith("prescale: data folder") and "\n" not in done.stderr.strip()
    )


def test_a_new_pass_cut_off_part_way_leaves_no_usable_copy(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "copy"
    prescale_glas(synthetic_root / "GlaS", 0.5, out)
    calls = []

    def cut_off(*args: object) -> None:
        calls.append(args)
        if len(calls) == 3:  # the second image of the new pass
            raise KeyboardInterrupt

    monkeypatch.setattr(data.prescale, "atomic_write_bytes", cut_off)
    with pytest.raises(KeyboardInterrupt):
        prescale_glas(synthetic_root / "GlaS", 0.25, out)
    # Half the images at 0.5 and half at 0.25 would load without a word; none load instead.
    with pytest.raises(DataError, match="Grade.csv is missing"):
        read_grades(out)
