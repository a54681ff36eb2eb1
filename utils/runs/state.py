"""What a run leaves in ``results_dir``: its results, its JSON record and its resumable state.

After every completed cycle ``{stem}.state.json`` holds the labelled set, the history of results
and acquisitions, and the config; ``{stem}.npy`` and ``{stem}.json`` are rewritten beside it. All
three are written atomically, so an interrupted run loses at most the cycle in progress.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from heuristics import RANDOM
from utils.config import IGNORED_FOR_RESUME, ConfigError, ExperimentConfig, defaults
from utils.errors import UserError
from utils.io import atomic_save_json, atomic_save_npy

STATE_VERSION = 1
FULL_SUPERVISION_NAME = "full"


class ResumeError(UserError, RuntimeError):
    """The results folder already holds this run under another configuration."""


@dataclass
class History:
    n_labelled: list[int] = field(default_factory=list)
    test_dice: list[float] = field(default_factory=list)
    acquired: list[list[dict[str, Any]]] = field(default_factory=list)
    test_dice_per_image: list[dict[str, float]] = field(default_factory=list)
    train: list[dict[str, float]] = field(default_factory=list)
    seconds: list[dict[str, float]] = field(default_factory=list)  # train/test/acquire/total
    labelled_pixels: list[int] = field(default_factory=list)
    labelled_fraction: list[float] = field(default_factory=list)  # of the pool's pixels
    # Mean over test images of each foreground class's Dice, by class name; test_dice is their
    # mean (with two classes, the one class's).
    test_dice_per_class: list[dict[str, float]] = field(default_factory=list)
    # Where the cycles ran: one entry per machine in turn, with its first and last cycle.
    machines: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class RunState:
    config: dict[str, Any]
    labelled_map: list[int]  # baal's map: 0 = pool, k > 0 = labelled at step k
    history: History
    cycles_done: int = 0
    finished: bool = False
    version: int = STATE_VERSION
    validation_images: int = 0  # labelled validation images used for model selection
    labelled_regions: dict[str, list[int]] = field(default_factory=dict)  # name -> tiles
    regions_digest: str = ""  # superpixels' fingerprint (data.regions.RegionLabels.digest)
    # The train split's image names in order (names_digest): labelled_map is by position.
    train_digest: str = ""
    # The same of the test split, and of the validation split when model selection reads it:
    # the cycles before and after a resume must be tested and selected on the same images.
    val_digest: str = ""
    test_digest: str = ""


@dataclass(frozen=True)
class RunPaths:
    results_dir: Path
    stem: str  # "{name}_{run}", see result_name

    @property
    def npy(self) -> Path:
        return self.results_dir / f"{self.stem}.npy"

    @property
    def json(self) -> Path:
        return self.results_dir / f"{self.stem}.json"

    @property
    def state(self) -> Path:
        return self.results_dir / f"{self.stem}.state.json"

    @property
    def lock(self) -> Path:
        return self.results_dir / f"{self.stem}.lock"

    def pseudo_labels(self, cycle: int) -> Path:
        """The pool's pseudo-labels made by ``cycle``'s acquisition pass (``semi=pseudo``)."""
        return self.results_dir / f"{self.stem}.pseudo-{cycle}.npz"

    def all_pseudo_labels(self) -> list[Path]:
        """Every ``pseudo_labels`` file of this run in the folder, whichever cycle made it."""
        name = re.compile(re.escape(self.stem) + r"\.pseudo-\d+\.npz")
        return sorted(p for p in self.results_dir.iterdir() if name.fullmatch(p.name))


# Keys that the result name shows by itself. Full supervision selects nothing and learns from no
# pool, so its name shows none of them, and a sweep's grid over them shares one full_{run}.
IN_RESULT_NAME = frozenset({"strategy", "reduction", "label_unit", "region_shape", "semi"})

# Keys a full-supervision run never reads: it labels every train image at once, trains once and
# selects nothing. Runs that differ only in them share one full_{run}: a sweep's grid over them
# trains one reference, and the report measures each of its points against it.
FULL_SUPERVISION_IGNORES = IN_RESULT_NAME | frozenset(
    {
        "n_label_start",
        "al_cycles",
        "n_data_to_label",
        "balance_al",
        "n_suggest",
        "topq_percent",
        "foreground_band",
        "temperature",
        "suggestive_factor",
        "region_size",
        "pseudo_threshold",
        "pseudo_weight",
        "consistency_weight",
    }
)


def result_name(config: Mapping[str, Any]) -> str:
    """The name a run's files and its report row carry, before ``_{run}``.

    ``{heuristic}[-{strategy}][-{reduction}][-region|-superpixel][+{semi}][@{tag}]``: the
    strategy and reduction appear when they differ from the defaults (``topk``, ``mean``),
    ``-region`` for labelling tiles and ``-superpixel`` for labelling superpixels, so runs that
    select differently never collide; ``+pseudo`` or ``+mean_teacher`` for runs that also learn
    from the pool; and the tag (set by ``sweep.py --grid``) keeps runs of other swept keys
    apart. ``random`` and ``full`` select nothing, so they carry no strategy or reduction, and
    ``full`` has no pool to learn from.
    """
    name = str(config["heuristic"])
    if name not in ("random", "full"):
        for key, default in (("strategy", "topk"), ("reduction", "mean")):
            value = config.get(key, default)
            name += f"-{value}" if value != default else ""
    if name != "full" and config.get("label_unit", "image") == "region":
        name += "-superpixel" if config.get("region_shape", "tile") == "superpixel" else "-region"
    if name != "full" and config.get("semi", "none") != "none":
        name += f"+{config['semi']}"
    tag = config.get("tag", "")
    return f"{name}@{tag}" if tag else name


def names_digest(names: Sequence[str]) -> str:
    """A short fingerprint of image names in their order."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()[:16]


def jsonable(config: dict[str, Any]) -> dict[str, Any]:
    """The config as it reads back from JSON (tuples become lists), for exact comparison."""
    return json.loads(json.dumps(dict(config), default=str))


# A file name holds 255 bytes, and a run writes each file through a temporary 14 bytes longer
# (utils.io.atomic_write: ".{name}.XXXXXXXX.tmp").
NAME_MAX_BYTES, TEMPORARY_EXTRA_BYTES = 255, 14


def max_stem_bytes(cfg: ExperimentConfig) -> int:
    """The longest ``{name}_{run}`` whose files' names all fit: the longest file a run writes is
    its state, or with ``semi=pseudo`` the last cycle's pseudo-labels."""
    suffixes = [".state.json"] + ([f".pseudo-{cfg.al_cycles}.npz"] if cfg.semi == "pseudo" else [])
    return NAME_MAX_BYTES - TEMPORARY_EXTRA_BYTES - max(map(len, suffixes))


def run_paths(cfg: ExperimentConfig) -> RunPaths:
    """Where the run with this config (``validate``d: canonical heuristic) keeps its files."""
    config = run_record_config(cfg)
    stem = f"{result_name(config)}_{cfg.run}"
    if len(stem.encode()) > max_stem_bytes(cfg):
        raise ConfigError(
            f"the result name {stem[:40]}... is {len(stem.encode())} bytes long, over the "
            f"{max_stem_bytes(cfg)} that its files' names leave room for: shorten tag (or the "
            "values that sweep.py --grid puts in it)"
        )
    return RunPaths(Path(cfg.results_dir), stem)


def run_record_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The config as the run's state and record keep it: canonical names, JSON types.

    Random selection is one thing however it is asked for (``heuristic=random`` or
    ``strategy=random``), so it is recorded as heuristic and strategy ``random`` with the default
    reduction: a sweep over strategies then shares one ``random_{run}`` baseline.
    """
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    if cfg.full_supervision:
        config["heuristic"] = FULL_SUPERVISION_NAME
    elif RANDOM in (cfg.heuristic, cfg.strategy):
        config.update(heuristic=RANDOM, strategy=RANDOM, reduction="mean")
    return jsonable(config)


def config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ. A key the saved run does not know (added to the config since)
    counts as equal when the new value is its default: the old run computed exactly that. Two
    full-supervision configs differ in no key of ``FULL_SUPERVISION_IGNORES``: a grid point
    shares the reference that another point, first in an earlier sweep, trained."""
    known = jsonable(defaults())
    keys = (set(old) | set(new)) - IGNORED_FOR_RESUME
    if old.get("heuristic") == new.get("heuristic") == FULL_SUPERVISION_NAME:
        keys -= FULL_SUPERVISION_IGNORES
    return sorted(k for k in keys if old.get(k, known.get(k, "<absent>")) != new.get(k, "<absent>"))


def _record_beside(paths: RunPaths) -> dict[str, Any] | None:
    """The record beside a state-less ``.npy``, None when it is absent or unreadable. A run
    killed between writing its first cycle's results and its state leaves such a record, and
    so does a finished run whose result files were copied without their state (as studies
    publish them)."""
    try:
        saved = json.loads(paths.json.read_text())
        config_differences(saved["config"], {})  # a config it can be compared with
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return saved


def refuse_other_config(paths: RunPaths, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """``ResumeError`` naming each key in which ``config`` differs from the run's ``saved``."""
    differing = config_differences(saved, jsonable(config))
    if differing:
        details = ", ".join(
            f"{k}: {saved.get(k, '<absent>')!r} -> {config.get(k, '<absent>')!r}" for k in differing
        )
        raise ResumeError(
            f"{paths.results_dir} already holds {paths.stem} with another config ({details}); "
            "use the same config to resume, another results_dir, or overwrite=True"
        )


def _finished_from_record(saved: dict[str, Any]) -> RunState:
    """A finished run's state rebuilt from its record: enough to report it and skip it."""
    history = History(
        n_labelled=saved["n_labelled"],
        test_dice=saved["test_dice"],
        acquired=saved["acquired"],
        test_dice_per_image=saved["test_dice_per_image"],
        train=saved["train"],
        seconds=saved.get("seconds_per_cycle", []),
        labelled_pixels=saved.get("labelled_pixels", []),
        labelled_fraction=saved.get("labelled_fraction", []),
        test_dice_per_class=saved.get("test_dice_per_class", []),
        machines=saved.get("machines", []),
    )
    return RunState(
        config=saved["config"],
        labelled_map=[],
        history=history,
        cycles_done=len(saved["test_dice"]),
        finished=True,
        validation_images=saved.get("validation_images", 0),
    )


def load_state(paths: RunPaths, config: dict[str, Any], overwrite: bool) -> RunState | None:
    """The saved state to continue from, or None to start afresh.

    Raises ``ResumeError`` when the folder holds this run with another config and ``overwrite``
    is not set.
    """
    if not paths.state.exists():
        if not paths.npy.exists() or overwrite:
            return None
        saved = _record_beside(paths)
        if saved is None:
            raise ResumeError(
                f"{paths.npy} exists but has no {paths.state.name} to check it against; delete "
                f"it and {paths.json.name} to run {paths.stem} afresh, or use another results_dir"
            )
        refuse_other_config(paths, saved["config"], config)
        # As the report reads it: records from before the flag were written by finished runs.
        if not saved.get("complete", True):
            return None
        try:
            return _finished_from_record(saved)
        except KeyError as err:
            raise ResumeError(
                f"{paths.json} has no {err} to rebuild the finished run from; restore the file, "
                "or pass overwrite=True to run it afresh"
            ) from None
    if overwrite:
        return None  # before reading: an unreadable state is what overwrite is for
    try:
        raw = json.loads(paths.state.read_text())
        state = RunState(**{**raw, "history": History(**raw["history"])})
    except (ValueError, TypeError, KeyError) as err:
        raise ResumeError(
            f"{paths.state} is unreadable ({err}); delete it or pass overwrite=True"
        ) from err
    refuse_other_config(paths, state.config, config)
    # What resume ignores is this process's to say: where the files are now, and what it draws.
    current = jsonable(config)
    state.config.update({k: current[k] for k in sorted(IGNORED_FOR_RESUME) if k in current})
    return state


def record(state: RunState) -> dict[str, Any]:
    """The JSON record written beside the ``.npy`` (documented in docs/outputs.md)."""
    history = asdict(state.history)
    # A run resumed from a state saved before a per-cycle list was recorded has that list for
    # its later cycles only; an empty list ("not recorded") is true, a shorter one misaligned.
    cycles = len(history["test_dice"])
    for key in ("seconds", "labelled_pixels", "labelled_fraction", "test_dice_per_class"):
        if len(history[key]) != cycles:
            history[key] = []
    return {
        "name": result_name(state.config),
        "validation_images": state.validation_images,
        "config": state.config,
        "complete": state.finished,
        "n_labelled": history["n_labelled"],
        "test_dice": history["test_dice"],
        "acquired": history["acquired"],
        "test_dice_per_image": history["test_dice_per_image"],
        "train": history["train"],
        "seconds_per_cycle": history["seconds"],
        "label_unit": state.config.get("label_unit", "image"),
        "labelled_pixels": history["labelled_pixels"],
        "labelled_fraction": history["labelled_fraction"],
        "test_dice_per_class": history["test_dice_per_class"],
        "machines": history["machines"],
    }


def _setup(entry: dict[str, Any]) -> dict[str, Any]:
    """A ``machines`` entry without the cycles it covers."""
    return {k: v for k, v in entry.items() if k != "cycles"}


def note_machine(machines: list[dict[str, Any]], machine: dict[str, Any], cycle: int) -> None:
    """Count ``cycle`` to the last entry when it ran under the same machine and settings, else
    start a new entry."""
    if machines and _setup(machines[-1]) == machine:
        machines[-1]["cycles"][1] = cycle
    else:
        machines.append({**machine, "cycles": [cycle, cycle]})


def note_unknown_machine(state: RunState) -> None:
    """A run whose cycles ran before records said where: mark those cycles as unknown, so that
    its record does not claim them for the machine it continues on."""
    if state.cycles_done and not state.history.machines:
        state.history.machines.append({"unknown": True, "cycles": [0, state.cycles_done - 1]})


def machine_changes(machines: list[dict[str, Any]], machine: dict[str, Any]) -> list[str]:
    """``key: before -> now`` for each way ``machine`` differs from where the last cycles ran
    (nothing when no cycle has run, or it is not known where)."""
    if not machines or machines[-1].get("unknown"):
        return []
    last = _setup(machines[-1])
    keys = sorted(set(last) | set(machine))
    return [
        f"{k}: {last.get(k, '<absent>')} -> {machine.get(k, '<absent>')}"
        for k in keys
        if last.get(k) != machine.get(k)
    ]


def save_cycle(paths: RunPaths, state: RunState) -> None:
    """Write record, results and state; the state goes last so it never runs ahead of them.

    The record goes first: a run killed after it in its first cycle leaves a record without
    results, which starts afresh, whereas results without a record could not be checked against
    the config and would hold up the run (and its sweep) until deleted by hand.
    """
    atomic_save_json(paths.json, record(state))
    atomic_save_npy(paths.npy, np.asarray(state.history.test_dice, dtype=np.float64))
    atomic_save_json(paths.state, asdict(state))
