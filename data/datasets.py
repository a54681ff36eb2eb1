"""The ``dataset=`` registry: how the loop opens the configured data as a ``SegmentationData``.

A new dataset is a module in ``data/`` with an opener, registered in ``OPENERS``; the loop only
ever sees ``SegmentationData`` (splits, images and masks, a group per image, class names).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from data.create_splits import write_splits
from data.folder import FOLDER_HELP, open_folder
from data.glas import GLAS_HELP, open_glas, split_csv_path
from data.segmentation import SPLITS, DataError, SegmentationData, require_folder
from data.synthetic import generate_synthetic_glas
from utils.config import NAMED_CONFIGS, ExperimentConfig
from utils.io import atomic_save_json
from utils.runs.lock import waiting_lock

# The GlaS splits of the defaults and of ``demo``: a folder's splits never go there.
GLAS_SPLITS_PATHS = frozenset(
    {ExperimentConfig().splits_path, NAMED_CONFIGS["demo"]["splits_path"]}
)


def _open_folder(cfg: ExperimentConfig, splits: tuple[str, ...]) -> SegmentationData:
    # A folder's splits live in DATA_PATH/splits unless splits_path is set, and are written
    # there first when absent.
    splits_path = cfg.splits_path
    if splits_path in GLAS_SPLITS_PATHS:
        splits_path = str(Path(cfg.data_path) / "splits")
    return open_folder(cfg.data_path, splits_path, cfg.num_classes, cfg.mask_kind)


def _open_glas(cfg: ExperimentConfig, splits: tuple[str, ...]) -> SegmentationData:
    if cfg.synthetic:
        prepare_synthetic(cfg)
    return open_glas(cfg.data_path, cfg.splits_path, splits)


OPENERS: dict[str, Callable[[ExperimentConfig, tuple[str, ...]], SegmentationData]] = {
    "glas": _open_glas,
    "folder": _open_folder,
}


def check_data_folder(cfg: ExperimentConfig, workdir: str | Path = ".") -> None:
    """DataError, with the dataset's instructions, when ``data_path`` is no folder. Nothing is
    read, generated or written: a cheap check to run before refusing for another reason."""
    if not cfg.synthetic:
        require_folder(
            Path(workdir, cfg.data_path), {"glas": GLAS_HELP, "folder": FOLDER_HELP}[cfg.dataset]
        )


def open_dataset(cfg: ExperimentConfig, splits: tuple[str, ...]) -> SegmentationData:
    """The configured dataset with the rows of ``splits``; DataError, with instructions, when
    it is not there."""
    return OPENERS[cfg.dataset](cfg, splits)


def prepare_synthetic(cfg: ExperimentConfig) -> None:
    """Generate the demo's synthetic GlaS and its splits where they are absent.

    Runs of a sweep start together; a lock beside the data folder makes the first one generate
    and the others wait for it instead of reading half-written files.
    """
    data_path = Path(cfg.data_path)
    with waiting_lock(data_path.parent / f".{data_path.name}.lock"):
        _prepare_synthetic(cfg, data_path)


def _prepare_synthetic(cfg: ExperimentConfig, data_path: Path) -> None:
    height, width = cfg.synthetic_size
    n_train, n_test_a, n_test_b = cfg.synthetic_counts
    settings = {
        "n_train": n_train,
        "n_test_a": n_test_a,
        "n_test_b": n_test_b,
        "height": height,
        "width": width,
        "seed": 0,
        "rare_fraction": cfg.synthetic_rare_fraction,
    }
    manifest = data_path / "synthetic.json"
    fresh = not (data_path / "Grade.csv").exists()
    splits_path = Path(cfg.splits_path)
    present = all(split_csv_path(splits_path, s).exists() for s in SPLITS)
    if present and fresh and not _splits_of(splits_path, data_path):
        raise DataError(
            f"splits_path={splits_path} holds splits that were not written for the synthetic "
            f"GlaS at {data_path}; set splits_path to another folder, or delete those splits"
        )
    if fresh:
        generate_synthetic_glas(data_path, **settings)
        atomic_save_json(manifest, settings)
        print(f"generated synthetic GlaS in {data_path}", flush=True)
    elif manifest.exists() and json.loads(manifest.read_text()) != settings:
        raise DataError(
            f"{data_path} holds a synthetic GlaS generated with other settings "
            f"({manifest.read_text().strip()}); delete it or choose another data_path"
        )
    # New data gets new splits: those of the data it replaces would name other images.
    if fresh or not present:
        write_splits(data_path, splits_path, seed=0, option="splits_path=")
        atomic_save_json(splits_path / SPLITS_MARKER, {"data_path": str(data_path.resolve())})
        print(f"wrote splits to {splits_path}", flush=True)


# Beside the splits written for a synthetic GlaS: which data folder they are of, so that new
# data there replaces them and never the splits of another dataset.
SPLITS_MARKER = "synthetic_data.json"


def _splits_of(splits_path: Path, data_path: Path) -> bool:
    """Whether ``splits_path`` holds the splits written for the synthetic GlaS at ``data_path``."""
    try:
        written_for = json.loads((splits_path / SPLITS_MARKER).read_text())["data_path"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return written_for == str(data_path.resolve())
