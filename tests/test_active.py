"""End-to-end runs of the Sacred experiment on synthetic data, and every bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sacred.observers import FileStorageObserver

from active import ex
from data.glas import read_split
from heuristics import ALIASES, HEURISTIC_NAMES
from tests.conftest import spy_on_coreset, tiny_config
from utils.loop.run import MIN_IMAGE_SIDE, lowest_scale

EXPECTED_KEYS = {"config", "n_labelled", "test_dice", "acquired", "test_dice_per_image"}


def run(config: dict, named_configs: tuple[str, ...] = ()):
    return ex.run(config_updates=config, named_configs=list(named_configs))


def test_end_to_end_writes_documented_outputs(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    observer = FileStorageObserver(str(tmp_path / "runs"))
    ex.observers.append(observer)
    try:
        result = run(config)
    finally:
        ex.observers.remove(observer)
    dice = np.load(tmp_path / "bald_0.npy")
    assert dice.shape == (3,) and np.all((dice >= 0) & (dice <= 1))
    record = json.loads((tmp_path / "bald_0.json").read_text())
    assert EXPECTED_KEYS <= set(record)
    assert record["config"]["heuristic"] == "bald" and record["config"]["epochs"] == 2
    assert record["n_labelled"] == [4, 6, 8]  # balanced: one benign and one malignant per cycle
    assert record["test_dice"] == dice.tolist()
    assert [len(a) for a in record["acquired"]] == [2, 2, 0]
    acquired = [a["name"] for cycle in record["acquired"] for a in cycle]
    assert len(set(acquired)) == 4 and all(n.startswith("train_") for n in acquired)
    test_names = {r.name for r in read_split(synthetic_root / "splits", "test")}
    for per_image, mean in zip(record["test_dice_per_image"], dice, strict=True):
        assert set(per_image) == test_names
        assert np.mean(list(per_image.values())) == pytest.approx(mean)
    assert result.result == [round(d, 4) for d in dice.tolist()]
    # Sacred's FileStorageObserver (python active.py -F runs) records metrics and both files.
    run_dir = tmp_path / "runs" / "1"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test_dice"]["values"] == pytest.approx(dice.tolist())
    assert metrics["n_labelled"]["values"] == [4, 6, 8]
    assert np.array_equal(np.load(run_dir / "bald_0.npy"), dice)
    assert (run_dir / "bald_0.json").exists()


# One alias end to end; validate resolves them all (test_config, test_heuristics).
@pytest.mark.parametrize("name", [*sorted(HEURISTIC_NAMES), "mc"])
def test_every_heuristic_and_alias_runs(synthetic_root: Path, tmp_path: Path, name: str) -> None:
    config = tiny_config(
        synthetic_root / "GlaS",
        synthetic_root / "splits",
        tmp_path,
        heuristic=name,
        epochs=1,
        al_cycles=1,
    )
    run(config)
    canonical = ALIASES.get(name, name)
    record = json.loads((tmp_path / f"{canonical}_0.json").read_text())
    assert record["config"]["heuristic"] == canonical
    assert len(record["acquired"][0]) == 2
    scores = [a["score"] for a in record["acquired"][0]]
    if canonical == "random":
        assert scores == [None, None]  # random selection scores nothing
    else:
        assert all(np.isfinite(scores))


def test_same_run_is_bitwise_reproducible(synthetic_root: Path, tmp_path: Path) -> None:
    for folder in ("a", "b"):
        run(tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path / folder))
    a, b = (tmp_path / f / "bald_0.npy" for f in ("a", "b"))
    assert a.read_bytes() == b.read_bytes()
    ja, jb = (json.loads((tmp_path / f / "bald_0.json").read_text()) for f in ("a", "b"))
    assert ja["acquired"] == jb["acquired"]


def test_demo_named_config_generates_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the demo writes data/synthetic and results relative to here
    run({"epochs": 1, "al_cycles": 1, "progress": False}, named_configs=("demo",))
    assert (tmp_path / "data/synthetic/GlaS-rare/Grade.csv").exists()
    assert (tmp_path / "data/synthetic/splits-rare/train.csv").exists()
    assert np.load(tmp_path / "results/demo/bald_0.npy").shape == (2,)
    rare = (tmp_path / "data/synthetic/GlaS-rare/rare.txt").read_text().split()
    assert sum(n.startswith("train_") for n in rare) == 5  # 1 in 8 of 40, 3 of them in the pool
    assert sum(n.startswith("test") for n in rare) == 10  # half of the 20 test images
    # The same named config asked for other synthetic data refuses the folder it made.
    with pytest.raises(SystemExit):
        run({"synthetic_rare_fraction": 0.2, "progress": False}, named_configs=("demo",))


GOLDEN = Path(__file__).resolve().parent / "golden"
EARLIER_DEMO = {
    "data_path": "data/synthetic/GlaS",
    "splits_path": "data/synthetic/splits",
    "synthetic_counts": [16, 6, 4],
    "synthetic_rare_fraction": 0.0,
    "strategy": "topk",
    "progress": False,
}


def cpu_kind() -> dict[str, object]:
    """What decides how bf16 kernels round: torch's CPU dispatch level and the AMX units."""
    flags = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        flags = {f for line in cpuinfo.read_text().splitlines() if line.startswith("flags")
                 for f in line.split(":", 1)[1].split()}  # fmt: skip
    return {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "amx_bf16": "amx_bf16" in flags,
        "avx512_bf16": "avx512_bf16" in flags,
    }


def test_topk_without_the_rare_style_reproduces_the_earlier_demo_bitwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``tests/golden/demo_bald_0.npy`` is ``python active.py with demo`` from before strategies,
    reductions and the rare style existed (the demo then had 16 train images and no rare
    style). bf16 kernels round differently on other instruction sets and training amplifies
    it, so the bytes are compared only on the kind of CPU that recorded them, with its thread
    count (``demo_bald_0.cpu.json``); the fp32 check below runs everywhere."""
    recorded = json.loads((GOLDEN / "demo_bald_0.cpu.json").read_text())
    threads = recorded.pop("threads")
    if cpu_kind() != recorded:
        pytest.skip(f"golden bytes come from a {recorded} CPU; this one is {cpu_kind()}")
    monkeypatch.chdir(tmp_path)
    # Reductions are split among the threads: the golden's count, whatever the cores here.
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run(EARLIER_DEMO, named_configs=("demo",))
    finally:
        torch.set_num_threads(before)
    assert (tmp_path / "results/demo/bald_0.npy").read_bytes() == (
        GOLDEN / "demo_bald_0.npy"
    ).read_bytes()


def test_the_earlier_demo_in_fp32_matches_its_golden_on_any_cpu(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fp32 kernels also sum in other orders on other CPUs, but far below what moves a Dice:
    cycle 0 of ``demo_bald_0_fp32.npy`` (recorded with ``precision=fp32``) must hold within
    0.02. One cycle only: a near-tie in the scores could acquire another image elsewhere."""
    monkeypatch.chdir(tmp_path)
    run({**EARLIER_DEMO, "precision": "fp32", "al_cycles": 0}, named_configs=("demo",))
    dice = np.load(tmp_path / "results/demo/bald_0.npy")
    golden = np.load(GOLDEN / "demo_bald_0_fp32.npy")
    np.testing.assert_allclose(dice, golden, atol=0.02)


def assert_one_error_line(capsys: pytest.CaptureFixture, *fragments: str) -> None:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def expect_exit(config: dict, capsys: pytest.CaptureFixture, *fragments: str) -> None:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run(config)
    assert exit_info.value.code == 2
    assert_one_error_line(capsys, *fragments)


def break_first_train_image(data: Path, splits: Path, how: str) -> str:
    row = read_split(splits, "train")[0]
    if how == "no mask":
        (data / row.mask).unlink()
        return row.mask
    if how == "mask size":
        Image.new("L", (7, 7)).save(data / row.mask)
        return row.mask
    raw = (data / row.image).read_bytes()
    (data / row.image).write_bytes(raw[:100])
    return row.image


@pytest.mark.parametrize(
    ("how", "fragment"),
    [("no mask", "is missing"), ("mask size", "must match"), ("truncated", "corrupt or truncated")],
)
def test_broken_image_files_are_named(
    glas_copy: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    how: str,
    fragment: str,
) -> None:
    data, splits = glas_copy
    file_name = break_first_train_image(data, splits, how)
    expect_exit(tiny_config(data, splits, tmp_path / "r"), capsys, file_name, fragment)
    assert not (tmp_path / "r" / "bald_0.npy").exists()


@pytest.mark.parametrize(
    ("row", "fragment"),
    [("train_1,3, benign", "malformed row"), ("train_1,3, mild, healthy", "unknown grade")],
)
def test_bad_grade_csv_rows(
    glas_copy: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    row: str,
    fragment: str,
) -> None:
    data, splits = glas_copy
    csv = data / "Grade.csv"
    csv.write_bytes(csv.read_bytes() + b"\r" + row.encode())
    expect_exit(tiny_config(data, splits, tmp_path / "r"), capsys, "Grade.csv", fragment)


def test_missing_data_folder(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = tiny_config(tmp_path / "GlaS", tmp_path / "splits", tmp_path / "r")
    expect_exit(config, capsys, "does not exist", "docs/data.md", "active.py with demo")


def test_missing_and_broken_splits(
    glas_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, splits = glas_copy
    config = tiny_config(data, splits, tmp_path / "r")
    rows = (splits / "val.csv").read_text()
    (splits / "val.csv").write_text("image,mask,label\n")
    expect_exit(config, capsys, "val.csv is empty")
    (splits / "val.csv").write_text(rows)
    image = rows.splitlines()[1].split(",")[0]
    (data / image).unlink()
    expect_exit(config, capsys, f"{image} is missing")
    shutil.rmtree(splits)
    expect_exit(config, capsys, "create_splits.py")


def test_splits_whose_labels_are_not_grade_csvs_are_refused(
    glas_copy: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    data, splits = glas_copy
    lines = (splits / "train.csv").read_text().splitlines()
    name, mask, label = lines[1].split(",")
    lines[1] = f"{name},{mask},{1 - int(label)}"  # as another GlaS's splits would grade it
    (splits / "train.csv").write_text("\n".join(lines) + "\n")
    fragments = (f"gives {name.removesuffix('.bmp')} the label {1 - int(label)} but", "Grade.csv")
    expect_exit(tiny_config(data, splits, tmp_path / "r"), capsys, *fragments, "create_splits")


def test_a_regenerated_synthetic_glas_gets_its_own_splits(tmp_path: Path) -> None:
    from dataclasses import replace

    from data.datasets import prepare_synthetic
    from data.glas import SPLITS, open_glas, read_grades, read_split
    from utils.config import ExperimentConfig

    settings = {"synthetic": True, "synthetic_size": [48, 64], "synthetic_counts": [8, 2, 2]}
    data, splits = tmp_path / "GlaS", tmp_path / "splits"
    config = ExperimentConfig(data_path=str(data), splits_path=str(splits), **settings)
    prepare_synthetic(config)
    shutil.rmtree(data)  # the fix that the refusal of other settings names
    prepare_synthetic(replace(config, synthetic_counts=[12, 2, 2]))
    grades = read_grades(data)
    rows = [row for split in SPLITS for row in read_split(splits, split)]
    assert sorted(row.name for row in rows) == sorted(grades)  # every image, in one split
    assert all(grades[row.name] == row.label for row in rows)
    open_glas(data, splits, SPLITS)


def test_a_new_synthetic_glas_leaves_another_datasets_splits_alone(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from data.datasets import prepare_synthetic
    from data.segmentation import DataError
    from utils.config import ExperimentConfig

    splits = tmp_path / "splits"
    shutil.copytree(synthetic_root / "splits", splits)  # a GlaS's own splits, made by hand
    before = {p.name: p.read_bytes() for p in splits.iterdir()}
    settings = {"synthetic": True, "synthetic_size": [48, 64], "synthetic_counts": [8, 2, 2]}
    data = tmp_path / "GlaS"
    config = ExperimentConfig(data_path=str(data), splits_path=str(splits), **settings)
    with pytest.raises(DataError, match=f"splits_path={splits} holds splits that were not"):
        prepare_synthetic(config)
    assert {p.name: p.read_bytes() for p in splits.iterdir()} == before
    assert not data.exists()  # refused before generating anything


@pytest.mark.parametrize(
    ("updates", "fragments"),
    [
        ({"heuristic": "bal"}, ("unknown heuristic 'bal'", "bald", "variance_edt", "mc")),
        ({"n_label_start": 99}, ("n_label_start=99", "train split")),
        ({"epochs": "many"}, ("epochs must be an integer",)),
        ({"results_dir": "/proc/nope"}, ("results_dir=/proc/nope cannot be created",)),
        ({"device": "cuda:99"}, ("device=cuda:99, but torch sees ", "use device=auto, cpu")),
        (
            {"image_scale": 0.001},
            (
                "image_scale=0.001 leaves the smallest image, ",
                " 1 pixel on a side",
                "use a larger image_scale",
            ),
        ),
    ],
)
def test_bad_config_values_end_the_run_in_one_line(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    updates: dict,
    fragments: tuple[str, ...],
) -> None:
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    expect_exit({**config, **updates}, capsys, *fragments)


@pytest.mark.parametrize("image_scale", [0.05, 0.1, 0.25, 0.3])
def test_the_scale_suggested_for_small_images_is_enough(image_scale: float) -> None:
    # Every original side that the loader (round, at least 1 pixel) shrinks under 32 pixels.
    for original in range(1, math.ceil(MIN_IMAGE_SIDE / image_scale)):
        scaled = max(1, round(original * image_scale))
        if scaled >= MIN_IMAGE_SIDE or scaled == 1:
            assert scaled >= MIN_IMAGE_SIDE or lowest_scale(scaled, image_scale) is None
            continue
        suggested = lowest_scale(scaled, image_scale)
        assert round(original * suggested) >= MIN_IMAGE_SIDE, (original, scaled, suggested)
        # And no more than 2 significant digits above what the shortest original that shrinks
        # to this side would need.
        shortest = min(o for o in range(1, original + 1) if round(o * image_scale) == scaled)
        assert suggested <= 1.1 * MIN_IMAGE_SIDE / shortest, (original, suggested)
    # A 306-pixel side at 0.1 is 31 pixels; "0.1", the scale refused, was once suggested.
    assert lowest_scale(31, 0.1) == 0.11


def test_uncertainty_figures_are_written_per_cycle(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny_config(
        synthetic_root / "GlaS",
        synthetic_root / "splits",
        tmp_path,
        heuristic="variance_edt",
        epochs=1,
        save_maps=True,
        save_uncerts=True,
    )
    run(config)
    record = json.loads((tmp_path / "variance_edt_0.json").read_text())
    for cycle, acquired in enumerate(record["acquired"][:-1]):
        folder = tmp_path / "maps" / "variance_edt_0" / f"cycle_{cycle}"
        expected = {f"{a['name']}.png" for a in acquired} | {"pool_scores.png"}
        assert {p.name for p in folder.iterdir()} == expected
        for png in folder.iterdir():
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert not (tmp_path / "maps" / "variance_edt_0" / "cycle_2").exists()  # nothing acquired


def test_full_supervision_trains_once_on_everything(synthetic_root: Path, tmp_path: Path) -> None:
    from utils.report.cli import write_report

    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, epochs=1)
    run(config, named_configs=("full_supervision",))
    record = json.loads((tmp_path / "full_0.json").read_text())
    n_train = len(read_split(synthetic_root / "splits", "train"))
    assert record["n_labelled"] == [n_train] and record["acquired"] == [[]]
    assert np.load(tmp_path / "full_0.npy").shape == (1,)
    # What the labels cost, from the image files themselves.
    pixels = {
        row.name: math.prod(Image.open(synthetic_root / "GlaS" / row.image).size)
        for row in read_split(synthetic_root / "splits", "train")
    }
    assert record["labelled_pixels"] == [sum(pixels.values())]
    assert record["labelled_fraction"] == [1.0]
    run({**config, "al_cycles": 1})
    bald = json.loads((tmp_path / "bald_0.json").read_text())
    added = sum(pixels[a["name"]] for a in bald["acquired"][0])
    assert bald["labelled_pixels"][1] - bald["labelled_pixels"][0] == added
    fractions = [p / sum(pixels.values()) for p in bald["labelled_pixels"]]
    assert bald["labelled_fraction"] == pytest.approx(fractions, rel=1e-12)
    write_report(tmp_path)
    assert "full supervision" in (tmp_path / "summary.md").read_text().lower()


def test_full_supervision_trains_alike_whatever_the_keys_it_ignores(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from utils.config import defaults
    from utils.runs.state import FULL_SUPERVISION_IGNORES

    # A sweep over these keys shares one full_{run}, so none of them may change it.
    others = {
        "strategy": "power",
        "reduction": "topq",
        "label_unit": "region",
        "region_shape": "superpixel",
        "semi": "mean_teacher",
        "n_label_start": 2,
        "al_cycles": 1,
        "n_data_to_label": 3,
        "balance_al": False,
        "n_suggest": 5,
        "topq_percent": 5.0,
        "foreground_band": 4,
        "temperature": 3.0,
        "suggestive_factor": 4,
        "region_size": [16, 16],
        "pseudo_threshold": 0.3,
        "pseudo_weight": 0.5,
        "consistency_weight": 2.0,
    }
    assert set(others) == FULL_SUPERVISION_IGNORES
    assert all(value != defaults()[key] for key, value in others.items())
    for name, updates in (("default", {}), ("others", others)):
        config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path / name)
        run({**config, **updates, "epochs": 1}, named_configs=("full_supervision",))
    default, changed = (np.load(tmp_path / name / "full_0.npy") for name in ("default", "others"))
    assert default.tobytes() == changed.tobytes()


def test_command_line_bad_input_prints_exactly_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [
            sys.executable,
            "active.py",
            "with",
            f"data_path={tmp_path / 'none'}",
            f"results_dir={tmp_path / 'r'}",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("error: data folder") and "Traceback" not in result.stderr
    # A misspelt key is refused before Sacred sees it, with the likely fix.
    result = subprocess.run(
        [sys.executable, "active.py", "print_config", "with", "epoch=5", "seed=3"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == (
        "error: unknown config key 'epoch'; did you mean 'epochs'? `python -m utils.config` "
        "lists every key\n"
    )
    # A value of the wrong type: our line alone, without Sacred's notice of the type change.
    result = subprocess.run(
        [sys.executable, "active.py", "with", "demo", "epochs=ten", f"results_dir={tmp_path}"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr == "error: epochs must be an integer (default 60), got 'ten'\n"
    # Sacred's own options after the updates are Sacred's to read.
    from active import refuse_unknown_keys

    refuse_unknown_keys(["active.py", "with", "demo", "epochs=5", "--loglevel=INFO", "-c", "a=b"])


def test_second_process_on_the_same_run_is_refused_naming_the_first(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import os

    from utils.runs.lock import run_lock

    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    with run_lock(tmp_path / "bald_0.lock"):
        expect_exit(config, capsys, f"bald_0 is already running in process {os.getpid()}")
    assert not (tmp_path / "bald_0.npy").exists()
    run(config)  # the lock went with its holder
    assert np.load(tmp_path / "bald_0.npy").shape == (3,)


def test_a_forked_child_does_not_keep_a_run_lock_past_its_holder(tmp_path: Path) -> None:
    import signal
    import time

    from utils.runs.lock import is_locked, run_lock

    lock = tmp_path / "bald_0.lock"
    started, signal_start = os.pipe()
    with run_lock(lock):
        child = os.fork()  # as a DataLoader worker is forked from the run that holds the lock
        if child == 0:
            os.write(signal_start, b"1")
            time.sleep(30)
            os._exit(0)
        os.read(started, 1)  # the child runs
    try:
        assert is_locked(lock) is None  # released with its holder, the child still alive
    finally:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        os.close(started)
        os.close(signal_start)


def test_results_on_a_file_system_without_locks_end_the_run_in_one_line(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno
    import fcntl

    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))  # NFS mounted with nolock

    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    monkeypatch.setattr(fcntl, "flock", no_locks)
    expect_exit(config, capsys, f"{tmp_path} does not support file locks (No locks available)")
    assert not (tmp_path / "bald_0.npy").exists()


def test_another_users_lock_file_ends_the_run_in_one_line(
    synthetic_root: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import errno

    real_open = os.open
    lock = tmp_path / "bald_0.lock"

    def owned_by_someone_else(path, flags, *args):  # what a 0644 file of another user gives
        if Path(path) == lock and flags & os.O_RDWR:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args)

    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path)
    monkeypatch.setattr(os, "open", owned_by_someone_else)
    expect_exit(config, capsys, f"cannot create a lock in {tmp_path}: permission denied")
    lock.touch()
    expect_exit(config, capsys, f"cannot write the lock {lock}: permission denied")
    assert not (tmp_path / "bald_0.npy").exists()


def test_model_selection_last_never_reads_the_validation_split(
    glas_copy: tuple[Path, Path], tmp_path: Path
) -> None:
    data, splits = glas_copy
    for row in read_split(splits, "val"):  # without the validation images or their list
        (data / row.image).unlink()
        (data / row.mask).unlink()
    (splits / "val.csv").unlink()
    results = tmp_path / "results"
    config = tiny_config(data, splits, results, model_selection="last")
    run(config)
    record = json.loads((results / "bald_0.json").read_text())
    assert record["config"]["model_selection"] == "last" and record["validation_images"] == 0
    assert all(t["best_val_loss"] is None and t["best_epoch"] == 1 for t in record["train"])
    with pytest.raises(SystemExit):  # the default needs the split it was denied
        run({**config, "model_selection": "val", "results_dir": str(tmp_path / "val")})


@pytest.mark.parametrize(
    ("updates", "stem"),
    [
        ({"strategy": "power"}, "bald-power_0"),
        ({"strategy": "coreset", "heuristic": "entropy"}, "entropy-coreset_0"),
        ({"strategy": "suggestive", "reduction": "topq"}, "bald-suggestive-topq_0"),
        ({"strategy": "stratified_power", "reduction": "foreground"}, None),
        ({"strategy": "random"}, "random_0"),
        ({"heuristic": "random", "strategy": "power"}, "random_0"),
    ],
)
def test_strategies_run_end_to_end_under_their_own_names(
    synthetic_root: Path, tmp_path: Path, updates: dict, stem: str | None
) -> None:
    config = tiny_config(synthetic_root / "GlaS", synthetic_root / "splits", tmp_path, **updates)
    run(config)
    stem = stem or f"bald-{updates['strategy']}-{updates['reduction']}_0"
    record = json.loads((tmp_path / f"{stem}.json").read_text())
    assert record["name"] == stem.removesuffix("_0") and record["complete"]
    assert [len(a) for a in record["acquired"]] == [2, 2, 0]
    grades = dict(zip(*_train_names_and_grades(synthetic_root), strict=True))
    for cycle in record["acquired"][:2]:  # balanced by grade, as every strategy must be
        assert sorted(grades[a["name"]] for a in cycle) == [0, 1]


def _train_names_and_grades(root: Path) -> tuple[list[str], list[int]]:
    rows = read_split(root / "splits", "train")
    return [r.name for r in rows], [r.label for r in rows]


def test_coreset_compares_pool_and_labelled_images_in_one_deterministic_model(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sener & Savarese measure every distance in one embedding: MC-averaged pool features
    # against deterministic labelled ones would put even a copy of a labelled image far from it.
    calls, selections = spy_on_coreset(monkeypatch, "pooled_features", "score_pool")
    root = synthetic_root
    run(tiny_config(root / "GlaS", root / "splits", tmp_path, strategy="coreset", al_cycles=1))
    (pool_call, labelled_call), (selection,) = calls, selections
    assert pool_call[0] is labelled_call[0]
    assert not any(type(m).__module__.startswith("baal") for m in pool_call[0].modules())
    assert selection.features.shape[0] == pool_call[1] == len(selection.grades) == 5
    assert selection.labelled_features.shape[0] == labelled_call[1] == 4
