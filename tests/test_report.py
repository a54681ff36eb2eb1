"""Tests for utils.report: statistics against hand-computed values, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import stats

from utils.curve_stats import aulc, labels_to_reach, mean_curve, paired_p_value
from utils.report import main
from utils.run_records import RunRecord, load_results

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def write_run(
    directory: Path, heuristic: str, run: int, n_labelled: list[int], dice: list[float]
) -> None:
    """Write one run the way active.py does: a .npy curve and its .json record."""
    np.save(directory / f"{heuristic}_{run}.npy", np.asarray(dice, dtype=float))
    record = {
        "config": {"heuristic": heuristic, "run": run, "seed": 1000 + run},
        "n_labelled": n_labelled,
        "test_dice": dice,
        "acquired": [[{"name": f"train_{i}", "score": 0.1 * i}] for i in range(len(dice))],
        "test_dice_per_image": [{"testA_1": d, "testB_1": d} for d in dice],
    }
    (directory / f"{heuristic}_{run}.json").write_text(json.dumps(record))


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


def test_aulc_hand_computed() -> None:
    # ((0.5 + 0.6) / 2 + (0.6 + 0.8) / 2) / (6 - 4)
    assert aulc(np.array([4, 5, 6]), np.array([0.5, 0.6, 0.8])) == pytest.approx(0.625)


def test_aulc_uneven_spacing_and_single_point() -> None:
    # Widths 1 and 3: (1 * 0.55 + 3 * 0.7) / 4
    assert aulc(np.array([4, 5, 8]), np.array([0.5, 0.6, 0.8])) == pytest.approx(2.65 / 4)
    assert aulc(np.array([85]), np.array([0.83])) == pytest.approx(0.83)


def test_aulc_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError):
        aulc(np.array([4, 5]), np.array([0.5]))


def test_labels_to_reach() -> None:
    n = np.array([4, 6, 8, 10])
    mean = np.array([0.50, 0.70, 0.76, 0.80])
    # 0.95 * 0.8 = 0.76 is hit exactly at 8 images; the tolerance must not miss it.
    assert labels_to_reach(n, mean, 0.95 * 0.80) == 8
    assert labels_to_reach(n, mean, 0.40) == 4
    assert labels_to_reach(n, mean, 0.81) is None
    # The first crossing counts even if the curve dips afterwards.
    assert labels_to_reach(n, np.array([0.5, 0.77, 0.70, 0.80]), 0.76) == 6


def test_paired_t_test_by_hand() -> None:
    a = {0: 0.60, 1: 0.70, 2: 0.65, 3: 0.72}
    b = {0: 0.55, 1: 0.60, 2: 0.66, 3: 0.62, 9: 0.10}  # run 9 has no partner: ignored
    diffs = np.array([0.05, 0.10, -0.01, 0.10])
    sd = math.sqrt(np.sum((diffs - diffs.mean()) ** 2) / (len(diffs) - 1))
    t_stat = diffs.mean() / (sd / math.sqrt(len(diffs)))
    expected = 2 * stats.t.sf(abs(t_stat), df=len(diffs) - 1)
    assert paired_p_value(a, b) == pytest.approx(expected, rel=1e-10)
    # Symmetric in its arguments.
    assert paired_p_value(b, a) == pytest.approx(expected, rel=1e-10)


def test_wilcoxon_branch_exact_values() -> None:
    b = {run: 0.5 for run in range(6)}
    # All six differences positive: only 1 of 2**6 sign patterns is as extreme, two-sided.
    a = {run: 0.5 + 0.01 * (run + 1) for run in range(6)}
    assert paired_p_value(a, b) == pytest.approx(2 / 64)
    # |differences| ranked 1..6 with the rank-2 difference negative: W- = 2. Sign patterns with
    # negative-rank sum <= 2 are {}, {1}, {2}: p = 2 * 3 / 64.
    a = {0: 0.51, 1: 0.53, 2: 0.54, 3: 0.55, 4: 0.56, 5: 0.5 - 0.015}
    assert paired_p_value(a, b) == pytest.approx(6 / 64)


def test_paired_p_value_edge_cases() -> None:
    assert paired_p_value({0: 0.5}, {0: 0.4}) is None
    assert paired_p_value({0: 0.5, 1: 0.6}, {2: 0.4, 3: 0.5}) is None
    assert paired_p_value({}, {}) is None
    same = {run: 0.1 * run for run in range(8)}
    assert paired_p_value(same, dict(same)) == 1.0
    assert paired_p_value({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}) == 1.0
    # Constant non-zero difference with the t-test: infinite t, p = 0.
    assert paired_p_value({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}) == pytest.approx(0.0)


def test_mean_curve_uneven_lengths_and_t_interval() -> None:
    records = [
        RunRecord("bald", 0, np.array([4, 6, 8]), np.array([0.4, 0.6, 0.8])),
        RunRecord("bald", 1, np.array([4, 6, 8]), np.array([0.5, 0.7, 0.7])),
        RunRecord("bald", 2, np.array([4, 6]), np.array([0.6, 0.5])),
    ]
    n, mean, lo, hi = mean_curve(records)
    np.testing.assert_array_equal(n, [4, 6, 8])
    np.testing.assert_allclose(mean, [0.5, 0.6, 0.75])
    # At 4 images: values 0.4, 0.5, 0.6 -> sd 0.1, half-width t(0.975, 2) * 0.1 / sqrt(3).
    half = 4.302652729911275 * 0.1 / math.sqrt(3)
    assert lo[0] == pytest.approx(0.5 - half) and hi[0] == pytest.approx(0.5 + half)
    # At 8 images, two runs: sd = 0.1 / sqrt(2), half-width t(0.975, 1) * sd / sqrt(2).
    assert hi[2] - mean[2] == pytest.approx(12.706204736174698 * 0.05)


def test_mean_curve_single_run_has_no_band() -> None:
    n, mean, lo, hi = mean_curve([RunRecord("random", 0, np.array([4, 6]), np.array([0.3, 0.4]))])
    np.testing.assert_array_equal(lo, mean)
    np.testing.assert_array_equal(hi, mean)


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------

RANDOM_RUNS = {
    0: [0.40, 0.50, 0.55, 0.60],
    1: [0.42, 0.48, 0.56, 0.62],
    2: [0.38, 0.52, 0.54, 0.58],
}
BALD_RUNS = {
    0: [0.40, 0.60, 0.70, 0.78],
    1: [0.42, 0.62, 0.72, 0.80],
    2: [0.38, 0.58, 0.74],  # pool ran out one cycle early
}
N_LABELLED = [4, 6, 8, 10]


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "results"
    directory.mkdir()
    for run, dice in RANDOM_RUNS.items():
        write_run(directory, "random", run, N_LABELLED[: len(dice)], dice)
    for run, dice in BALD_RUNS.items():
        write_run(directory, "bald", run, N_LABELLED[: len(dice)], dice)
    write_run(directory, "full", 0, [85], [0.80])
    # Things active.py also leaves behind, which the report must ignore.
    (directory / "bald_0.state.pt").write_bytes(b"not a results file")
    (directory / "maps").mkdir()
    (directory / "maps" / "bald_0_cycle0.png").write_bytes(PNG_SIGNATURE)
    (directory / ".bald_3.npy.k2j3.tmp").write_bytes(b"partial")
    return directory


def test_load_results(results_dir: Path) -> None:
    results = load_results(results_dir)
    assert sorted(results) == ["bald", "full", "random"]
    assert [r.run for r in results["bald"]] == [0, 1, 2]
    np.testing.assert_array_equal(results["bald"][2].n_labelled, [4, 6, 8])
    np.testing.assert_allclose(results["full"][0].dice, [0.80])


def test_end_to_end(results_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(results_dir)]) == 0

    with open(results_dir / "summary.csv", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    assert header == [
        "heuristic",
        "n_runs",
        "final_dice_mean",
        "final_dice_std",
        "aulc_mean",
        "aulc_std",
        "labels_to_95",
        "p_vs_random",
        "val_labels",
        "pixels_to_95",
    ]
    table = {row[0]: dict(zip(header, row, strict=True)) for row in rows}
    # bald's curve lies above random's, so it comes first; full supervision is not a row.
    assert [row[0] for row in rows] == ["bald", "random"]

    bald, random = table["bald"], table["random"]
    assert bald["n_runs"] == "3" and random["n_runs"] == "3"
    # Final Dice is each run's last value, whatever its length: 0.78, 0.80, 0.74.
    assert bald["final_dice_mean"] == f"{(0.78 + 0.80 + 0.74) / 3:.4f}"
    assert bald["final_dice_std"] == f"{np.std([0.78, 0.80, 0.74], ddof=1):.4f}"
    assert random["final_dice_mean"] == "0.6000"

    # AULC by hand: sum of trapezoids of width 2 divided by the range of labelled images.
    bald_aulc = {
        0: 2 * ((0.40 + 0.60) / 2 + (0.60 + 0.70) / 2 + (0.70 + 0.78) / 2) / 6,
        1: 2 * ((0.42 + 0.62) / 2 + (0.62 + 0.72) / 2 + (0.72 + 0.80) / 2) / 6,
        2: 2 * ((0.38 + 0.58) / 2 + (0.58 + 0.74) / 2) / 4,
    }
    random_aulc = {
        0: 2 * ((0.40 + 0.50) / 2 + (0.50 + 0.55) / 2 + (0.55 + 0.60) / 2) / 6,
        1: 2 * ((0.42 + 0.48) / 2 + (0.48 + 0.56) / 2 + (0.56 + 0.62) / 2) / 6,
        2: 2 * ((0.38 + 0.52) / 2 + (0.52 + 0.54) / 2 + (0.54 + 0.58) / 2) / 6,
    }
    assert bald["aulc_mean"] == f"{np.mean(list(bald_aulc.values())):.4f}"
    assert bald["aulc_std"] == f"{np.std(list(bald_aulc.values()), ddof=1):.4f}"
    assert random["aulc_mean"] == f"{np.mean(list(random_aulc.values())):.4f}"

    # Target 0.95 * 0.80 = 0.76: bald's mean curve is 0.40, 0.60, 0.72, 0.79 -> 10 images;
    # random never gets there.
    assert bald["labels_to_95"] == "10"
    assert random["labels_to_95"] == ""

    # Three shared runs: paired t-test on AULC.
    diffs = np.array([bald_aulc[r] - random_aulc[r] for r in range(3)])
    t_stat = diffs.mean() / (diffs.std(ddof=1) / math.sqrt(3))
    assert bald["p_vs_random"] == f"{2 * stats.t.sf(abs(t_stat), df=2):.4f}"
    assert random["p_vs_random"] == ""

    markdown = (results_dir / "summary.md").read_text()
    assert markdown.startswith("# ")
    assert "| heuristic | n_runs |" in markdown
    assert "| bald | 3 |" in markdown
    assert "Full supervision" in markdown and "0.8000" in markdown

    png = results_dir / "learning_curves.png"
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 20_000
    with Image.open(png) as image:
        image.verify()

    # Nothing temporary is left behind, and the outputs are listed on stdout.
    leftovers = {p.name for p in results_dir.iterdir() if p.name.endswith(".tmp")}
    assert leftovers == {".bald_3.npy.k2j3.tmp"}
    assert "summary.csv" in capsys.readouterr().out


def test_curves_csv_holds_the_plotted_mean_curves(results_dir: Path) -> None:
    assert main([str(results_dir)]) == 0
    rows = list(csv.DictReader((results_dir / "curves.csv").read_text().splitlines()))
    bald = {int(r["x"]): r for r in rows if r["heuristic"] == "bald"}
    assert sorted(bald) == [4, 6, 8, 10] and {r["heuristic"] for r in rows} == {"bald", "random"}
    assert bald[4]["n_runs"] == "3" and bald[4]["mean_dice"] == "0.4000"
    # At 10 images only runs 0 and 1 (0.78, 0.80): sd 0.01 * sqrt(2), half-width t(0.975, 1) * 0.01.
    assert bald[10]["n_runs"] == "2" and bald[10]["mean_dice"] == "0.7900"
    assert float(bald[10]["ci_low"]) == pytest.approx(0.79 - 0.12706, abs=1e-4)
    assert float(bald[10]["ci_high"]) == pytest.approx(0.79 + 0.12706, abs=1e-4)
    assert "full" not in {r["heuristic"] for r in rows}


def test_runs_csv_holds_each_runs_aulc_and_final_dice(results_dir: Path) -> None:
    assert main([str(results_dir)]) == 0
    rows = list(csv.DictReader((results_dir / "runs.csv").read_text().splitlines()))
    by_run = {(r["heuristic"], int(r["run"])): r for r in rows}
    assert sorted(by_run) == [
        ("bald", 0),
        ("bald", 1),
        ("bald", 2),
        ("random", 0),
        ("random", 1),
        ("random", 2),
    ]
    # bald run 2 stopped at 8 images: trapezoids (0.38+0.58) + (0.58+0.74), over the 4-image span.
    assert by_run["bald", 2]["aulc"] == f"{(0.96 + 1.32) / 4:.4f}"
    assert by_run["bald", 2]["final_dice"] == "0.7400"
    assert (
        by_run["random", 0]["aulc"] == f"{aulc(np.array(N_LABELLED), np.array(RANDOM_RUNS[0])):.4f}"
    )


def test_out_dir_and_no_full_supervision(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "entropy", 0, [4, 6], [0.5, 0.7])
    write_run(results, "variance_edt", 0, [4, 6], [0.5, 0.6])
    out = tmp_path / "report" / "nested"
    assert main([str(results), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "curves.csv",
        "learning_curves.png",
        "runs.csv",
        "summary.csv",
        "summary.md",
    ]
    assert not (results / "summary.csv").exists()
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    # Single runs: std 0.0 and no p-value; underscores in names survive the file-name parsing.
    assert [row["heuristic"] for row in rows] == ["entropy", "variance_edt"]
    assert rows[0]["final_dice_std"] == "0.0000" and rows[0]["p_vs_random"] == ""
    # Without full supervision the reference is the best final mean Dice, 0.7 -> target 0.665.
    assert rows[0]["labels_to_95"] == "6" and rows[1]["labels_to_95"] == ""
    assert "No full-supervision result" in (out / "summary.md").read_text()


def test_each_grid_point_is_measured_against_its_own_full_supervision(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "full@s=a", 0, [12], [0.9])
    write_run(results, "full@s=b", 0, [12], [0.5])
    for point in ("a", "b"):
        write_run(results, f"bald@s={point}", 0, [4, 6, 8], [0.3, 0.46, 0.85])
    assert main([str(results)]) == 0
    rows = {r["heuristic"]: r for r in csv.DictReader((results / "summary.csv").open())}
    # Point a's target is 0.855, never reached; point b's is 0.475, reached at 8 labels. One
    # pooled reference (0.7 -> 0.665) would have put both at 8.
    assert rows["bald@s=a"]["labels_to_95"] == "" and rows["bald@s=b"]["labels_to_95"] == "8"
    text = (results / "summary.md").read_text()
    assert "at grid point `s=a`: test Dice 0.9000" in text
    assert "at grid point `s=b`: test Dice 0.5000" in text


def _split_study(tmp_path: Path) -> tuple[Path, Path]:
    """The end-to-end study in two folders, as if runs 0-1 and run 2 ran on two machines."""
    first, second = tmp_path / "machine_a", tmp_path / "machine_b"
    for folder, runs in ((first, (0, 1)), (second, (2,))):
        folder.mkdir()
        for run in runs:
            write_run(folder, "random", run, N_LABELLED, RANDOM_RUNS[run])
            write_run(folder, "bald", run, N_LABELLED[: len(BALD_RUNS[run])], BALD_RUNS[run])
    return first, second


def test_several_folders_pool_their_runs(tmp_path: Path, results_dir: Path) -> None:
    first, second = _split_study(tmp_path)
    pooled, together = tmp_path / "pooled", tmp_path / "together"
    assert main([str(first), str(second), "--out", str(pooled)]) == 0
    (results_dir / "full_0.npy").unlink()
    (results_dir / "full_0.json").unlink()
    assert main([str(results_dir), "--out", str(together)]) == 0
    # Pairing is by run number across folders: the table equals the one-folder study's.
    assert (pooled / "summary.csv").read_text() == (together / "summary.csv").read_text()
    rows = {r["heuristic"]: r for r in csv.DictReader(open(pooled / "summary.csv"))}
    assert rows["bald"]["n_runs"] == "3" and rows["bald"]["p_vs_random"] != ""
    assert "machine_a + machine_b" in (pooled / "summary.md").read_text()


def test_several_folders_need_out(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first, second = _split_study(tmp_path)
    assert main([str(first), str(second)]) == 2
    _assert_one_line_error(capsys, "--out")
    assert not (first / "summary.csv").exists() and not (second / "summary.csv").exists()


def test_same_run_in_two_folders_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _split_study(tmp_path)
    write_run(second, "bald", 1, N_LABELLED, BALD_RUNS[1])
    out = tmp_path / "pooled"
    assert main([str(first), str(second), "--out", str(out)]) == 2
    _assert_one_line_error(capsys, "bald_1.npy", "machine_a", "machine_b")
    assert not out.exists()


def _assert_one_line_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert err.count("\n") == 1
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_empty_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bald_0.state.pt").write_bytes(b"")
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "no results found", str(tmp_path), "active.py")


def test_missing_dir_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope")]) == 2
    _assert_one_line_error(capsys, "does not exist")


def test_malformed_json_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (results_dir / "bald_1.json").write_text('{"config": {"heuristic": "bald", ')
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "malformed JSON", "bald_1.json")


def test_npy_without_json_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (results_dir / "entropy_0.json").unlink(missing_ok=True)
    np.save(results_dir / "entropy_0.npy", np.array([0.5, 0.6]))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "entropy_0.npy", "entropy_0.json")


def test_length_mismatch_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = json.loads((results_dir / "random_2.json").read_text())
    record["n_labelled"] = [4, 6]
    record.pop("test_dice")
    (results_dir / "random_2.json").write_text(json.dumps(record))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_2.json", "n_labelled")


def test_unfinished_runs_are_named(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "random", 0, [4, 6, 8], [0.5, 0.6, 0.7])
    write_run(results, "entropy", 0, [4, 6], [0.5, 0.65])
    record_path = results / "entropy_0.json"
    record = json.loads(record_path.read_text())
    record["complete"] = False  # as active.py writes it after every cycle of a run in progress
    record_path.write_text(json.dumps(record))
    assert main([str(results)]) == 0
    markdown = (results / "summary.md").read_text()
    assert "Unfinished runs (1), whose curves stop before their planned cycles: entropy_0." in (
        markdown
    )
    # Records without the flag (older runs, all finished) are taken as complete.
    assert "random_0" not in markdown.split("Unfinished runs")[1]
