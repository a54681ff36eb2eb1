"""Planning a sweep: every {heuristic} x {run} x grid combination as one job of ``active.py``.

``sweep.py`` is the command line. This module parses its arguments into jobs and checks every
job before any starts (``check_resumable``: a changed config is refused, finished and running
runs are known). ``utils.sweep.local`` runs the jobs on this machine, ``utils.sweep.slurm``
through submitit. Either way a job is exactly ``active.py``'s run, so results, resumption,
locking and refusals are the same as for a run started by hand.
"""

from __future__ import annotations

import ast
import itertools
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heuristics import resolve_heuristic
from utils import PROJECT_ROOT
from utils.config import (
    NAMED_CONFIGS,
    ConfigError,
    ExperimentConfig,
    check_config,
    merged,
    validate,
)
from utils.errors import UserError
from utils.runs.lock import is_locked
from utils.runs.state import (
    FULL_SUPERVISION_IGNORES,
    IN_RESULT_NAME,
    ResumeError,
    RunPaths,
    config_differences,
    jsonable,
    load_state,
    run_paths,
    run_record_config,
)

# Keys a grid may not sweep: each has its own option or is part of every job already.
NOT_GRIDDABLE = {
    "heuristic": "--heuristics",
    "run": "--runs",
    "seed": "--runs",
    "full_supervision": "--full-supervision",
    "results_dir": "a single results_dir after --",
    "tag": "the swept values themselves",
    # Changing nothing a run computes, they would make runs that compute the same twice.
    "overwrite": "it after -- for every run",
    "progress": "it after -- for every run",
    "save_maps": "it after -- for every run",
    "save_uncerts": "it after -- for every run",
}


class SweepError(UserError, ValueError):
    """A bad sweep request, in one line, found before any job starts."""


@dataclass(frozen=True)
class Job:
    """One run of the sweep: ``active.py with {named} {updates}``."""

    stem: str  # the run's result name, "{name}_{run}"
    named_configs: tuple[str, ...]
    updates: dict[str, Any] = field(hash=False)
    total_cycles: int  # cycles the run has when it goes to the end
    workdir: str = str(PROJECT_ROOT)

    @property
    def results_dir(self) -> Path:
        return Path(self.workdir, self.config.results_dir)

    @property
    def config(self) -> ExperimentConfig:
        return ExperimentConfig.from_mapping(merged(self.named_configs, self.updates))

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.results_dir, self.stem)

    def record_config(self) -> dict[str, Any]:
        """The config its run records and resumes by, as it reads back from JSON."""
        return jsonable(run_record_config(validate(self.config)))

    def command(self, python: str = sys.executable) -> list[str]:
        pairs = [f"{k}={_literal(v)}" for k, v in self.updates.items()]
        return [python, str(PROJECT_ROOT / "active.py"), "with", *self.named_configs, *pairs]


def _literal(value: Any) -> str:
    # Sacred reads a value after ``with`` as a Python literal; repr round-trips every config type.
    return repr(value)


# --------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------


def parse_runs(text: str) -> list[int]:
    """``"0-4"``, ``"0,2,5"`` or ``"0-2,7"`` -> sorted run indices."""
    runs: set[int] = set()
    for part in text.split(","):
        first, dash, last = part.partition("-")
        try:
            start, stop = int(first), int(last if dash else first)
        except ValueError:
            raise SweepError(
                f"--runs {text!r} is not a list of runs; write e.g. 0-4 or 0,2,5"
            ) from None
        if stop < start:
            raise SweepError(f"--runs {text!r}: {part} runs backwards; write {stop}-{start}")
        runs.update(range(start, stop + 1))
    if not runs or min(runs) < 0:
        raise SweepError(f"--runs {text!r} names no runs; write e.g. 0-4")
    return sorted(runs)


def parse_value(text: str) -> Any:
    """A config value as Sacred reads it after ``with``: a Python literal, else a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``patch_size=[64,64],[96,96]`` has two values."""
    parts, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current]


def parse_config_tokens(tokens: Sequence[str]) -> tuple[tuple[str, ...], dict[str, Any]]:
    """What follows ``--``: named configs and ``KEY=VALUE`` pairs, as after ``active.py with``."""
    named, updates = [], {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep:
            if token not in NAMED_CONFIGS:
                raise SweepError(
                    f"unknown named config {token!r} after --; choose from "
                    f"{', '.join(NAMED_CONFIGS)} or write KEY=VALUE"
                )
            named.append(token)
            continue
        updates[key.strip()] = parse_value(value)
    try:
        check_config(updates)
    except ValueError as err:
        raise SweepError(f"invalid config after --: {err}") from None
    return tuple(named), updates


def parse_grid(specs: Sequence[str]) -> list[dict[str, Any]]:
    """``["image_scale=0.25,0.5", "lr=0.1,0.01"]`` -> every combination, as update dicts."""
    axes: list[tuple[str, list[Any]]] = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not values:
            raise SweepError(f"--grid {spec!r} must read KEY=V1,V2,...")
        if key in NOT_GRIDDABLE:
            raise SweepError(f"--grid cannot sweep {key}; use {NOT_GRIDDABLE[key]}")
        parsed = [parse_value(v) for v in _split_top_level(values)]
        try:
            for value in parsed:
                check_config({key: value})
        except ValueError as err:
            raise SweepError(f"invalid --grid {spec!r}: {err}") from None
        axes.append((key, parsed))
    if len({key for key, _ in axes}) != len(axes):
        raise SweepError("--grid names the same key twice; give each key once")
    keys = [key for key, _ in axes]
    combos = itertools.product(*(values for _, values in axes))
    return [dict(zip(keys, combo, strict=True)) for combo in combos]


def grid_tag(point: dict[str, Any]) -> str:
    """The result-name part of one grid point: ``image_scale=0.5,lr=0.01``."""

    def show(value: Any) -> str:
        if isinstance(value, list | tuple):
            return "x".join(show(v) for v in value)
        text = str(value)
        return "".join(c if c.isalnum() or c in "._+-" else "-" for c in text)

    return ",".join(f"{key}={show(value)}" for key, value in point.items())


# --------------------------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------------------------


def plan_jobs(
    heuristics: Sequence[str],
    runs: Sequence[int],
    named_configs: tuple[str, ...],
    updates: dict[str, Any],
    grid: Sequence[dict[str, Any]] = ({},),
    full_supervision: bool = False,
    workdir: str | Path | None = None,
) -> list[Job]:
    """Every job of the sweep, each validated as ``active.py`` would validate it.

    ``full_supervision`` adds one reference run per grid point, with the first run index; grid
    points that differ only in keys it ignores (``FULL_SUPERVISION_IGNORES``) share one.
    Relative paths in the config are relative to ``workdir`` (default: the current folder).
    """
    workdir = Path.cwd() if workdir is None else Path(workdir)
    canonical = []
    for name in heuristics:
        if name in NAMED_CONFIGS or "=" in name:  # config that lost its -- on the way
            raise SweepError(
                f"--heuristics takes heuristics, not {name!r}; active.py config goes after --: "
                f"sweep.py --heuristics ... -- {name}"
            )
        try:
            canonical.append(resolve_heuristic(name))
        except ValueError as err:
            raise SweepError(f"--heuristics: {err}") from None
    # A named config sets keys too: ``-- full_supervision`` would make every job a reference.
    named_keys = {key for name in named_configs for key in NAMED_CONFIGS.get(name, {})}
    clashes = sorted({"heuristic", "run", "seed", "full_supervision"} & (set(updates) | named_keys))
    if clashes:
        raise SweepError(
            f"{', '.join(clashes)} after -- would override every job; use --heuristics, --runs "
            "and --full-supervision instead (each run's seed is its run index)"
        )
    jobs: list[Job] = []
    planned: dict[str, dict[str, Any]] = {}  # stem -> the config its run records
    points = grid or [{}]
    # Run-major order: every arm of one run (heuristics and grid points) finishes together, so
    # a sweep that is cut off leaves complete pairs for the paired test.
    specs = [(p, h, r, False) for r in runs for p in points for h in dict.fromkeys(canonical)]
    if full_supervision:
        specs += [(p, "random", runs[0], True) for p in points]
    for point, heuristic, run, full in specs:
        if full:  # grid points that differ only in keys full supervision ignores share it
            point = {k: v for k, v in point.items() if k not in FULL_SUPERVISION_IGNORES}
        # Keys that are part of the result name already need no tag.
        tagged = {k: v for k, v in point.items() if k not in IN_RESULT_NAME}
        tag = ",".join(t for t in (updates.get("tag", ""), grid_tag(tagged)) if t)
        shared = {**updates, **point, **({"tag": tag} if tag else {})}
        job_updates = {**shared, "run": run}
        job_updates.update({"full_supervision": True} if full else {"heuristic": heuristic})
        job = Job("", named_configs, job_updates, 0, str(workdir))
        try:
            cfg = validate(job.config)
            paths = run_paths(cfg)
        except ConfigError as err:
            raise SweepError(f"invalid config after --: {err}") from None
        record = run_record_config(cfg)
        if paths.stem in planned:
            differing = config_differences(planned[paths.stem], record)
            # Random under every strategy of a grid is one baseline.
            if not differing:
                continue
            in_grid = set(differing) <= set(point)
            if in_grid and not set(differing) & IN_RESULT_NAME:
                fix = (
                    "their --grid values give the same tag in the result name (characters "
                    "other than letters, digits and ._+- become -); use values that differ there"
                )
            elif in_grid:
                fix = "that does not change such a run, so drop it from --grid"
            else:
                fix = "put the differing key in --grid"
            raise SweepError(
                f"two jobs of this sweep would write {paths.stem} with configs that differ "
                f"in {', '.join(differing)}; {fix}"
            )
        planned[paths.stem] = record
        total = 1 if full else cfg.al_cycles + 1
        jobs.append(Job(paths.stem, named_configs, job_updates, total, str(workdir)))
    return jobs


@dataclass(frozen=True)
class JobStatus:
    cycles_done: int
    finished: bool
    running_in: str | None  # who holds the run's lock


def job_status(job: Job) -> JobStatus:
    """Where ``job`` stands on disk. ``ResumeError`` when its results have another config."""
    cfg = validate(job.config)
    paths = job.paths
    state = load_state(paths, run_record_config(cfg), cfg.overwrite)
    done = state.cycles_done if state is not None else 0
    finished = state is not None and state.finished and _results_present(paths)
    return JobStatus(done, finished, None if finished else is_locked(paths.lock))


def check_resumable(jobs: Sequence[Job]) -> dict[str, JobStatus]:
    """Status of every job; one ``SweepError`` line if any would be refused for a new config."""
    statuses = {}
    for job in jobs:
        try:
            statuses[job.stem] = job_status(job)
        except ResumeError as err:
            # As active.py does: a missing data folder is what to fix first.
            from data.datasets import check_data_folder
            from data.segmentation import DataError

            try:
                check_data_folder(validate(job.config), job.workdir)
            except DataError as missing:
                raise SweepError(str(missing)) from None
            raise SweepError(str(err)) from None
    return statuses


def cycles_done(job: Job, written_since: float | None = None) -> tuple[int, bool]:
    """Cycles done and whether finished, from the run's state file (cheap; no validation).

    With ``written_since`` (a ``time.time()``), a state file older than that counts as none: an
    ``overwrite=True`` run leaves the old one in place until its own first cycle.
    """
    path = job.paths.state
    try:
        if written_since is not None and path.stat().st_mtime < written_since:
            return 0, False
        state = json.loads(path.read_text())
        return int(state["cycles_done"]), bool(state["finished"]) and _results_present(job.paths)
    except (OSError, ValueError, KeyError):
        return 0, False


def _results_present(paths: RunPaths) -> bool:
    """Whether a run's ``.npy`` and ``.json`` are there: a finished run that lost one (deleted by
    hand) is run again, and rewrites them from its state in a moment."""
    return paths.npy.exists() and paths.json.exists()
