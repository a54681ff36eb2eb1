"""Tests for utils.report: statistics against hand-computed values, and the CLI end to end."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image
from scipy import stats

from utils.report import figure
from utils.report import summary as report
from utils.report.cli import main
from utils.report.stats import (
    aulc,
    holm_adjust,
    labels_to_reach,
    mean_curve,
    noise_figures,
    paired_difference_ci,
    paired_difference_curve,
    paired_differences,
    paired_p_value,
    pairs_for_power,
    pixels_to_reach,
    tost_paired,
)
from utils.runs.records import ReportError, RunRecord, load_results

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
    # On the pixel axis the same rule gives a fraction.
    fraction = np.array([0.05, 0.125, 0.2, 0.3])
    assert pixels_to_reach(fraction, mean, 0.95 * 0.80) == 0.2
    assert pixels_to_reach(fraction, np.array([0.5, 0.77, 0.70, 0.80]), 0.76) == 0.125
    assert pixels_to_reach(fraction, mean, 0.81) is None


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
    # Five pairs are still the t-test's, which Wilcoxon (2 / 32 here, all positive) is not.
    a = {run: 0.5 + 0.01 * (run + 1) for run in range(5)}
    b = {run: 0.5 for run in range(5)}
    # Differences 0.01..0.05: mean 0.03, variance 0.001 / 4, t = 4.243 with 4 degrees of freedom.
    t_stat = 0.03 / (math.sqrt(0.001 / 4) / math.sqrt(5))
    assert paired_p_value(a, b) == pytest.approx(2 * stats.t.sf(t_stat, df=4), rel=1e-6)
    assert paired_p_value(a, b) == pytest.approx(0.01324, abs=1e-5)


def test_wilcoxon_branch_exact_values() -> None:
    b = {run: 0.5 for run in range(6)}
    # All six differences positive: only 1 of 2**6 sign patterns is as extreme, two-sided.
    a = {run: 0.5 + 0.01 * (run + 1) for run in range(6)}
    assert paired_p_value(a, b) == pytest.approx(2 / 64)
    # |differences| ranked 1..6 with the rank-2 difference negative: W- = 2. Sign patterns with
    # negative-rank sum <= 2 are {}, {1}, {2}: p = 2 * 3 / 64.
    a = {0: 0.51, 1: 0.53, 2: 0.54, 3: 0.55, 4: 0.56, 5: 0.5 - 0.015}
    assert paired_p_value(a, b) == pytest.approx(6 / 64)


def test_wilcoxon_with_a_zero_or_a_tie_is_exact() -> None:
    """A zero difference is dropped (Wilcoxon's rule) and tied ranks are averaged, and the
    p-value stays exact: a normal approximation would give about 0.043 and 0.028 here."""
    b = {run: 0.5 for run in range(6)}
    # One zero, five positive differences: the exact test on 5 pairs, 2 / 2**5.
    zero = {0: 0.5, 1: 0.51, 2: 0.52, 3: 0.53, 4: 0.54, 5: 0.55}
    assert paired_p_value(zero, b) == pytest.approx(2 / 32)
    # Six positive differences, two of them tied: still only all-alike is as extreme.
    tied = {0: 0.51, 1: 0.51, 2: 0.52, 3: 0.53, 4: 0.54, 5: 0.55}
    assert paired_p_value(tied, b) == pytest.approx(2 / 64)
    # A tie across signs: |differences| ranked 1, 2.5, 2.5, 4, 5, 6 with one 2.5 negative, so
    # W- = 2.5. The sign patterns with a negative-rank sum <= 2.5 are {}, {1}, {2.5}, {2.5'}:
    # p = 2 * 4 / 64. Untied ranks would give 6/64 or 10/64, the normal approximation 0.093.
    across = {0: 0.51, 1: 0.52, 2: 0.48, 3: 0.53, 4: 0.54, 5: 0.55}
    assert paired_p_value(across, b) == pytest.approx(8 / 64)
    # Sizes equal up to float rounding tie too: 0.30 - 0.25 and 0.60 - 0.65 are 0.05 apart from
    # each other's mirror by 5e-17. Ranks 1..4 and 5.5, 5.5 with one 5.5 negative, W- = 5.5:
    # {}, four singletons below 5, two 5.5s and {1,2}, {1,3}, {1,4}, {2,3}: p = 2 * 11 / 64.
    # Ranked 5 and 6 apart, the negative would be 6 (2 * 14 / 64) or 5 (2 * 10 / 64).
    a = {0: 0.30, 1: 0.60, 2: 0.51, 3: 0.52, 4: 0.53, 5: 0.54}
    b = {0: 0.25, 1: 0.65, 2: 0.50, 3: 0.50, 4: 0.50, 5: 0.50}
    assert a[0] - b[0] != b[1] - a[1]
    assert paired_p_value(a, b) == pytest.approx(22 / 64)
    # Sizes 2e-13 apart tie however they sit (a grid of 1e-12 steps would part these two).
    a = {**a, 0: 0.55 + 4e-13, 1: 0.45 - 6e-13}
    b = {**b, 0: 0.5, 1: 0.5}
    assert paired_p_value(a, b) == pytest.approx(22 / 64)


def test_paired_p_value_edge_cases() -> None:
    assert paired_p_value({0: 0.5}, {0: 0.4}) is None
    assert paired_p_value({0: 0.5, 1: 0.6}, {2: 0.4, 3: 0.5}) is None
    assert paired_p_value({}, {}) is None
    same = {run: 0.1 * run for run in range(8)}
    assert paired_p_value(same, dict(same)) == 1.0
    assert paired_p_value({0: 0.5, 1: 0.6}, {0: 0.5, 1: 0.6}) == 1.0
    # Constant non-zero difference: t is undefined; the exact sign-flip p is 2 / 2**n.
    assert paired_p_value({0: 0.6, 1: 0.7}, {0: 0.5, 1: 0.6}) == pytest.approx(2 / 4)
    five = {run: 0.5 for run in range(5)}
    assert paired_p_value({run: 0.6 for run in range(5)}, five) == pytest.approx(2 / 32)
    # The same, constant up to rounding (0.04999999999999999 and ...93): no scipy warning.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert paired_p_value({0: 0.3, 1: 0.7}, {0: 0.25, 1: 0.65}) == 0.5
        assert paired_p_value({0: 0.3 - 0.25, 1: 0.05}, {0: 0.05, 1: 0.7 - 0.65}) == 1.0
    # With Wilcoxon, a difference of rounding size is a tie (dropped), not a signed difference.
    a = {0: 0.3, 1: 0.5, 2: 0.5, 3: 0.5, 4: 0.5, 5: 0.5}
    b = {0: 0.1 + 0.2, 1: 0.5, 2: 0.51, 3: 0.52, 4: 0.53, 5: 0.5}  # 0.30000000000000004
    assert a[0] != b[0]
    tied = {**b, 0: 0.3}
    assert paired_p_value(a, b) == paired_p_value(a, tied)


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
    np.testing.assert_array_equal(mean, [0.3, 0.4])
    assert np.isnan(lo).all() and np.isnan(hi).all()  # not a band of zero width


def test_one_pair_or_run_has_empty_bounds_in_curves_csv(tmp_path: Path) -> None:
    write_run(tmp_path, "random", 0, [4, 6], [0.3, 0.4])
    write_run(tmp_path, "bald", 0, [4, 6], [0.35, 0.5])
    assert main([str(tmp_path)]) == 0
    rows = list(csv.DictReader((tmp_path / "curves.csv").open()))
    bald = [r for r in rows if r["heuristic"] == "bald"]
    assert [r["mean_dice"] for r in bald] == ["0.3500", "0.5000"]
    assert [r["diff_mean"] for r in bald] == ["0.0500", "0.1000"]
    assert all(
        r[k] == "" for r in bald for k in ("ci_low", "ci_high", "diff_ci_low", "diff_ci_high")
    )


# Four paired differences used below: mean 0.004, deviations ±0.002, so
# sd = sqrt(4 * 0.002**2 / 3) = 0.004 / sqrt(3) and se = sd / sqrt(4) = 0.002 / sqrt(3).
DIFFS = np.array([0.002, 0.006, 0.002, 0.006])
DIFFS_SE = 0.002 / math.sqrt(3)


def _t3_cdf(t: float) -> float:
    """Student t CDF with 3 degrees of freedom in closed form:
    1/2 + (atan(t / sqrt 3) + (t / sqrt 3) / (1 + t**2 / 3)) / pi."""
    u = t / math.sqrt(3)
    return 0.5 + (math.atan(u) + u / (1 + u * u)) / math.pi


def test_paired_differences_pair_by_run_number() -> None:
    a = {0: 0.6, 1: 0.7, 3: 0.9}
    b = {1: 0.5, 0: 0.55, 2: 0.1}
    np.testing.assert_allclose(paired_differences(a, b), [0.05, 0.2])


def test_paired_difference_ci_by_hand() -> None:
    # Half-width t(0.975, 3) * se = 3.182446305284263 * 0.002 / sqrt(3) = 0.0036748.
    mean, low, high = paired_difference_ci(DIFFS)
    assert mean == pytest.approx(0.004)
    assert low == pytest.approx(0.004 - 0.0036748, abs=1e-7)
    assert high == pytest.approx(0.004 + 0.0036748, abs=1e-7)
    scipy_low, scipy_high = stats.t.interval(0.95, 3, loc=0.004, scale=DIFFS_SE)
    assert (low, high) == pytest.approx((scipy_low, scipy_high), rel=1e-12)
    # No spread: an interval of zero width; one difference: no interval.
    assert paired_difference_ci(np.array([0.01, 0.01, 0.01])) == pytest.approx((0.01,) * 3)
    assert paired_difference_ci(np.array([0.01])) is None
    assert paired_difference_ci(np.empty(0)) is None


def test_holm_adjust_by_hand() -> None:
    # m = 4 p-values (None is no test). Sorted: 0.005, 0.01, 0.03, 0.04, times 4, 3, 2, 1:
    # 0.02, 0.03, 0.06, 0.04; running maximum 0.02, 0.03, 0.06, 0.06 (0.04 may not undercut
    # the 0.06 before it).
    adjusted = holm_adjust([0.01, 0.04, 0.03, None, 0.005])
    assert adjusted[3] is None
    assert [adjusted[i] for i in (0, 1, 2, 4)] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # Capped at 1: 2 * 0.5 = 1.0, then max(1.0, 0.7).
    assert holm_adjust([0.5, 0.7]) == pytest.approx([1.0, 1.0])
    # Ties: 3 * 0.02 for both, then max(0.06, 0.5).
    assert holm_adjust([0.02, 0.5, 0.02]) == pytest.approx([0.06, 0.5, 0.06])
    assert holm_adjust([0.2]) == pytest.approx([0.2])
    assert holm_adjust([None, None]) == [None, None] and holm_adjust([]) == []
    # NaN is no test, like None: it neither counts in m nor stops the later ranks.
    adjusted = holm_adjust([0.01, float("nan"), 0.02, 0.03])
    assert adjusted[1] is None and adjusted == pytest.approx([0.03, None, 0.04, 0.04])


def test_tost_by_hand_and_against_scipy() -> None:
    # Margin 0.01: t against -0.01 is (0.004 + 0.01) / se = 7 sqrt 3, against +0.01 it is
    # (0.004 - 0.01) / se = -3 sqrt 3. The larger one-sided p is the second:
    # _t3_cdf(-3 sqrt 3) = 1/2 + (atan(-3) - 3/10) / pi = 0.0069.
    p, equivalent = tost_paired(DIFFS, 0.01)
    assert p == pytest.approx(0.5 + (math.atan(-3) - 0.3) / math.pi, rel=1e-9)
    assert p == pytest.approx(_t3_cdf(-3 * math.sqrt(3)), rel=1e-9)
    assert equivalent
    # The same two tests in scipy: differences against -margin ('greater'), +margin ('less').
    lower = stats.ttest_rel(DIFFS, np.full(4, -0.01), alternative="greater").pvalue
    upper = stats.ttest_rel(DIFFS, np.full(4, 0.01), alternative="less").pvalue
    assert p == pytest.approx(max(lower, upper), rel=1e-9)
    # Equivalent iff the 90 % interval lies inside the margin: 0.004 ± 2.3534 * se.
    low90, high90 = stats.t.interval(0.90, 3, loc=0.004, scale=DIFFS_SE)
    assert -0.01 < low90 and high90 < 0.01
    # Margin 0.005 < high90 = 0.00672: t = -0.001 / se = -sqrt(3) / 2, p = _t3_cdf of it =
    # 1/2 + (atan(-1/2) - 2/5) / pi = 0.2251: not equivalent.
    p, equivalent = tost_paired(DIFFS, 0.005)
    assert p == pytest.approx(0.5 + (math.atan(-0.5) - 0.4) / math.pi, rel=1e-9)
    assert not equivalent
    # Margin 0.007: t = -0.003 / se = -1.5 sqrt 3, p = 1/2 + (atan(-1.5) - 1.5/3.25) / pi =
    # 0.0403. Each one-sided test is at alpha, not alpha / 2: equivalent.
    p, equivalent = tost_paired(DIFFS, 0.007)
    assert p == pytest.approx(0.5 + (math.atan(-1.5) - 1.5 / 3.25) / math.pi, rel=1e-9)
    assert 0.025 < p < 0.05 and equivalent


def test_tost_without_spread_and_edge_cases() -> None:
    assert tost_paired(np.array([0.003, 0.003]), 0.01) == (0.0, True)
    assert tost_paired(np.array([-0.02, -0.02]), 0.01) == (1.0, False)
    assert tost_paired(np.array([0.01, 0.01]), 0.01) == (1.0, False)  # on the margin: not inside
    assert tost_paired(np.array([-0.01, -0.01]), 0.01) == (1.0, False)  # on the other one
    assert tost_paired(np.array([0.003]), 0.01) is None
    with pytest.raises(ValueError):
        tost_paired(DIFFS, 0.0)


def test_pairs_for_power_golden_values() -> None:
    # Standardised difference margin / sd = 1 and 0.5: 10 and 34 pairs (Cohen's tables and
    # G*Power for a two-sided paired t-test at 0.05 with 80 % power).
    assert pairs_for_power(0.01, 0.01) == 10
    assert pairs_for_power(0.02, 0.01) == 34
    # margin / sd = 2: 5 pairs (4 would do with n instead of n - 1 degrees of freedom).
    assert pairs_for_power(0.005, 0.01) == 5
    # Zero spread: the exact sign-flip test that paired_p_value then takes needs 2 / 2**n
    # below alpha, six pairs at 0.05 (2 / 64 = 0.031, 2 / 32 = 0.0625), and seven at 0.02. A
    # tiny spread is the t-test's, which two pairs suffice for.
    assert pairs_for_power(0.0, 0.01) == 6
    assert pairs_for_power(0.0, 0.01, alpha=0.02) == 7
    assert pairs_for_power(1e-9, 0.01) == 2
    # The report's column takes differences equal up to rounding as without spread, as its
    # p-value does: np.std of six 0.05s is 7.6e-18, and 0.3 - 0.25 differs from 0.05 in the
    # 17th digit; either would otherwise make it 2.
    assert float(np.std(np.full(6, 0.05), ddof=1)) > 0
    assert report.paired_columns(np.full(6, 0.05), 0.01)[4] == 6
    assert report.paired_columns(np.array([0.3 - 0.25, 0.05, 0.05]), 0.01)[4] == 6
    with pytest.raises(ValueError):
        pairs_for_power(0.01, -0.01)
    # Extremes end at once: a noncentrality where nct.sf gives nan, and a tiny margin.
    assert pairs_for_power(0.02, 1e9) == 2
    n = pairs_for_power(0.02, 1e-6)
    assert n == pytest.approx(7.8489 * 2e4**2, rel=1e-5)  # the normal approximation, 3.1e9


@pytest.mark.parametrize("ratio", [0.5, 1.0, 2.0, 3.0, 10.0])
def test_pairs_for_power_is_just_above_the_normal_approximation(ratio: float) -> None:
    # ((z_0.975 + z_0.8) * sd / margin)^2 = (1.959964 + 0.841621)^2 * ratio^2 = 7.8489 ratio^2
    # ignores the estimated sd; the t-test needs that or a few pairs more.
    approx = (1.959964 + 0.841621) ** 2 * ratio**2
    n = pairs_for_power(ratio * 0.01, 0.01)
    assert max(approx, 2) <= n <= approx + 4


@pytest.mark.parametrize(
    "n, effect, expected", [(10, 1.0, 0.803), (9, 1.0, 0.748), (5, 2.0, 0.909), (4, 2.0, 0.755)]
)
def test_power_behind_pairs_for_power_by_simulation(n: int, effect: float, expected: float) -> None:
    # Simulated paired t-tests with mean difference = effect * sd: with effect 1, 10 pairs
    # reach 80 % power and 9 do not; with effect 2, 5 do and 4 do not.
    rng = np.random.default_rng(0)
    diffs = rng.normal(effect, 1.0, size=(40_000, n))
    t = diffs.mean(axis=1) / (diffs.std(axis=1, ddof=1) / math.sqrt(n))
    power = np.mean(np.abs(t) > stats.t.ppf(0.975, n - 1))
    assert power == pytest.approx(expected, abs=0.01)


def test_noise_figures_by_hand() -> None:
    curves = [
        np.array([0.5, 0.6, 0.55, 0.7]),  # steps +0.1, -0.05, +0.15; 2nd diffs -0.15, +0.2
        np.array([0.4, 0.45, 0.5]),  # steps +0.05, +0.05; 2nd diff 0
        np.array([0.3, 0.3, 0.35]),  # steps 0 (no drop), +0.05; 2nd diff +0.05
        np.array([0.6]),  # no step
    ]
    drop_share, sd_second = noise_figures(curves)
    assert drop_share == pytest.approx(1 / 7)
    # -0.15, 0.2, 0, 0.05: mean 0.025, sum of squares 0.065 - 4 * 0.025**2 = 0.0625, / 3.
    assert sd_second == pytest.approx(math.sqrt(0.0625 / 3))
    assert noise_figures([np.array([0.6])]) == (None, None)
    assert noise_figures([np.array([0.6, 0.5])]) == (1.0, None)
    assert noise_figures([np.array([0.6, 0.5, 0.55])]) == (pytest.approx(0.5), None)


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
        "n_pairs",
        "aulc_diff",
        "aulc_diff_ci_low",
        "aulc_diff_ci_high",
        "p_holm",
        "tost_p",
        "verdict",
        "runs_needed",
        "drop_share",
        "sd_second_diff",
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

    # Three shared runs: paired t-test on AULC, each pair over the cycles both runs reached, so
    # random's run 2 counts over 4-8 images against bald's shorter run 2.
    paired_random = {**random_aulc, 2: 2 * ((0.38 + 0.52) / 2 + (0.52 + 0.54) / 2) / 4}
    diffs = np.array([bald_aulc[r] - paired_random[r] for r in range(3)])
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


def _summary_rows(directory: Path) -> dict[str, dict[str, str]]:
    return {r["heuristic"]: r for r in csv.DictReader((directory / "summary.csv").open())}


# The fixture's paired AULC (as in test_end_to_end): bald 0.63, 0.65, 0.57 (run 2 over its
# 4-image span: (0.96 + 1.32) / 4); random 3.1/6, 3.12/6 and, over the 4-8 images its pair
# reached, 0.49. Differences bald - random: 0.68/6, 0.78/6, 0.48/6 = 0.11333, 0.13, 0.08; mean
# 1.94/18 = 0.10778; deviations 1/180, 4/180, -5/180, sum of squares 0.14/108, so
# sd = sqrt(0.14 / 216) = 0.025459 and se = sd / sqrt(3) = 0.014699.
FIXTURE_MEAN = 1.94 / 18
FIXTURE_SD = math.sqrt(0.14 / 216)
FIXTURE_SE = FIXTURE_SD / math.sqrt(3)


def test_holm_adjusts_over_the_rows_paired_with_random(results_dir: Path) -> None:
    # A second row, a little above random in every run: now two p-values share the family.
    for run, dice in RANDOM_RUNS.items():
        lifted = [d + 0.01 * (i + run) for i, d in enumerate(dice)]
        write_run(results_dir, "entropy", run, N_LABELLED[: len(dice)], lifted)
    assert main([str(results_dir)]) == 0
    rows = _summary_rows(results_dir)
    p = {name: float(rows[name]["p_vs_random"]) for name in ("bald", "entropy")}
    low, high = sorted(p, key=p.get)
    assert p[low] < p[high] < 1
    # Holm (1979): the smaller p times 2, the larger times 1, kept monotone, capped at 1.
    expected = {low: min(1.0, 2 * p[low])}
    expected[high] = min(1.0, max(expected[low], p[high]))
    for name in p:
        assert float(rows[name]["p_holm"]) == pytest.approx(expected[name], abs=2e-4)
    assert float(rows[low]["p_holm"]) > p[low]


def test_summary_paired_columns_by_hand(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(results_dir)]) == 0
    console = capsys.readouterr().out.splitlines()
    # The terminal's table: header, then the rows in the summary's order, aligned.
    assert console[0].split()[:3] == ["result", "runs", "AULC"]
    assert "AULC - random [95 % CI]" in console[0]
    bald_line = next(line for line in console if line.startswith("bald "))
    assert bald_line.split()[1:5] == ["3", f"{np.mean([0.63, 0.65, 0.57]):.3f}", "±", "0.042"]
    assert "+0.108 [+0.045, +0.171]  0.018     different" in bald_line
    assert console[2].startswith("random ") and console[2].split()[1] == "3"
    rows = _summary_rows(results_dir)
    bald = rows["bald"]
    assert bald["aulc_diff"] == f"{FIXTURE_MEAN:.4f}" == "0.1078"
    assert bald["n_pairs"] == "3" and rows["random"]["n_pairs"] == ""  # the baseline: none
    # 95 % interval: 0.10778 ± t(0.975, 2) * se = 0.10778 ± 4.302653 * 0.014699 = ± 0.063243.
    assert bald["aulc_diff_ci_low"] == "0.0445" and bald["aulc_diff_ci_high"] == "0.1710"
    # One row has a p-value, so Holm leaves it as it is. t = 0.10778 / se = 7.3325 with 2
    # degrees of freedom: two-sided p = 1 - t / sqrt(t^2 + 2) = 0.0181 (t CDF for df 2 in
    # closed form).
    t_stat = FIXTURE_MEAN / FIXTURE_SE
    assert bald["p_holm"] == bald["p_vs_random"] == f"{1 - t_stat / math.sqrt(t_stat**2 + 2):.4f}"
    assert bald["p_holm"] == "0.0181"
    # TOST at 0.01: the test against +0.01 has t = 0.09778 / se = 6.6522 and p = P(T2 < 6.6522)
    # = (1 + t / sqrt(t^2 + 2)) / 2 = 0.9891; significant, yet not equivalent: "different".
    t_upper = (FIXTURE_MEAN - 0.01) / FIXTURE_SE
    assert bald["tost_p"] == f"{(1 + t_upper / math.sqrt(t_upper**2 + 2)) / 2:.4f}" == "0.9891"
    assert bald["verdict"] == "different"
    # sd / margin = 2.546: the normal approximation asks for 7.849 * 2.546^2 = 51 pairs.
    assert bald["runs_needed"] == str(pairs_for_power(FIXTURE_SD, 0.01))
    assert 51 <= int(bald["runs_needed"]) <= 55
    # random is the baseline: no paired cells, but its own noise.
    assert [rows["random"][c] for c in report.CSV_COLUMNS[10:17]] == [""] * 7
    # No curve of the fixture ever drops. bald's second differences: -0.1, -0.02 (runs 0 and 1),
    # -0.04 (run 2); mean -0.056, sum of squared deviations 0.00672, sd sqrt(0.00672 / 4).
    assert bald["drop_share"] == rows["random"]["drop_share"] == "0.0000"
    assert bald["sd_second_diff"] == f"{math.sqrt(0.00672 / 4):.4f}" == "0.0410"
    markdown = (results_dir / "summary.md").read_text()
    assert "| aulc_diff | aulc_diff_ci_low |" in markdown and "±0.01 AULC" in markdown
    assert "Holm 1979" in markdown and "Schuirmann 1987" in markdown


def test_a_wide_margin_makes_the_significant_row_equivalent(results_dir: Path) -> None:
    assert main([str(results_dir), "--margin", "0.2"]) == 0
    bald = _summary_rows(results_dir)["bald"]
    # Against +0.2, t = -0.09222 / se = -6.2742: p = (1 - 6.2742 / sqrt(6.2742^2 + 2)) / 2
    # = 0.0122; against -0.2, t = 0.30778 / se, far smaller p. Equivalence wins over
    # p_holm = 0.0181 < 0.05.
    assert bald["tost_p"] == "0.0122" and bald["verdict"] == "equivalent"
    assert bald["runs_needed"] == str(pairs_for_power(FIXTURE_SD, 0.2))
    # The existing columns do not depend on the margin.
    assert bald["p_vs_random"] == "0.0181" and bald["aulc_diff"] == "0.1078"
    assert "±0.2 AULC" in (results_dir / "summary.md").read_text()


@pytest.mark.parametrize("value", ["0", "-0.01", "1", "1e9", "nan", "inf", "abc"])
def test_margin_must_be_an_aulc_difference(
    results_dir: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    assert main([str(results_dir), f"--margin={value}"]) == 2
    _assert_one_line_error(capsys, "--margin", value)
    assert not (results_dir / "summary.csv").exists()


def test_baseline_option_pairs_every_row_with_that_row(results_dir: Path) -> None:
    assert main([str(results_dir), "--baseline", "bald"]) == 0
    rows = _summary_rows(results_dir)
    random = rows["random"]
    # The same pairs as against random, with the sign turned: the interval mirrors, p stays.
    assert random["aulc_diff"] == "-0.1078"
    assert random["aulc_diff_ci_low"] == "-0.1710" and random["aulc_diff_ci_high"] == "-0.0445"
    assert random["p_vs_random"] == random["p_holm"] == "0.0181"
    assert random["runs_needed"] == str(pairs_for_power(FIXTURE_SD, 0.01))
    assert [rows["bald"][c] for c in report.CSV_COLUMNS[10:17]] == [""] * 7
    curves = list(csv.DictReader((results_dir / "curves.csv").read_text().splitlines()))
    random_curve = {int(r["x"]): r for r in curves if r["heuristic"] == "random"}
    assert random_curve[6]["diff_mean"] == "-0.1000" and random_curve[10]["n_pairs"] == "2"
    assert all(r["diff_mean"] == "" for r in curves if r["heuristic"] == "bald")
    markdown = (results_dir / "summary.md").read_text()
    assert "against the baseline `bald`" in markdown and "row minus `bald`" in markdown


def test_paired_with_matches_the_sweep_tag_unless_the_baseline_names_one() -> None:
    names = dict.fromkeys(
        ["random", "random+pseudo", "entropy+pseudo", "random+pseudo@k=1", "entropy+pseudo@k=1"]
    )
    assert report.paired_with("entropy+pseudo", names) == "random"
    assert report.paired_with("random+pseudo", names) == "random"
    assert report.paired_with("random", names) is None
    assert report.paired_with("entropy+pseudo@k=1", names) is None  # no random@k=1
    pseudo = "random+pseudo"
    assert report.paired_with("entropy+pseudo", names, pseudo) == pseudo
    assert report.paired_with("entropy+pseudo@k=1", names, pseudo) == "random+pseudo@k=1"
    assert report.paired_with("random+pseudo@k=1", names, pseudo) is None
    assert report.paired_with("random", names, pseudo) == pseudo
    # A baseline with a tag of its own is that one row for every other row.
    assert report.paired_with("random", names, "random+pseudo@k=1") == "random+pseudo@k=1"
    assert report.paired_with("random+pseudo@k=1", names, "random+pseudo@k=1") is None


def test_unknown_baseline_is_one_line(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([str(results_dir), "--baseline", "entropy"]) == 2
    _assert_one_line_error(capsys, "--baseline 'entropy'", "bald, random")
    assert not (results_dir / "summary.csv").exists()


def test_inconclusive_with_few_noisy_pairs_and_empty_cells_without_pairs(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    # Two-point curves over 4 -> 6 images: AULC is the mean of the two Dice values.
    for run, (rand, ent, lone) in enumerate(
        [((0.5, 0.6), (0.5, 0.7), (0.5, 0.5)), ((0.5, 0.7), (0.5, 0.6), None)]
    ):
        write_run(results, "random", run, [4, 6], list(rand))
        write_run(results, "entropy", run, [4, 6], list(ent))
        if lone:
            write_run(results, "bald", run, [4, 6], list(lone))
    assert main([str(results)]) == 0
    rows = _summary_rows(results)
    entropy = rows["entropy"]
    # Differences +0.05 and -0.05: mean 0, sd 0.05 * sqrt 2, 95 % interval
    # ± t(0.975, 1) * 0.05 = ± 12.7062 * 0.05.
    assert entropy["aulc_diff"] == "0.0000"
    assert entropy["aulc_diff_ci_high"] == f"{12.706204736174698 * 0.05:.4f}"
    assert entropy["verdict"] == "inconclusive"
    # One shared run only: nothing paired, as p_vs_random.
    assert [rows["bald"][c] for c in report.CSV_COLUMNS[7:8] + report.CSV_COLUMNS[10:17]] == (
        [""] * 8
    )


def test_noise_columns_separate_tagged_rows(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    n = [4, 6, 8, 10]
    # ema: steps +0.1, +0.05, +0.05 and +0.1, +0.1, 0: no drop; 2nd diffs -0.05, 0, 0, -0.1.
    write_run(results, "random@model_selection=ema", 0, n, [0.5, 0.6, 0.65, 0.7])
    write_run(results, "random@model_selection=ema", 1, n, [0.5, 0.6, 0.7, 0.7])
    # last: steps +0.2, -0.1, +0.1 and +0.1, -0.05, +0.15: 2 drops of 6;
    # 2nd diffs -0.3, 0.2, -0.15, 0.2.
    write_run(results, "random@model_selection=last", 0, n, [0.5, 0.7, 0.6, 0.7])
    write_run(results, "random@model_selection=last", 1, n, [0.5, 0.6, 0.55, 0.7])
    assert main([str(results)]) == 0
    rows = _summary_rows(results)
    ema, last = rows["random@model_selection=ema"], rows["random@model_selection=last"]
    assert ema["drop_share"] == "0.0000" and last["drop_share"] == f"{2 / 6:.4f}"
    # ema: mean -0.0375, sum of squares 0.0125 - 4 * 0.0375^2 = 0.006875, / 3.
    assert ema["sd_second_diff"] == f"{math.sqrt(0.006875 / 3):.4f}"
    # last: mean -0.0125, sum of squares 0.1925 - 4 * 0.0125^2 = 0.191875, / 3.
    assert last["sd_second_diff"] == f"{math.sqrt(0.191875 / 3):.4f}"
    assert ema["aulc_diff"] == "" and last["verdict"] == ""  # both are random: no pairing


def test_paired_difference_curve_by_hand() -> None:
    bald = [
        RunRecord("bald", r, np.array(N_LABELLED[: len(d)]), np.array(d))
        for r, d in BALD_RUNS.items()
    ]
    random = [
        RunRecord("random", r, np.array(N_LABELLED), np.array(d)) for r, d in RANDOM_RUNS.items()
    ]
    random.append(RunRecord("random", 7, np.array(N_LABELLED), np.full(4, 0.1)))  # no partner
    x, mean, low, high, pairs = paired_difference_curve(bald, random)
    np.testing.assert_array_equal(x, N_LABELLED)
    np.testing.assert_array_equal(pairs, [3, 3, 3, 2])
    # Differences at 4: 0, 0, 0; at 6: 0.10, 0.14, 0.06; at 8: 0.15, 0.16, 0.20; at 10: 0.18, 0.18.
    np.testing.assert_allclose(mean, [0.0, 0.10, 0.17, 0.18])
    # At 6: sd 0.04, half-width t(0.975, 2) * 0.04 / sqrt 3; at 4 and 10 no spread: zero width.
    assert high[1] - mean[1] == pytest.approx(4.302652729911275 * 0.04 / math.sqrt(3))
    assert low[0] == high[0] == pytest.approx(0.0)
    assert low[3] == pytest.approx(0.18) and high[3] == pytest.approx(0.18)
    assert paired_difference_curve(bald, random[:0])[0].size == 0


def test_figure_has_a_difference_panel_and_zoomed_axes(
    results_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = []

    def keep(fig: plt.Figure, path: Path) -> Path:
        figures.append(fig)
        return Path(path)

    monkeypatch.setattr(figure, "save_figure", keep)
    assert main([str(results_dir)]) == 0
    curves, differences = figures[0].axes
    # Band edges: lowest random's at 4 images, 0.40 - 4.3027 * 0.02 / sqrt 3 = 0.350; highest
    # bald's at 10 images (two runs), 0.79 + 12.706 * 0.01 = 0.917. The axis hugs them, with a
    # 6 % pad (0.034), instead of spanning 0 to 1.
    low, high = curves.get_ylim()
    assert low == pytest.approx(0.350 - 0.034, abs=0.002)
    assert high == pytest.approx(0.917 + 0.034, abs=0.002)
    # The lower panel holds the zero line and bald's paired differences (up to 0.18 at 10, with
    # the interval at 8 reaching 0.17 + 4.3027 * 0.0265 / sqrt 3 = 0.236), and not random.
    low, high = differences.get_ylim()
    assert low < 0.0 and 0.236 < high < 0.3
    assert any(list(line.get_ydata()) == [0.0, 0.0] for line in differences.get_lines())
    np.testing.assert_allclose(differences.get_lines()[0].get_ydata(), [0.0, 0.10, 0.17, 0.18])
    assert differences.get_ylabel() == "test Dice − random's"
    # Against bald, the panel holds random's differences instead, with the sign turned.
    assert main([str(results_dir), "--baseline", "bald"]) == 0
    differences = figures[1].axes[1]
    np.testing.assert_allclose(differences.get_lines()[0].get_ydata(), [0.0, -0.10, -0.17, -0.18])
    assert differences.get_ylabel() == "test Dice − bald's"
    # Two pairs far apart: t(0.975, 1) = 12.7 stretches the interval past ±1, where no
    # difference of two Dice can be; the axis stops at ±1.
    for run, dice in ((0, [0.1, 0.9]), (1, [0.9, 0.1])):
        write_run(results_dir, "wide", run, N_LABELLED[:2], dice)
    assert main([str(results_dir)]) == 0
    assert figures[2].axes[1].get_ylim() == (-1.0, 1.0)
    assert differences.get_title().startswith("paired difference from bald (same run")
    plt.close("all")


def test_figure_without_random_has_one_panel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    figures = []
    monkeypatch.setattr(figure, "save_figure", lambda fig, path: figures.append(fig) or path)
    write_run(tmp_path, "entropy", 0, [4, 6], [0.5, 0.7])
    assert main([str(tmp_path)]) == 0
    assert len(figures[0].axes) == 1
    plt.close("all")


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
    # The lower panel's numbers: differences from random 0.10, 0.14, 0.06 at 6 images.
    assert bald[6]["diff_mean"] == "0.1000" and bald[6]["n_pairs"] == "3"
    assert bald[6]["diff_ci_high"] == f"{0.1 + 4.302652729911275 * 0.04 / math.sqrt(3):.4f}"
    assert bald[10]["diff_ci_low"] == bald[10]["diff_ci_high"] == "0.1800"
    assert bald[10]["n_pairs"] == "2"
    random_rows = [r for r in rows if r["heuristic"] == "random"]
    assert all(r["diff_mean"] == r["n_pairs"] == "" for r in random_rows)


def test_runs_csv_holds_each_runs_aulc_and_final_dice(results_dir: Path) -> None:
    assert main([str(results_dir)]) == 0
    rows = list(csv.DictReader((results_dir / "runs.csv").read_text().splitlines()))
    by_run = {(r["heuristic"], int(r["run"])): r for r in rows}
    assert sorted(by_run) == [
        ("bald", 0),
        ("bald", 1),
        ("bald", 2),
        ("full", 0),
        ("random", 0),
        ("random", 1),
        ("random", 2),
    ]
    assert rows[-1]["heuristic"] == "full"  # the reference last, with no curve to integrate
    assert by_run["full", 0]["aulc"] == "" and by_run["full", 0]["final_dice"] == "0.8000"
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


def test_a_grid_point_shares_the_full_supervision_of_the_keys_it_reads(tmp_path: Path) -> None:
    # A sweep over lr x temperature trains full supervision once per lr: it selects nothing.
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "full@lr=0.1", 0, [12], [0.5])
    write_run(results, "full@temperature=2", 0, [12], [0.9])  # trained at another lr
    for temperature in (1, 2):
        write_run(results, f"bald@lr=0.1,temperature={temperature}", 0, [4, 6, 8], [0.3, 0.48, 0.6])
    write_run(results, "bald@lr=0.2,temperature=2", 0, [4, 6, 8], [0.3, 0.46, 0.85])
    assert main([str(results)]) == 0
    rows = {r["heuristic"]: r for r in csv.DictReader((results / "summary.csv").open())}
    # 95 % of lr=0.1's 0.5 is 0.475, reached at 6; the lr=0.2 point has no reference of its
    # own (not temperature=2's, trained at the default lr), so its target is 95 % of the best
    # final mean Dice, 0.85 -> 0.8075, reached at 8.
    assert rows["bald@lr=0.1,temperature=1"]["labels_to_95"] == "6"
    assert rows["bald@lr=0.1,temperature=2"]["labels_to_95"] == "6"
    assert rows["bald@lr=0.2,temperature=2"]["labels_to_95"] == "8"


def test_a_grid_point_without_its_own_full_supervision_uses_no_other_points(
    tmp_path: Path,
) -> None:
    # Mid-sweep: point a's reference is in, point b's is not (full runs are queued last).
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "full@s=a", 0, [12], [0.5])
    write_run(results, "bald@s=a", 0, [4, 6, 8], [0.3, 0.46, 0.85])
    write_run(results, "bald@s=b", 0, [4, 6, 8], [0.3, 0.46, 0.7])
    assert main([str(results)]) == 0
    rows = {r["heuristic"]: r for r in csv.DictReader((results / "summary.csv").open())}
    # a: 95 % of 0.5 = 0.475, reached at 8. b: not a's 0.475 (which it reaches at 8) but 95 %
    # of the best final mean Dice, 0.85 -> 0.8075, never reached.
    assert rows["bald@s=a"]["labels_to_95"] == "8" and rows["bald@s=b"]["labels_to_95"] == ""
    text = (results / "summary.md").read_text()
    assert "for rows without one (bald@s=b) the best final mean Dice" in text
    assert "i.e. Dice ≥" not in text  # the rows do not share one target


def test_n_pairs_counts_the_runs_the_paired_columns_cover(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for run in (0, 1, 2):
        write_run(results, "bald", run, [4, 6], [0.5, 0.7 + 0.01 * run])
    for run in (0, 1):  # the baseline's third run has not finished yet
        write_run(results, "random", run, [4, 6], [0.5, 0.6])
    assert main([str(results)]) == 0
    bald = next(
        r for r in csv.DictReader((results / "summary.csv").open()) if r["heuristic"] == "bald"
    )
    assert bald["n_runs"] == "3" and bald["n_pairs"] == "2"
    # Over its two pairs: (0.5 + 0.7)/2 - 0.55 and (0.5 + 0.71)/2 - 0.55.
    assert float(bald["aulc_diff"]) == pytest.approx(0.0525)


def test_p_values_are_never_rounded_across_alpha_or_to_zero() -> None:
    from utils.report.tables import _format_cell, _p_text

    assert _format_cell(0.04996, p_value=True) == "0.04996"  # not 0.0500 beside "different"
    assert _format_cell(0.05004, p_value=True) == "0.0500"  # 0.05 is not below alpha either
    assert _format_cell(0.0181, p_value=True) == "0.0181"
    assert _format_cell(3e-5, p_value=True) == "0.00003"
    assert _format_cell(0.04996) == "0.0500"  # other columns keep four decimals
    assert _p_text(0.04996) == "0.04996" and _p_text(0.0431) == "0.043"
    assert _p_text(0.0004) == "<0.001"


def test_a_pair_tested_on_different_images_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Split files rewritten between the arms, or arms from two data folders: the configs agree.
    for run in (0, 1, 2):
        write_run(tmp_path, "random", run, [4, 6], [0.5, 0.6])
        write_run(tmp_path, "bald", run, [4, 6], [0.5, 0.7])
    path = tmp_path / "bald_1.json"
    record = json.loads(path.read_text())
    record["test_dice_per_image"] = [{"testA_1": d, "testA_2": d} for d in record["test_dice"]]
    path.write_text(json.dumps(record))
    path = tmp_path / "random_2.json"  # a record that does not say is not judged
    record = json.loads(path.read_text())
    del record["test_dice_per_image"]
    path.write_text(json.dumps(record))
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 pair(s) were tested on different images (bald_1 / random_1;" in err
    assert "1 pair(s) were tested on different images" in (tmp_path / "summary.md").read_text()


def test_a_pair_run_under_another_protocol_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for run in (0, 1):
        write_run(results, "random", run, [4, 6], [0.5, 0.6])
        write_run(results, "bald", run, [4, 6], [0.5, 0.7])
    for name, run, changes in (
        ("random", 1, {"image_scale": 0.5, "strategy": "random"}),
        ("bald", 1, {"image_scale": 0.25, "strategy": "topk", "data_path": "elsewhere"}),
        ("bald", 0, {"strategy": "topk"}),  # the arm itself may differ
    ):
        path = results / f"{name}_{run}.json"
        record = json.loads(path.read_text())
        record["config"].update(changes)
        path.write_text(json.dumps(record))
    assert main([str(results)]) == 0
    err = capsys.readouterr().err
    assert "1 pair(s) ran under configs that differ in more than their arm" in err
    assert "(bald_1 / random_1 (image_scale))" in err
    assert "bald_1 / random_1 (image_scale)" in (results / "summary.md").read_text()
    # Against another grid point's baseline, the key its tag sweeps is the arm.
    other = tmp_path / "other"
    other.mkdir()
    for name, selection in (("random@model_selection=last", "last"), ("bald", "val")):
        write_run(other, name, 0, [4, 6], [0.5, 0.6])
        write_run(other, name, 1, [4, 6], [0.5, 0.65])
        for run in (0, 1):
            path = other / f"{name}_{run}.json"
            record = json.loads(path.read_text())
            record["config"]["model_selection"] = selection
            path.write_text(json.dumps(record))
    assert main([str(other), "--baseline", "random@model_selection=last"]) == 0
    assert "differ in more than their arm" not in capsys.readouterr().err


def test_console_header_names_the_baseline_of_each_tag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for point in ("a", "b"):
        for run in (0, 1):
            write_run(results, f"random@s={point}", run, [4, 6], [0.5, 0.6])
            write_run(results, f"bald@s={point}", run, [4, 6], [0.5, 0.7 - 0.05 * run])
    assert main([str(results)]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    # Each row is paired with random of its own tag, never with a row called "random".
    assert "AULC - random@tag [95 % CI]" in header, header
    assert main([str(results), "--baseline", "random@s=a"]) == 0
    assert "AULC - random@s=a [95 % CI]" in capsys.readouterr().out.splitlines()[0]


def test_a_cycle_being_saved_by_a_running_run_is_read_once_saved(tmp_path: Path) -> None:
    import threading

    from utils.runs.lock import run_lock

    write_run(tmp_path, "random", 0, [4, 6, 8], [0.5, 0.6, 0.7])
    np.save(tmp_path / "random_0.npy", np.array([0.5, 0.6]))  # cycle 2's record, not its .npy
    with pytest.raises(ReportError, match="random_0"):
        load_results(tmp_path)  # no run holds it: the files disagree for good
    with run_lock(tmp_path / "random_0.lock"):
        results = threading.Timer(
            0.2, np.save, (tmp_path / "random_0.npy", np.array([0.5, 0.6, 0.7]))
        )
        results.start()
        (run,) = load_results(tmp_path)["random"]
        results.join()
    assert run.dice.tolist() == [0.5, 0.6, 0.7]


def test_a_first_cycle_being_saved_is_read_once_saved(tmp_path: Path) -> None:
    import threading

    from utils.runs.lock import run_lock

    write_run(tmp_path, "random", 0, [4], [0.5])
    (tmp_path / "random_0.npy").unlink()  # its record is written, its .npy not yet
    with pytest.raises(ReportError, match="random_0.json has no matching random_0.npy"):
        load_results(tmp_path)  # no run holds it: half a run for good
    with run_lock(tmp_path / "random_0.lock"):
        results = threading.Timer(0.2, np.save, (tmp_path / "random_0.npy", np.array([0.5])))
        results.start()
        (run,) = load_results(tmp_path)["random"]
        results.join()
    assert run.dice.tolist() == [0.5]


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


def test_same_run_in_two_folders_under_two_names_names_both(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = _split_study(tmp_path)
    for suffix in (".npy", ".json"):
        (second / f"bald_01{suffix}").write_bytes((first / f"bald_1{suffix}").read_bytes())
    assert main([str(first), str(second), "--out", str(tmp_path / "pooled")]) == 2
    _assert_one_line_error(
        capsys, "machine_a/bald_1.npy", "machine_b/bald_01.npy", "run 1 of bald", "one folder"
    )


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


def test_json_without_npy_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half of a run moved out: leaving the rest in would drop it from the table unseen.
    (results_dir / "bald_2.npy").unlink()
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "bald_2.json", "bald_2.npy", "move the .json out")


def test_length_mismatch_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = json.loads((results_dir / "random_2.json").read_text())
    record["n_labelled"] = [4, 6]
    record.pop("test_dice")
    (results_dir / "random_2.json").write_text(json.dumps(record))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_2.json", "n_labelled")


def test_a_dice_that_is_not_finite_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dice = np.load(results_dir / "random_2.npy")
    dice[1] = np.nan
    np.save(results_dir / "random_2.npy", dice)
    record = json.loads((results_dir / "random_2.json").read_text())
    record.pop("test_dice")  # else the JSON's disagreement would be reported first
    (results_dir / "random_2.json").write_text(json.dumps(record))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_2.npy", "cycle 1", "nan")


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("labelled_fraction", [0.1, float("nan"), 0.3, 0.4], ("labelled_fraction", "one number")),
        ("labelled_fraction", "0.1 0.2 0.3 0.4", ("labelled_fraction", "one number")),
        ("complete", "false", ("'complete'", "true or false")),
        ("validation_images", "x", ("'validation_images'", "count")),
        # A kill between writing the two files: the run writes both again.
        ("test_dice", [0.1, 0.2, 0.3, 0.4], ("'test_dice' disagrees with random_2.npy", "rerun")),
    ],
)
def test_a_malformed_record_field_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str], key: str, value: object, words: tuple
) -> None:
    record = json.loads((results_dir / "random_2.json").read_text())
    assert len(record["n_labelled"]) == 4  # one fraction per cycle, so only the value is wrong
    (results_dir / "random_2.json").write_text(json.dumps({**record, key: value}))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_2.json", *words)


def test_an_npy_of_text_names_the_file(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(results_dir / "random_2.npy", np.array(["a", "b", "c"]))
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_2.npy", "Dice values")


def test_a_table_whose_rows_cannot_reach_holm_significance_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Six pairs, every difference positive: Wilcoxon's smallest p, 2 / 2**6 = 0.031; over two
    # rows Holm makes it 0.0625 at best. With seven pairs 2 * 2 / 2**7 = 0.031 would do.
    for run in range(6):
        write_run(tmp_path, "random", run, [4, 6], [0.5, 0.6])
        write_run(tmp_path, "bald", run, [4, 6], [0.55, 0.65 + 0.001 * run])
        write_run(tmp_path, "entropy", run, [4, 6], [0.54, 0.64 + 0.001 * run])
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "the smallest Holm-adjusted p any row could reach is 0.062" in err
    assert "that needs 7 pairs or more whose AULCs differ" in err and err.count("\n") == 1
    assert "no row can be 'different'" in (tmp_path / "summary.md").read_text()
    with open(tmp_path / "summary.csv", newline="") as handle:
        table = {row["heuristic"]: row for row in csv.DictReader(handle)}
    for heuristic in ("bald", "entropy"):  # raw p 0.031 and Holm 0.0625: not 'different'
        assert float(table[heuristic]["p_vs_random"]) == pytest.approx(2 / 64, abs=1e-4)
        assert float(table[heuristic]["p_holm"]) == pytest.approx(4 / 64, abs=1e-4)
        assert table[heuristic]["verdict"] == "inconclusive"
    for heuristic in ("random", "bald", "entropy"):  # a seventh pair: now within reach
        write_run(
            tmp_path, heuristic, 6, [4, 6], [0.5, 0.6] if heuristic == "random" else [0.6, 0.7]
        )
    assert main([str(tmp_path)]) == 0
    assert "smallest Holm-adjusted" not in capsys.readouterr().err


def test_the_holm_floor_counts_only_signed_differences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Six pairs, one of them equal: Wilcoxon ranks five, so p >= 2 / 2**5 = 0.0625 in one row.
    for run in range(6):
        write_run(tmp_path, "random", run, [4, 6], [0.5, 0.6])
        write_run(tmp_path, "bald", run, [4, 6], [0.5, 0.6] if run == 0 else [0.55, 0.7])
    assert main([str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "smallest Holm-adjusted p any row could reach is 0.062" in err
    assert "that needs 6 pairs or more whose AULCs differ" in err  # five of the six do


def test_rows_under_the_t_test_have_no_holm_floor(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Five pairs take the paired t-test, whose p has no floor: 0.0003 here, nothing to warn of.
    for run in range(5):
        write_run(tmp_path, "random", run, [4, 6], [0.5, 0.6])
        write_run(tmp_path, "bald", run, [4, 6], [0.55, 0.65 + 0.002 * run])
    assert main([str(tmp_path)]) == 0
    assert "smallest Holm-adjusted" not in capsys.readouterr().err
    assert "no row can be 'different'" not in (tmp_path / "summary.md").read_text()


def test_region_runs_pair_only_with_the_same_initial_set(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run in (0, 1):
        write_run(tmp_path, "random", run, [4, 6, 8], [0.5, 0.6, 0.7])
        write_run(tmp_path, "bald-region", run, [2, 3, 4], [0.4, 0.55, 0.65])
        for name, fractions in (("random", [0.1, 0.15, 0.2]), ("bald-region", [0.05, 0.1, 0.2])):
            path = tmp_path / f"{name}_{run}.json"
            record = json.loads(path.read_text())
            unit = "region" if "region" in name else "image"
            path.write_text(
                json.dumps({**record, "label_unit": unit, "labelled_fraction": fractions})
            )
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "bald-region_0 labelled [2] images", "random_0 [4]")


def test_runs_on_other_label_schedules_do_not_pair(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for run in (0, 1):
        write_run(tmp_path, "random", run, [4, 6, 8], [0.5, 0.6, 0.7])
        write_run(tmp_path, "bald", run, [2, 4, 6], [0.4, 0.55, 0.65])  # n_label_start=2
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "bald_0", "[2, 4, 6]", "random_0", "[4, 6, 8]")


def test_runs_of_one_row_on_other_label_schedules_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A rerun with n_label_start=2 left beside the others: its AULC spans other labels, and the
    # mean curve would mix runs at each count. A run cut short on the same schedule is fine.
    write_run(tmp_path, "bald", 0, [4, 6, 8], [0.5, 0.6, 0.7])
    write_run(tmp_path, "bald", 1, [4, 6], [0.5, 0.62])
    assert main([str(tmp_path)]) == 0
    write_run(tmp_path, "bald", 2, [2, 4, 6], [0.4, 0.55, 0.65])
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "bald_2", "[2, 4, 6]", "bald_0", "[4, 6, 8]", "average")
    # The first run cut short after cycle 0 does not hide the others' disagreement.
    write_run(tmp_path, "bald", 0, [4], [0.5])
    write_run(tmp_path, "bald", 2, [4, 8, 12], [0.5, 0.65, 0.7])
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "bald_1", "[4, 6]", "bald_2", "[4, 8]", "average")


def test_one_run_under_two_file_names_is_refused(
    results_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for suffix in (".npy", ".json"):
        (results_dir / f"random_02{suffix}").write_bytes(
            (results_dir / f"random_2{suffix}").read_bytes()
        )
    assert main([str(results_dir)]) == 2
    _assert_one_line_error(capsys, "random_02.npy", "random_2.npy", "run 2 of random")


def test_unfinished_runs_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "random", 0, [4, 6, 8], [0.5, 0.6, 0.7])
    write_run(results, "entropy", 0, [4, 6], [0.5, 0.65])
    record_path = results / "entropy_0.json"
    record = json.loads(record_path.read_text())
    record["complete"] = False  # as active.py writes it after every cycle of a run in progress
    record_path.write_text(json.dumps(record))
    capsys.readouterr()
    assert main([str(results)]) == 0
    assert "warning: the tables include 1 unfinished run(s) (entropy_0)" in capsys.readouterr().err
    markdown = (results / "summary.md").read_text()
    assert "Unfinished runs (1), whose curves stop before their planned cycles: entropy_0." in (
        markdown
    )
    # Records without the flag (older runs, all finished) are taken as complete.
    assert "random_0" not in markdown.split("Unfinished runs")[1]


def test_an_unfinished_pair_is_compared_over_the_cycles_both_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    write_run(results, "random", 0, [4, 6, 8], [0.5, 0.6, 0.7])
    write_run(results, "entropy", 0, [4, 6], [0.5, 0.65])  # cut off after cycle 1
    record = json.loads((results / "entropy_0.json").read_text())
    (results / "entropy_0.json").write_text(json.dumps({**record, "complete": False}))
    write_run(results, "random", 1, [4, 6, 8], [0.4, 0.5, 0.8])
    write_run(results, "entropy", 1, [4, 6, 8], [0.4, 0.6, 0.7])
    capsys.readouterr()
    assert main([str(results)]) == 0
    printed = capsys.readouterr()
    assert "(pairs are compared over the cycles both runs reached)" in printed.err
    entropy = next(line for line in printed.out.splitlines() if line.startswith("entropy "))
    assert "+0.025 [+0.025, +0.025]  0.500" in entropy  # constant: sign-flip p = 2 / 2**2
    markdown = (results / "summary.md").read_text()
    assert "each pair is compared over the cycles both of its runs reached" in markdown
    row = _summary_rows(results)["entropy"]
    # Pair 0 over 4-6 labels: 0.575 - 0.55 (against random's whole curve, 0.6, it would read
    # -0.025); pair 1 over 4-8: 0.575 - 0.55. So +0.025 in both, without spread.
    assert float(row["aulc_diff"]) == pytest.approx(0.025, abs=1e-4)
    assert float(row["aulc_diff_ci_low"]) == pytest.approx(0.025, abs=1e-4)
    assert float(row["p_vs_random"]) == 0.5  # a constant non-zero difference, 2 pairs
    runs = {(r["heuristic"], r["run"]): r for r in csv.DictReader((results / "runs.csv").open())}
    assert float(runs[("random", "0")]["aulc"]) == pytest.approx(0.6)  # its whole curve


def _set_machines(path: Path, *machines: dict) -> None:
    record = json.loads(path.read_text())
    record["machines"] = list(machines)
    path.write_text(json.dumps(record))


XEON = {"cpu": "Intel Xeon", "cpu_capability": "AVX512", "native_bf16": True, "device": "cpu",
        "precision": "bfloat16", "threads": 1, "torch": "2.14.1", "numpy": "2.3.0"}  # fmt: skip
EPYC = {**XEON, "cpu": "AMD EPYC", "cpu_capability": "AVX2", "native_bf16": False,
        "precision": "float32"}  # fmt: skip


def test_pairs_run_under_different_setups_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    for run in range(6):
        write_run(results, "random", run, [4, 6, 8], [0.5, 0.6, 0.7])
        write_run(results, "entropy", run, [4, 6, 8], [0.5, 0.62, 0.72])
    write_run(results, "full", 0, [68], [0.9])
    for run in (0, 1, 3, 5):
        _set_machines(results / f"random_{run}.json", {**XEON, "cycles": [0, 2]})
    _set_machines(results / "entropy_0.json", {**XEON, "cycles": [0, 2]})  # same: not named
    _set_machines(results / "entropy_1.json", {**EPYC, "cycles": [0, 2]})
    # Both ran cycles on both machines, but cycle 1 on different ones.
    _set_machines(results / "random_2.json", {**XEON, "cycles": [0, 0]}, {**EPYC, "cycles": [1, 2]})
    _set_machines(
        results / "entropy_2.json", {**XEON, "cycles": [0, 1]}, {**EPYC, "cycles": [2, 2]}
    )
    _set_machines(results / "entropy_3.json", {**XEON, "numpy": "2.4.0", "cycles": [0, 2]})
    # Run 4: no record says where random_4 ran (an older record), so nothing can be said; run 5:
    # the cycles that differ ran before the record said where.
    _set_machines(results / "entropy_4.json", {**EPYC, "cycles": [0, 2]})
    _set_machines(results / "entropy_5.json", {"unknown": True, "cycles": [0, 1]},
                  {**XEON, "cycles": [2, 2]})  # fmt: skip
    # Full supervision is the reference, not a row: it is paired with nothing.
    _set_machines(results / "full_0.json", {**EPYC, "cycles": [0, 0]})

    loaded = load_results(results)
    (entropy_2,) = [r for r in loaded["entropy"] if r.run == 2]
    xeon = "Intel Xeon (AVX512, native bf16), bfloat16, 1 threads, torch 2.14.1, numpy 2.3.0"
    epyc = "AMD EPYC (AVX2), float32, 1 threads, torch 2.14.1, numpy 2.3.0"
    assert entropy_2.machine_per_cycle == (xeon, xeon, epyc)
    (entropy_5,) = [r for r in loaded["entropy"] if r.run == 5]
    assert entropy_5.machine_per_cycle == (None, None, xeon)
    named = ("entropy_1 / random_1", "entropy_2 / random_2", "entropy_3 / random_3")
    assert report.summarise(loaded).mixed_machines == named
    capsys.readouterr()
    assert main([str(results)]) == 0
    err = capsys.readouterr().err
    assert (
        f"warning: 3 pair(s) ran a cycle under different machines or settings ({', '.join(named)};"
        in (err)
    )
    assert "full_0" not in err
    markdown = (results / "summary.md").read_text()
    assert f"so their AULC differences include the setups' effect: {', '.join(named)}." in markdown
    runs = {
        (r["heuristic"], r["run"]): r["machines"]
        for r in csv.DictReader((results / "runs.csv").read_text().splitlines())
    }
    assert runs["entropy", "2"] == f"{xeon} | {epyc}"
    assert runs["entropy", "5"] == f"unknown | {xeon}"
    assert runs["random", "4"] == ""  # an older record: nothing said
    # Back to a setup it left: the cell says so, in order.
    _set_machines(results / "entropy_1.json", {**XEON, "cycles": [0, 0]},
                  {**EPYC, "cycles": [1, 1]}, {**XEON, "cycles": [2, 2]})  # fmt: skip
    assert main([str(results)]) == 0
    runs = {
        (r["heuristic"], r["run"]): r["machines"]
        for r in csv.DictReader((results / "runs.csv").read_text().splitlines())
    }
    assert runs["entropy", "1"] == f"{xeon} | {epyc} | {xeon}"
    # A GPU run is labelled by its device, then the host's processor.
    _set_machines(results / "entropy_0.json", {**XEON, "device": "NVIDIA H200", "cycles": [0, 2]})
    (entropy_0,) = [r for r in load_results(results)["entropy"] if r.run == 0]
    assert entropy_0.machine_per_cycle[0].startswith("NVIDIA H200 on Intel Xeon (AVX512, native")


@pytest.mark.parametrize(
    "machines",
    [
        "Intel Xeon",
        ["Intel Xeon"],
        [{**XEON}],
        [{**XEON, "cycles": [0, 2]}],
        [{**XEON, "cycles": [1, 0]}],
        [{**XEON, "cycles": [-1, 1]}],
        [{**XEON, "cycles": [0, 1, 1]}],
        [{**XEON, "cycles": [False, True]}],
        [{**XEON, "cycles": [0, 1]}, {"unknown": True, "cycles": [1, 1]}],
    ],
    ids=[
        "not-a-list",
        "not-objects",
        "no-cycles",
        "past-the-last-cycle",
        "backwards",
        "negative",
        "three-cycles",
        "booleans",
        "overlapping",
    ],
)
def test_malformed_machines_name_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture, machines: object
) -> None:
    write_run(tmp_path, "random", 0, [4, 6], [0.5, 0.6])
    record = json.loads((tmp_path / "random_0.json").read_text())
    (tmp_path / "random_0.json").write_text(json.dumps({**record, "machines": machines}))
    assert main([str(tmp_path)]) == 2
    _assert_one_line_error(capsys, "random_0.json", "'machines' must be a list of objects")
