"""Summarise active-learning runs: learning curves, a results table and paired significance tests.

Usage::

    python -m utils.report RESULTS_DIR [--out OUT_DIR]

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
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

# Headless: reports are produced on servers without a display.
matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from utils.curve_stats import (  # noqa: E402
    MIN_WILCOXON_PAIRS,
    aulc,
    labels_to_reach,
    mean_curve,
    paired_p_value,
    pixels_to_reach,
)
from utils.figures import save_figure  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.run_records import ReportError, RunRecord, folder_paths, load_results  # noqa: E402

__all__ = [
    "CSV_COLUMNS",
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
)


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
    p_vs_random: float | None
    val_labels: int | None = None
    pixels_to_95: float | None = None


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


def _is_full(name: str) -> bool:
    return name.split("@")[0] == FULL


def random_baseline(name: str, names: Mapping[str, object]) -> str | None:
    """The row ``name`` is paired against: ``random`` with the same sweep tag (``@...``), so that
    a comparison never crosses the settings in a tag. Settings in the result name (strategy,
    reduction, label unit) are not in a tag: a region row is paired with image-level ``random``,
    the baseline a region strategy has to beat. None for random itself or without a match.
    """
    base, _, tag = name.partition("@")
    candidate = f"{RANDOM}@{tag}" if tag else RANDOM
    if base == RANDOM or candidate not in names:
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
            "region runs; add it with python -m utils.pixel_counts RESULTS_DIR"
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
    x = np.array([np.mean([axis(r, True)[c] for r in records if c < len(r.dice)]) for c in cycles])
    return x, mean, lo, hi


def _tag(name: str) -> str:
    return name.partition("@")[2]


def summarise(results: Mapping[str, Sequence[RunRecord]]) -> Summary:
    """Build the summary table from ``load_results`` output.

    The ``full`` runs are not a row: their mean final Dice is the reference for
    ``labels_to_95``, per grid point when a sweep ran one per point (``full@{tag}`` for the
    rows tagged ``@{tag}``). Without them the reference is the best final mean Dice of any
    heuristic. Rows are sorted by mean AULC, best first (ties by name, for a stable order).
    """
    heuristics = {name: runs for name, runs in results.items() if not _is_full(name) and runs}
    if not heuristics:
        raise ReportError("no active-learning runs found, only full-supervision results")
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
        baseline = random_baseline(name, aulcs)
        p_value = None if baseline is None else paired_p_value(aulcs[name], aulcs[baseline])
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
            )
        )
    rows.sort(key=lambda row: (-row.aulc_mean, row.heuristic))
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
    lines = [f"# {title}", ""]
    lines.append("| " + " | ".join(CSV_COLUMNS) + " |")
    # Text column left-aligned, numbers right-aligned.
    lines.append("|" + "|".join([":---"] + ["---:"] * (len(CSV_COLUMNS) - 1)) + "|")
    for row in summary.rows:
        lines.append("| " + " | ".join(cell or "–" for cell in _row_cells(row)) + " |")
    lines += [
        "",
        "Columns:",
        "",
        "- `heuristic`: the result name: heuristic, then strategy and reduction where they are "
        "not `topk` and `mean`, then `@` and the swept values of a sweep's grid (`random` is "
        "the uniform-sampling baseline, paired with each row of the same grid point).",
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
        f"- `p_vs_random`: two-sided paired test of per-run AULC against `random` over the runs "
        f"both share: Wilcoxon signed-rank with ≥ {MIN_WILCOXON_PAIRS} pairs, paired t-test "
        f"with 2–{MIN_WILCOXON_PAIRS - 1}; – for `random` itself, without `random`, or with "
        "fewer than 2 shared runs. With n pairs the smallest attainable Wilcoxon p is "
        "2 / 2^n (0.0312 for 6 pairs). Not corrected for multiple comparisons.",
        "- `pixels_to_95`: with region runs, the smallest labelled fraction of the pool's "
        "pixels (0 to 1) at which the mean curve reaches the same 95 % target; the curves and "
        "`aulc` then use that axis for every row (an image is its pixels) and `labels_to_95` is "
        "empty.",
        "- `val_labels`: labelled validation images the runs used to choose their weights "
        "(`model_selection=val`), on top of the labelled training images of the curve; 0 with "
        "`model_selection=last`; – where the records do not say.",
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


CURVE_COLUMNS = ("heuristic", "x", "n_runs", "mean_dice", "ci_low", "ci_high")


def render_curves_csv(results: Mapping[str, Sequence[RunRecord]], summary: Summary) -> str:
    """The plotted mean curves as numbers: one line per heuristic and x (labelled images, or
    the labelled fraction of the pool's pixels on the pixel axis), in the table's row order."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CURVE_COLUMNS)
    for row in summary.rows:
        runs = results[row.heuristic]
        x, mean, lo, hi = curve(runs, summary.pixel_axis)
        for i, value in enumerate(x):
            n_runs = (
                sum(i < len(r.dice) for r in runs)
                if summary.pixel_axis
                else sum(value in r.n_labelled for r in runs)
            )
            x_cell = f"{value:.4f}" if summary.pixel_axis else str(int(value))
            cells = [f"{v:.4f}" for v in (mean[i], lo[i], hi[i])]
            writer.writerow([row.heuristic, x_cell, n_runs, *cells])
    return buffer.getvalue()


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


def plot_learning_curves(
    results: Mapping[str, Sequence[RunRecord]], summary: Summary, path: Path
) -> Path:
    """Plot mean test Dice against labelled images, one line per heuristic, best first."""
    markers = ["o", "s", "^", "D", "v", "P", "X", "<", ">"]
    colours = _colours([row.heuristic for row in summary.rows])
    fig, ax = plt.subplots(figsize=(8, 5.5), layout="constrained")
    for index, row in enumerate(summary.rows):
        runs = results[row.heuristic]
        n, mean, lo, hi = curve(runs, summary.pixel_axis)
        colour = colours[row.heuristic]
        ax.plot(
            n,
            mean,
            marker="x" if row.heuristic == RANDOM else markers[index % len(markers)],
            markersize=5,
            linewidth=1.8,
            color=colour,
            label=f"{row.heuristic} (n={len(runs)})",
        )
        if len(runs) > 1:
            # Dice lives in [0, 1]; a t-interval over two or three runs can reach far outside it.
            band_lo, band_hi = np.clip(lo, 0.0, 1.0), np.clip(hi, 0.0, 1.0)
            ax.fill_between(n, band_lo, band_hi, color=colour, alpha=0.18, linewidth=0)
    if summary.full_dice is not None:
        ax.axhline(
            summary.full_dice,
            color="black",
            linestyle="--",
            linewidth=1.2,
            label=f"full supervision ({summary.full_dice:.3f})",
        )
    unit = "labelled fraction of the pool's pixels" if summary.pixel_axis else "labelled images"
    ax.set_xlabel(unit)
    ax.set_ylabel("test Dice")
    ax.set_title(
        f"Active learning: test Dice vs {unit}\n"
        "mean over runs, shaded: 95 % confidence interval of the mean (clipped to [0, 1])",
        fontsize=11,
    )
    if not summary.pixel_axis:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0.0, 1.0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.9)
    return save_figure(fig, path)


def write_report(
    results_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str] | None = None,
) -> list[Path]:
    """Load the runs in one folder or several and write the figure and tables to ``out_dir``.

    Args:
        results_dirs: folder(s) with ``{heuristic}_{run}.npy`` / ``.json`` pairs.
        out_dir: destination folder (created if needed); defaults to the results folder, and
            is required with several.

    Returns:
        Paths of ``learning_curves.png``, ``summary.csv``, ``summary.md``, ``curves.csv`` and
        ``runs.csv``.
    """
    dirs = folder_paths(results_dirs)
    if out_dir is None and len(dirs) > 1:
        raise ReportError("several results folders need --out to say where the report goes")
    out = Path(out_dir) if out_dir is not None else dirs[0]
    results = load_results(dirs)
    summary = summarise(results)
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
    args = parser.parse_args(argv)
    try:
        written = write_report(args.results_dir, args.out)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
