"""Statistics of learning curves: area under the curve, labels to a target, the paired test.

Pure functions of arrays (and of ``RunRecord`` curves), used by ``utils.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from utils.run_records import RunRecord

__all__ = [
    "MIN_WILCOXON_PAIRS",
    "aulc",
    "labels_to_reach",
    "mean_curve",
    "paired_p_value",
    "pixels_to_reach",
]

# Below this many pairs the Wilcoxon signed-rank test cannot reach p < 0.05 (two-sided, exact:
# the smallest p with 5 pairs is 2 / 2**5 = 0.0625), so fall back to the paired t-test.
MIN_WILCOXON_PAIRS = 6


def aulc(n_labelled: np.ndarray, dice: np.ndarray) -> float:
    """Normalised area under one learning curve, in [0, 1] for Dice in [0, 1].

    Trapezoidal area under Dice against the number of labelled images, divided by the range of
    labelled images, i.e. the curve's average height. Normalising makes runs with different
    acquisition budgets comparable in scale, though a run that stopped early (pool exhausted)
    is averaged over its own, shorter range. A single-point curve has AULC equal to its Dice.
    """
    n = np.asarray(n_labelled, dtype=float)
    d = np.asarray(dice, dtype=float)
    if n.shape != d.shape or n.ndim != 1 or n.size == 0:
        raise ValueError(f"need matching non-empty 1-D arrays, got {n.shape} and {d.shape}")
    width = n[-1] - n[0]
    if n.size == 1 or width == 0:
        return float(np.mean(d))
    # Written out rather than np.trapezoid/np.trapz, whose name depends on the numpy version.
    area = np.sum(np.diff(n) * (d[1:] + d[:-1]) / 2.0)
    return float(area / width)


def labels_to_reach(n_labelled: np.ndarray, mean_dice: np.ndarray, target: float) -> int | None:
    """Smallest number of labelled images at which ``mean_dice`` reaches ``target``, else None.

    ``n_labelled`` must be increasing. A tiny tolerance keeps a curve that hits the target
    exactly from being missed through floating-point rounding of ``0.95 * reference``.
    """
    n = np.asarray(n_labelled)
    d = np.asarray(mean_dice, dtype=float)
    reached = np.flatnonzero(d >= target - 1e-12)
    return int(n[reached[0]]) if reached.size else None


def paired_p_value(a: Mapping[int, float], b: Mapping[int, float]) -> float | None:
    """Two-sided paired test of ``a`` against ``b`` over the run numbers both contain.

    Wilcoxon signed-rank with at least ``MIN_WILCOXON_PAIRS`` pairs (no normality assumption),
    otherwise the paired t-test, which needs at least two pairs. Identical samples give 1.0.
    With a constant non-zero difference the t statistic is infinite and the p-value 0.0.

    Returns:
        The p-value, or None with fewer than two shared runs.
    """
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    x = np.array([a[run] for run in shared], dtype=float)
    y = np.array([b[run] for run in shared], dtype=float)
    diff = x - y
    if np.all(diff == 0):
        # Both tests are undefined (0/0); no evidence of a difference.
        return 1.0
    if len(shared) >= MIN_WILCOXON_PAIRS:
        return float(stats.wilcoxon(x, y, alternative="two-sided").pvalue)
    if np.all(diff == diff[0]):
        # Zero spread: scipy would return the same answer but with a precision-loss warning.
        return 0.0
    return float(stats.ttest_rel(x, y, alternative="two-sided").pvalue)


def mean_curve(
    records: Sequence[RunRecord],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over runs with a 95 % t-interval of the mean.

    Runs may stop at different lengths; at each number of labelled images the mean is taken
    over the runs that reached it. Where only one run contributes, the band collapses to the
    mean (no interval can be estimated from one value).

    Returns:
        ``(n_labelled, mean, lo, hi)`` as 1-D arrays over the union of labelled-set sizes.
    """
    if not records:
        raise ValueError("mean_curve needs at least one run")
    n_all = np.unique(np.concatenate([r.n_labelled for r in records]))
    mean = np.empty(n_all.size)
    lo = np.empty(n_all.size)
    hi = np.empty(n_all.size)
    for i, n in enumerate(n_all):
        values = np.array([r.dice[r.n_labelled == n][0] for r in records if n in r.n_labelled])
        mean[i] = values.mean()
        if values.size < 2:
            lo[i] = hi[i] = mean[i]
            continue
        half_width = (
            stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
        )
        lo[i], hi[i] = mean[i] - half_width, mean[i] + half_width
    return n_all, mean, lo, hi


def pixels_to_reach(fraction: np.ndarray, mean_dice: np.ndarray, target: float) -> float | None:
    """Smallest labelled fraction at which ``mean_dice`` reaches ``target``, else None."""
    reached = np.flatnonzero(np.asarray(mean_dice, dtype=float) >= target - 1e-12)
    return float(fraction[reached[0]]) if reached.size else None
