"""dataset=folder: GlaS written as a folder runs bitwise as GlaS; generated folders of every
mask kind load and run; every bad input is refused in one line naming the file."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data.datasets import open_dataset
from data.folder import _check_classes, index_folder, make_folder_splits, open_folder, save_png
from data.glas import SPLITS, open_glas, read_grades, read_split
from data.segmentation import DataError
from tests.conftest import tiny_config
from tests.test_active import expect_exit
from utils.config import ConfigError, ExperimentConfig, merged, validate
from utils.loop.run import run_active_learning


def glas_as_folder(glas: Path, splits: Path, out: Path) -> Path:
    """The synthetic GlaS as a folder: PNG images and 0/1 masks, grades as groups, same rows."""
    grades = read_grades(glas)
    groups = ["image,group"]
    for split in SPLITS:
        rows = read_split(splits, split)
        lines = ["image"]
        for row in rows:
            with Image.open(glas / row.image) as im:
                save_png(out / "images" / f"{row.name}.png", np.asarray(im.convert("RGB")))
            with Image.open(glas / row.mask) as im:
                mask = (np.asarray(im.convert("L")) > 0).astype(np.uint8)
            save_png(out / "masks" / f"{row.name}.png", mask)
            groups.append(f"{row.name},{grades[row.name]}")
            lines.append(row.name)
        (out / "splits").mkdir(parents=True, exist_ok=True)
        (out / "splits" / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (out / "groups.csv").write_text("\n".join(groups) + "\n")
    return out


def test_glas_written_as_a_folder_gives_the_same_results_bitwise(
    synthetic_root: Path, tmp_path: Path
) -> None:
    glas, splits = synthetic_root / "GlaS", synthetic_root / "splits"
    folder = glas_as_folder(glas, splits, tmp_path / "folder")
    as_glas = open_glas(glas, splits, SPLITS)
    as_folder = open_folder(folder, folder / "splits", num_classes=2)
    for split in SPLITS:
        a, b = as_glas.store(split, 0.5), as_folder.store(split, 0.5)
        assert a.names == b.names and np.array_equal(a.labels, b.labels)
        for x, y in zip(a.images + a.masks, b.images + b.masks, strict=True):
            assert np.array_equal(x.numpy(), y.numpy())

    results = {}
    for dataset, data_path in (("glas", glas), ("folder", folder)):
        config = tiny_config(data_path, splits, tmp_path / dataset, dataset=dataset)
        if dataset == "folder":
            del config["splits_path"]  # the default: the folder's own splits/
        run_active_learning(ExperimentConfig(**config))
        results[dataset] = (tmp_path / dataset / "bald_0.npy").read_bytes()
    assert results["folder"] == results["glas"]
    record = json.loads((tmp_path / "folder" / "bald_0.json").read_text())
    assert record["config"]["dataset"] == "folder"
    dice = np.load(tmp_path / "folder" / "bald_0.npy")
    assert [c["class_1"] for c in record["test_dice_per_class"]] == pytest.approx(dice.tolist())


def make_folder(
    root: Path,
    n: int = 10,
    num_classes: int = 2,
    sizes: tuple[tuple[int, int], ...] = ((48, 64),),
    instance: bool = False,
    groups: bool = False,
    seed: int = 0,
    patients: int = 0,
) -> Path:
    """Images with bright blobs of each class on a dark background; ``instance`` numbers the
    blobs 1..K instead of giving their class. ``groups`` writes groups.csv (groups a and b in
    turn), with a patient column when ``patients`` > 0 (patient i % patients for image i)."""
    rng = np.random.default_rng(seed)
    colours = np.array([[40, 30, 50], [200, 60, 90], [60, 90, 210], [90, 200, 60]], np.uint8)
    rows = ["image,group,patient" if patients else "image,group"]
    for i in range(n):
        height, width = sizes[i % len(sizes)]
        mask = np.zeros((height, width), np.uint8)
        yy, xx = np.mgrid[:height, :width]
        for blob in range(1, 5):
            cy, cx = rng.integers(8, height - 8), rng.integers(8, width - 8)
            disk = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.integers(16, 60)
            mask[disk] = blob if instance else 1 + (blob - 1) % (num_classes - 1)
        classes = (mask > 0).astype(int) if instance else mask
        noise = rng.integers(0, 30, (height, width, 3))
        image = np.clip(colours[classes].astype(int) + noise, 0, 255).astype(np.uint8)
        save_png(root / "images" / f"img_{i:02d}.png", image)
        save_png(root / "masks" / f"img_{i:02d}.png", mask)
        rows.append(f"img_{i:02d},{'ab'[i % 2]}" + (f",p{i % patients}" if patients else ""))
    if groups:
        (root / "groups.csv").write_text("\n".join(rows) + "\n")
    return root


def test_splits_are_written_once_seeded_stratified_and_disjoint(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=20, groups=True)
    data = open_folder(folder, folder / "splits", num_classes=2)
    written = {s: (folder / "splits" / f"{s}.csv").read_text() for s in SPLITS}
    names = {s: [r.name for r in data.splits[s]] for s in SPLITS}
    assert [len(names[s]) for s in SPLITS] == [13, 3, 4]  # test 20 %, val 20 % of the rest
    assert sum(len(set(v)) for v in names.values()) == 20
    assert sum(r.label for r in data.splits["test"]) == 2  # two of each group
    assert make_folder_splits(index_folder(folder)) == names  # seeded
    open_folder(folder, folder / "splits", num_classes=2)
    assert {s: (folder / "splits" / f"{s}.csv").read_text() for s in SPLITS} == written
    # Without groups.csv every image is group 0.
    bare = make_folder(tmp_path / "bare", n=6)
    assert {r.label for s in SPLITS for r in open_folder(bare, bare / "s", 2).splits[s]} == {0}


def test_patients_are_never_split_across_train_val_and_test(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=30, groups=True, patients=10)
    data = open_folder(folder, folder / "splits", num_classes=2)
    names = {s: [r.name for r in data.splits[s]] for s in SPLITS}
    owners = {s: {f"p{int(n[4:]) % 10}" for n in names[s]} for s in SPLITS}
    assert sum(len(o) for o in owners.values()) == 10  # each patient in one split only
    assert sorted(n for s in SPLITS for n in names[s]) == [f"img_{i:02d}" for i in range(30)]
    # Whole patients of 3 images: test 2 of 10 patients (20 %), val 2 of the 8 left (25 %, the
    # fold nearest 20 % of 24 images).
    assert [len(owners[s]) for s in SPLITS] == [6, 2, 2]
    assert [len(names[s]) for s in SPLITS] == [18, 6, 6]
    assert make_folder_splits(index_folder(folder)) == names  # seeded
    assert make_folder_splits(index_folder(folder), seed=1) != names


def test_split_files_that_split_a_patient_are_refused(tmp_path: Path) -> None:
    # Written before groups.csv named patients: img_00 and img_10 (patient p0) end up apart.
    folder = make_folder(tmp_path / "f", n=30, groups=True)
    splits = open_folder(folder, folder / "splits", num_classes=2).splits
    make_folder(tmp_path / "f", n=30, groups=True, patients=10)
    where = {r.name: s for s in SPLITS for r in splits[s]}
    with pytest.raises(DataError) as error:
        open_folder(folder, folder / "splits", num_classes=2)
    message = str(error.value)
    assert "\n" not in message and "one split" in message, message
    patient, first, second = re.search(r"patient '(p\d)'.* \((\w+)\).* \((\w+)\)", message).groups()
    assert patient == f"p{int(first[4:]) % 10}" == f"p{int(second[4:]) % 10}"
    assert where[first] != where[second]


def test_images_added_after_the_splits_are_named_not_used_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    open_folder(folder, folder / "splits", num_classes=2)
    assert capsys.readouterr().err == ""
    for stem in ("img_06", "img_07"):
        for kind in ("images", "masks"):
            shutil.copy(folder / kind / "img_00.png", folder / kind / f"{stem}.png")
    data = open_folder(folder, folder / "splits", num_classes=2)
    assert sum(len(data.splits[s]) for s in SPLITS) == 6
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: 2 masked image(s)" in err and "img_06" in err, err
    shutil.copy(folder / "images" / "img_00.png", folder / "images" / "img_08.png")  # no mask
    data = open_folder(folder, folder / "splits", num_classes=2)
    assert sum(len(data.splits[s]) for s in SPLITS) == 6
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "warning: 1 image(s)" in err[1] and "no mask" in err[1], err
    assert "img_08" in err[1], err


def test_runs_started_together_see_the_splits_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import data.folder

    folder = make_folder(tmp_path / "f", n=20, groups=True)
    write = data.folder.atomic_write_text

    def write_slowly(path: Path, text: str) -> None:
        write(path, text)
        threading.Event().wait(0.2)  # between files, where another run would see some of them

    monkeypatch.setattr(data.folder, "atomic_write_text", write_slowly)
    errors: list[Exception] = []

    def open_it() -> None:
        try:
            open_folder(folder, folder / "splits", num_classes=2)
        except DataError as err:
            errors.append(err)

    threads = [threading.Thread(target=open_it) for _ in range(3)]
    for thread in threads:
        thread.start()
        threading.Event().wait(0.05)
    for thread in threads:
        thread.join()
    assert errors == []


def test_masks_in_the_formats_of_annotation_tools_read_as_their_classes(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=6, num_classes=3)
    expected = {path.stem: np.asarray(Image.open(path)) for path in (folder / "masks").iterdir()}
    masks = sorted((folder / "masks").iterdir())
    # Opaque grey with alpha (GIMP), a coloured palette (VOC-style), a grey palette ramp shown
    # brighter than its indices, and a 16-bit TIFF.
    mask = expected[masks[0].stem]
    alpha = np.full_like(mask, 255)
    Image.fromarray(np.stack([mask, alpha], -1), "LA").save(masks[0])
    for path, palette in (
        (masks[1], [0, 0, 0, 128, 0, 0, 0, 128, 0]),
        (masks[2], [0] * 3 + [120] * 3 + [240] * 3),
    ):
        paletted = Image.fromarray(expected[path.stem], "P")
        paletted.putpalette(palette)
        paletted.save(path)
    masks[3].unlink()
    Image.fromarray(expected[masks[3].stem].astype(np.uint16)).save(masks[3].with_suffix(".tif"))
    data = open_folder(folder, folder / "splits", num_classes=3)
    for split in SPLITS:
        store = data.store(split, 1.0)
        for name, labels in zip(store.names, store.masks, strict=True):
            np.testing.assert_array_equal(labels.numpy(), expected[name], err_msg=name)


def test_names_that_end_in_an_image_suffix_are_read_back(tmp_path: Path) -> None:
    # What `convert "$f" "$f.png"` leaves: img_00.tif.png, whose stem is img_00.tif.
    folder = make_folder(tmp_path / "f", n=6, groups=True)
    for sub in ("images", "masks"):
        for path in (folder / sub).iterdir():
            path.rename(path.with_name(f"{path.stem}.tif.png"))
    groups = folder / "groups.csv"
    groups.write_text(
        "\n".join(
            line if i == 0 else line.replace(",", ".tif,", 1)
            for i, line in enumerate(groups.read_text().splitlines())
        )
        + "\n"
    )
    first = open_folder(folder, folder / "splits", num_classes=2).splits
    again = open_folder(folder, folder / "splits", num_classes=2).splits
    assert first == again
    assert sorted(r.image for rows in first.values() for r in rows) == [
        f"images/img_{i:02d}.tif.png" for i in range(6)
    ]


def test_a_folder_with_its_splits_is_read_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import data.folder

    folder = make_folder(tmp_path / "f", n=10)
    written = open_folder(folder, folder / "splits", num_classes=2).splits

    def read_only_folder(path: Path) -> None:
        # What creating the lock file raises in a folder the run may not write to.
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(data.folder, "waiting_lock", read_only_folder)
    assert open_folder(folder, folder / "splits", num_classes=2).splits == written
    (folder / "splits" / "val.csv").unlink()  # incomplete: the run must write, so it must lock
    with pytest.raises(DataError, match=r"split files in .* cannot be written \(Permission de"):
        open_folder(folder, folder / "splits", num_classes=2)
    # A file where the folder should be is named as such.
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match="splits_path=.* is a file; name a folder"):
        open_folder(folder, tmp_path / "file", num_classes=2)


@pytest.mark.parametrize(
    ("rows", "fragment"),
    [
        (
            ["image,group,patient", "img_00,a,p0", "img_01,b,p1", "img_02,a,p0", "img_03,b,p1"],
            "names 2 patient(s) among the 4 masked images; train, val and test by patient need at "
            "least 3",
        ),
        (
            ["image,group,patient", "img_00,a,p0", "img_01,b,"],
            "line 3: expected 'image,group,patient'",
        ),
        (
            ["image,grade,patient", "img_00,a,p0"],
            "header must start 'image,group' (a 'patient' column may follow), got "
            "'image,grade,patient'",
        ),
        (
            ["image;group;patient", "img_00;a;p0"],
            "got 'image;group;patient'; it is separated by ';': save it with commas",
        ),
        (
            ["image,group,patient", "img_00,a,p0", "img_01,b,p1", "img_02,a,p2"],
            "has no group for 'img_03' (1 image without one); add a row 'img_03,GROUP,PATIENT'",
        ),
        (
            ["image,group,Patient ID", "img_00,a,p0", "img_01,b,p1", "img_02,a,p2", "img_03,b,p3"],
            "column 'Patient ID' is not read; name it 'patient'",
        ),
        (
            ["image,group", "img_00,a", "img_01,b", "img_02,a", "img_00,b", "img_03,b"],
            "line 5: 'img_00' is listed again (first on line 2); keep one row per image",
        ),
    ],
)
def test_bad_patient_columns_are_one_line(tmp_path: Path, rows: list[str], fragment: str) -> None:
    folder = make_folder(tmp_path / "f", n=4)
    (folder / "groups.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as error:
        open_folder(folder, folder / "splits", num_classes=2)
    message = str(error.value)
    assert "\n" not in message and fragment in message and "groups.csv" in message, message


def test_other_columns_of_groups_csv_are_ignored(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    rows = [f"img_{i:02d},{'ab'[i % 2]},scanner {i},p{i // 2}" for i in range(6)]
    (folder / "groups.csv").write_text("\n".join(["image,group,note,patient", *rows]) + "\n")
    index = index_folder(folder)
    assert index.patients == {f"img_{i:02d}": f"p{i // 2}" for i in range(6)}
    assert index.groups == {f"img_{i:02d}": i % 2 for i in range(6)}
    (folder / "groups.csv").write_text("image,group,note\n" + "\n".join(rows) + "\n")
    assert index_folder(folder).patients is None
    # Headers in capitals are read alike; 'patient_age' is the lab's own column.
    (folder / "groups.csv").write_text("Image,Group,note,patient\n" + "\n".join(rows) + "\n")
    assert index_folder(folder).groups == {f"img_{i:02d}": i % 2 for i in range(6)}
    (folder / "groups.csv").write_text("image,group,patient_age,Patient\n" + "\n".join(rows) + "\n")
    assert index_folder(folder).patients == {f"img_{i:02d}": f"p{i // 2}" for i in range(6)}
    (folder / "groups.csv").write_text("image,group,patient_age,note\n" + "\n".join(rows) + "\n")
    assert index_folder(folder).patients is None


def test_only_masked_images_need_a_group_when_asked(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=6, groups=True)
    save_png(folder / "images" / "new.png", np.zeros((48, 64, 3), np.uint8))  # no row, no mask
    with pytest.raises(DataError, match="has no group for 'new'"):
        index_folder(folder)
    index = index_folder(folder, group_every_image=False)
    assert index.groups == {**{f"img_{i:02d}": i % 2 for i in range(6)}, "new": 0}
    (folder / "masks" / "img_05.png").unlink()
    (folder / "groups.csv").write_text(
        "image,group\n" + "".join(f"img_{i:02d},a\n" for i in range(4))
    )
    # img_04 has a mask and no row: still refused.
    with pytest.raises(DataError, match="has no group for 'img_04'"):
        index_folder(folder, group_every_image=False)


def test_instance_masks_collapse_to_foreground(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=5, instance=True)
    store = open_folder(folder, folder / "splits", 2, mask_kind="instance").store("train")
    raw = np.asarray(Image.open(folder / store.rows[0].mask))
    assert raw.max() > 1
    assert np.array_equal(store.masks[0].numpy(), (raw > 0).astype(np.uint8))


def test_binary_masks_saved_as_0_255_read_as_0_1(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=5)
    plain = open_folder(folder, folder / "splits", 2).store("train")
    for path in (folder / "masks").iterdir():
        save_png(path, np.asarray(Image.open(path)) * np.uint8(255))
    with pytest.raises(DataError, match=r"value 255 .*\(0/255\) set mask_kind=binary; or if 255"):
        open_folder(folder, folder / "splits", 2).store("train")
    binary = open_folder(folder, folder / "splits", 2, mask_kind="binary").store("train")
    for a, b in zip(plain.masks, binary.masks, strict=True):
        assert a.max() == 1 and torch.equal(a, b)


@pytest.mark.parametrize(
    ("values", "fixes"),
    [
        # Classes and 255 for "not annotated": no instance ids, or 255 would become foreground.
        ([0, 1, 255], ["if 255 marks pixels left unannotated, set unannotated_value=255"]),
        ([0, 255], ["(0/255) set mask_kind=binary", "unannotated_value=255"]),
        ([0, 1, 3, 255], ["unannotated_value=255 and num_classes=4", "mask_kind=instance for"]),
        # A smoothed 0/255 mask: no class count, and no unannotated_value, fits.
        (list(range(0, 256, 5)), ["holds 52 different values: for instance ids set mask_kind="]),
        # An "ignore" value below 0 is no instance id: that would make it background.
        ([-1, 0, 1], ["-1 is no class index: save such pixels as a class, or as 255"]),
        ([0, 1, 2, 7], ["set num_classes=8", "mask_kind=instance for instance ids"]),
    ],
)
def test_a_mask_value_out_of_range_gets_the_fixes_that_fit(values: list[int], fixes) -> None:
    with pytest.raises(DataError) as error:
        _check_classes(Path("m.png"), np.array(values), num_classes=2)
    message = str(error.value)
    assert message.count("; or ") == len(fixes) - 1, message
    assert all(fix in message for fix in fixes), message


def test_three_classes_of_mixed_sizes_run_end_to_end(tmp_path: Path) -> None:
    folder = make_folder(tmp_path / "f", n=12, num_classes=3, sizes=((48, 64), (40, 56), (56, 48)))
    config = tiny_config(folder, folder / "splits", tmp_path / "results")
    config.update(dataset="folder", num_classes=3, al_cycles=1, n_label_start=2)
    cfg = ExperimentConfig(**config)
    train = open_dataset(cfg, SPLITS).store("train")
    assert len({tuple(im.shape) for im in train.images}) == 3
    assert set(np.unique(np.concatenate([m.numpy().ravel() for m in train.masks]))) == {0, 1, 2}
    dice = run_active_learning(cfg)
    record = json.loads((tmp_path / "results" / "bald_0.json").read_text())
    assert [sorted(c) for c in record["test_dice_per_class"]] == [["class_1", "class_2"]] * 2
    for per_class, mean in zip(record["test_dice_per_class"], dice, strict=True):
        assert np.mean(list(per_class.values())) == pytest.approx(mean)
    # balance_al labels n_data_to_label per group, and at least two groups' worth, as on GlaS.
    assert record["n_labelled"] == [2, 4]


@pytest.mark.parametrize("named", [(), ("demo",)])
def test_a_folder_keeps_its_splits_under_glas_splits_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, named: tuple[str, ...]
) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    monkeypatch.chdir(tmp_path)  # where the GlaS splits of the defaults and of demo would go
    config = merged(named, {"dataset": "folder", "data_path": str(folder), "synthetic": False})
    assert config["splits_path"] in ("data/splits/glas", "data/synthetic/splits-rare")
    data = open_dataset(ExperimentConfig.from_mapping(config), SPLITS)
    assert sorted(p.name for p in (folder / "splits").iterdir()) == [
        "test.csv",
        "train.csv",
        "val.csv",
    ]
    assert not (tmp_path / "data").exists()
    assert len(data.store("train")) + len(data.store("val")) + len(data.store("test")) == 6


def test_more_than_two_classes_need_dataset_folder() -> None:
    with pytest.raises(ConfigError, match="^num_classes must be 2 .* dataset=folder"):
        validate(ExperimentConfig(num_classes=3))
    validate(ExperimentConfig(num_classes=3, dataset="folder"))
    with pytest.raises(ConfigError, match="mask_kind=instance gives two classes"):
        validate(ExperimentConfig(num_classes=3, dataset="folder", mask_kind="instance"))


def test_unannotated_pixels_need_a_value_no_class_has() -> None:
    folder = {"dataset": "folder", "unannotated_value": 255}
    validate(ExperimentConfig(**folder))
    validate(ExperimentConfig(**folder, num_classes=4))
    with pytest.raises(ConfigError, match="needs mask_kind=class"):  # 255 is a binary foreground
        validate(ExperimentConfig(**folder, mask_kind="binary"))
    with pytest.raises(ConfigError, match="unannotated_value=2 is also a class"):
        validate(ExperimentConfig(dataset="folder", unannotated_value=2, num_classes=3))


def break_folder(folder: Path, how: str) -> str:
    """Break the folder one way; return a fragment the one-line error must hold."""
    if how == "image without a mask":
        (folder / "masks" / "img_03.png").unlink()
        return "images/img_03.png has no mask"
    if how == "mask of another size":
        save_png(folder / "masks" / "img_03.png", np.zeros((10, 12), np.uint8))
        return "masks/img_03.png is 12x10 but its image images/img_03.png is 64x48"
    if how == "mask value >= C":
        mask = np.asarray(Image.open(folder / "masks" / "img_03.png")).copy()
        mask[0, 0] = 2
        save_png(folder / "masks" / "img_03.png", mask)
        return "masks/img_03.png holds the value 2 but num_classes=2 allows 0..1; set num_classes=3"
    if how == "unreadable image":
        (folder / "images" / "img_03.png").write_bytes(b"not a png")
        return "images/img_03.png cannot be decoded"
    if how == "mask saved as JPEG":
        (folder / "masks" / "img_03.png").rename(folder / "masks" / "img_03.jpg")
        return (
            "masks/img_03.jpg is not a lossless format this reads (.png, .tif, .tiff, .bmp); "
            "export it again as .png from the annotation tool"
        )
    if how == "image in a subfolder":
        (folder / "images" / "batch2").mkdir()
        (folder / "images" / "img_03.png").rename(folder / "images" / "batch2" / "img_03.png")
        return "images/batch2 is a folder; "
    if how == "image of another format":
        (folder / "images" / "img_09.webp").write_bytes(b"RIFF")
        return "images/img_09.webp is not a format this reads"
    if how == "16-bit grey image":
        ramp = (np.arange(64 * 48, dtype=np.uint16) * 20).reshape(48, 64)  # 0..61420
        Image.fromarray(ramp).save(folder / "images" / "img_03.png")
        return "images/img_03.png is a I;16 image (16-bit or float grey)"
    if how == "empty folder":
        for path in (folder / "images").iterdir():
            path.unlink()
        return "images holds no images"
    if how == "mask with transparent pixels":
        # Painted on a transparent layer: unpainted pixels are (0, 0, 0) and fully transparent.
        mask = np.asarray(Image.open(folder / "masks" / "img_03.png"))
        rgba = np.zeros((*mask.shape, 4), np.uint8)
        rgba[..., :3] = mask[..., None]
        rgba[:16, :16, 3] = 255
        Image.fromarray(rgba, "RGBA").save(folder / "masks" / "img_03.png")
        return "masks/img_03.png has transparent pixels"
    if how == "grey palette mask inverted":
        # A 0/1 mask re-saved by an optimiser as two palette colours, white first.
        mask = np.asarray(Image.open(folder / "masks" / "img_03.png"))
        inverted = Image.fromarray((1 - mask).astype(np.uint8), "P")
        inverted.putpalette([255, 255, 255, 0, 0, 0])
        inverted.save(folder / "masks" / "img_03.png")
        return "masks/img_03.png is a palette image whose grey levels do not rise with its indices"
    if how == "JPEG-compressed TIFF mask":
        mask = Image.open(folder / "masks" / "img_03.png").convert("L")
        (folder / "masks" / "img_03.png").unlink()
        mask.save(folder / "masks" / "img_03.tif", compression="jpeg")
        return "masks/img_03.tif is JPEG-compressed, which smears the classes"
    if how == "image turned by EXIF":
        image = Image.open(folder / "images" / "img_03.png")
        exif = Image.Exif()
        exif[0x0112] = 3  # stored upside down, shown upright
        (folder / "images" / "img_03.png").unlink()
        image.save(folder / "images" / "img_03.jpg", exif=exif, quality=95)
        return "images/img_03.jpg is stored turned and shown upright by its EXIF orientation (3)"
    if how == "mask with transparent grey":
        mask = np.asarray(Image.open(folder / "masks" / "img_03.png"))
        alpha = np.full_like(mask, 255)
        alpha[0, 0] = 0
        Image.fromarray(np.stack([mask, alpha], -1), "LA").save(folder / "masks" / "img_03.png")
        return "masks/img_03.png has transparent pixels"
    if how in ("groups.csv not UTF-8", "split file not UTF-8", "groups.csv not UTF-8 after a BOM"):
        # As Excel's plain "CSV" writes it on Windows: cp1252, where é is the byte 0xe9.
        groups = "".join(f"img_{i:02d},Adénome\n" for i in range(6))
        (folder / "groups.csv").write_bytes(("image,group\n" + groups).encode("cp1252"))
        if how == "groups.csv not UTF-8":
            return "groups.csv is not UTF-8 text (byte 21 is 0xe9); save it as UTF-8"
        if how == "groups.csv not UTF-8 after a BOM":  # the byte is counted in the file
            path = folder / "groups.csv"
            path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
            return "groups.csv is not UTF-8 text (byte 24 is 0xe9)"
        (folder / "groups.csv").write_text("image,group\n" + groups)
        (folder / "splits").mkdir()
        for split, names in (("train", "00,01,02"), ("val", "03,04"), ("test", "05")):
            rows = "".join(f"img_{n},é\n" for n in names.split(","))
            (folder / "splits" / f"{split}.csv").write_bytes(f"image,note\n{rows}".encode("cp1252"))
        return "splits/train.csv is not UTF-8 text (byte 18 is 0xe9)"
    raise ValueError(how)


@pytest.mark.parametrize(
    "how",
    [
        "image without a mask",
        "mask of another size",
        "mask value >= C",
        "unreadable image",
        "mask saved as JPEG",
        "image in a subfolder",
        "image of another format",
        "16-bit grey image",
        "empty folder",
        "mask with transparent pixels",
        "mask with transparent grey",
        "grey palette mask inverted",
        "JPEG-compressed TIFF mask",
        "image turned by EXIF",
        "groups.csv not UTF-8",
        "groups.csv not UTF-8 after a BOM",
        "split file not UTF-8",
    ],
)
def test_bad_input_is_one_line_naming_the_file(tmp_path: Path, how: str) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    fragment = break_folder(folder, how)
    with pytest.raises(DataError) as error:
        for split in SPLITS:
            open_folder(folder, folder / "splits", num_classes=2).store(split)
    message = str(error.value)
    assert "\n" not in message and fragment in message, message


def test_an_image_over_pillows_size_limit_is_one_line_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    # Pillow refuses images over twice its limit; 48x64 images stand in for a 20k x 20k slide.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(DataError) as error:
        open_folder(folder, folder / "splits", num_classes=2).store("train")
    message = str(error.value)
    assert "\n" not in message and "/images/img_" in message, message
    assert "is larger than Pillow opens" in message and "cut it into tiles" in message


def test_the_command_line_refuses_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder = make_folder(tmp_path / "f", n=6)
    fragment = break_folder(folder, "mask value >= C")
    config = tiny_config(folder, folder / "splits", tmp_path / "results", dataset="folder")
    expect_exit(config, capsys, fragment)
