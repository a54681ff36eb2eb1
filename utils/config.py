"""The experiment's configuration: one dataclass that every entry point reads.

``active.py`` hands ``defaults()`` to Sacred, ``sweep.py`` validates its jobs against it, the
benches read their defaults from it, and docs/configuration.md's table is generated from it
(``python -m utils.config`` prints the table; a test fails when the page drifts).
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any


def _key(default: Any, help: str) -> Any:
    """A config field with its default and the one-line meaning shown in docs/configuration.md."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class ExperimentConfig:
    """Every key of ``python active.py with KEY=VALUE``; the defaults are the original study's
    protocol (Lubrano di Scandalea et al. 2019) except where a key's help says otherwise."""

    dataset: str = _key(
        "glas",
        "`glas` (GlaS as distributed) or `folder` (`images/`, `masks/`, optional `groups.csv`; "
        "docs/data.md, 'Your own images')",
    )
    data_path: str = _key(
        "data/GlaS", "folder with the GlaS BMPs and `Grade.csv`, or the `dataset=folder` folder"
    )
    splits_path: str = _key(
        "data/splits/glas",
        "folder with `train.csv`, `val.csv`, `test.csv`; `dataset=folder` left at this default "
        "uses `DATA_PATH/splits`, written when absent",
    )
    mask_kind: str = _key(
        "class",
        "`dataset=folder`: masks hold `class` indices 0..C-1, or `instance` ids (foreground)",
    )
    synthetic: bool = _key(
        False, "generate a synthetic GlaS and its splits at `data_path` when absent"
    )
    synthetic_size: list[int] = _key([96, 128], "synthetic images' usual `[height, width]`")
    synthetic_counts: list[int] = _key([16, 6, 4], "synthetic train, testA, testB image counts")
    synthetic_rare_fraction: float = _key(
        0.0,
        "share of synthetic train images in a rare tissue style (half the test images get it "
        "when > 0); 0 keeps the data bitwise as before",
    )
    image_scale: float = _key(
        1.0,
        "resize images and masks at load time (0.5 or 0.25 for CPU runs); the smallest image must "
        "keep 32 pixels a side",
    )
    patch_size: list[int] = _key([416, 416], "training crop, shrunk to fit the smallest image")
    batch_size: int = _key(16, "training patches per step")
    n_label_start: int = _key(4, "initially labelled images, balanced benign / malignant")
    epochs: int = _key(60, "training epochs per cycle")
    al_cycles: int = _key(15, "acquisition cycles after the initial training")
    n_data_to_label: int = _key(1, "images labelled per cycle (per grade with `balance_al`)")
    n_suggest: int = _key(
        8, "`active.py suggest`: images to suggest (with `label_unit=region`: regions' worth)"
    )
    mc_iters: int = _key(20, "MC-dropout samples for acquisition and test-time averaging")
    mc_samples_per_pass: int = _key(
        0, "MC samples stacked in one forward pass; 0 = auto: 1 on a CPU, 10 on a GPU"
    )
    heuristic: str = _key("bald", "acquisition heuristic, see the table above")
    reduction: str = _key("mean", "pixel map -> image score: `mean`, `topq`, `foreground`")
    topq_percent: float = _key(10.0, "`topq`: mean of this share (%) of the most uncertain pixels")
    foreground_band: int = _key(
        16, "`foreground`: band around predicted glands, in full-resolution pixels"
    )
    strategy: str = _key(
        "topk",
        "selection from the scores: `topk`, `random`, `power`, `softmax`, `softrank`, "
        "`stratified_power`, `suggestive`, `coreset`",
    )
    temperature: float = _key(
        1.0, "`power`, `softmax`, `softrank`, `stratified_power`: sampling temperature 1/beta"
    )
    suggestive_factor: int = _key(
        2, "`suggestive`: candidates per pick, taken by uncertainty before max-cover"
    )
    label_unit: str = _key(
        "image",
        "what a pathologist labels: `image` (whole images) or `region` (tiles of `region_size`; "
        "a cycle spends the pixels of `n_data_to_label` average images per grade)",
    )
    region_size: list[int] = _key(
        [128, 128], "`region`: tile `[height, width]` at full resolution, scaled by `image_scale`"
    )
    region_shape: str = _key(
        "tile",
        "`region`: `tile` (the grid of `region_size`) or `superpixel` (SLIC segments of about "
        "that area, which follow tissue boundaries)",
    )
    model_selection: str = _key(
        "val",
        "`val`: weights of the best validation loss; `last`: last epoch; `ema`: exponential "
        "moving average of the weights (`ema_decay`); the last two read no validation labels",
    )
    ema_decay: float = _key(
        0.99, "`ema` and `mean_teacher`: EMA decay per step (Tarvainen & Valpola 2017; UA-MT)"
    )
    semi: str = _key(
        "none",
        "learn from the unlabelled pool too: `none`, `pseudo` (confident MC-dropout "
        "pseudo-labels, CEAL) or `mean_teacher` (uncertainty-masked consistency, UA-MT)",
    )
    pseudo_threshold: float = _key(
        0.005,
        "`pseudo`: a pool pixel gets a label when the entropy of its MC-mean prediction is "
        "below this (nats; CEAL's initial threshold)",
    )
    pseudo_weight: float = _key(1.0, "`pseudo`: weight of the pseudo-labelled loss (CEAL: 1)")
    consistency_weight: float = _key(
        0.1, "`mean_teacher`: final weight of the consistency loss, ramped up (UA-MT: 0.1)"
    )
    run: int = _key(0, "run index; fixes all seeds")
    seed: int = _key(0, "Sacred's seed; `active.py` ties it to `run`")
    results_dir: str = _key("results", "where results, records, run states and locks go")
    tag: str = _key(
        "",
        "extra part of the result names, `{heuristic}@{tag}_{run}`; `sweep.py --grid` sets it to "
        "the swept values",
    )
    balance_al: bool = _key(True, "acquire `n_data_to_label` of each grade per cycle")
    num_classes: int = _key(
        2, "background and gland; `dataset=folder` with class masks: background + classes"
    )
    lr: float = _key(0.1, "SGD learning rate")
    momentum: float = _key(0.9, "SGD momentum")
    nesterov: bool = _key(True, "Nesterov momentum")
    weight_decay: float = _key(1e-4, "SGD L2 weight decay")
    lr_step_size: int = _key(40, "epochs between learning-rate decays (`StepLR`)")
    lr_gamma: float = _key(0.1, "learning-rate factor at each decay")
    dropout: float = _key(0.1, "dropout after every UNet block")
    base_width: int = _key(16, "UNet channels at full resolution (doubled at each of 5 levels)")
    device: str = _key("auto", "`auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`")
    precision: str = _key("auto", "`auto` (bf16 where supported), `bf16`, `fp32`")
    num_workers: int = _key(0, "DataLoader workers for training augmentation")
    augment_on: str = _key(
        "auto",
        "where training batches are augmented: `loader` (CPU workers), `device` (in batches on "
        "the GPU), `auto` (device on a GPU, loader on a CPU)",
    )
    full_supervision: bool = _key(
        False, "train once on the whole train split, write `full_{run}.*`"
    )
    save_maps: bool = _key(
        False, "per cycle, uncertainty-map PNGs of the acquired images, acquired regions outlined"
    )
    save_uncerts: bool = _key(False, "per cycle, a PNG of the pool's score distribution")
    overwrite: bool = _key(False, "replace this run's results made with another config")
    progress: bool = _key(True, "tqdm progress bars")

    @classmethod
    def from_mapping(cls, config: dict[str, Any]) -> ExperimentConfig:
        """Build from a full mapping (Sacred's ``_config``); keys it does not know are ignored."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


# Named configs (``python active.py with demo``): partial updates of the defaults.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Synthetic GlaS, a narrow UNet, few epochs: a complete run in about a minute on 2 CPU cores.
    "demo": {
        "data_path": "data/synthetic/GlaS-rare",
        "splits_path": "data/synthetic/splits-rare",
        "synthetic": True,
        "patch_size": [64, 64],
        "batch_size": 8,
        "base_width": 8,
        "synthetic_counts": [40, 10, 10],
        "synthetic_rare_fraction": 0.125,
        "epochs": 8,
        "al_cycles": 4,
        "mc_iters": 4,
        "lr_step_size": 6,
        "region_size": [24, 24],  # the demo's images are 96x128 (77x102 for the small ones)
    },
    # Train once on the whole train split: the reference the learning curves aim for.
    "full_supervision": {"full_supervision": True},
}

# Keys that change neither what is computed nor its result, so a resumed run may differ in them
# (the figures are drawn after each selection and change nothing in it).
IGNORED_FOR_RESUME = frozenset({"overwrite", "progress", "save_maps", "save_uncerts"})


def defaults() -> dict[str, Any]:
    return asdict(ExperimentConfig())


def _kind(default: Any) -> tuple[str, Any]:
    """What a key's value must be, judged by its default: (description, predicate)."""
    if isinstance(default, bool):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(default, int):
        return "an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(default, float):
        return "a number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    if isinstance(default, str):
        return "a string", lambda v: isinstance(v, str)
    return "a list", lambda v: isinstance(v, list | tuple)


def check_config(values: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first unknown key or mistyped value, with the fix."""
    known = defaults()
    for key, value in values.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(
                f"unknown config key {key!r}; {hint}`python -m utils.config` lists every key"
            )
        description, fits = _kind(known[key])
        if not fits(value):
            raise ValueError(f"{key} must be {description} (default {known[key]!r}), got {value!r}")


def _markdown_value(value: Any) -> str:
    if isinstance(value, str):
        return f"`{value}`" if value else '`""`'
    return f"`{value!r}`".replace("'", "")


def config_table() -> str:
    """docs/configuration.md's table, one row per key."""
    lines = ["| key | default | meaning |", "|---|---|---|"]
    for f in fields(ExperimentConfig):
        default = f.default_factory() if f.default is MISSING else f.default  # type: ignore[misc]
        lines.append(f"| `{f.name}` | {_markdown_value(default)} | {f.metadata['help']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(config_table() + "\n")
