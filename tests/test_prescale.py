"""A pre-scaled copy loads to exactly what the loader's own resize gives."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
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


def test_another_dataset_at_out_is_left_alone(synthetic_root: Path, tmp_path: Path) -> None:
    # A full-resolution copy of GlaS, say: its images share the names of the copy's.
    shutil.copytree(synthetic_root / "GlaS", tmp_path / "full")
    before = {p.name: p.read_bytes() for p in (tmp_path / "full").iterdir()}
    with pytest.raises(DataError, match="holds files that no run of prescale wrote"):
        prescale_glas(synthetic_root / "GlaS", 0.5, tmp_path / "full")
    assert {p.name: p.read_bytes() for p in (tmp_path / "full").iterdir()} == before
    # A copy this wrote is written again, at another scale.
    prescale_glas(synthetic_root / "GlaS", 0.5, tmp_path / "out")
    n_images = len(read_grades(synthetic_root / "GlaS"))
    assert prescale_glas(synthetic_root / "GlaS", 0.25, tmp_path / "out") == n_images


def run_cli(data: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "data/prescale.py", "--data-path", str(data), "--scale", "0.5"]
        + ["--out", str(out)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
    )


def test_cli_names_a_missing_data_folder(tmp_path: Path) -> None:
    done = run_cli(tmp_path / "nope", tmp_path / "out")
    assert done.returncode == 2
    assert done.stderr.startswith("error: data folder") and done.stderr.count("\n") == 1


def test_cli_refuses_an_out_it_cannot_make_a_folder_in_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "file").write_text("not a folder")
    done = run_cli(synthetic_root / "GlaS", tmp_path / "file")
    assert done.returncode == 2, done.stderr
    assert (
        done.stderr == f"error: --out {tmp_path / 'file'} is a file; name a folder for the copy\n"
    )
    # A folder under a file fails in mkdir itself (NotADirectoryError), as an unwritable one does.
    out = tmp_path / "file" / "copy"
    args = ["--data-path", str(synthetic_root / "GlaS"), "--scale", "0.5", "--out", str(out)]
    assert data.prescale.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --out {out} cannot be written (") and err.count("\n") == 1


def disk_filling_up(monkeypatch: pytest.MonkeyPatch, target: Path, room: int, data: bytes) -> None:
    """From now on a file written in ``target``'s folder under ``target``'s name (or a temporary
    name holding it) takes ``room`` bytes of ``data`` and then fails, as on a full disk."""

    class Full(io.RawIOBase):
        def __init__(self, file: io.BufferedWriter) -> None:
            self.file = file

        def writable(self) -> bool:
            return True

        def write(self, chunk: bytes) -> int:
            assert bytes(chunk) == data, "Grade.csv is written in one piece"
            self.file.write(bytes(chunk)[:room])
            self.file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def fileno(self) -> int:  # nor may shutil's sendfile write past the full disk
            raise io.UnsupportedOperation("fileno")

        def close(self) -> None:
            self.file.close()
            super().close()

    real_open = io.open

    def opening(file: object, mode: str = "r", *args: object, **kwargs: object) -> object:
        handle = real_open(file, mode, *args, **kwargs)
        path = Path(os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else file)
        if "w" in mode and path.parent == target.parent and target.name in path.name:
            return Full(handle)
        return handle

    monkeypatch.setattr(builtins, "open", opening)  # shutil.copyfile opens with it
    monkeypatch.setattr(io, "open", opening)  # os.fdopen, as atomic_write uses, opens with it


def test_a_copy_cut_off_within_grade_csv_is_refused(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    grade_csv = (synthetic_root / "GlaS" / "Grade.csv").read_bytes()
    # Cut after the third row: the rows before it read as a complete, shorter list of images.
    room = [i for i, byte in enumerate(grade_csv) if byte == ord("\r")][3] + 1
    assert 0 < room < len(grade_csv)
    out = tmp_path / "copy"
    disk_filling_up(monkeypatch, out / "Grade.csv", room, grade_csv)
    with pytest.raises(DataError, match="No space left on device"):
        prescale_glas(synthetic_root / "GlaS", 0.5, out)
    monkeypatch.undo()
    assert (out / "train_1.bmp").exists()  # the images were written before the cut
    with pytest.raises(DataError, match="Grade.csv is missing"):
        read_grades(out)


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
