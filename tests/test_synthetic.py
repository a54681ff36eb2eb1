"""Tests for the synthetic GlaS generator: layout, file formats, Grade.csv quirks, look."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from data.glas import GRADE_HEADER_LINE
from data.synthetic import generate_synthetic_glas

N_TRAIN, N_TEST_A, N_TEST_B = 10, 4, 3
H, W = 64, 96
ROOT = Path(__file__).resolve().parents[1]


def _names() -> list[str]:
    return (
        [f"train_{i}" for i in range(1, N_TRAIN + 1)]
        + [f"testA_{i}" for i in range(1, N_TEST_A + 1)]
        + [f"testB_{i}" for i in range(1, N_TEST_B + 1)]
    )


def _make(path: Path, seed: int = 0) -> Path:
    return generate_synthetic_glas(
        path, n_train=N_TRAIN, n_test_a=N_TEST_A, n_test_b=N_TEST_B, height=H, width=W, seed=seed
    )


@pytest.fixture(scope="module")
def ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make(tmp_path_factory.mktemp("glas") / "nested" / "out")


def _load(ds: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(ds / f"{name}.bmp") as img, Image.open(ds / f"{name}_anno.bmp") as ann:
        return np.asarray(img), np.asarray(ann)


def _rows(ds: Path) -> list[list[str]]:
    return [line.split(",") for line in (ds / "Grade.csv").read_bytes().decode().split("\r")[1:]]


def test_returns_path_and_file_set(ds: Path) -> None:
    assert isinstance(ds, Path) and ds.is_dir()
    expected = {f"{n}.bmp" for n in _names()} | {f"{n}_anno.bmp" for n in _names()}
    assert {p.name for p in ds.iterdir()} == expected | {"Grade.csv"}


def test_bmp_modes_and_sizes(ds: Path) -> None:
    sizes = set()
    for name in _names():
        with Image.open(ds / f"{name}.bmp") as img, Image.open(ds / f"{name}_anno.bmp") as ann:
            assert (img.format, img.mode) == ("BMP", "RGB")
            assert (ann.format, ann.mode) == ("BMP", "L")
            assert ann.size == img.size
            sizes.add(img.size)
    assert len(sizes) >= 2
    assert (W, H) in sizes  # PIL sizes are (width, height)


def test_grade_csv_format(ds: Path) -> None:
    raw = (ds / "Grade.csv").read_bytes()
    assert b"\n" not in raw and b"\r" in raw
    assert not raw.endswith(b"\r")
    lines = raw.decode("ascii").split("\r")
    assert lines[0] == GRADE_HEADER_LINE
    assert lines[0] == "name,patient ID, grade (GlaS), grade (Sirinukunwattana et al. 2015)"
    rows = _rows(ds)
    assert sorted(r[0] for r in rows) == sorted(_names())  # every image exactly once
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)  # string order, like the original
    allowed = {
        " benign": {" healthy", " adenomatous"},
        " malignant": {
            " moderately differentiated",
            " moderately-to-poorly differentated",
            " poorly differentiated",
        },
    }
    for _name, pid, grade, sub in rows:
        assert pid.isdigit() and int(pid) > 0
        assert grade in allowed and sub in allowed[grade]


def test_both_grades_in_every_split(ds: Path) -> None:
    rows = _rows(ds)
    for prefix, min_each in (("train_", 2), ("testA_", 1), ("testB_", 1)):
        grades = [r[2] for r in rows if r[0].startswith(prefix)]
        assert grades.count(" benign") >= min_each
        assert grades.count(" malignant") >= min_each


def test_masks_are_instance_labels(ds: Path) -> None:
    with_glands = 0
    for name in _names():
        _, mask = _load(ds, name)
        k = int(mask.max())
        with_glands += k > 0
        ids = np.unique(mask)
        assert ids[0] == 0 and set(ids) <= set(range(k + 1))
        assert len(ids) - 1 >= 0.8 * k  # ids are (nearly) contiguous 1..K
        assert 0.15 < (mask > 0).mean() < 0.75
    assert with_glands >= 0.8 * len(_names())


def test_deterministic(ds: Path, tmp_path: Path) -> None:
    again = _make(tmp_path / "same")
    other = _make(tmp_path / "other", seed=1)
    for f in sorted(ds.iterdir()):
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name
    assert (other / "train_1.bmp").read_bytes() != (ds / "train_1.bmp").read_bytes()


def test_overwrites_existing_files(tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "train_1.bmp").write_bytes(b"junk")
    generate_synthetic_glas(out, n_train=4, n_test_a=2, n_test_b=2, height=32, width=48)
    with Image.open(out / "train_1.bmp") as img:
        assert img.mode == "RGB"


def test_looks_like_he(ds: Path) -> None:
    darker_rim = 0
    for name in _names():
        img, mask = _load(ds, name)
        rgb = img.astype(np.float64)
        stroma = rgb[mask == 0]
        assert stroma[:, 0].mean() > stroma[:, 1].mean()  # eosin pink: red over green

        gray = rgb.mean(axis=2)
        band, inner = [], []
        for lab in range(1, int(mask.max()) + 1):
            inst = mask == lab
            core = ndimage.binary_erosion(inst, iterations=2, border_value=1)
            lumen = ndimage.binary_erosion(inst, iterations=6, border_value=1)
            if lumen.sum() < 4:
                continue
            band.append(gray[inst & ~core])
            inner.append(gray[lumen])
        if band:
            darker_rim += np.concatenate(band).mean() < np.concatenate(inner).mean() - 10
    assert darker_rim >= 0.8 * len(_names())


def test_cli(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    args = ["--out", str(out), "--n-train", "4", "--n-test-a", "2", "--n-test-b", "2"]
    args += ["--height", "32", "--width", "40", "--seed", "3"]
    res = subprocess.run(
        [sys.executable, "-m", "data.synthetic", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert len(res.stdout.strip().splitlines()) == 1 and str(out) in res.stdout
    assert len(list(out.glob("*_anno.bmp"))) == 8 and (out / "Grade.csv").exists()


def test_slides_folder_has_masks_for_the_first_images_only(tmp_path: Path) -> None:
    from data.folder import index_folder
    from data.synthetic import write_slides_folder

    folder = write_slides_folder(tmp_path / "slides", n_images=6, n_masked=2, height=48, width=64)
    index = index_folder(folder)
    assert sorted(index.images) == [f"train_{i}" for i in range(1, 7)]
    assert sorted(index.masks) == ["train_1", "train_2"]  # the rest is suggest's pool
    for name in index.masks:
        mask = np.asarray(Image.open(folder / "masks" / f"{name}.png"))
        image = np.asarray(Image.open(folder / "images" / f"{name}.png"))
        assert set(np.unique(mask)) == {0, 1} and mask.shape == image.shape[:2]
    rows = (folder / "groups.csv").read_text().splitlines()
    assert rows[0] == "image,group" and len(rows) == 7
    assert {row.split(",")[1] for row in rows[1:]} <= {"benign", "malignant"}
