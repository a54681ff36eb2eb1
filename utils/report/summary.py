"""The summary table of a set of runs: per row its curve, AULC, labels to 95 % of full
supervision, paired tests against a baseline row, and the training-noise figures.

``summarise`` turns ``load_results`` output into a ``Summary``; ``tables`` and ``figure`` render
it, and ``cli`` writes them (``python -m utils.report``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from utils.report.stats import (
    MIN_WILCOXON_PAIRS,
    ROUNDING,
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
from utils.runs.records import ReportError, RunRecord
from utils.runs.state import FULL_SUPERVISION_IGNORES, config_differences

__all__ = [
    "CSV_COLUMNS",
    "DEFAULT_MARGIN",
    "FULL",
    "RANDOM",
    "Summary",
    "SummaryRow",
    "paired_with",
    "summarise",
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
    n_pairs: int | None = None  # runs shared with the baseline: what the paired columns cover
    aulc_diff: float | None = None  # mean of (row - baseline) AULC, a pair over shared cycles
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
    target: float  # 95 % of the reference every row shares (see target_basis); nan if none
    target_basis: str
    # Grid point tag ('' untagged) -> (mean final Dice, runs) of its full-supervision runs. A
    # sweep over settings that change the model (say image_scale) has one reference per point.
    full_by_tag: Mapping[str, tuple[float, int]] = field(default_factory=dict)
    pixel_axis: bool = False  # x is the labelled fraction of the pool's pixels, not images
    unfinished: tuple[str, ...] = ()  # "{name}_{run}" of runs that stopped before their plan
    # "{name}_{run} / {pair}_{run}" of pairs with a cycle run under different machines or
    # settings (threads, precision, versions)
    mixed_machines: tuple[str, ...] = ()
    # "{name}_{run} / {pair}_{run} (keys)" of pairs run under different protocols
    other_protocols: tuple[str, ...] = ()
    # "{name}_{run} / {pair}_{run}" of pairs whose runs were tested on different images
    other_test_images: tuple[str, ...] = ()
    run_aulcs: Mapping[str, Mapping[int, float]] = field(default_factory=dict)  # whole curves
    margin: float = DEFAULT_MARGIN  # equivalence margin of tost_p and runs_needed, in AULC
    baseline: str = RANDOM  # the row every other row is paired against (per sweep tag)
    # The smallest Holm-adjusted p any row could reach with its number of non-zero paired
    # differences, whatever their sizes and signs: an exact Wilcoxon, which drops the zeros,
    # gives at least 2 / 2**n over n of them. None without a test.
    holm_floor: float | None = None

    @property
    def holm_out_of_reach(self) -> str | None:
        """One sentence when no row could be 'different' at ``ALPHA`` with so few pairs."""
        if self.holm_floor is None or self.holm_floor < ALPHA:
            return None
        tested = sum(row.p_holm is not None for row in self.rows)
        needed = math.floor(math.log2(2 * tested / ALPHA)) + 1  # tested * 2 / 2**n < ALPHA
        return (
            f"with these pairs and {tested} tested row(s), the smallest Holm-adjusted p any row "
            f"could reach is {self.holm_floor:.3f}, not below {ALPHA:g}, so no row can be "
            f"'different'; that needs {needed} pairs or more whose AULCs differ"
        )

    @property
    def full_dice(self) -> float | None:
        """The full-supervision Dice when there is exactly one reference."""
        return next(iter(self.full_by_tag.values()))[0] if len(self.full_by_tag) == 1 else None

    @property
    def baseline_per_tag(self) -> bool:
        """Whether rows are paired with the baseline of their own sweep tag (see ``paired_with``),
        so that "the baseline" names one row per tag rather than a single row."""
        return "@" not in self.baseline and any("@" in row.heuristic for row in self.rows)


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


def full_supervision_tag(tag: str) -> str:
    """The tag of the full-supervision run that ``sweep.py --full-supervision`` trains for the
    grid point ``tag``: without the swept keys that full supervision ignores."""
    parts = tag.split(",") if tag else []
    return ",".join(p for p in parts if p.partition("=")[0] not in FULL_SUPERVISION_IGNORES)


def is_full(name: str) -> bool:
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


def mixed_machine_pairs(
    results: Mapping[str, Sequence[RunRecord]], baseline: str = RANDOM
) -> tuple[str, ...]:
    """The paired runs with a cycle that the two ran under different machines or settings,
    where both records say where that cycle ran.

    A run's numbers depend on the processor, precision, threads and library versions, so such a
    pair's difference holds that of the setups as well as the arms'. ``results`` are the rows
    that are paired: full supervision is a reference, not a row.
    """
    mixed = []
    for record, other in _shared_runs(results, baseline):
        cycles = zip(record.machine_per_cycle, other.machine_per_cycle, strict=False)
        if any(a is not None and b is not None and a != b for a, b in cycles):
            mixed.append(_pair_name(record, other))
    return tuple(mixed)


def _shared_runs(
    results: Mapping[str, Sequence[RunRecord]], baseline: str
) -> Iterator[tuple[RunRecord, RunRecord]]:
    """Each row's run with the run of its baseline that it is paired with (same run index)."""
    for name, runs in results.items():
        pair = paired_with(name, results, baseline)
        if pair is None:
            continue
        theirs = {r.run: r for r in results[pair]}
        for record in runs:
            if record.run in theirs:
                yield record, theirs[record.run]


def _pair_name(record: RunRecord, other: RunRecord) -> str:
    return f"{record.heuristic}_{record.run} / {other.heuristic}_{other.run}"


# Keys in which a row's runs may differ from their baseline's: what the arm is (how it selects,
# what it labels, what it learns from), and where a run reads and writes.
ARM_KEYS = frozenset(
    {
        "heuristic", "strategy", "reduction", "topq_percent", "foreground_band", "temperature",
        "suggestive_factor", "label_unit", "region_size", "region_shape", "semi",
        "pseudo_threshold", "pseudo_weight", "consistency_weight", "tag", "run", "seed",
        "data_path", "splits_path", "device", "num_workers", "mc_samples_per_pass", "n_suggest",
    }
)  # fmt: skip


def protocol_differences(
    results: Mapping[str, Sequence[RunRecord]], baseline: str = RANDOM
) -> tuple[str, ...]:
    """``"{name}_{run} / {pair}_{run} (keys)"`` for each pair whose configs differ in a key of
    the protocol (say ``image_scale`` or ``epochs``): its difference is not the arms' alone.
    Keys a record lacks count as their defaults, as on resuming; keys swept in either result
    name's tag (``--baseline`` may name another grid point) are part of the arm."""
    found = []
    for record, other in _shared_runs(results, baseline):
        if not record.config or not other.config:
            continue
        names = (record.heuristic, other.heuristic)
        swept = {item.partition("=")[0] for n in names for item in _tag(n).split(",")}
        differing = config_differences(other.config, record.config)
        keys = [k for k in differing if k not in ARM_KEYS and k not in swept]
        if keys:
            found.append(f"{_pair_name(record, other)} ({', '.join(keys)})")
    return tuple(found)


def tested_on_other_images(
    results: Mapping[str, Sequence[RunRecord]], baseline: str = RANDOM
) -> tuple[str, ...]:
    """``"{name}_{run} / {pair}_{run}"`` for each pair whose runs were tested on different
    images (another split file or data folder, which the config's paths need not show): their
    Dice differ with the test images as well as with the arms."""
    return tuple(
        _pair_name(record, other)
        for record, other in _shared_runs(results, baseline)
        if None not in (record.test_images, other.test_images)
        and record.test_images != other.test_images
    )


def pair_aulcs(
    records: Sequence[RunRecord], baseline: Sequence[RunRecord], pixel_axis: bool
) -> tuple[dict[int, float], dict[int, float]]:
    """Each shared run's AULC in ``records`` and in ``baseline``, both over the cycles that the
    two runs reached: a run cut off early is compared with its pair over the same labels, not
    with a longer curve, whose later and higher Dice would favour the pair. Runs that finished
    alike keep their whole-curve AULC.

    On the image axis the two runs must have labelled the same numbers of images at those
    cycles: AULCs over different ranges of labels (another ``n_label_start`` or
    ``n_data_to_label``) do not compare. On the pixel axis fractions differ with what each run
    picked, and only the initial sets must match.
    """
    theirs = {r.run: r for r in baseline}
    mine, other = {}, {}
    for record in records:
        pair = theirs.get(record.run)
        if pair is None:
            continue
        n = min(len(record.dice), len(pair.dice))
        check_same_schedule(record, pair, pixel_axis, "pair")
        mine[record.run] = aulc(axis(record, pixel_axis)[:n], record.dice[:n])
        other[record.run] = aulc(axis(pair, pixel_axis)[:n], pair.dice[:n])
    return mine, other


def check_same_schedule(record: RunRecord, other: RunRecord, pixel_axis: bool, verb: str) -> None:
    """Refuse two runs that labelled different numbers of images at the cycles both reached
    (on the pixel axis, whose fractions differ with the picks, different initial sets)."""
    n = min(len(record.dice), len(other.dice))
    schedule = slice(0, 1) if pixel_axis else slice(0, n)
    if not np.array_equal(record.n_labelled[schedule], other.n_labelled[schedule]):
        raise ReportError(
            f"{record.heuristic}_{record.run} labelled {record.n_labelled[schedule].tolist()} "
            f"images but {other.heuristic}_{other.run} "
            f"{other.n_labelled[schedule].tolist()}; runs on other label schedules do not "
            f"{verb}: report them from separate folders"
        )


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
    # Differences equal up to float rounding have no spread, as for paired_p_value.
    sd = 0.0 if np.ptp(diffs) <= ROUNDING else float(np.std(diffs, ddof=1))
    runs = pairs_for_power(sd, margin, ALPHA, POWER)
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
    rows tagged ``@{tag}``, less the keys full supervision ignores). Without them the reference
    is the best final mean Dice of any heuristic. Rows are sorted by mean AULC, best first
    (ties by name, for a stable order).
    ``margin`` (AULC, > 0) is the equivalence margin of ``tost_p`` and ``runs_needed``.
    ``baseline`` is the row the paired columns compare with (see ``paired_with``): ``random``,
    or another result name, for example ``random+pseudo`` to ask whether a strategy adds to
    semi-supervised training. Without ``random`` the paired columns stay empty; any other
    baseline must be among the runs.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ReportError(f"--margin must be a number > 0, got {margin}")
    heuristics = {name: runs for name, runs in results.items() if not is_full(name) and runs}
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
        if is_full(name) and runs
    }

    finals = {name: _mean_std([r.dice[-1] for r in runs]) for name, runs in heuristics.items()}
    pixel_axis = uses_pixel_axis(heuristics)
    for runs in heuristics.values():  # a row's mean curve and AULCs need one schedule
        longest = max(runs, key=lambda r: len(r.dice))  # each run must follow it as far as it went
        for record in runs:
            check_same_schedule(record, longest, pixel_axis, "average")
    aulcs = {
        name: {r.run: aulc(axis(r, pixel_axis), r.dice) for r in runs}
        for name, runs in heuristics.items()
    }
    best_final = max(mean for mean, _ in finals.values())

    def reference(name: str) -> float | None:
        # Its own grid point's, else the untagged one; another point's trained another model.
        for tag in (_tag(name), full_supervision_tag(_tag(name)), ""):
            if tag in full_by_tag:
                return full_by_tag[tag][0]
        return None

    without = [name for name in heuristics if reference(name) is None]
    if not full_by_tag:
        basis = "the best final mean Dice (no full-supervision result)"
    elif without:
        basis = (
            "the full-supervision Dice of the row's own grid point, or for rows without one ("
            + ", ".join(without)
            + ") the best final mean Dice"
        )
    elif len(full_by_tag) == 1:
        basis = "the full-supervision Dice"
    else:
        basis = "the full-supervision Dice of the row's own grid point"

    rows, floors, targets = [], [], set()
    for name, runs in heuristics.items():
        x, mean, _, _ = curve(runs, pixel_axis)
        own = reference(name)
        row_target = TARGET_FRACTION * (best_final if own is None else own)
        targets.add(row_target)
        aulc_mean, aulc_std = _mean_std(list(aulcs[name].values()))
        pair = paired_with(name, aulcs, baseline)
        mine, theirs = ({}, {}) if pair is None else pair_aulcs(runs, heuristics[pair], pixel_axis)
        p_value = None if pair is None else paired_p_value(mine, theirs)
        diffs = paired_differences(mine, theirs)
        diff, diff_low, diff_high, tost_p, runs_needed = paired_columns(diffs, margin)
        if p_value is not None and math.isfinite(p_value):
            # Wilcoxon drops zero differences; the t-test below MIN_WILCOXON_PAIRS has no floor.
            signed = int(np.sum(np.abs(diffs) > ROUNDING))
            floors.append(2.0 / 2**signed if diffs.size >= MIN_WILCOXON_PAIRS else 0.0)
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
                n_pairs=None if diff is None else int(diffs.size),
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
        target=targets.pop() if len(targets) == 1 else math.nan,
        target_basis=basis,
        full_by_tag=full_by_tag,
        unfinished=tuple(
            f"{r.heuristic}_{r.run}" for runs in results.values() for r in runs if not r.complete
        ),
        mixed_machines=mixed_machine_pairs(heuristics, baseline),
        other_protocols=protocol_differences(heuristics, baseline),
        other_test_images=tested_on_other_images(heuristics, baseline),
        run_aulcs=aulcs,
        margin=margin,
        baseline=baseline,
        holm_floor=min(1.0, len(floors) * min(floors)) if floors else None,
    )
