"""Summarise active-learning runs: learning curves, a results table and paired significance tests.

Usage::

    python -m utils.report RESULTS_DIR [--out OUT_DIR] [--margin 0.01] [--baseline random]

``active.py`` leaves, for every run, ``{heuristic}_{run}.npy`` (mean test Dice per cycle) next to
``{heuristic}_{run}.json`` (config, number of labelled images per cycle, acquisitions, per-image
Dice). Full-supervision runs are stored the same way under the heuristic name ``full``. This
module reads those pairs and writes ``learning_curves.png``, ``summary.csv``, ``summary.md``,
``curves.csv`` and ``runs.csv``.
All outputs are written atomically so an interrupted report never leaves a truncated file.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import matplotlib

# Headless: reports are produced on servers without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.io import atomic_write_text, save_figure  # noqa: E402
from utils.report.stats import (  # noqa: E402
    MIN_WILCOXON_PAIRS,
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
from utils.runs.records import ReportError, RunRecord, folder_paths, load_results  # noqa: E402

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MARGIN",
    "FULL",
    "RANDOM",
    "Summary",
    "SummaryRow",
    "main",
    "summarise",
    "write_report",
]

FULL = "full"
RANDOM = "random"
TARGET_FRACTION = 0.95
DEFAULT_MARGIN = 0.01  # AULC difference from the baseline taken as negligible (equivalence)
ALPHA = 0.05  # level of the Holm, equivalence and power columns
POWER = 0.8
CSV_COLUMNS = (
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
    "aulc_diff",
    "aulc_diff_ci_low",
    "aulc_diff_ci_high",
    "p_holm",
    "tost_p",
    "verdict",
    "runs_needed",
    "drop_share",
    "sd_second_diff",
)
EQUIVALENT, DIFFERENT, INCONCLUSIVE = "equivalent", "different", "inconclusive"


@dataclass(frozen=True)
class SummaryRow:
    """One heuristic's line in the summary table; ``None`` renders as an empty cell."""

    heuristic: str
    n_runs: int
    final_dice_mean: float
    final_dice_std: float
    aulc_mean: float
    aulc_std: float
    labels_to_95: int | None
    p_vs_random: float | None  # against the baseline, named after the default one
    val_labels: int | None = None
    pixels_to_95: float | None = None
    # Paired against the baseline (random unless --baseline says otherwise) over shared runs;
    # None for the baseline itself, without it, or with fewer than 2 pairs.
    aulc_diff: float | None = None  # mean of (row - baseline) per-run AULC
    aulc_diff_ci_low: float | None = None  # 95 % t-interval of that mean
    aulc_diff_ci_high: float | None = None
    p_holm: float | None = None  # p_vs_random, Holm-adjusted over the table's rows
    tost_p: float | None = None  # equivalence within ±margin (larger one-sided p)
    verdict: str | None = None  # EQUIVALENT, DIFFERENT or INCONCLUSIVE
    runs_needed: int | None = None  # pairs for 80 % power to detect a difference of margin
    # Training noise of the row's own curves (Dice per cycle), with or without a baseline.
    drop_share: float | None = None
    sd_second_diff: float | None = None


@dataclass(frozen=True)
class Summary:
    """Summary table plus what is needed to explain it (full-supervision Dice, 95 % target)."""

    rows: list[SummaryRow]
    target: float  # 95 % of the reference every row shares (see target_basis)
    target_basis: str
    # Grid point tag ('' untagged) -> (mean final Dice, runs) of its full-supervision runs. A
    # sweep over settings that change the model (say image_scale) has one reference per point.
    full_by_tag: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    pixel_axis: bool = False  # x is the labelled fraction of the pool's pixels, not images
    unfinished: tuple[str, ...] = ()  # "{name}_{run}" of runs that stopped before their plan
    run_aulcs: Mapping[str, Mapping[int, float]] = field(default_factory=dict)  # what is paired
    margin: float = DEFAULT_MARGIN  # equivalence margin of tost_p and runs_needed, in AULC
    baseline: str = RANDOM  # the row every other row is paired against (per sweep tag)

    @property
    def full_dice(self) -> float | None:
        """The full-supervision Dice when there is exactly one reference."""
        return next(iter(self.full_by_tag.values()))[0] if len(self.full_by_tag) == 1 else None


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); the std is 0.0 for a single value."""
    array = np.asarray(values, dtype=float)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return float(array.mean()), std


def _validation_images(runs: Sequence[RunRecord]) -> int | None:
    """Labelled validation images a row's curve used for model selection (the most any run
    used), or None when no record says (results from before this was recorded)."""
    known = [r.validation_images for r in runs if r.validation_images is not None]
    return max(known) if known else None


def _tag(name: str) -> str:
    return name.partition("@")[2]


def _is_full(name: str) -> bool:
    return name.split("@")[0] == FULL


def paired_with(name: str, names: Mapping[str, object], baseline: str = RANDOM) -> str | None:
    """The row ``name`` is paired against: ``baseline`` with the same sweep tag (``@...``), so
    that a comparison never crosses the settings in a tag, or exactly ``baseline`` when it names
    a tag itself. Settings in the result name (strategy, reduction, label unit, ``semi``) are not
    in a tag: with the default ``random``, a region row is paired with image-level ``random``,
    the baseline a region strategy has to beat. None for the baseline itself or without a match.
    """
    tag = _tag(name)
    candidate = f"{baseline}@{tag}" if tag and "@" not in baseline else baseline
    if candidate == name or candidate not in names:
        return None
    return candidate


def uses_pixel_axis(results: Mapping[str, Sequence[RunRecord]]) -> bool:
    """Region runs (alone or mixed with image runs) are compared on labelled pixels."""
    return any(r.label_unit == "region" for runs in results.values() for r in runs)


def axis(record: RunRecord, pixel_axis: bool) -> np.ndarray:
    """The run's x values: labelled images, or the labelled fraction of the pool's pixels."""
    if not pixel_axis:
        return record.n_labelled
    if record.labelled_fraction is None:
        raise ReportError(
            f"{record.heuristic}_{record.run} has no labelled_fraction, needed to compare it with "
            "region runs; add it with python -m utils.report.pixel_counts RESULTS_DIR"
        )
    return record.labelled_fraction


def curve(
    records: Sequence[RunRecord], pixel_axis: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``mean_curve`` on the report's axis. On the pixel axis runs are aligned by cycle (their
    fractions differ a little with image sizes) and x is the mean fraction at each cycle."""
    if not pixel_axis:
        return mean_curve(records)
    aligned = [RunRecord(r.heuristic, r.run, np.arange(len(r.dice)), r.dice) for r in records]
    cycles, mean, lo, hi = mean_curve(aligned)
    return _cycle_x(records, cycles), mean, lo, hi


def _by_cycle(records: Sequence[RunRecord]) -> list[RunRecord]:
    """The runs with their cycle number as x, to align runs whose labelled fractions differ."""
    return [RunRecord(r.heuristic, r.run, np.arange(len(r.dice)), r.dice) for r in records]


def _cycle_x(records: Sequence[RunRecord], cycles: np.ndarray) -> np.ndarray:
    """Mean labelled fraction of the pool's pixels over the runs at each cycle."""
    return np.array(
        [np.mean([axis(r, True)[c] for r in records if c < len(r.dice)]) for c in cycles]
    )


def difference_curve(
    records: Sequence[RunRecord], baseline: Sequence[RunRecord], pixel_axis: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``paired_difference_curve`` on the report's axis: ``(x, mean, low, high, pairs)`` of the
    test Dice of ``records`` minus that of the same run of ``baseline``, at each x of
    ``curve(records)`` with at least one pair (on the pixel axis, paired by cycle)."""
    if not pixel_axis:
        return paired_difference_curve(records, baseline)
    cycles, mean, lo, hi, pairs = paired_difference_curve(_by_cycle(records), _by_cycle(baseline))
    return _cycle_x(records, cycles), mean, lo, hi, pairs


def paired_columns(
    diffs: np.ndarray, margin: float
) -> tuple[float | None, float | None, float | None, float | None, int | None]:
    """``(aulc_diff, ci_low, ci_high, tost_p, runs_needed)`` from a row's paired AULC
    differences against the baseline (shape [pairs]); all None with fewer than 2 pairs."""
    interval = paired_difference_ci(diffs)
    tost = tost_paired(diffs, margin, ALPHA)
    if interval is None or tost is None:
        return None, None, None, None, None
    runs = pairs_for_power(float(np.std(diffs, ddof=1)), margin, ALPHA, POWER)
    return *interval, tost[0], runs


def verdict(tost_p: float | None, p_holm: float | None) -> str | None:
    """``equivalent`` when the TOST rejects a difference of ±margin or more (even if a smaller
    difference is significant), else ``different`` when the Holm-adjusted p is below alpha,
    else ``inconclusive``; None without a paired comparison."""
    if tost_p is None:
        return None
    if tost_p < ALPHA:
        return EQUIVALENT
    return DIFFERENT if p_holm is not None and p_holm < ALPHA else INCONCLUSIVE


def summarise(
    results: Mapping[str, Sequence[RunRecord]],
    margin: float = DEFAULT_MARGIN,
    baseline: str = RANDOM,
) -> Summary:
    """Build the summary table from ``load_results`` output.

    The ``full`` runs are not a row: their mean final Dice is the reference for
    ``labels_to_95``, per grid point when a sweep ran one per point (``full@{tag}`` for the
    rows tagged ``@{tag}``). Without them the reference is the best final mean Dice of any
    heuristic. Rows are sorted by mean AULC, best first (ties by name, for a stable order).
    ``margin`` (AULC, > 0) is the equivalence margin of ``tost_p`` and ``runs_needed``.
    ``baseline`` is the row the paired columns compare with (see ``paired_with``): ``random``,
    or another result name, for example ``random+pseudo`` to ask whether a strategy adds to
    semi-supervised training. Without ``random`` the paired columns stay empty; any other
    baseline must be among the runs.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ReportError(f"--margin must be a number > 0, got {margin}")
    heuristics = {name: runs for name, runs in results.items() if not _is_full(name) and runs}
    if not heuristics:
        raise ReportError("no active-learning runs found, only full-supervision results")
    known = set(heuristics) | {name.split("@")[0] for name in heuristics}
    if baseline != RANDOM and baseline not in known:
        raise ReportError(
            f"--baseline {baseline!r} is not a result name of these runs; "
            f"use one of: {', '.join(sorted(heuristics))}"
        )
    full_by_tag = {
        _tag(name): (float(np.mean([r.dice[-1] for r in runs])), len(runs))
        for name, runs in results.items()
        if _is_full(name) and runs
    }

    finals = {name: _mean_std([r.dice[-1] for r in runs]) for name, runs in heuristics.items()}
    pixel_axis = uses_pixel_axis(heuristics)
    aulcs = {
        name: {r.run: aulc(axis(r, pixel_axis), r.dice) for r in runs}
        for name, runs in heuristics.items()
    }
    best_final = max(mean for mean, _ in finals.values())

    def reference(name: str) -> float:
        own = full_by_tag.get(_tag(name))
        if own is None and len(full_by_tag) == 1:
            own = next(iter(full_by_tag.values()))
        return best_final if own is None else own[0]

    if len(full_by_tag) == 1:
        basis = "the full-supervision Dice"
    elif full_by_tag:
        basis = "the full-supervision Dice of the row's own grid point"
    else:
        basis = "the best final mean Dice (no full-supervision result)"

    rows = []
    for name, runs in heuristics.items():
        x, mean, _, _ = curve(runs, pixel_axis)
        row_target = TARGET_FRACTION * reference(name)
        aulc_mean, aulc_std = _mean_std(list(aulcs[name].values()))
        pair = paired_with(name, aulcs, baseline)
        p_value = None if pair is None else paired_p_value(aulcs[name], aulcs[pair])
        diffs = np.empty(0) if pair is None else paired_differences(aulcs[name], aulcs[pair])
        diff, diff_low, diff_high, tost_p, runs_needed = paired_columns(diffs, margin)
        drop_share, sd_second_diff = noise_figures([r.dice for r in runs])
        rows.append(
            SummaryRow(
                heuristic=name,
                n_runs=len(runs),
                final_dice_mean=finals[name][0],
                final_dice_std=finals[name][1],
                aulc_mean=aulc_mean,
                aulc_std=aulc_std,
                labels_to_95=None if pixel_axis else labels_to_reach(x, mean, row_target),
                p_vs_random=p_value,
                val_labels=_validation_images(runs),
                pixels_to_95=pixels_to_reach(x, mean, row_target) if pixel_axis else None,
                aulc_diff=diff,
                aulc_diff_ci_low=diff_low,
                aulc_diff_ci_high=diff_high,
                tost_p=tost_p,
                runs_needed=runs_needed,
                drop_share=drop_share,
                sd_second_diff=sd_second_diff,
            )
        )
    rows.sort(key=lambda row: (-row.aulc_mean, row.heuristic))
    adjusted = holm_adjust([row.p_vs_random for row in rows])
    rows = [
        replace(row, p_holm=p, verdict=verdict(row.tost_p, p))
        for row, p in zip(rows, adjusted, strict=True)
    ]
    return Summary(
        pixel_axis=pixel_axis,
        rows=rows,
        target=TARGET_FRACTION * reference(""),
        target_basis=basis,
        full_by_tag=full_by_tag,
        unfinished=tuple(
            f"{r.heuristic}_{r.run}" for runs in results.values() for r in runs if not r.complete
        ),
        run_aulcs=aulcs,
        margin=margin,
        baseline=baseline,
    )


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def _format_cell(value: float | int | str | None) -> str:
    """CSV/Markdown cell text: floats with 4 decimals, ``None`` as an empty string."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _row_cells(row: SummaryRow) -> list[str]:
    """The cells of one row, in ``CSV_COLUMNS`` order."""
    return [_format_cell(getattr(row, column)) for column in CSV_COLUMNS]


def render_csv(summary: Summary) -> str:
    """The summary table as CSV text with the ``CSV_COLUMNS`` header."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    writer.writerows(_row_cells(row) for row in summary.rows)
    return buffer.getvalue()


def render_markdown(summary: Summary, title: str) -> str:
    """The summary table as a Markdown pipe table with a title and a legend of the columns."""
    base = f"`{summary.baseline}`"
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(CSV_COLUMNS) + " |")
    # Text columns left-aligned, numbers right-aligned.
    text_columns = ("heuristic", "verdict")
    lines.append("|" + "|".join(":---" if c in text_columns else "---:" for c in CSV_COLUMNS) + "|")
    for row in summary.rows:
        lines.append("| " + " | ".join(cell or "–" for cell in _row_cells(row)) + " |")
    lines += [
        "",
        "Columns:",
        "",
        "- `heuristic`: the result name: heuristic, then strategy and reduction where they are "
        "not `topk` and `mean`, then `@` and the swept values of a sweep's grid (`random` is "
        "the uniform-sampling baseline).",
        "- `n_runs`: number of independent runs (seeds) aggregated.",
        "- `final_dice_mean`, `final_dice_std`: mean and sample standard deviation (ddof = 1; "
        "0 with a single run) of each run's test Dice at its last cycle.",
        "- `aulc_mean`, `aulc_std`: area under the learning curve (test Dice against number of "
        "labelled images, trapezoidal rule) divided by the run's range of labelled images, so "
        "it lies in [0, 1]; mean and sample standard deviation over runs. Rows are sorted by it.",
        f"- `labels_to_95`: fewest labelled images at which the heuristic's mean curve reaches "
        f"95 % of {summary.target_basis}"
        + (f", i.e. Dice ≥ {summary.target:.4f}" if len(summary.full_by_tag) < 2 else "")
        + "; – if never reached.",
        f"- `p_vs_random`: two-sided paired test of per-run AULC against the baseline {base} "
        f"over the runs both share: Wilcoxon signed-rank with ≥ {MIN_WILCOXON_PAIRS} pairs, "
        f"paired t-test with 2–{MIN_WILCOXON_PAIRS - 1}; – for {base} itself, without it, or "
        "with fewer than 2 shared runs. With n pairs the smallest attainable Wilcoxon p is "
        "2 / 2^n (0.0312 for 6 pairs). Not corrected for multiple comparisons.",
        "- `pixels_to_95`: with region runs, the smallest labelled fraction of the pool's "
        "pixels (0 to 1) at which the mean curve reaches the same 95 % target; the curves and "
        "`aulc` then use that axis for every row (an image is its pixels) and `labels_to_95` is "
        "empty.",
        "- `val_labels`: labelled validation images the runs used to choose their weights "
        "(`model_selection=val`), on top of the labelled training images of the curve; 0 with "
        "`model_selection=last`; – where the records do not say.",
        "",
        f"Compared with the baseline {base} (`--baseline`) of the same grid point over shared "
        f"runs (– for {base} itself, without it, or with fewer than 2 shared runs); "
        f"equivalence margin ±{summary.margin:g} AULC, level {ALPHA:g}:",
        "",
        "- `aulc_diff`, `aulc_diff_ci_low`, `aulc_diff_ci_high`: mean paired AULC difference "
        f"(row minus {base}, run by run) and its 95 % t-interval.",
        "- `p_holm`: `p_vs_random` Holm-adjusted (Holm 1979) over the rows of this table, "
        "controlling the chance of any false positive among them.",
        f"- `tost_p`: equivalence test (TOST, Schuirmann 1987): the larger p of two one-sided "
        f"paired t-tests against differences of −{summary.margin:g} and +{summary.margin:g}; "
        f"below {ALPHA:g} iff the 90 % t-interval of `aulc_diff` lies inside "
        f"±{summary.margin:g}.",
        f"- `verdict`: `{EQUIVALENT}` if `tost_p` < {ALPHA:g}, else `{DIFFERENT}` if "
        f"`p_holm` < {ALPHA:g}, else `{INCONCLUSIVE}` (more runs needed to tell).",
        f"- `runs_needed`: paired runs for {POWER:.0%} power to detect an AULC difference of "
        f"{summary.margin:g} (two-sided paired t-test at {ALPHA:g}, noncentral t), given the "
        "observed standard deviation of the paired differences.",
        "",
        "Training noise of each row's curves (test Dice per cycle, all its runs):",
        "",
        "- `drop_share`: share of cycle-to-cycle steps in which test Dice went down.",
        "- `sd_second_diff`: standard deviation of the second differences of each run's curve "
        "(Dice at cycle c+1 − 2 × at c + at c−1), pooled over the row's runs.",
        "",
    ]
    if summary.full_by_tag:
        for tag, (dice, n) in sorted(summary.full_by_tag.items()):
            where = f" at grid point `{tag}`" if tag else ""
            lines.append(
                f"Full supervision (whole training split){where}: test Dice {dice:.4f} "
                f"(mean of {n} {'run' if n == 1 else 'runs'})."
            )
    else:
        lines.append("No full-supervision result (`full_{run}.npy`) was found.")
    if summary.unfinished:
        # A cut-off curve covers fewer labelled images; its AULC is not comparable to a whole
        # run's unless every run of the comparison stopped at the same cycle.
        lines += [
            "",
            f"Unfinished runs ({len(summary.unfinished)}), whose curves stop before their "
            f"planned cycles: {', '.join(summary.unfinished)}.",
        ]
    return "\n".join(lines) + "\n"


CURVE_COLUMNS = (
    "heuristic",
    "x",
    "n_runs",
    "mean_dice",
    "ci_low",
    "ci_high",
    "diff_mean",
    "diff_ci_low",
    "diff_ci_high",
    "n_pairs",
)


def render_curves_csv(results: Mapping[str, Sequence[RunRecord]], summary: Summary) -> str:
    """The plotted curves as numbers: one line per heuristic and x (labelled images, or the
    labelled fraction of the pool's pixels on the pixel axis), in the table's row order. The
    ``diff_*`` columns are the lower panel: paired Dice difference from the baseline at that x
    over ``n_pairs`` shared runs, empty where there is no pair."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for row in summary.rows:
        runs = results[row.heuristic]
        x, mean, lo, hi = curve(runs, summary.pixel_axis)
        differences = _differences_by_x(results, row.heuristic, summary)
        for i, value in enumerate(x):
            n_runs = (
                sum(i < len(r.dice) for r in runs)
                if summary.pixel_axis
                else sum(value in r.n_labelled for r in runs)
            )
            x_cell = f"{value:.4f}" if summary.pixel_axis else str(int(value))
            cells = [f"{v:.4f}" for v in (mean[i], lo[i], hi[i])]
            diff = differences.get(float(value))
            diff_cells = ["", "", "", ""] if diff is None else [*diff[:3], str(diff[3])]
            writer.writerow([row.heuristic, x_cell, n_runs, *cells, *diff_cells])
    return buffer.getvalue()


def _differences_by_x(
    results: Mapping[str, Sequence[RunRecord]], name: str, summary: Summary
) -> dict[float, tuple[str, str, str, int]]:
    """x -> formatted (mean, low, high) paired difference from the baseline and the pair count."""
    pair = paired_with(name, results, summary.baseline)
    if pair is None:
        return {}
    x, mean, lo, hi, pairs = difference_curve(results[name], results[pair], summary.pixel_axis)
    return {
        float(x[i]): (f"{mean[i]:.4f}", f"{lo[i]:.4f}", f"{hi[i]:.4f}", int(pairs[i]))
        for i in range(x.size)
    }


RUN_COLUMNS = ("heuristic", "run", "aulc", "final_dice", "complete")


def render_runs_csv(results: Mapping[str, Sequence[RunRecord]], summary: Summary) -> str:
    """Each run's AULC (on the report's axis) and final Dice: the values the paired test pairs."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    for row in summary.rows:
        for record in results[row.heuristic]:
            area = summary.run_aulcs[row.heuristic][record.run]
            cells = [f"{area:.4f}", f"{record.dice[-1]:.4f}", str(record.complete).lower()]
            writer.writerow([row.heuristic, record.run, *cells])
    return buffer.getvalue()


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
        ax.axhline(
            summary.full_dice,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"full supervision ({summary.full_dice:.3f})",
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
        shown += list(lo) + list(hi)
    ax.axhline(0.0, color="black", linewidth=1.0)
    ax.axhspan(
        -summary.margin,
        summary.margin,
        color="grey",
        alpha=0.15,
        linewidth=0,
        label=f"±{summary.margin:g}: equivalence margin of tost_p (AULC)",
    )
    ax.set_ylim(*_padded_limits(shown))
    ax.set_ylabel(f"test Dice − {summary.baseline}'s")
    tagged = any("@" in name for name in differences) and "@" not in summary.baseline
    ax.set_title(
        f"paired difference from {summary.baseline}"
        + (" of the same sweep tag" if tagged else "")
        + (" (same run, same cycle)" if summary.pixel_axis else " (same run, same x)")
        + ": mean and 95 % confidence interval",
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.9, fontsize=9)


def write_report(
    results_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
    margin: float = DEFAULT_MARGIN,
    baseline: str = RANDOM,
) -> list[Path]:
    """Load the runs in one folder or several and write the figure and tables to ``out_dir``.

    Args:
        results_dirs: folder(s) with ``{heuristic}_{run}.npy`` / ``.json`` pairs.
        out_dir: destination folder (created if needed); defaults to the results folder, and
            is required with several.
        margin: equivalence margin in AULC (> 0) of ``tost_p``, ``verdict`` and ``runs_needed``.
        baseline: the result name every row is paired against (``random`` by default).

    Returns:
        Paths of ``learning_curves.png``, ``summary.csv``, ``summary.md``, ``curves.csv`` and
        ``runs.csv``.
    """
    dirs = folder_paths(results_dirs)
    if out_dir is None and len(dirs) > 1:
        raise ReportError("several results folders need --out to say where the report goes")
    out = Path(out_dir) if out_dir is not None else dirs[0]
    results = load_results(dirs)
    summary = summarise(results, margin, baseline)
    out.mkdir(parents=True, exist_ok=True)
    title = "Active-learning summary: " + " + ".join(d.resolve().name for d in dirs)
    return [
        plot_learning_curves(results, summary, out / "learning_curves.png"),
        atomic_write_text(out / "summary.csv", render_csv(summary)),
        atomic_write_text(out / "summary.md", render_markdown(summary, title)),
        atomic_write_text(out / "curves.csv", render_curves_csv(results, summary)),
        atomic_write_text(out / "runs.csv", render_runs_csv(results, summary)),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code (2 for a results problem)."""
    parser = argparse.ArgumentParser(
        prog="python -m utils.report",
        description="Summarise active-learning runs written by active.py: learning curves, "
        "summary.csv, summary.md, curves.csv and runs.csv.",
    )
    parser.add_argument(
        "results_dir",
        type=Path,
        nargs="+",
        help="folder(s) with {heuristic}_{run}.npy/.json; several pool their runs",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output folder (default: RESULTS_DIR; required with several)",
    )
    parser.add_argument(
        "--margin",
        default=str(DEFAULT_MARGIN),
        help="equivalence margin in AULC for tost_p, verdict and runs_needed "
        f"(default {DEFAULT_MARGIN}; > 0)",
    )
    parser.add_argument(
        "--baseline",
        default=RANDOM,
        help="result name that every other row is paired against, per sweep tag "
        f"(default {RANDOM}; e.g. random+pseudo to test a strategy on top of semi-supervision)",
    )
    args = parser.parse_args(argv)
    try:
        margin = float(args.margin)
    except ValueError:
        margin = math.nan
    try:
        if not (math.isfinite(margin) and margin > 0):
            raise ReportError(f"--margin must be a number > 0, got {args.margin!r}")
        written = write_report(args.results_dir, args.out, margin, args.baseline)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
