"""The summary as text: ``summary.csv``, ``summary.md`` (with a legend of the columns),
``curves.csv`` (the figure's numbers) and ``runs.csv`` (the values the paired tests pair)."""

from __future__ import annotations

import csv
import io
import itertools
import math
from collections.abc import Mapping, Sequence

from utils.report.stats import MIN_WILCOXON_PAIRS
from utils.report.summary import (
    ALPHA,
    CSV_COLUMNS,
    DIFFERENT,
    EQUIVALENT,
    INCONCLUSIVE,
    POWER,
    Summary,
    SummaryRow,
    curve,
    difference_curve,
    is_full,
    paired_with,
)
from utils.runs.records import RunRecord

P_COLUMNS = ("p_vs_random", "p_holm", "tost_p")


def _p_decimals(p: float, decimals: int) -> str:
    """``p`` to ``decimals`` decimals, or more where fewer would round it onto the other side
    of ``ALPHA`` (0.04996 is not "0.0500" beside a verdict of "different") or to zero."""
    for digits in range(decimals, 16):
        text = f"{p:.{digits}f}"
        if (float(text) < ALPHA) == (p < ALPHA) and (float(text) > 0 or p == 0):
            return text
    return f"{p:.3g}"


def _format_cell(value: float | int | str | None, p_value: bool = False) -> str:
    """CSV/Markdown cell text: floats with 4 decimals (p-values with more where those would
    mislead), ``None`` as an empty string."""
    if value is None:
        return ""
    if isinstance(value, float):
        return _p_decimals(value, 4) if p_value and math.isfinite(value) else f"{value:.4f}"
    return str(value)


def _row_cells(row: SummaryRow) -> list[str]:
    """The cells of one row, in ``CSV_COLUMNS`` order."""
    return [_format_cell(getattr(row, c), c in P_COLUMNS) for c in CSV_COLUMNS]


def _p_text(p: float | None) -> str:
    """A p-value to three decimals (more where three would round it onto the other side of
    ``ALPHA``), ``<0.001`` below that; empty for none."""
    if p is None:
        return ""
    return _p_decimals(p, 3) if p >= 0.001 else "<0.001"


def render_console(summary: Summary) -> str:
    """The columns to read first, aligned for a terminal: each row's AULC and final Dice, and
    its paired difference from the baseline with the 95 % CI, Holm-adjusted p and verdict."""
    baseline = f"{summary.baseline}@tag" if summary.baseline_per_tag else summary.baseline
    lines = [
        [
            "result",
            "runs",
            "AULC",
            "final Dice",
            f"AULC - {baseline} [95 % CI]",
            "p (Holm)",
            "verdict",
        ]
    ]
    for row in summary.rows:
        paired = row.aulc_diff is not None
        lines.append(
            [
                row.heuristic,
                str(row.n_runs),
                f"{row.aulc_mean:.3f} ± {row.aulc_std:.3f}",
                f"{row.final_dice_mean:.3f}",
                f"{row.aulc_diff:+.3f} [{row.aulc_diff_ci_low:+.3f}, {row.aulc_diff_ci_high:+.3f}]"
                if paired
                else "",
                _p_text(row.p_holm),
                row.verdict or "",
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


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
        "not `topk` and `mean`, `-region` or `-superpixel` for region labelling, `+METHOD` for "
        "semi-supervision, then `@` and the swept values of a sweep's grid (`random` is the "
        "uniform-sampling baseline).",
        "- `n_runs`: number of independent runs (seeds) aggregated.",
        "- `final_dice_mean`, `final_dice_std`: mean and sample standard deviation (ddof = 1; "
        "0 with a single run) of each run's test Dice at its last cycle.",
        "- `aulc_mean`, `aulc_std`: area under the learning curve (test Dice against number of "
        "labelled images, trapezoidal rule) divided by the run's range of labelled images, so "
        "it lies in [0, 1]; mean and sample standard deviation over runs. Rows are sorted by it.",
        f"- `labels_to_95`: fewest labelled images at which the heuristic's mean curve reaches "
        f"95 % of {summary.target_basis}"
        + (f", i.e. Dice ≥ {summary.target:.4f}" if math.isfinite(summary.target) else "")
        + "; – if never reached.",
        f"- `p_vs_random`: two-sided paired test of per-run AULC against the baseline {base} "
        "over the runs both share, each pair's AULC over the cycles both of its runs reached: "
        f"Wilcoxon signed-rank with ≥ {MIN_WILCOXON_PAIRS} pairs, "
        f"paired t-test with 2–{MIN_WILCOXON_PAIRS - 1}; – for {base} itself, without it, or "
        "with fewer than 2 shared runs. With n pairs the smallest attainable Wilcoxon p is "
        "2 / 2^n (0.0312 for 6 pairs). Not corrected for multiple comparisons.",
        "- `pixels_to_95`: with region runs, the smallest labelled fraction of the pool's "
        "pixels (0 to 1) at which the mean curve reaches the same 95 % target; the curves and "
        "`aulc` then use that axis for every row (an image is its pixels) and `labels_to_95` is "
        "empty.",
        "- `val_labels`: labelled validation images the runs used to choose their weights "
        "(`model_selection=val`), on top of the labelled training images of the curve; 0 with "
        "`model_selection=last` or `ema`; – where the records do not say.",
        "",
        f"Compared with the baseline {base} (`--baseline`) of the same grid point over shared "
        f"runs (– for {base} itself, without it, or with fewer than 2 shared runs); "
        f"equivalence margin ±{summary.margin:g} AULC, level {ALPHA:g}:",
        "",
        "- `n_pairs`: the runs the row shares with the baseline, which the columns below (and "
        "`p_vs_random`) cover; `n_runs` and the means above cover all the row's runs.",
        "- `aulc_diff`, `aulc_diff_ci_low`, `aulc_diff_ci_high`: mean paired AULC difference "
        f"(row minus {base}, run by run, each pair over the cycles both runs reached) and its "
        "95 % t-interval.",
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
        "observed standard deviation of the paired differences; before Holm's adjustment, so "
        "a row among several needs more.",
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
        lines += [
            "",
            f"Unfinished runs ({len(summary.unfinished)}), whose curves stop before their "
            f"planned cycles: {', '.join(summary.unfinished)}. Their rows' means cover fewer "
            "labels; each pair is compared over the cycles both of its runs reached.",
        ]
    if summary.holm_out_of_reach:
        lines += ["", summary.holm_out_of_reach[0].upper() + summary.holm_out_of_reach[1:] + "."]
    if summary.other_protocols:
        lines += [
            "",
            f"{len(summary.other_protocols)} pair(s) ran under configs that differ in more "
            "than their arm, so their AULC differences hold that too: "
            f"{'; '.join(summary.other_protocols)}.",
        ]
    if summary.other_test_images:
        lines += [
            "",
            f"{len(summary.other_test_images)} pair(s) were tested on different images (another "
            "split or data folder), so their AULC differences hold that too: "
            f"{', '.join(summary.other_test_images)}.",
        ]
    if summary.mixed_machines:
        lines += [
            "",
            f"{len(summary.mixed_machines)} pair(s) ran a cycle under different machines or "
            "settings (threads, precision, versions), so their AULC differences include the "
            f"setups' effect: {', '.join(summary.mixed_machines)}.",
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
            cells = [_cell(v) for v in (mean[i], lo[i], hi[i])]
            diff = differences.get(float(value))
            diff_cells = ["", "", "", ""] if diff is None else [*diff[:3], str(diff[3])]
            writer.writerow([row.heuristic, x_cell, n_runs, *cells, *diff_cells])
    return buffer.getvalue()


def _cell(value: float) -> str:
    """A curve value to four decimals; empty where there is none (a band from one run)."""
    return f"{value:.4f}" if math.isfinite(value) else ""


def _differences_by_x(
    results: Mapping[str, Sequence[RunRecord]], name: str, summary: Summary
) -> dict[float, tuple[str, str, str, int]]:
    """x -> formatted (mean, low, high) paired difference from the baseline and the pair count."""
    pair = paired_with(name, results, summary.baseline)
    if pair is None:
        return {}
    x, mean, lo, hi, pairs = difference_curve(results[name], results[pair], summary.pixel_axis)
    return {
        float(x[i]): (_cell(mean[i]), _cell(lo[i]), _cell(hi[i]), int(pairs[i]))
        for i in range(x.size)
    }


RUN_COLUMNS = ("heuristic", "run", "aulc", "final_dice", "complete", "machines")


def machines_cell(record: RunRecord) -> str:
    """Where the run's cycles ran, in order (``unknown`` for cycles its record does not place);
    empty when the record says nothing."""
    labels = record.machine_per_cycle
    if not any(labels):
        return ""
    # A run may go back to a setup it left: only neighbouring cycles are merged.
    return " | ".join(label for label, _ in itertools.groupby(x or "unknown" for x in labels))


def render_runs_csv(results: Mapping[str, Sequence[RunRecord]], summary: Summary) -> str:
    """Each run's AULC over its whole curve (on the report's axis; what the paired test pairs
    when both runs reached the same cycle) and final Dice, and where it ran; full-supervision
    runs last, with no AULC (one point is no curve)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(RUN_COLUMNS)
    names = [row.heuristic for row in summary.rows]
    names += sorted(name for name in results if is_full(name) and name not in names)
    for name in names:
        for record in results[name]:
            area = summary.run_aulcs.get(name, {}).get(record.run)
            cells = [
                "" if area is None else f"{area:.4f}",
                f"{record.dice[-1]:.4f}",
                str(record.complete).lower(),
                machines_cell(record),
            ]
            writer.writerow([name, record.run, *cells])
    return buffer.getvalue()
