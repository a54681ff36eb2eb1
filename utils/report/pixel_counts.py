"""Labelled-pixel counts for whole-image records written before runs counted pixels.

A whole-image run spends whole images, so its pixel counts follow from which images it labelled
(the initial set, drawn from ``run`` exactly as the loop draws it, then each cycle's ``acquired``
names) and from the images' sizes at the run's ``image_scale``. This adds ``labelled_pixels``,
``labelled_fraction`` and ``label_unit`` to such records, so that the report can compare them
with region runs on the pixel axis. Nothing else in a record changes.

    python -m utils.report.pixel_counts RESULTS_DIR [--data-path P --splits-path S]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from data.datasets import open_dataset
from heuristics.strategies import initial_labelled
from utils.config import ExperimentConfig
from utils.errors import UserError
from utils.io import atomic_save_json


class PixelCountError(UserError, ValueError):
    """A record whose labelled images cannot be reconstructed."""


def counts_of(
    record: dict[str, Any], names: list[str], grades: np.ndarray, pixels: np.ndarray
) -> tuple[list[int], list[float]]:
    """``(labelled_pixels, labelled_fraction)`` per cycle of an image run's ``record``.

    ``names``, ``grades`` and ``pixels`` describe the train pool in split order, as the run
    loaded it. Each cycle's count must match the record's ``n_labelled``.
    """
    config = record["config"]
    if config.get("full_supervision"):
        labelled = set(range(len(names)))
    else:
        rng = np.random.default_rng(config["run"])
        labelled = set(initial_labelled(grades, config["n_label_start"], rng).tolist())
    index = {name: i for i, name in enumerate(names)}
    total = float(pixels.sum())
    labelled_pixels: list[int] = []
    for cycle, expected in enumerate(record["n_labelled"]):
        if cycle > 0:
            for item in record["acquired"][cycle - 1]:
                if item["name"] not in index:
                    raise PixelCountError(f"{item['name']} is not in the train split")
                labelled.add(index[item["name"]])
        if len(labelled) != expected:
            raise PixelCountError(
                f"cycle {cycle}: {len(labelled)} images reconstructed, the record says {expected}"
            )
        labelled_pixels.append(int(pixels[sorted(labelled)].sum()))
    return labelled_pixels, [p / total for p in labelled_pixels]


def add_pixel_counts(
    folder: Path, data_path: str | None = None, splits_path: str | None = None
) -> list[str]:
    """Fill in every image record of ``folder`` that has no pixel counts; returns their names."""
    pools: dict[tuple[str, str, float], tuple[list[str], np.ndarray, np.ndarray]] = {}
    filled = []
    for path in sorted(folder.glob("*.json")):
        if path.name.endswith(".state.json"):
            continue
        try:
            record = json.loads(path.read_text())
        except ValueError as err:
            raise PixelCountError(f"malformed JSON in {path}: {err}") from None
        if "config" not in record or record.get("label_unit", "image") != "image":
            continue
        if record.get("labelled_fraction"):
            continue
        config = record["config"]
        missing = [k for k in ("data_path", "splits_path", "image_scale") if k not in config]
        if missing or isinstance(config["image_scale"], bool | str):
            what = f"no {missing[0]!r}" if missing else "a non-numeric 'image_scale'"
            raise PixelCountError(f"{path}: its config has {what}; it was not written by active.py")
        key = (
            data_path or config["data_path"],
            splits_path or config["splits_path"],
            float(config["image_scale"]),
        )
        if key not in pools:
            updates = {"data_path": key[0], "splits_path": key[1], "image_scale": key[2]}
            cfg = ExperimentConfig.from_mapping({**config, **updates})
            store = open_dataset(cfg, ("train",)).store("train", cfg.image_scale)
            pools[key] = (list(store.names), store.labels, store.pixels)
        try:
            labelled_pixels, fraction = counts_of(record, *pools[key])
        except PixelCountError as err:
            raise PixelCountError(f"{path}: {err}") from None
        except (KeyError, IndexError, TypeError) as err:
            raise PixelCountError(
                f"{path}: the record lacks what active.py writes ({type(err).__name__}: {err}); "
                "rerun the run, or move its .npy and .json out of the folder"
            ) from None
        record.update(
            label_unit="image", labelled_pixels=labelled_pixels, labelled_fraction=fraction
        )
        atomic_save_json(path, record)
        filled.append(path.stem)
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="folder of {name}_{run}.json records")
    parser.add_argument("--data-path", help="data folder (default: each record's data_path)")
    parser.add_argument("--splits-path", help="splits folder (default: each record's)")
    args = parser.parse_args(argv)
    try:
        filled = add_pixel_counts(args.folder, args.data_path, args.splits_path)
    except (UserError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"added pixel counts to {len(filled)} records: {', '.join(filled) or '-'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
