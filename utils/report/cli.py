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
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from utils.io import atomic_write_text
from utils.report.figure import plot_learning_curves
from utils.report.summary import DEFAULT_MARGIN, RANDOM, summarise
from utils.report.tables import (
    render_console,
    render_csv,
    render_curves_csv,
    render_markdown,
    render_runs_csv,
)
from utils.runs.records import ReportError, folder_paths, load_results


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
    if summary.unfinished:
        print(
            f"warning: the tables include {len(summary.unfinished)} unfinished run(s) "
            f"({', '.join(summary.unfinished)}), whose Dice and AULC cover fewer labels (pairs "
            "are compared over the cycles both runs reached); finish them (rerun their command) "
            "before reading the table",
            file=sys.stderr,
        )
    if summary.mixed_machines:
        print(
            f"warning: {len(summary.mixed_machines)} pair(s) ran a cycle under different "
            f"machines or settings ({', '.join(summary.mixed_machines)}; see each record's "
            "'machines'), so their AULC differences include the setups' effect; rerun both runs "
            "of a pair on one machine with the same settings",
            file=sys.stderr,
        )
    if summary.other_protocols:
        print(
            f"warning: {len(summary.other_protocols)} pair(s) ran under configs that differ in "
            f"more than their arm ({'; '.join(summary.other_protocols)}), so their AULC "
            "differences hold that too; pair runs of one protocol",
            file=sys.stderr,
        )
    if summary.other_test_images:
        print(
            f"warning: {len(summary.other_test_images)} pair(s) were tested on different images "
            f"({', '.join(summary.other_test_images)}; another split or data folder), so their "
            "AULC differences hold that too; pair runs tested on one split",
            file=sys.stderr,
        )
    if summary.holm_out_of_reach:
        print(f"warning: {summary.holm_out_of_reach}", file=sys.stderr)
    print(render_console(summary), flush=True)
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
        help="folder(s) with {name}_{run}.npy/.json; several pool their runs",
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
        f"(default {DEFAULT_MARGIN}; between 0 and 1)",
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
        if not (math.isfinite(margin) and 0 < margin < 1):
            raise ReportError(
                f"--margin must be a number in (0, 1), an AULC difference, got {args.margin!r}"
            )
        written = write_report(args.results_dir, args.out, margin, args.baseline)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0
