"""``learning_curves.png``: mean test Dice per row with its 95 % band and, below it, each
row's paired difference from the baseline with the equivalence margin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

# Headless: reports are produced on servers without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.io import save_figure  # noqa: E402
from utils.report.summary import RANDOM, Summary, curve, difference_curve, paired_with  # noqa: E402
from utils.runs.records import RunRecord  # noqa: E402


def _colours(names: Sequence[str]) -> dict[str, str]:
    """Distinct colours per heuristic, fixed by name order; ``random`` is always grey."""
    palette = [c for i, c in enumerate(matplotlib.colormaps["tab10"].colors) if i != 7]  # 7: grey
    others = sorted(name for name in names if name != RANDOM)
    colours = {name: to_hex(palette[i % len(palette)]) for i, name in enumerate(others)}
    colours[RANDOM] = "#7f7f7f"
    return colours


def _padded_limits(values: Sequence[float], pad: float = 0.06) -> tuple[float, float]:
    """Axis limits around the finite ``values``, widened by ``pad`` of their range each side
    (by 0.01 each side when they are all equal)."""
    finite = np.asarray(values, dtype=float)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    margin = pad * (high - low) if high > low else 0.01
    return low - margin, high + margin


def plot_learning_curves(
    results: Mapping[str, Sequence[RunRecord]], summary: Summary, path: Path
) -> Path:
    """Plot mean test Dice against labelled images, one line per heuristic, best first; below
    it, where there is a baseline to pair with, each row's paired difference from it.

    Both y-axes are zoomed to what they show (curves, bands and the full-supervision line).
    """
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
    marker = {
        row.heuristic: "x" if row.heuristic == RANDOM else markers[i % len(markers)]
        for i, row in enumerate(summary.rows)
    }
    colours = _colours([row.heuristic for row in summary.rows])
    differences = {
        row.heuristic: difference_curve(results[row.heuristic], results[pair], summary.pixel_axis)
        for row in summary.rows
        if (pair := paired_with(row.heuristic, results, summary.baseline)) is not None
    }
    differences = {name: d for name, d in differences.items() if d[0].size}
    if differences:
        fig, (ax, ax_diff) = plt.subplots(
            2,
            1,
            figsize=(8.5, 9.5),
            sharex=True,
            height_ratios=(3, 2),
            layout="constrained",
        )
    else:
        fig, ax = plt.subplots(figsize=(8.5, 5.5), layout="constrained")
        ax_diff = None
    shown: list[float] = []  # every y value drawn on the top panel, for its limits
    for row in summary.rows:
        runs = results[row.heuristic]
        n, mean, lo, hi = curve(runs, summary.pixel_axis)
        colour = colours[row.heuristic]
        ax.plot(
            n,
            mean,
            marker=marker[row.heuristic],
            markersize=5,
            linewidth=1.8,
            color=colour,
            label=f"{row.heuristic} (n={len(runs)})",
        )
        shown += list(mean)
        if len(runs) > 1:
            # Dice lives in [0, 1]; a t-interval over two or three runs can reach far outside it.
            band_lo, band_hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
            ax.fill_between(n, band_lo, band_hi, color=colour, alpha=0.18, linewidth=0)
            shown += list(band_lo) + list(band_hi)
    if summary.full_dice is not None:
        tag = next(iter(summary.full_by_tag))
        only_tag = f" @{tag}" if tag else ""  # another grid point's rows may share the panel
        ax.axhline(
            summary.full_dice,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"full supervision{only_tag} ({summary.full_dice:.3f})",
        )
        shown.append(summary.full_dice)
    unit = "labelled fraction of the pool's pixels" if summary.pixel_axis else "labelled images"
    ax.set_ylabel("test Dice")
    ax.set_title(
        f"Active learning: test Dice vs {unit}\n"
        "mean over runs, shaded: 95 % confidence interval of the mean (clipped to [0, 1])",
        fontsize=11,
    )
    low, high = _padded_limits(shown)
    ax.set_ylim(max(low, 0.0), min(high, 1.0))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.9, fontsize=9)
    bottom = ax
    if ax_diff is not None:
        _plot_differences(ax_diff, differences, summary, colours, marker)
        bottom = ax_diff
    bottom.set_xlabel(unit)
    if not summary.pixel_axis:
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
    return save_figure(fig, path)


def _plot_differences(
    ax: plt.Axes,
    differences: Mapping[str, tuple[np.ndarray, ...]],
    summary: Summary,
    colours: Mapping[str, str],
    marker: Mapping[str, str],
) -> None:
    """Lower panel: each row's mean paired Dice difference from the baseline with 95 % error bars,
    nudged apart along x so that the bars of neighbouring rows do not hide each other."""
    # Smallest gap between two x values of one row (rows on the pixel axis have their own x).
    gaps = [float(np.min(np.diff(d[0]))) for d in differences.values() if d[0].size > 1]
    width = 0.5 * min(gaps, default=1.0)  # the bars of one x spread over half that gap
    shown = [-summary.margin, summary.margin]
    for i, (name, (x, mean, lo, hi, _)) in enumerate(differences.items()):
        offset = (i - (len(differences) - 1) / 2) * width / max(len(differences), 1)
        ax.errorbar(
            x + offset,
            mean,
            yerr=np.vstack([mean - lo, hi - mean]),
            color=colours[name],
            marker=marker[name],
            markersize=4,
            linewidth=1.4,
            elinewidth=1.0,
            capsize=2,
        )
        shown += list(mean) + list(lo) + list(hi)  # a point of one pair has no interval
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.axhspan(
        -summary.margin,
        summary.margin,
        color="grey",
        alpha=0.15,
        linewidth=0,
        label=f"±{summary.margin:g}: equivalence margin of tost_p (AULC)",
    )
    # A difference of two Dice lies in [-1, 1]; an interval past that (two pairs give t = 12.7)
    # says no more, and would squeeze the means into a line.
    low, high = _padded_limits(shown)
    ax.set_ylim(max(low, -1.0), min(high, 1.0))
    ax.set_ylabel(f"test Dice − {summary.baseline}'s")
    ax.set_title(
        f"paired difference from {summary.baseline}"
        + (" of the same sweep tag" if summary.baseline_per_tag else "")
        + (" (same run, same cycle)" if summary.pixel_axis else " (same run, same x)")
        + ": mean and 95 % confidence interval",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.9, fontsize=9)
