"""Reading the result files that ``active.py`` writes: one ``RunRecord`` per run.

Every run leaves ``{name}_{run}.npy`` (mean test Dice per cycle) next to ``{name}_{run}.json``
(config, labelled images per cycle, acquisitions, per-image Dice). A pair that is missing half,
malformed or inconsistent is refused with one line that names the file.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from utils.errors import UserError
from utils.runs.lock import is_locked

__all__ = ["ReportError", "RunRecord", "folder_paths", "load_results"]

_RUN_FILE = re.compile(r"^(?P<heuristic>.+)_(?P<run>\d+)\.npy$")
_RECORD_FILE = re.compile(r"^(?P<heuristic>.+)_(?P<run>\d+)\.json$")
_NO_RESULTS_HINT = (
    "expected {heuristic}_{run}.npy files written by active.py; run python active.py first"
)


class ReportError(UserError):
    """A problem with the results directory, described in one line for the command line."""


@dataclass(frozen=True, eq=False)
class RunRecord:
    """One run's learning curve: test Dice after each cycle against the labelled-set size."""

    heuristic: str
    run: int
    n_labelled: np.ndarray
    dice: np.ndarray
    validation_images: int | None = None  # labelled images model selection used; None: unknown
    label_unit: str = "image"
    labelled_fraction: np.ndarray | None = None  # [cycles] share of the pool's pixels labelled
    complete: bool = True  # False: the run stopped before its planned cycles (killed, cut off)
    # Each cycle's machine and settings (machine_label), None where the record does not say.
    machine_per_cycle: tuple[str | None, ...] = ()
    config: Mapping[str, Any] = field(default_factory=dict)  # the record's; empty if it has none
    test_images: frozenset[str] | None = None  # the images it was tested on; None if unsaid


def _read_json(path: Path) -> dict:
    """Read one run's JSON record; any decoding problem becomes a one-line ``ReportError``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(
            f"malformed JSON in {path}: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ReportError(f"malformed JSON in {path}: expected an object at the top level")
    return data


def _read_dice(path: Path) -> np.ndarray:
    """Read one run's per-cycle test Dice as a non-empty 1-D float array."""
    try:
        # No pickles: result files are plain arrays and must not execute code when read.
        dice = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ReportError(f"cannot read {path}: {exc}") from exc
    # Full-supervision runs hold a single value that may have been saved as a 0-d array.
    try:
        dice = np.atleast_1d(np.asarray(dice, dtype=float))
    except (TypeError, ValueError) as exc:
        raise ReportError(f"{path}: expected Dice values, got an array of {dice.dtype}") from exc
    if dice.ndim != 1 or dice.size == 0:
        raise ReportError(f"{path}: expected a non-empty 1-D array of Dice, got {dice.shape}")
    # active.py's Dice is always finite (an empty mask has its own rule): this file is damaged.
    bad = np.flatnonzero(~np.isfinite(dice))
    if bad.size:
        raise ReportError(
            f"{path}: the Dice of cycle {bad[0]} is {dice[bad[0]]}; the file is damaged: "
            "rerun the run, or move its .npy and .json out of the folder"
        )
    return dice


def _is_whole(value: object) -> bool:
    """A JSON count: an int, not a bool, a float or a string."""
    return isinstance(value, int) and not isinstance(value, bool)


def machine_label(machine: dict) -> str:
    """One line for an entry of a record's ``machines``: what the run's numbers depend on."""
    isa = str(machine.get("cpu_capability", "?"))
    isa += ", native bf16" if machine.get("native_bf16") else ""
    cpu = f"{machine.get('cpu', '?')} ({isa})"
    device = machine.get("device", "?")
    where = cpu if device == "cpu" else f"{device} on {cpu}"
    return (
        f"{where}, {machine.get('precision', '?')}, {machine.get('threads', '?')} threads, "
        f"torch {machine.get('torch', '?')}, numpy {machine.get('numpy', '?')}"
    )


def _machine_per_cycle(record: dict, n_cycles: int, json_path: Path) -> tuple[str | None, ...]:
    """Each cycle's ``machine_label`` from the record's ``machines``; None for a cycle that no
    entry covers or whose entry is ``unknown`` (it ran before records said where)."""
    machines = record.get("machines", [])
    malformed = ReportError(
        f"malformed JSON in {json_path}: 'machines' must be a list of objects, each with "
        f"'cycles' [first, last] after the previous one's and within the run's {n_cycles} cycles"
    )
    if not isinstance(machines, list):
        raise malformed
    labels: list[str | None] = [None] * n_cycles
    after = -1  # entries follow one another: each starts after the last one ended
    for machine in machines:
        cycles = machine.get("cycles") if isinstance(machine, dict) else None
        if not (
            isinstance(cycles, list)
            and len(cycles) == 2
            and all(type(c) is int for c in cycles)
            and after < cycles[0] <= cycles[1] < n_cycles
        ):
            raise malformed
        after = cycles[1]
        label = None if machine.get("unknown") is True else machine_label(machine)
        labels[cycles[0] : cycles[1] + 1] = [label] * (cycles[1] - cycles[0] + 1)
    return tuple(labels)


def _load_run(npy_path: Path, heuristic: str, run: int) -> RunRecord:
    """Pair one ``.npy`` with its ``.json``, check they agree, and build the record."""
    json_path = npy_path.with_suffix(".json")
    if not json_path.is_file():
        raise ReportError(f"{npy_path} has no matching {json_path.name} (written by active.py)")
    dice = _read_dice(npy_path)
    record = _read_json(json_path)

    config = record.get("config")
    if not isinstance(config, dict):
        raise ReportError(f"malformed JSON in {json_path}: missing 'config' object")
    # The file name is what we group by; a disagreeing config means files were renamed or mixed.
    recorded_name = record.get("name", config.get("heuristic"))
    if recorded_name is not None and str(recorded_name) != heuristic:
        raise ReportError(
            f"{json_path}: the record names the run {recorded_name!r} but the file name says "
            f"{heuristic!r}"
        )
    if "run" in config and str(config["run"]) != str(run):
        raise ReportError(
            f"{json_path}: config.run is {config['run']!r} but the file name says {run}"
        )

    try:
        n_labelled = np.asarray(record["n_labelled"], dtype=float)
    except KeyError as exc:
        raise ReportError(f"malformed JSON in {json_path}: missing 'n_labelled'") from exc
    except (TypeError, ValueError) as exc:
        raise ReportError(f"malformed JSON in {json_path}: 'n_labelled' is not numeric") from exc
    if n_labelled.ndim != 1 or n_labelled.shape != dice.shape:
        raise ReportError(
            f"{json_path}: 'n_labelled' has {n_labelled.size} entries but {npy_path.name} has "
            f"{dice.size} Dice values"
        )
    if not np.all(np.isfinite(n_labelled)) or np.any(n_labelled != np.round(n_labelled)):
        raise ReportError(f"{json_path}: 'n_labelled' must hold whole numbers")
    label_unit = str(record.get("label_unit", "image"))
    # A region run may add regions to images it has touched already: only its pixels must grow.
    if label_unit == "image" and np.any(np.diff(n_labelled) <= 0):
        raise ReportError(f"{json_path}: 'n_labelled' must increase strictly from cycle to cycle")
    fraction = record.get("labelled_fraction")
    if isinstance(fraction, list) and len(fraction) == 0:
        fraction = None  # records from before pixels were counted
    if fraction is not None:
        try:
            fraction = np.asarray(fraction, dtype=float)
        except (TypeError, ValueError):
            fraction = None
        if (
            fraction is None
            or fraction.shape != dice.shape
            or not np.all(np.isfinite(fraction))
            or np.any(np.diff(fraction) <= 0)
        ):
            raise ReportError(
                f"{json_path}: 'labelled_fraction' must have one number per cycle and increase; "
                "the record is damaged: rerun the run, or move its .npy and .json out of the folder"
            )
    elif label_unit == "region":
        raise ReportError(f"malformed JSON in {json_path}: a region run needs 'labelled_fraction'")

    # The JSON duplicates the curve; if both exist they must agree, or one of them is stale.
    test_dice = record.get("test_dice")
    if test_dice is not None:
        try:
            json_dice = np.asarray(test_dice, dtype=float)
        except (TypeError, ValueError) as exc:
            raise ReportError(f"malformed JSON in {json_path}: 'test_dice' is not numeric") from exc
        if json_dice.shape != dice.shape or not np.allclose(
            json_dice, dice, atol=1e-5, equal_nan=True
        ):
            # What a run killed between writing the two leaves: its state is a cycle behind.
            raise ReportError(
                f"{json_path}: 'test_dice' disagrees with {npy_path.name}; rerun the run, which "
                "writes both again, or move them out of the folder"
            )

    validation_images = record.get("validation_images")
    if validation_images is not None and not _is_whole(validation_images):
        raise ReportError(f"malformed JSON in {json_path}: 'validation_images' is not a count")
    # Records from before this flag existed were written by finished runs only.
    complete = record.get("complete", True)
    if not isinstance(complete, bool):
        raise ReportError(f"malformed JSON in {json_path}: 'complete' is not true or false")
    return RunRecord(
        heuristic=heuristic,
        run=run,
        n_labelled=n_labelled.astype(np.int64),
        dice=dice,
        validation_images=None if validation_images is None else int(validation_images),
        label_unit=label_unit,
        labelled_fraction=fraction,
        complete=complete,
        machine_per_cycle=_machine_per_cycle(record, dice.size, json_path),
        config=config if isinstance(config := record.get("config"), dict) else {},
        test_images=_test_images(record),
    )


def _test_images(record: dict) -> frozenset[str] | None:
    """The names of the images a run was tested on (the keys of its first cycle's
    ``test_dice_per_image``), or None where the record does not say."""
    per_image = record.get("test_dice_per_image")
    if isinstance(per_image, list) and per_image and isinstance(per_image[0], dict):
        return frozenset(str(name) for name in per_image[0])
    return None


# A running run writes its record, then its .npy: read in between, they differ by a cycle (or,
# in its first cycle, the .npy is not there yet).
SETTLE_S = 1.0


def _running(npy_path: Path) -> bool:
    """Whether a process holds the run's lock (False where that cannot be told)."""
    try:
        return is_locked(npy_path.with_suffix(".lock")) is not None
    except OSError:  # no locks there, or another user's lock file
        return False


def _load_settled(npy_path: Path, heuristic: str, run: int) -> RunRecord:
    """``_load_run``, read once more after ``SETTLE_S`` when the files disagree while the run
    holds its lock: a report written during a study must not stop at a cycle being saved."""
    try:
        return _load_run(npy_path, heuristic, run)
    except ReportError:
        if not _running(npy_path):
            raise
    time.sleep(SETTLE_S)
    return _load_run(npy_path, heuristic, run)


def _half_run(json_path: Path) -> bool:
    """A run's record without its ``.npy``, also after ``SETTLE_S`` if the run is saving it."""
    npy_path = json_path.with_suffix(".npy")
    if npy_path.exists():
        return False
    if _running(npy_path):
        time.sleep(SETTLE_S)
    return not npy_path.exists()


def folder_paths(
    results_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> list[Path]:
    """One results folder or several, as a list of paths."""
    if isinstance(results_dirs, str | os.PathLike):
        return [Path(results_dirs)]
    return [Path(d) for d in results_dirs]


def load_results(
    results_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
) -> dict[str, list[RunRecord]]:
    """Load every ``{heuristic}_{run}.npy`` / ``.json`` pair in one folder or several.

    Several folders pool studies that share a protocol but ran apart (another machine, new
    seeds); pairing stays by run number, so a ``{heuristic}_{run}`` may appear in only one.
    Other files (model states, ``maps/``, hidden temporary files of an atomic write) are ignored.
    Full-supervision runs appear under the key ``"full"``.

    Returns:
        Heuristic name -> its runs, sorted by run number; heuristics sorted by name.

    Raises:
        ReportError: missing directory, no results, a ``.npy`` without its JSON or a run's JSON
            without its ``.npy``, the same run in two folders or under two file names, a Dice
            that is not finite, or a malformed or inconsistent record (the message names the
            file).
    """
    grouped: dict[str, list[RunRecord]] = {}
    origin: dict[tuple[str, int], Path] = {}  # ``random_7.npy`` and ``random_07.npy`` are one run
    for results_dir in folder_paths(results_dirs):
        if not results_dir.is_dir():
            raise ReportError(f"results directory {results_dir} does not exist")
        found = False
        for path in sorted(results_dir.iterdir()):
            if not path.name.startswith(".") and _RECORD_FILE.match(path.name) and _half_run(path):
                # Half a run: leaving it out without a word would change the table unseen.
                raise ReportError(
                    f"{path} has no matching {path.with_suffix('.npy').name}: restore it, or "
                    "move the .json out of the folder too"
                )
        # Listed again: a running run may have saved its first .npy meanwhile.
        for path in sorted(results_dir.iterdir()):
            match = _RUN_FILE.match(path.name)
            if path.name.startswith(".") or match is None or not path.is_file():
                continue
            heuristic, run = match["heuristic"], int(match["run"])
            other = origin.get((heuristic, run))
            if other is not None and other.parent != path.parent:
                where = (
                    f"{path.name} is in both {other.parent} and {results_dir}"
                    if other.name == path.name
                    else f"{other} and {path} are both run {run} of {heuristic}"
                )
                raise ReportError(
                    f"{where}: give each run number to one folder only, or report the folders apart"
                )
            if other is not None:
                raise ReportError(
                    f"{other} and {path.name} are both run {run} of {heuristic}: "
                    "keep one of them (active.py writes the run without leading zeros)"
                )
            origin[heuristic, run], found = path, True
            grouped.setdefault(heuristic, []).append(_load_settled(path, heuristic, run))
        if not found:
            raise ReportError(f"no results found in {results_dir}: {_NO_RESULTS_HINT}")
    return {name: sorted(runs, key=lambda r: r.run) for name, runs in sorted(grouped.items())}
