"""The experiment's configuration: one dataclass that every entry point reads.

``active.py`` hands ``defaults()`` to Sacred, ``sweep.py`` validates its jobs against it, the
benches read their defaults from it, and docs/configuration.md's table is generated from it
(``python -m utils.config`` prints the table; a test fails when the page drifts).
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from typing import Any

from heuristics import resolve_heuristic
from heuristics.reductions import resolve_reduction
from heuristics.strategies import resolve_strategy
from utils.errors import UserError

MAX_CLASSES = 255  # masks are kept as uint8
MIN_PATCH_SIDE = 8
# Result names are file names and sweep tags: no spaces, no slashes.
TAG_PATTERN = re.compile(r"[A-Za-z0-9_.,=+-]*")
DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:[0-9]+)?")
# Heuristics that measure disagreement between MC samples: zero everywhere with one sample.
NEEDS_SAMPLES = frozenset({"bald", "variance", "variance_edt"})


class ConfigError(UserError, ValueError):
    """An invalid config value, with a one-line message naming the key and the fix."""


# A value's rule: a predicate and the words that complete "KEY must be ...".
Rule = tuple[Callable[[Any], bool], str]


def at_least(low: float) -> Rule:
    return (lambda v: v >= low), f">= {low}"


def above(low: float) -> Rule:
    return (lambda v: v > low), f"> {low}"


def fraction(high: float = 1) -> Rule:
    return (lambda v: 0 <= v < high), f"in [0, {high})"


def pair_of_at_least(low: int) -> Rule:
    return (lambda v: len(v) == 2 and min(v) >= low), f"[height, width] with both >= {low}"


def _key(
    default: Any, help: str, *, choices: tuple[str, ...] = (), rule: Rule | None = None
) -> Any:
    """A config field: its default, the one-line meaning shown in docs/configuration.md, and
    what ``validate`` accepts (``choices`` for a string, ``rule`` for a number or a list)."""
    metadata = {"help": help, "choices": choices, "rule": rule}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class ExperimentConfig:
    """Every key of ``python active.py with KEY=VALUE``; the defaults are the original study's
    protocol (Lubrano di Scandalea et al. 2019) except where a key's help says otherwise."""

    dataset: str = _key(
        "glas",
        "`glas` (GlaS as distributed) or `folder` (`images/`, `masks/`, optional `groups.csv`; "
        "docs/data.md, 'Your own images')",
        choices=("glas", "folder"),
    )
    data_path: str = _key(
        "data/GlaS", "folder with the GlaS BMPs and `Grade.csv`, or the `dataset=folder` folder"
    )
    splits_path: str = _key(
        "data/splits/glas",
        "folder with `train.csv`, `val.csv`, `test.csv`; `dataset=folder` left at this default "
        "(or `demo`'s) uses `DATA_PATH/splits`, written when absent",
    )
    mask_kind: str = _key(
        "class",
        "`dataset=folder`: masks hold `class` indices 0..C-1; `binary` and `instance` (ids) "
        "read every non-zero value as foreground",
        choices=("class", "binary", "instance"),
    )
    unannotated_value: int = _key(
        -1,
        "`active.py suggest` with `label_unit=region` and class masks: the mask value of pixels "
        "left unannotated (e.g. 255), so that a mask may cover only the suggested regions; -1: "
        "masks are whole",
        rule=((lambda v: -1 <= v <= 255), "-1 or in [0, 255]"),
    )
    synthetic: bool = _key(
        False, "generate a synthetic GlaS and its splits at `data_path` when absent"
    )
    synthetic_size: list[int] = _key(
        [96, 128],
        "synthetic images' usual `[height, width]`",
        rule=((lambda v: len(v) == 2 and min(v) >= 1), "[height, width], each >= 1"),
    )
    synthetic_counts: list[int] = _key(
        [16, 6, 4],
        "synthetic train, testA, testB image counts",
        rule=(
            lambda v: len(v) == 3 and v[0] >= 4 and min(v[1:]) >= 0 and v[1] + v[2] >= 1,
            "[train, testA, testB] with train >= 4 (split into train and val) and a test image",
        ),
    )
    synthetic_rare_fraction: float = _key(
        0.0,
        "share of synthetic train images in a rare tissue style (half the test images get it "
        "when > 0); 0 draws no rare style at all",
        rule=fraction(),
    )
    image_scale: float = _key(
        1.0,
        "resize images and masks at load time (0.5 or 0.25 for CPU runs); the smallest image must "
        "keep 32 pixels a side",
        rule=above(0),
    )
    patch_size: list[int] = _key(
        [416, 416],
        "training crop, shrunk to fit the smallest image",
        rule=pair_of_at_least(MIN_PATCH_SIDE),
    )
    batch_size: int = _key(16, "training patches per step", rule=at_least(1))
    n_label_start: int = _key(
        4, "initially labelled images, balanced benign / malignant", rule=at_least(1)
    )
    epochs: int = _key(60, "training epochs per cycle", rule=at_least(1))
    al_cycles: int = _key(15, "acquisition cycles after the initial training", rule=at_least(0))
    n_data_to_label: int = _key(
        1, "images labelled per cycle (per grade with `balance_al`)", rule=at_least(1)
    )
    n_suggest: int = _key(
        8,
        "`active.py suggest`: images to suggest (with `label_unit=region`: regions' worth)",
        rule=at_least(1),
    )
    mc_iters: int = _key(
        20, "MC-dropout samples for acquisition and test-time averaging", rule=at_least(1)
    )
    mc_samples_per_pass: int = _key(
        0,
        "MC samples stacked in one forward pass; 0 = auto: 1 on a CPU, 10 on a GPU",
        rule=at_least(0),
    )
    heuristic: str = _key(
        "bald",
        "acquisition heuristic: `bald`, `entropy` (`max`), `variance` (`mc`), `variance_edt`, "
        "`random` (`rand`); docs/acquisition.md",
    )
    reduction: str = _key("mean", "pixel map -> image score: `mean`, `topq`, `foreground`")
    topq_percent: float = _key(
        10.0,
        "`topq`: mean of this share (%) of the most uncertain pixels",
        rule=((lambda v: 0 < v <= 100), "in (0, 100]"),
    )
    foreground_band: int = _key(
        16,
        "`foreground`: band around predicted glands, in full-resolution pixels",
        rule=at_least(0),
    )
    strategy: str = _key(
        "topk",
        "selection from the scores: `topk`, `random`, `power`, `softmax`, `softrank`, "
        "`stratified_power`, `suggestive`, `coreset`",
    )
    temperature: float = _key(
        1.0,
        "`power`, `softmax`, `softrank`, `stratified_power`: sampling temperature 1/beta",
        rule=above(0),
    )
    suggestive_factor: int = _key(
        2,
        "`suggestive`: candidates per pick, taken by uncertainty before max-cover",
        rule=at_least(1),
    )
    label_unit: str = _key(
        "image",
        "what a pathologist labels: `image` (whole images) or `region` (tiles of `region_size`; "
        "a cycle spends the pixels of `n_data_to_label` average images, per grade with "
        "`balance_al`)",
        choices=("image", "region"),
    )
    region_size: list[int] = _key(
        [128, 128],
        "`region`: tile `[height, width]` at full resolution, scaled by `image_scale`",
        rule=pair_of_at_least(MIN_PATCH_SIDE),
    )
    region_shape: str = _key(
        "tile",
        "`region`: `tile` (the grid of `region_size`) or `superpixel` (SLIC segments of about "
        "that area, which follow tissue boundaries)",
        choices=("tile", "superpixel"),
    )
    model_selection: str = _key(
        "val",
        "`val`: weights of the best validation loss; `last`: last epoch; `ema`: average of the "
        "weights over the last quarter of the steps (a plain mean of its first 1/(1 - "
        "`ema_decay`) steps, an exponential moving average after); the last two read no "
        "validation labels",
        choices=("val", "last", "ema"),
    )
    ema_decay: float = _key(
        0.99,
        "`ema` and `mean_teacher`: EMA decay per step (Tarvainen & Valpola 2017; UA-MT)",
        rule=fraction(),
    )
    semi: str = _key(
        "none",
        "learn from the unlabelled pool too: `none`, `pseudo` (confident MC-dropout "
        "pseudo-labels, CEAL) or `mean_teacher` (uncertainty-masked consistency, UA-MT)",
        choices=("none", "pseudo", "mean_teacher"),
    )
    pseudo_threshold: float = _key(
        0.005,
        "`pseudo`: a pool pixel gets a label when the entropy of its MC-mean prediction is "
        "below this (nats; CEAL's initial threshold)",
    )
    pseudo_weight: float = _key(
        1.0, "`pseudo`: weight of the pseudo-labelled loss (CEAL: 1)", rule=at_least(0)
    )
    consistency_weight: float = _key(
        0.1,
        "`mean_teacher`: final weight of the consistency loss, ramped up (UA-MT: 0.1)",
        rule=at_least(0),
    )
    run: int = _key(0, "run index; fixes all seeds", rule=at_least(0))
    seed: int = _key(0, "Sacred's seed; `active.py` ties it to `run`")
    results_dir: str = _key("results", "where results, records, run states and locks go")
    tag: str = _key(
        "",
        "extra part of the result names, `{name}@{tag}_{run}`; `sweep.py --grid` sets it to "
        "the swept values",
        rule=(
            lambda v: TAG_PATTERN.fullmatch(v) is not None,
            "letters, digits and . , = + - only (no spaces or slashes)",
        ),
    )
    balance_al: bool = _key(True, "acquire `n_data_to_label` of each grade per cycle")
    num_classes: int = _key(
        2,
        "background and gland; `dataset=folder` with class masks: background + classes",
        rule=((lambda v: 2 <= v <= MAX_CLASSES), f"in [2, {MAX_CLASSES}]"),
    )
    lr: float = _key(0.1, "SGD learning rate", rule=above(0))
    momentum: float = _key(0.9, "SGD momentum", rule=fraction())
    nesterov: bool = _key(True, "Nesterov momentum (needs `momentum` > 0)")
    weight_decay: float = _key(1e-4, "SGD L2 weight decay", rule=at_least(0))
    lr_step_size: int = _key(40, "epochs between learning-rate decays (`StepLR`)", rule=at_least(1))
    lr_gamma: float = _key(0.1, "learning-rate factor at each decay", rule=above(0))
    dropout: float = _key(0.1, "dropout after every UNet block", rule=fraction())
    base_width: int = _key(
        16, "UNet channels at full resolution (doubled at each of 5 levels)", rule=at_least(1)
    )
    device: str = _key(
        "auto",
        "`auto` (CUDA when available), `cpu`, `cuda`, `cuda:N`",
        rule=(lambda v: DEVICE_PATTERN.fullmatch(v) is not None, "auto, cpu, cuda or cuda:N"),
    )
    precision: str = _key(
        "auto", "`auto` (bf16 where supported), `bf16`, `fp32`", choices=("auto", "bf16", "fp32")
    )
    num_workers: int = _key(0, "DataLoader workers for training augmentation", rule=at_least(0))
    augment_on: str = _key(
        "auto",
        "where training batches are augmented: `loader` (the DataLoader, on the CPU), `device` "
        "(in batches on the GPU; whole-image labelling only), `auto` (device on a GPU)",
        choices=("auto", "loader", "device"),
    )
    full_supervision: bool = _key(
        False, "train once on the whole train split, write `full_{run}.*`"
    )
    save_maps: bool = _key(
        False, "per cycle, uncertainty-map PNGs of the acquired images, acquired regions outlined"
    )
    save_uncerts: bool = _key(False, "per cycle, a PNG of the pool's score distribution")
    overwrite: bool = _key(
        False, "start this run afresh, replacing its results and state even when they would resume"
    )
    progress: bool = _key(True, "tqdm progress bars")

    @classmethod
    def from_mapping(cls, config: dict[str, Any]) -> ExperimentConfig:
        """Build from a full mapping (Sacred's ``_config``); keys it does not know are ignored."""
        return cls(**{f.name: config[f.name] for f in fields(cls) if f.name in config})


# Named configs (``python active.py with demo``): partial updates of the defaults.
NAMED_CONFIGS: dict[str, dict[str, Any]] = {
    # Synthetic GlaS, a narrow UNet, few epochs: a complete run in about 30 s on 2 CPU cores.
    "demo": {
        # Apart from the real runs' results/, so that trying the demo first leaves no bald_0
        # there for a GlaS run of the same name to clash with.
        "results_dir": "results/demo",
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
# (the figures are drawn after each selection and change nothing in it; a run's files may be
# moved or copied to another results_dir and continued there).
IGNORED_FOR_RESUME = frozenset(
    {"overwrite", "progress", "results_dir", "save_maps", "save_uncerts"}
)


def defaults() -> dict[str, Any]:
    return asdict(ExperimentConfig())


def merged(named_configs: Sequence[str] = (), updates: Mapping[str, Any] | None = None) -> dict:
    """A run's whole config: the defaults, each named config in order, then ``updates``; the
    seed follows ``run``. Sacred builds the same for ``active.py with NAMED KEY=VALUE`` (a test
    holds the two together), so a sweep's job knows its config without starting Sacred."""
    config = defaults()
    for name in named_configs:
        config.update(NAMED_CONFIGS[name])
    config.update(updates or {})
    config["seed"] = config["run"]
    return config


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
    # Every list key holds whole numbers (sizes and counts).
    return (
        "a list of integers",
        lambda v: (
            isinstance(v, list | tuple)
            and all(isinstance(x, int) and not isinstance(x, bool) for x in v)
        ),
    )


def unknown_key(key: str) -> str | None:
    """The refusal of a key that is not in the config, with the likely fix; None if it is."""
    known = defaults()
    if key in known:
        return None
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown config key {key!r}; {hint}`python -m utils.config` lists every key"


def check_config(values: Mapping[str, Any]) -> None:
    """``ValueError`` naming the first unknown key or mistyped value, with the fix."""
    known = defaults()
    for key, value in values.items():
        problem = unknown_key(key)
        if problem:
            raise ValueError(problem)
        description, fits = _kind(known[key])
        if not fits(value):
            raise ValueError(f"{key} must be {description} (default {known[key]!r}), got {value!r}")


def choices(key: str) -> tuple[str, ...]:
    """The values ``key`` accepts, as its field declares them."""
    return next(f.metadata["choices"] for f in fields(ExperimentConfig) if f.name == key)


def validate(cfg: ExperimentConfig) -> ExperimentConfig:
    """Refuse, in one line, a value that would only fail later; return the config with the
    heuristic's canonical name (an alias such as ``mc`` becomes ``variance``)."""
    try:
        check_config(asdict(cfg))
        heuristic = resolve_heuristic(cfg.heuristic)
        resolve_strategy(cfg.strategy)
        resolve_reduction(cfg.reduction)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        allowed, rule = f.metadata["choices"], f.metadata["rule"]
        if allowed and value not in allowed:
            raise ConfigError(f"{f.name} must be one of {', '.join(allowed)}, got {value!r}")
        if rule is not None and not rule[0](value):
            raise ConfigError(f"{f.name} must be {rule[1]}, got {value!r}")
    max_entropy = math.log(cfg.num_classes)
    across_keys = [
        (
            cfg.num_classes == 2 or cfg.dataset == "folder",
            "num_classes must be 2 (gland vs background) for GlaS; more classes need "
            "dataset=folder with class masks",
        ),
        (
            cfg.num_classes == 2 or cfg.mask_kind == "class",
            f"mask_kind={cfg.mask_kind} gives two classes (background, foreground); set "
            "num_classes=2, "
            f"got {cfg.num_classes}",
        ),
        (
            cfg.unannotated_value < 0 or cfg.mask_kind == "class",
            f"unannotated_value needs mask_kind=class, where a value beyond the classes is free "
            f"(got mask_kind={cfg.mask_kind}); save binary masks as 0/1 and leave out 255",
        ),
        (
            cfg.unannotated_value < 0 or cfg.unannotated_value >= cfg.num_classes,
            f"unannotated_value={cfg.unannotated_value} is also a class of the masks; use a "
            "value that no class has, such as 255",
        ),
        (
            not cfg.synthetic or cfg.dataset == "glas",
            "synthetic generates a GlaS; use it with dataset=glas",
        ),
        (
            cfg.momentum > 0 or not cfg.nesterov,
            "nesterov=True needs momentum > 0; set momentum (0.9 is the default) or nesterov=False",
        ),
        (
            cfg.dropout > 0 or heuristic not in NEEDS_SAMPLES,
            f"{heuristic} measures disagreement between MC-dropout samples, which is zero with "
            "dropout=0; set dropout > 0 (0.1 is the default)",
        ),
        (
            cfg.mc_iters >= 2 or heuristic not in NEEDS_SAMPLES,
            f"{heuristic} measures disagreement between MC-dropout samples, which is zero with "
            f"mc_iters={cfg.mc_iters}; set mc_iters >= 2 (20 is the default)",
        ),
        (
            0 < cfg.pseudo_threshold <= max_entropy,
            f"pseudo_threshold must be in (0, ln(num_classes) = {max_entropy:.3f}] nats, got "
            f"{cfg.pseudo_threshold}",
        ),
    ]
    for ok, message in across_keys:
        if not ok:
            raise ConfigError(message)
    return replace(cfg, heuristic=heuristic)


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
