"""Statistics of learning curves: area under the curve, labels to a target, paired comparisons
(test, confidence interval, multiplicity, equivalence, power) and the noise of a curve.

Pure functions of arrays (and of ``RunRecord`` curves), used by ``utils.report``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from utils.runs.records import RunRecord

__all__ = [
    "MIN_WILCOXON_PAIRS",
    "ROUNDING",
    "aulc",
    "holm_adjust",
    "labels_to_reach",
    "mean_curve",
    "noise_figures",
    "paired_difference_ci",
    "paired_difference_curve",
    "paired_differences",
    "paired_p_value",
    "pairs_for_power",
    "pixels_to_reach",
    "tost_paired",
]

# Below this many pairs the Wilcoxon signed-rank test cannot reach p < 0.05 (two-sided, exact:
# the smallest p with 5 pairs is 2 / 2**5 = 0.0625), so fall back to the paired t-test.
MIN_WILCOXON_PAIRS = 6


def aulc(n_labelled: np.ndarray, dice: np.ndarray) -> float:
    """Normalised area under one learning curve, in [0, 1] for Dice in [0, 1].

    Trapezoidal area under Dice against the number of labelled images, divided by the range of
    labelled images, i.e. the curve's average height. Normalising makes runs with different
    acquisition budgets comparable in scale, though a run that stopped early (pool exhausted,
    or unfinished) is averaged over its own, shorter range; the report's paired tests therefore
    take a pair's two curves over the cycles both reached. A single-point curve has AULC equal
    to its Dice.
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


def _first_reaching(x: np.ndarray, mean_dice: np.ndarray, target: float) -> float | None:
    """The first ``x`` (increasing) at which ``mean_dice`` reaches ``target``, else None. A tiny
    tolerance keeps a curve that hits the target exactly from being missed through
    floating-point rounding of ``0.95 * reference``."""
    reached = np.flatnonzero(np.asarray(mean_dice, dtype=float) >= target - 1e-12)
    return float(np.asarray(x)[reached[0]]) if reached.size else None


def labels_to_reach(n_labelled: np.ndarray, mean_dice: np.ndarray, target: float) -> int | None:
    """Smallest number of labelled images at which ``mean_dice`` reaches ``target``, else None."""
    first = _first_reaching(n_labelled, mean_dice, target)
    return None if first is None else int(first)


# Relative size of float rounding in AULC values: differences this small are equal.
ROUNDING = 1e-12


def _sizes_tied_within(diff: np.ndarray, rounding: float) -> np.ndarray:
    """``diff`` with each size that lies within ``rounding`` above a smaller one made equal to
    it, so that they share a Wilcoxon rank (scipy's documentation advises rounding first)."""
    order = np.argsort(np.abs(diff), kind="stable")
    sizes = np.abs(diff)[order]
    for i in range(1, sizes.size):
        if sizes[i] - sizes[i - 1] <= rounding:
            sizes[i] = sizes[i - 1]
    tied = np.empty_like(sizes)
    tied[order] = sizes
    return np.sign(diff) * tied


def paired_p_value(a: Mapping[int, float], b: Mapping[int, float]) -> float | None:
    """Two-sided paired test of ``a`` against ``b`` over the run numbers both contain.

    Wilcoxon signed-rank with at least ``MIN_WILCOXON_PAIRS`` pairs (no normality assumption),
    otherwise the paired t-test, which needs at least two pairs. Identical samples give 1.0.
    With a constant non-zero difference the t statistic is undefined (no spread): the p-value
    is then that of the exact sign-flip test, ``2 / 2**n``, as no sign pattern is more extreme
    than all alike.

    Returns:
        The p-value, or None with fewer than two shared runs.
    """
    shared = sorted(set(a) & set(b))
    if len(shared) < 2:
        return None
    x = np.array([a[run] for run in shared], dtype=float)
    y = np.array([b[run] for run in shared], dtype=float)
    diff = x - y
    # Differences equal up to float rounding (0.3 - 0.25 and 0.7 - 0.65 differ in the 17th
    # digit) have no spread to test; scipy would divide by the rounding and warn of it.
    rounding = ROUNDING * max(1.0, float(np.max(np.abs(x))), float(np.max(np.abs(y))))
    diff[np.abs(diff) <= rounding] = 0.0  # a tie, not a signed difference, for Wilcoxon
    if np.all(diff == 0):
        # Both tests are undefined (0/0); no evidence of a difference.
        return 1.0
    if len(shared) >= MIN_WILCOXON_PAIRS:
        ranked = _sizes_tied_within(diff, rounding)
        return float(stats.wilcoxon(ranked, alternative="two-sided").pvalue)
    if np.ptp(diff) <= rounding:
        return 2.0 / 2 ** len(shared)
    return float(stats.ttest_rel(x, y, alternative="two-sided").pvalue)


def mean_curve(
    records: Sequence[RunRecord],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve over runs with a 95 % t-interval of the mean.

    Runs may stop at different lengths; at each number of labelled images the mean is taken
    over the runs that reached it. Where only one run contributes, the band is NaN: no interval
    can be estimated from one value, and a band of zero width would look like certainty.

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
            lo[i] = hi[i] = np.nan
            continue
        half_width = (
            stats.t.ppf(0.975, values.size - 1) * values.std(ddof=1) / math.sqrt(values.size)
        )
        lo[i], hi[i] = mean[i] - half_width, mean[i] + half_width
    return n_all, mean, lo, hi


def pixels_to_reach(fraction: np.ndarray, mean_dice: np.ndarray, target: float) -> float | None:
    """Smallest labelled fraction at which ``mean_dice`` reaches ``target``, else None."""
    return _first_reaching(fraction, mean_dice, target)


def paired_differences(a: Mapping[int, float], b: Mapping[int, float]) -> np.ndarray:
    """``a[run] - b[run]`` over the run numbers both contain, in run order: shape [pairs]."""
    shared = sorted(set(a) & set(b))
    return np.array([a[run] - b[run] for run in shared], dtype=float)


def _mean_and_standard_error(diffs: np.ndarray) -> tuple[float, float]:
    d = np.asarray(diffs, dtype=float)
    return float(d.mean()), float(d.std(ddof=1)) / math.sqrt(d.size)


def paired_difference_ci(
    diffs: np.ndarray, confidence: float = 0.95
) -> tuple[float, float, float] | None:
    """Mean of paired differences with its Student t confidence interval.

    ``mean ± t(1 - (1 - confidence) / 2, n - 1) * sd / sqrt(n)`` with the sample standard
    deviation (ddof = 1) of the n differences (Student 1908), as ``scipy.stats.t.interval``.
    Differences without spread give an interval of zero width at their mean.

    Returns:
        ``(mean, low, high)``, or None with fewer than two differences.
    """
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    mean, se = _mean_and_standard_error(d)
    half_width = stats.t.ppf(0.5 + confidence / 2, d.size - 1) * se
    return mean, mean - half_width, mean + half_width


def holm_adjust(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm–Bonferroni step-down adjusted p-values (Holm 1979), in the input's order.

    With the m given p-values sorted, p_(1) <= ... <= p_(m), the adjusted value of p_(i) is
    ``min(1, max_{j <= i} (m - j + 1) * p_(j))``: rejecting where it is below alpha controls the
    family-wise error rate at alpha over the m tests. None and NaN entries (no test) are None
    in the result and do not count in m.
    """
    present = [i for i, p in enumerate(p_values) if p is not None and math.isfinite(p)]
    m = len(present)
    order = sorted(present, key=lambda i: p_values[i])  # stable: ties keep input order
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, i in enumerate(order):  # rank = j - 1
        running = max(running, min(1.0, (m - rank) * float(p_values[i])))
        adjusted[i] = running
    return adjusted


def tost_paired(diffs: np.ndarray, margin: float, alpha: float = 0.05) -> tuple[float, bool] | None:
    """Two one-sided paired t-tests (TOST) for equivalence within ``(-margin, +margin)``.

    Schuirmann (1987): test H0- "mean difference <= -margin" against "> -margin" and H0+
    "mean difference >= +margin" against "< +margin", each a one-sided t-test with n - 1
    degrees of freedom at level alpha. The TOST p is the larger of the two one-sided p-values;
    the differences are equivalent iff both reject, i.e. iff the ``1 - 2 alpha`` (90 %)
    t-interval of the mean lies inside ``(-margin, +margin)``. Without spread (all differences
    equal) each one-sided p is 0 where the mean lies strictly on the alternative's side of its
    bound and 1 otherwise.

    Returns:
        ``(p, equivalent)``, or None with fewer than two differences.
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    d = np.asarray(diffs, dtype=float)
    if d.size < 2:
        return None
    mean, se = _mean_and_standard_error(d)
    if se == 0:
        p_above = 0.0 if mean > -margin else 1.0
        p_below = 0.0 if mean < margin else 1.0
    else:
        p_above = float(stats.t.sf((mean + margin) / se, d.size - 1))
        p_below = float(stats.t.cdf((mean - margin) / se, d.size - 1))
    p = max(p_above, p_below)
    return p, p < alpha


def pairs_for_power(sd: float, margin: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Fewest pairs for a two-sided paired t-test at level alpha to detect a mean difference of
    ``margin`` with the given power, when the differences have standard deviation ``sd``.

    With n pairs the t statistic follows a noncentral t with n - 1 degrees of freedom and
    noncentrality ``margin * sqrt(n) / sd``; its power is the probability of falling outside
    ``±t(1 - alpha / 2, n - 1)``, and it grows with n, so a bisection finds the fewest n. The
    normal approximation ``((z(1 - alpha / 2) + z(power)) * sd / margin) ** 2`` is a close lower
    bound (it ignores the uncertainty of the estimated sd) and starts the search. With
    ``sd == 0`` the t statistic is undefined and ``paired_p_value`` falls back on the exact
    sign-flip test, whose p with n pairs all alike is ``2 / 2**n``: the answer is the fewest
    pairs for which that is below alpha (6 at 0.05).
    """
    if not margin > 0:
        raise ValueError(f"margin must be > 0, got {margin}")
    if not sd >= 0:
        raise ValueError(f"sd must be >= 0, got {sd}")
    if sd == 0:
        return math.floor(math.log2(2 / alpha)) + 1

    def enough(n: int) -> bool:
        if n < 2:
            return False
        critical = stats.t.ppf(1 - alpha / 2, n - 1)
        noncentrality = margin * math.sqrt(n) / sd
        # Over 1000 no chance is left below the critical value (at most 12.7) whatever the
        # degrees of freedom, where nct.sf may return nan instead of 1.
        if noncentrality > 1e3:
            return True
        # P(T > c) + P(T < -c); the lower tail as P(-T > c), T's mirror image, because
        # nct.cdf far below a large noncentrality can return nan.
        tails = stats.nct.sf(critical, n - 1, noncentrality)
        tails += stats.nct.sf(critical, n - 1, -noncentrality)
        return bool(tails >= power)

    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    low, high = 1, max(2, math.ceil((z * sd / margin) ** 2))
    while not enough(high):
        low, high = high, 2 * high
    while high - low > 1:  # enough(high), and not enough(low)
        middle = (low + high) // 2
        low, high = (low, middle) if enough(middle) else (middle, high)
    return high


def noise_figures(curves: Sequence[np.ndarray]) -> tuple[float | None, float | None]:
    """Cycle-to-cycle noise of a set of learning curves (test Dice per cycle, one per run).

    - drop share: steps from one cycle to the next where Dice strictly decreases, over all
      steps of all runs. A curve that only learns never drops; training noise makes it drop.
    - SD of second differences: ``d[i + 1] - 2 d[i] + d[i - 1]`` of every run, pooled into one
      sample, sample standard deviation (ddof = 1). A smooth curve has second differences near
      zero; independent noise of SD s on every cycle adds variance 6 s^2.

    Returns:
        ``(drop_share, sd_second_diff)``; each None when the runs have no step, or fewer than
        two second differences, to measure.
    """
    steps = [np.diff(np.asarray(c, dtype=float)) for c in curves]
    n_steps = sum(s.size for s in steps)
    drop_share = sum(int(np.sum(s < 0)) for s in steps) / n_steps if n_steps else None
    second = np.concatenate([np.diff(s) for s in steps] or [np.empty(0)])
    sd_second = float(second.std(ddof=1)) if second.size >= 2 else None
    return drop_share, sd_second


def paired_difference_curve(
    records: Sequence[RunRecord], baseline: Sequence[RunRecord], confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean paired difference of two sets of curves at every number of labelled images.

    Runs pair by run number; at each ``n_labelled`` the pairs are the runs of both sets that
    reached it. The interval is ``paired_difference_ci``'s; with one pair it is NaN, as in
    ``mean_curve``.

    Returns:
        ``(n_labelled, mean, low, high, pairs)``, 1-D arrays over the labelled-set sizes with at
        least one pair (empty when none).
    """
    base = {r.run: r for r in baseline}
    pairs = [(r, base[r.run]) for r in records if r.run in base]
    if not pairs:
        empty = np.empty(0)
        return empty, empty, empty, empty, np.empty(0, dtype=int)
    n_all = np.unique(np.concatenate([r.n_labelled for r, _ in pairs]))
    rows = []
    for n in n_all:
        diffs = np.array(
            [
                a.dice[a.n_labelled == n][0] - b.dice[b.n_labelled == n][0]
                for a, b in pairs
                if n in a.n_labelled and n in b.n_labelled
            ]
        )
        if diffs.size == 0:
            continue
        interval = paired_difference_ci(diffs, confidence)
        mean, low, high = interval if interval else (float(diffs[0]), np.nan, np.nan)
        rows.append((n, mean, low, high, diffs.size))
    if not rows:
        empty = np.empty(0)
        return empty, empty, empty, empty, np.empty(0, dtype=int)
    n_out, mean, low, high, count = (np.array(column) for column in zip(*rows, strict=True))
    return n_out, mean, low, high, count.astype(int)
