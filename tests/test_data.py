"""GlaS loading and splits on synthetic data with the real files' quirks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.create_splits import main as create_splits_main
from data.create_splits import make_splits
from data.datasets import check_data_folder, open_dataset
from data.glas import (
    SPLITS,
    DataError,
    GlasDataset,
    ImageStore,
    open_glas,
    read_grade_table,
    read_grades,
    read_split,
)
from data.synthetic import generate_synthetic_glas
from data.transforms import effective_patch_size, train_transform
from tests.conftest import SYNTHETIC_COUNTS
from utils.config import ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def test_read_grades_handles_bare_cr_and_leading_spaces(synthetic_root: Path) -> None:
    raw = (synthetic_root / "GlaS" / "Grade.csv").read_bytes()
    assert b"\r" in raw and b"\n" not in raw  # the quirk is really there
    grades = read_grades(synthetic_root / "GlaS")
    assert len(grades) == sum(SYNTHETIC_COUNTS.values())
    assert set(grades.values()) == {0, 1}
    name = raw.split(b"\r")[1].split(b",")[0].decode()
    expected = 1 if b"malignant" in raw.split(b"\r")[1] else 0
    assert grades[name] == expected


def test_splits_cover_everything_once_and_are_stratified(synthetic_root: Path) -> None:
    splits = make_splits(synthetic_root / "GlaS", seed=0)
    names = {s: [Path(r.image).stem for r in rows] for s, rows in splits.items()}
    n_test = SYNTHETIC_COUNTS["n_test_a"] + SYNTHETIC_COUNTS["n_test_b"]
    assert sorted(names["test"]) == sorted(
        n for n in read_grades(synthetic_root / "GlaS") if not n.startswith("train")
    )
    assert len(names["test"]) == n_test
    assert len(names["val"]) == round(0.2 * SYNTHETIC_COUNTS["n_train"] + 0.4)  # ceil(2.4) = 3
    assert len(names["train"]) + len(names["val"]) == SYNTHETIC_COUNTS["n_train"]
    assert not set(names["train"]) & set(names["val"])
    assert {r.label for r in splits["val"]} == {0, 1}  # stratified: both grades in val
    row = splits["train"][0]
    assert row.mask == f"{Path(row.image).stem}_anno.bmp"


def test_by_patient_val_shares_no_patient_with_train(synthetic_root: Path, tmp_path: Path) -> None:
    data = synthetic_root / "GlaS"
    raw = (data / "Grade.csv").read_bytes().decode().split("\r")[1].split(",")
    patients = {name: patient for name, (patient, _) in read_grade_table(data).items()}
    assert patients[raw[0]] == raw[1].strip()

    def owners(splits: dict, split: str) -> set[str]:
        return {patients[Path(r.image).stem] for r in splits[split]}

    # The synthetic train split has 4 patients of 3 images; the default val mixes them in.
    default = make_splits(data, seed=0)
    assert owners(default, "val") & owners(default, "train")
    splits = make_splits(data, seed=0, by_patient=True)
    assert len(owners(splits, "val")) == 1 and not owners(splits, "val") & owners(splits, "train")
    assert len(splits["val"]) == 3 and len(splits["train"]) == 9
    assert splits["test"] == default["test"]
    out = tmp_path / "splits"
    args = ["--data-path", str(data), "--splits-path", str(out), "--by-patient"]
    assert create_splits_main(args) == 0
    assert [r.image for r in read_split(out, "val")] == [r.image for r in splits["val"]]


@pytest.mark.parametrize("n_train", [4, 5])
def test_splits_of_too_few_images_to_stratify_are_drawn_plainly(
    tmp_path: Path, n_train: int
) -> None:
    # 4 images give a val of 1, which cannot hold both grades; 5 may leave a grade 1 image.
    data = generate_synthetic_glas(tmp_path / "GlaS", n_train=n_train, n_test_a=1, n_test_b=1)
    splits = make_splits(data, seed=0)
    assert len(splits["val"]) == 1 and len(splits["train"]) == n_train - 1


def test_create_splits_cli_is_deterministic(synthetic_root: Path, tmp_path: Path) -> None:
    data = str(synthetic_root / "GlaS")
    for out in ("a", "b"):
        assert create_splits_main(["--data-path", data, "--splits-path", str(tmp_path / out)]) == 0
    assert (
        create_splits_main(
            ["--data-path", data, "--splits-path", str(tmp_path / "c"), "--seed", "5"]
        )
        == 0
    )
    for split in ("train", "val", "test"):
        a = (tmp_path / "a" / f"{split}.csv").read_text()
        assert a == (tmp_path / "b" / f"{split}.csv").read_text()
        assert a.splitlines()[0] == "image,mask,label"
    assert (tmp_path / "a" / "val.csv").read_text() != (tmp_path / "c" / "val.csv").read_text()


def test_create_splits_runs_as_a_script(synthetic_root: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "data/create_splits.py",
            "--data-path",
            str(synthetic_root / "GlaS"),
            "--splits-path",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "test.csv").exists() and "train" in result.stdout


def test_create_splits_refuses_a_splits_path_it_cannot_write_in_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    file = tmp_path / "file"
    file.write_text("not a folder")
    data = ["--data-path", str(synthetic_root / "GlaS")]
    done = subprocess.run(
        [sys.executable, "data/create_splits.py", *data, "--splits-path", str(file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert (
        done.stderr == f"error: --splits-path {file} is a file; name a folder for the split CSVs\n"
    )
    # A folder under a file fails in mkdir itself (NotADirectoryError), as an unwritable one does.
    assert create_splits_main([*data, "--splits-path", str(file / "splits")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --splits-path {file / 'splits'} cannot be written (")
    assert err.count("\n") == 1


def test_a_val_size_that_leaves_no_train_image_is_refused_in_one_line(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, out = ["--data-path", str(synthetic_root / "GlaS")], ["--splits-path", str(tmp_path)]
    assert create_splits_main([*data, *out, "--val-size", "0.99"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "error: --val-size 0.99 puts all 12 train images in val and leaves none to train on; "
        "use at most 0.91\n"
    )
    assert not list(tmp_path.iterdir())
    # The largest fraction it names leaves one.
    assert create_splits_main([*data, *out, "--val-size", "0.91"]) == 0
    assert len(read_split(tmp_path, "train")) == 1


def test_dataset_items_have_documented_types(synthetic_root: Path) -> None:
    rows = read_split(synthetic_root / "splits", "test")
    dataset = GlasDataset(ImageStore(synthetic_root / "GlaS", rows))
    image, mask, label, name = dataset[0]
    assert image.dtype == torch.float32 and image.shape[0] == 3
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert mask.dtype == torch.int64 and mask.shape == image.shape[1:]
    assert set(mask.unique().tolist()) <= {0, 1} and mask.any()
    assert label == rows[0].label and name == rows[0].name
    annotation = np.asarray(Image.open(synthetic_root / "GlaS" / rows[0].mask))
    assert torch.equal(mask, torch.from_numpy((annotation > 0).astype(np.int64)))


def test_image_scale_resizes_image_and_mask(synthetic_root: Path) -> None:
    rows = read_split(synthetic_root / "splits", "train")[:2]
    full = ImageStore(synthetic_root / "GlaS", rows)
    half = ImageStore(synthetic_root / "GlaS", rows, image_scale=0.5)
    for big, small, mask in zip(full.images, half.images, half.masks, strict=True):
        assert small.shape[1:] == (round(big.shape[1] / 2), round(big.shape[2] / 2))
        assert mask.shape == small.shape[1:] and set(mask.unique().tolist()) <= {0, 1}
    # The mask is resampled by nearest neighbour: a bilinear one, thresholded, would grow glands.
    for row, mask in zip(rows, half.masks, strict=True):
        annotation = Image.open(synthetic_root / "GlaS" / row.mask)
        size = (round(annotation.width / 2), round(annotation.height / 2))
        binary = Image.fromarray(((np.asarray(annotation) > 0) * 255).astype(np.uint8))
        nearest = np.asarray(binary.resize(size, Image.Resampling.NEAREST)) > 0
        assert torch.equal(mask, torch.from_numpy(nearest.astype(np.int64)))


@pytest.mark.parametrize("scale", [0.5, 0.35, 0.01])
def test_image_scale_resamples_images_bilinearly_and_masks_by_nearest(
    synthetic_root: Path, scale: float
) -> None:
    # Pins the filters themselves: committed results were computed on images resized so, and
    # another filter (nearest, bicubic) would change every pixel value the model sees. 0.35
    # rounds the size up where int() would not; 0.01 keeps one pixel a side.
    rows = read_split(synthetic_root / "splits", "train")[:2]
    store = ImageStore(synthetic_root / "GlaS", rows, image_scale=scale)
    for row, image, mask in zip(rows, store.images, store.masks, strict=True):
        original = Image.open(synthetic_root / "GlaS" / row.image).convert("RGB")
        size = (max(1, round(original.width * scale)), max(1, round(original.height * scale)))
        bilinear = np.asarray(original.resize(size, Image.Resampling.BILINEAR))
        assert np.array_equal(image.permute(1, 2, 0).numpy(), bilinear)
        annotation = np.asarray(Image.open(synthetic_root / "GlaS" / row.mask)) > 0
        binary = Image.fromarray(annotation.astype(np.uint8))
        nearest = np.asarray(binary.resize(size, Image.Resampling.NEAREST))
        assert np.array_equal(mask.numpy(), nearest)


def test_augmentation_moves_image_and_mask_together() -> None:
    store = ImageStore.__new__(ImageStore)  # hand-made store: image brightness encodes the mask
    mask = torch.zeros(40, 40, dtype=torch.uint8)
    mask[5:20, 8:30] = 1
    store.rows, store.names, store.labels = [], ["x"], np.array([0])
    store.images, store.masks = [mask.expand(3, -1, -1) * 200 + 20], [mask]
    dataset = GlasDataset(store, train_transform((24, 24)))
    torch.manual_seed(0)
    for _ in range(20):
        image, crop, _, _ = dataset[0]
        assert image.shape == (3, 24, 24) and crop.shape == (24, 24)
        # Colour jitter shifts values a little but never across the 20/220 gap.
        assert torch.equal(image.mean(0) > 0.47, crop.bool())


def test_quarter_turns_only_for_square_patches() -> None:
    from torchvision import tv_tensors

    from data.transforms import RandomRot90

    def turns(height: int, width: int) -> set[int]:
        image = tv_tensors.Image(torch.arange(height * width).reshape(1, height, width))
        seen = set()
        torch.manual_seed(0)
        for _ in range(40):
            turned = RandomRot90()(image)
            seen |= {
                k
                for k in range(4)
                if torch.equal(
                    turned, torch.rot90(image, k, dims=(-2, -1)).as_subclass(type(turned))
                )
            }
        return seen

    assert turns(4, 4) == {0, 1, 2, 3}
    assert turns(4, 6) == {0, 2}  # a quarter turn would make a 6x4 crop that cannot batch


def test_effective_patch_size_fits_smallest_image() -> None:
    assert effective_patch_size((416, 416), (522, 775)) == (416, 416)
    assert effective_patch_size((416, 416), (130, 194)) == (130, 130)
    assert effective_patch_size((300, 400), (130, 194)) == (130, 194)


def test_missing_mask_names_the_file(glas_copy: tuple[Path, Path]) -> None:
    data, splits = glas_copy
    row = read_split(splits, "train")[0]
    (data / row.mask).unlink()
    with pytest.raises(DataError, match=row.mask):
        ImageStore(data, [row])


def test_mask_of_other_size_names_the_file(glas_copy: tuple[Path, Path]) -> None:
    data, splits = glas_copy
    row = read_split(splits, "train")[0]
    Image.new("L", (5, 5)).save(data / row.mask)
    with pytest.raises(DataError, match=f"{row.mask}.*must match"):
        ImageStore(data, [row])


def test_truncated_bmp_is_reported(glas_copy: tuple[Path, Path]) -> None:
    data, splits = glas_copy
    row = read_split(splits, "train")[0]
    raw = (data / row.image).read_bytes()
    (data / row.image).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=f"{row.image}.*corrupt or truncated"):
        ImageStore(data, [row])


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("train_1,3, benign", "malformed row"),
        ("train_1,3, mild, healthy", "unknown grade 'mild'"),
        ("train_1,3, malignant, adenocarcinomatous", "train_1 is listed again"),
    ],
)
def test_bad_grade_rows_are_named(glas_copy: tuple[Path, Path], line: str, message: str) -> None:
    data, _ = glas_copy
    csv = data / "Grade.csv"
    csv.write_bytes(csv.read_bytes() + b"\r" + line.encode())
    with pytest.raises(DataError, match=f"line {len(read_grades_lines(csv))}: {message}"):
        read_grades(data)


def read_grades_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_empty_split_and_missing_split(glas_copy: tuple[Path, Path]) -> None:
    _, splits = glas_copy
    (splits / "val.csv").write_text("image,mask,label\n")
    with pytest.raises(DataError, match="val.csv is empty"):
        read_split(splits, "val")
    (splits / "val.csv").unlink()
    with pytest.raises(DataError, match="run `python data/create_splits.py"):
        read_split(splits, "val")


def test_a_split_edited_in_a_spreadsheet_reads_as_written(glas_copy: tuple[Path, Path]) -> None:
    _, splits = glas_copy
    path = splits / "val.csv"
    rows = read_split(splits, "val")
    # A byte-order mark in front and a blank line at the end, as spreadsheets save it.
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes() + b"\r\n")
    assert read_split(splits, "val") == rows


def test_a_split_row_that_grade_csv_does_not_grade_is_refused(
    glas_copy: tuple[Path, Path],
) -> None:
    data, splits = glas_copy
    with (splits / "train.csv").open("a") as f:
        f.write("train_999.bmp,train_999_anno.bmp,0\n")
    with pytest.raises(DataError, match="lists train_999, which .*Grade.csv does not grade"):
        open_glas(data, splits, SPLITS)


def test_an_image_in_two_split_files_is_refused(glas_copy: tuple[Path, Path]) -> None:
    data, splits = glas_copy
    test_row = (splits / "test.csv").read_text().splitlines()[1]
    with (splits / "train.csv").open("a") as f:
        f.write(test_row + "\n")
    with pytest.raises(DataError) as error:
        open_glas(data, splits, SPLITS)
    name = test_row.split(",")[0].removesuffix(".bmp")
    message = str(error.value)
    assert "\n" not in message and name in message and "test.csv" in message, message


def test_missing_data_folder_explains_how_to_get_glas(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist.*active.py with demo"):
        read_grades(tmp_path / "nowhere")


@pytest.mark.parametrize("dataset", ["glas", "folder"])
def test_early_data_folder_check_says_what_the_opener_says(tmp_path: Path, dataset: str) -> None:
    # active.py and sweep.py check the folder before refusing for another reason; the line
    # must be the one the dataset's opener would give, with the same fix.
    cfg = ExperimentConfig(dataset=dataset, data_path=str(tmp_path / "nowhere"), synthetic=False)
    with pytest.raises(DataError) as early:
        check_data_folder(cfg)
    with pytest.raises(DataError) as opened:
        open_dataset(cfg, SPLITS)
    assert str(early.value) == str(opened.value)
    assert str(early.value).startswith(f"data folder {tmp_path / 'nowhere'} does not exist; ")


def test_a_stratified_split_keeps_each_groups_share_on_both_sides() -> None:
    from data.splitting import stratified_split

    names = [f"img_{i}" for i in range(20)]
    groups = {name: i % 2 for i, name in enumerate(names)}
    for seed in range(10):
        kept, out = stratified_split(names, 4, groups, seed)
        assert sorted(kept + out) == sorted(names) and len(out) == 4
        assert sorted(groups[n] for n in out) == [0, 0, 1, 1]  # 10/10 -> 2/2, every seed
    # A group of one image cannot be on both sides: a plain draw, not a refusal.
    lonely = {**groups, "img_0": 2}
    kept, out = stratified_split(names, 4, lonely, 0)
    assert sorted(kept + out) == sorted(names) and len(out) == 4
