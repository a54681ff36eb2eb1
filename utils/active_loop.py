"""The label -> train -> acquire loop, as a plain function of an explicit config.

``active.py`` only wires Sacred to this; everything here can be called and tested without it.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baal.active import ActiveLearningDataset

from data.create_splits import write_splits
from data.device_augment import DeviceAugmenter
from data.folder import MASK_KINDS, open_folder
from data.glas import open_glas, split_csv_path
from data.partial_masks import PartialMaskDataset
from data.regions import RegionLabels, superpixel_segments
from data.segmentation import (
    SPLITS,
    DataError,
    ImageStore,
    SegmentationData,
    SegmentationDataset,
)
from data.synthetic import generate_synthetic_glas
from data.transforms import effective_patch_size, train_transform
from heuristics import RANDOM, resolve_heuristic
from heuristics.reductions import ReductionSettings, resolve_reduction
from heuristics.strategies import resolve_strategy
from models import UNet, mc_dropout_copy
from utils.acquisition import AcquisitionContext, acquire, acquire_regions
from utils.config import ExperimentConfig, check_config
from utils.device import pick_device, resolve_precision, samples_per_pass
from utils.errors import UserError
from utils.inference import MCSettings, evaluate_bma
from utils.io import atomic_save_json
from utils.run_lock import run_lock, waiting_lock
from utils.run_state import (
    TAG_PATTERN,
    History,
    ResumeError,
    RunPaths,
    RunState,
    jsonable,
    load_state,
    result_name,
    save_cycle,
)
from utils.semi import SEMI_METHODS, PoolCrops, PseudoLabelBank
from utils.training import SemiTraining, TrainSettings, train_model

FULL_SUPERVISION_NAME = "full"
MODEL_SELECTIONS = ("val", "last", "ema")
DATASETS = ("glas", "folder")
MAX_CLASSES = 255  # masks are kept as uint8


class ConfigError(UserError, ValueError):
    """An invalid config value, with a one-line message naming the key and the fix."""


Logger = Callable[[str, float, int], None]
ArtifactSink = Callable[[Path], None]


def _say(message: str) -> None:
    print(message, flush=True)


def validate(cfg: ExperimentConfig) -> str:
    """Check values that would only fail later; return the canonical heuristic name."""
    try:
        check_config(asdict(cfg))
        heuristic = resolve_heuristic(cfg.heuristic)
        resolve_strategy(cfg.strategy)
        resolve_reduction(cfg.reduction)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    checks = [
        (cfg.n_data_to_label >= 1, f"n_data_to_label must be >= 1, got {cfg.n_data_to_label}"),
        (cfg.n_label_start >= 1, f"n_label_start must be >= 1, got {cfg.n_label_start}"),
        (
            cfg.mc_iters >= 1,
            f"mc_iters must be >= 1 (MC samples for test-time averaging and for {heuristic}), "
            f"got {cfg.mc_iters}",
        ),
        (cfg.mc_samples_per_pass >= 0, "mc_samples_per_pass must be >= 0 (0 = auto)"),
        (cfg.epochs >= 1, f"epochs must be >= 1, got {cfg.epochs}"),
        (cfg.al_cycles >= 0, f"al_cycles must be >= 0, got {cfg.al_cycles}"),
        (cfg.batch_size >= 1, f"batch_size must be >= 1, got {cfg.batch_size}"),
        (cfg.image_scale > 0, f"image_scale must be > 0, got {cfg.image_scale}"),
        (
            TAG_PATTERN.fullmatch(cfg.tag) is not None,
            f"tag may hold only letters, digits and . , = + - (no spaces or slashes), got "
            f"{cfg.tag!r}",
        ),
        (
            len(cfg.patch_size) == 2 and min(cfg.patch_size) >= 8,
            f"patch_size must be [height, width] with both >= 8, got {cfg.patch_size}",
        ),
        (
            cfg.dataset in DATASETS,
            f"dataset must be one of {', '.join(DATASETS)}, got {cfg.dataset!r}",
        ),
        (
            cfg.mask_kind in MASK_KINDS,
            f"mask_kind must be one of {', '.join(MASK_KINDS)}, got {cfg.mask_kind!r}",
        ),
        (
            cfg.num_classes == 2 or cfg.dataset == "folder",
            "num_classes must be 2 (gland vs background) for GlaS; more classes need "
            "dataset=folder with class masks",
        ),
        (
            2 <= cfg.num_classes <= MAX_CLASSES,
            f"num_classes must be in [2, {MAX_CLASSES}] (background and at least one class), got "
            f"{cfg.num_classes}",
        ),
        (
            cfg.num_classes == 2 or cfg.mask_kind == "class",
            f"mask_kind=instance gives two classes (background, foreground); set num_classes=2, "
            f"got {cfg.num_classes}",
        ),
        (
            not cfg.synthetic or cfg.dataset == "glas",
            "synthetic generates a GlaS; use it with dataset=glas",
        ),
        (0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}"),
        (cfg.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
        (
            cfg.label_unit in ("image", "region"),
            f"label_unit must be image or region, got {cfg.label_unit!r}",
        ),
        (
            cfg.region_shape in ("tile", "superpixel"),
            f"region_shape must be tile or superpixel, got {cfg.region_shape!r}",
        ),
        (
            len(cfg.region_size) == 2 and min(cfg.region_size) >= 8,
            f"region_size must be [height, width] with both >= 8, got {cfg.region_size}",
        ),
        (
            cfg.augment_on in ("auto", "loader", "device"),
            f"augment_on must be auto, loader or device, got {cfg.augment_on!r}",
        ),
        (
            cfg.model_selection in MODEL_SELECTIONS,
            f"model_selection must be one of {', '.join(MODEL_SELECTIONS)}, got "
            f"{cfg.model_selection!r}",
        ),
        (
            0 < cfg.topq_percent <= 100,
            f"topq_percent must be in (0, 100], got {cfg.topq_percent}",
        ),
        (cfg.foreground_band >= 0, f"foreground_band must be >= 0, got {cfg.foreground_band}"),
        (cfg.temperature > 0, f"temperature must be > 0, got {cfg.temperature}"),
        (
            cfg.suggestive_factor >= 1,
            f"suggestive_factor must be >= 1, got {cfg.suggestive_factor}",
        ),
        (
            0 <= cfg.synthetic_rare_fraction < 1,
            f"synthetic_rare_fraction must be in [0, 1), got {cfg.synthetic_rare_fraction}",
        ),
        (
            cfg.semi in SEMI_METHODS,
            f"semi must be one of {', '.join(SEMI_METHODS)}, got {cfg.semi!r}",
        ),
        (
            0 < cfg.pseudo_threshold <= math.log(max(cfg.num_classes, 2)),
            f"pseudo_threshold must be in (0, ln(num_classes) = "
            f"{math.log(max(cfg.num_classes, 2)):.3f}] nats, got {cfg.pseudo_threshold}",
        ),
        (cfg.pseudo_weight >= 0, f"pseudo_weight must be >= 0, got {cfg.pseudo_weight}"),
        (
            cfg.consistency_weight >= 0,
            f"consistency_weight must be >= 0, got {cfg.consistency_weight}",
        ),
        (0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1), got {cfg.ema_decay}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return heuristic


def region_tile(cfg: ExperimentConfig, store: ImageStore) -> tuple[int, int]:
    """``region_size`` at the loaded scale; refused when under 8 pixels or over the image."""
    tile = (
        round(cfg.region_size[0] * cfg.image_scale),
        round(cfg.region_size[1] * cfg.image_scale),
    )
    smallest = store.min_size
    if min(tile) < 8 or tile[0] > smallest[0] or tile[1] > smallest[1]:
        raise ConfigError(
            f"region_size={cfg.region_size} at image_scale={cfg.image_scale} gives "
            f"{tile[0]}x{tile[1]}-pixel regions; they must be at least 8 pixels and fit the "
            f"smallest train image ({smallest[0]}x{smallest[1]}): change region_size"
        )
    return tile


MIN_IMAGE_SIDE = 32  # five 2x poolings leave a 1-pixel bottleneck; smaller is meaningless


def check_scaled_size(stores: dict[str, ImageStore], image_scale: float) -> None:
    smallest = min(min(store.min_size) for store in stores.values())
    if smallest < MIN_IMAGE_SIDE:
        lowest = image_scale * MIN_IMAGE_SIDE / max(smallest, 1)
        raise ConfigError(
            f"image_scale={image_scale} leaves the smallest image {smallest} pixels on a side, "
            f"under the {MIN_IMAGE_SIDE} a segmentation needs; use image_scale >= {lowest:.2g}"
        )


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
    if not (data_path / "Grade.csv").exists():
        generate_synthetic_glas(data_path, **settings)
        atomic_save_json(manifest, settings)
        _say(f"generated synthetic GlaS in {data_path}")
    elif manifest.exists() and json.loads(manifest.read_text()) != settings:
        raise ConfigError(
            f"{data_path} holds a synthetic GlaS generated with other settings "
            f"({manifest.read_text().strip()}); delete it or choose another data_path"
        )
    if not all(split_csv_path(cfg.splits_path, s).exists() for s in SPLITS):
        write_splits(data_path, cfg.splits_path, seed=0)
        _say(f"wrote splits to {cfg.splits_path}")


def initial_labelled(grades: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` train indices balanced over benign / malignant, drawn with the run's generator."""
    classes = np.unique(grades)
    chosen: list[int] = []
    for i, c in enumerate(classes):
        share = n // len(classes) + (1 if i < n % len(classes) else 0)
        members = np.flatnonzero(grades == c)
        chosen += rng.choice(members, min(share, len(members)), replace=False).tolist()
    rest = np.setdiff1d(np.arange(len(grades)), chosen)
    chosen += rng.choice(rest, n - len(chosen), replace=False).tolist()
    return np.array(sorted(chosen))


def seed_cycle(run: int, cycle: int) -> torch.Generator:
    """Seed every generator from (run, cycle) alone, so a resumed cycle replays exactly."""
    seed = run * 100_003 + cycle
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def run_active_learning(
    cfg: ExperimentConfig,
    log_scalar: Logger = lambda name, value, step: None,
    add_artifact: ArtifactSink = lambda path: None,
) -> np.ndarray:
    """Run (or resume) one active-learning run; return the test Dice per cycle.

    The run holds an OS lock on ``{stem}.lock`` throughout, so a second process on the same run
    is refused (``RunLockedError``) instead of writing the same files.
    """
    heuristic = validate(cfg)
    paths = run_paths(cfg, heuristic)
    make_results_dir(paths.results_dir)
    with run_lock(paths.lock):
        return _run_locked(cfg, heuristic, paths, log_scalar, add_artifact)


def run_paths(cfg: ExperimentConfig, heuristic: str) -> RunPaths:
    """Where the run with this (validated) config keeps its files."""
    config = run_record_config(cfg, heuristic)
    return RunPaths(Path(cfg.results_dir), f"{result_name(config)}_{cfg.run}")


def run_record_config(cfg: ExperimentConfig, heuristic: str) -> dict[str, Any]:
    """The config as the run's state and record keep it: canonical names, JSON types.

    Random selection is one thing however it is asked for (``heuristic=random`` or
    ``strategy=random``), so it is recorded as heuristic and strategy ``random`` with the default
    reduction: a sweep over strategies then shares one ``random_{run}`` baseline.
    """
    config = {f.name: getattr(cfg, f.name) for f in fields(cfg)}
    if cfg.full_supervision:
        config["heuristic"] = FULL_SUPERVISION_NAME
    elif heuristic == RANDOM or cfg.strategy == RANDOM:
        config.update(heuristic=RANDOM, strategy=RANDOM, reduction="mean")
    else:
        config["heuristic"] = heuristic
    return jsonable(config)


def make_results_dir(results_dir: Path) -> None:
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        probe = results_dir / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise ConfigError(
            f"results_dir={results_dir} cannot be created or written ({err.strerror}); "
            "choose a writable folder"
        ) from None


@dataclass
class RunSetup:
    """What a run builds once, before its first cycle: data, model and the settings of each
    step. Built from the config alone, so a resumed run rebuilds the same one."""

    stores: dict[str, ImageStore]  # split -> images; "val" only with model_selection=val
    regions: RegionLabels | None  # None when labelling whole images
    al_set: ActiveLearningDataset
    val_set: SegmentationDataset | None
    test_set: SegmentationDataset
    class_names: tuple[str, ...]  # background first
    patch: tuple[int, int]
    model: UNet
    initial_weights: dict[str, torch.Tensor]
    device: torch.device
    amp_dtype: torch.dtype | None
    train_settings: TrainSettings
    mc_settings: MCSettings
    context: AcquisitionContext
    pseudo: PseudoLabelBank | None = None  # semi=pseudo: the last acquisition pass's labels

    @property
    def train_store(self) -> ImageStore:
        return self.stores["train"]


@dataclass(frozen=True)
class CycleResult:
    """One cycle's measurements, as they go into the run's history."""

    n_labelled: int
    labelled_pixels: int
    test_dice: float
    test_dice_per_image: dict[str, float]
    test_dice_per_class: dict[str, float]
    train: dict[str, Any]
    acquired: list[dict[str, Any]]
    seconds: dict[str, float]  # train / test / acquire / total
    finished: bool


def _run_locked(
    cfg: ExperimentConfig,
    heuristic: str,
    paths: RunPaths,
    log_scalar: Logger,
    add_artifact: ArtifactSink,
) -> np.ndarray:
    config = run_record_config(cfg, heuristic)
    state = load_state(paths, config, cfg.overwrite)
    if state is not None and state.finished:
        _say(f"{paths.stem} is already complete in {paths.results_dir}: {paths.npy}")
        return np.load(paths.npy)

    setup = build_run(cfg, paths)
    n_val = len(setup.val_set) if setup.val_set is not None else 0
    _say(
        f"{paths.stem}: {len(setup.train_store)} train / {n_val} val / "
        f"{len(setup.test_set)} test images, patch {setup.patch[0]}x{setup.patch[1]}, "
        f"device {setup.device}, precision {setup.amp_dtype or torch.float32}, "
        f"model selection {cfg.model_selection}"
    )
    if state is None:
        state = start_state(cfg, config, setup, n_val)
    else:
        restore_state(state, setup, paths)
        _say(f"resuming {paths.stem} after cycle {state.cycles_done - 1}")

    last_cycle = 0 if cfg.full_supervision else cfg.al_cycles
    for cycle in range(state.cycles_done, last_cycle + 1):
        result = run_cycle(cfg, heuristic, setup, cycle, last_cycle, log_scalar)
        record_cycle(state, result, setup)
        state.cycles_done, state.finished = cycle + 1, result.finished
        if setup.pseudo is not None and not result.finished:
            setup.pseudo.save(paths.pseudo_labels(cycle))  # before the state that needs it
        save_cycle(paths, state)
        if setup.pseudo is not None:
            paths.pseudo_labels(cycle - 1).unlink(missing_ok=True)
        _say(cycle_summary(cycle, result, regions=setup.regions is not None))
        if result.finished:
            break

    for path in (paths.npy, paths.json):
        add_artifact(path)
    return np.load(paths.npy)


def build_run(cfg: ExperimentConfig, paths: RunPaths) -> RunSetup:
    """Read and check the data, then build the model and every step's settings."""
    # Without model selection on validation labels, the validation split is never read.
    splits = SPLITS if cfg.model_selection == "val" else tuple(s for s in SPLITS if s != "val")
    data = open_dataset(cfg, splits)
    n_train = len(data.splits["train"])
    if cfg.n_label_start > n_train:
        raise ConfigError(
            f"n_label_start={cfg.n_label_start} is larger than the train split "
            f"({n_train} images in {data.split_files['train']}); lower n_label_start"
        )
    device = pick_device(cfg.device)
    amp_dtype = resolve_precision(cfg.precision, device)
    stores = {s: data.store(s, cfg.image_scale) for s in splits}
    check_scaled_size(stores, cfg.image_scale)
    patch = effective_patch_size(tuple(cfg.patch_size), stores["train"].min_size)
    regions = make_regions(cfg, stores["train"]) if cfg.label_unit == "region" else None

    train_set = SegmentationDataset(stores["train"], train_transform(patch))
    al_set = ActiveLearningDataset(train_set, pool_specifics={"transform": None})
    # The model's initial weights depend on the run alone, and every cycle starts from them.
    torch.manual_seed(cfg.run)
    model = UNet(3, cfg.num_classes, cfg.base_width, dropout=cfg.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    return RunSetup(
        stores=stores,
        regions=regions,
        al_set=al_set,
        val_set=SegmentationDataset(stores["val"]) if "val" in stores else None,
        test_set=SegmentationDataset(stores["test"]),
        class_names=data.class_names,
        patch=patch,
        model=model,
        initial_weights=copy.deepcopy(model.state_dict()),
        device=device,
        amp_dtype=amp_dtype,
        train_settings=train_settings(cfg),
        mc_settings=MCSettings(
            cfg.mc_iters, samples_per_pass(cfg.mc_samples_per_pass, device), device, amp_dtype
        ),
        context=AcquisitionContext(
            store=stores["train"],
            device=device,
            amp_dtype=amp_dtype,
            reduction_settings=ReductionSettings(
                topq_percent=cfg.topq_percent,
                foreground_band=round(cfg.foreground_band * cfg.image_scale),
            ),
            maps_dir=paths.results_dir / "maps" / paths.stem,
        ),
        pseudo=PseudoLabelBank(cfg.pseudo_threshold) if cfg.semi == "pseudo" else None,
    )


def open_dataset(cfg: ExperimentConfig, splits: tuple[str, ...]) -> SegmentationData:
    """The configured dataset with the rows of ``splits``; DataError, with instructions, when
    it is not there. A folder's splits live in ``DATA_PATH/splits`` unless ``splits_path`` is
    set, and are written there first when absent."""
    if cfg.dataset == "folder":
        splits_path = cfg.splits_path
        if splits_path == ExperimentConfig().splits_path:  # GlaS's: not this folder's
            splits_path = str(Path(cfg.data_path) / "splits")
        return open_folder(cfg.data_path, splits_path, cfg.num_classes, cfg.mask_kind)
    if cfg.synthetic:
        prepare_synthetic(cfg)
    return open_glas(cfg.data_path, cfg.splits_path, splits)


def make_regions(cfg: ExperimentConfig, store: ImageStore) -> RegionLabels:
    """The train pool cut into tiles or superpixels of ``region_size`` at the loaded scale."""
    tile = region_tile(cfg, store)
    segments = None
    if cfg.region_shape == "superpixel":
        segments = [superpixel_segments(image, tile) for image in store.images]
    return RegionLabels([tuple(image.shape[1:]) for image in store.images], tile, segments)


def train_settings(cfg: ExperimentConfig) -> TrainSettings:
    return TrainSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        lr_step_size=cfg.lr_step_size,
        lr_gamma=cfg.lr_gamma,
        num_workers=cfg.num_workers,
        ema_decay=cfg.ema_decay,
    )


def start_state(
    cfg: ExperimentConfig, config: dict[str, Any], setup: RunSetup, n_val: int
) -> RunState:
    """Label the run's first images (all of them under full supervision)."""
    state = RunState(config=config, labelled_map=[], history=History(), validation_images=n_val)
    al_set, regions = setup.al_set, setup.regions
    if cfg.full_supervision:
        al_set.label(list(range(len(setup.train_store))))
    else:
        rng = np.random.default_rng(cfg.run)
        al_set.label(initial_labelled(setup.train_store.labels, cfg.n_label_start, rng).tolist())
    if regions is not None:  # both units start from the same whole images
        for image in np.flatnonzero(al_set.labelled):
            regions.label_image(int(image))
        state.regions_digest = regions.digest()
    return state


def restore_state(state: RunState, setup: RunSetup, paths: RunPaths) -> None:
    """Put back what an interrupted run had labelled, and the pool's pseudo-labels."""
    setup.al_set.labelled_map = np.asarray(state.labelled_map, dtype=int)
    if setup.pseudo is not None:
        path = paths.pseudo_labels(state.cycles_done - 1)
        if not path.exists():
            raise ResumeError(
                f"{paths.stem}: {path.name}, the pseudo-labels the next cycle trains on, is "
                "missing; restore it, or pass overwrite=True to start afresh"
            )
        setup.pseudo.load(path)
    regions = setup.regions
    if regions is None:
        return
    if state.regions_digest != regions.digest():
        raise ResumeError(
            f"{paths.stem}: the superpixels differ from those the interrupted run "
            "labelled (another scikit-image version?); resume where it ran, or pass "
            "overwrite=True to start afresh"
        )
    regions.restore(state.labelled_regions, setup.train_store.names)


def run_cycle(
    cfg: ExperimentConfig,
    heuristic: str,
    setup: RunSetup,
    cycle: int,
    last_cycle: int,
    log_scalar: Logger,
) -> CycleResult:
    """Train from the initial weights on what is labelled, test, and acquire unless it is the
    last cycle or the pool is empty."""
    started = time.perf_counter()
    generator = seed_cycle(cfg.run, cycle)
    model, al_set, regions, store = setup.model, setup.al_set, setup.regions, setup.train_store
    model.load_state_dict(setup.initial_weights)
    if regions is None:
        n_labelled = int(al_set.n_labelled)
        labelled_pixels = int(store.pixels[al_set.labelled].sum())
        training_data = al_set
    else:
        n_labelled = len(regions.images_with_labels())
        labelled_pixels = regions.labelled_pixels()
        mean_image_pixels = int(store.pixels.sum()) / len(store)
        training_data = PartialMaskDataset(
            store, regions, setup.patch, train_transform(setup.patch, crop=False), mean_image_pixels
        )
    train_info = train_model(
        model,
        training_data,
        setup.val_set,
        setup.train_settings,
        setup.device,
        setup.amp_dtype,
        generator,
        progress=cfg.progress,
        description=f"cycle {cycle} train ({n_labelled} labelled)",
        augmenter=device_augmenter(cfg, setup, generator),
        semi=semi_training(cfg, setup),
        ema=cfg.model_selection == "ema",
    )
    trained = time.perf_counter()
    mc_model = mc_dropout_copy(model)
    by_class = evaluate_bma(mc_model, setup.test_set, setup.mc_settings, progress=cfg.progress)
    # An image's Dice is the mean over its foreground classes: with two classes, the gland Dice.
    per_image = {name: float(np.mean(d)) for name, d in by_class.items()}
    per_class = dict(
        zip(setup.class_names[1:], np.mean(list(by_class.values()), axis=0).tolist(), strict=True)
    )
    dice = float(np.mean(list(per_image.values())))
    log_scalar("test_dice", dice, cycle)
    log_scalar("n_labelled", n_labelled, cycle)
    if train_info["best_val_loss"] is not None:
        log_scalar("best_val_loss", train_info["best_val_loss"], cycle)

    tested = time.perf_counter()
    pool_left = int(al_set.n_unlabelled) if regions is None else len(regions.pool())
    finished = cycle == last_cycle or pool_left == 0
    on_probs = None
    if setup.pseudo is not None and not finished:
        setup.pseudo.clear()
        on_probs = setup.pseudo.add
    if finished:
        acquired = []
    else:
        step, pool = (acquire, al_set) if regions is None else (acquire_regions, regions)
        acquired = step(
            cfg, heuristic, pool, setup.context, model, mc_model, setup.mc_settings, cycle, on_probs
        )
    now = time.perf_counter()
    return CycleResult(
        n_labelled=n_labelled,
        labelled_pixels=labelled_pixels,
        test_dice=dice,
        test_dice_per_image=per_image,
        test_dice_per_class=per_class,
        train=train_info,
        acquired=acquired,
        seconds={
            "train": round(trained - started, 2),
            "test": round(tested - trained, 2),
            "acquire": round(now - tested, 2),
            "total": round(now - started, 2),
        },
        finished=finished,
    )


def semi_training(cfg: ExperimentConfig, setup: RunSetup) -> SemiTraining | None:
    """The unlabelled term of this cycle's training, or None when there is nothing to learn
    from: ``semi=none``, an empty pool, or (``pseudo``) cycle 0, before any acquisition pass has
    made pseudo-labels. In region mode the unlabelled pixels of partly labelled images are pool
    too."""
    if cfg.semi == "none":
        return None
    store, regions, al_set = setup.train_store, setup.regions, setup.al_set
    transform = train_transform(setup.patch)
    if cfg.semi == "pseudo":

        def annotated(image: int) -> torch.Tensor | None:
            if regions is None:
                return (
                    torch.ones(store.images[image].shape[1:], dtype=torch.bool)
                    if bool(al_set.labelled[image])
                    else None
                )
            mask = regions.annotated(image)
            return torch.from_numpy(mask) if mask.any() else None

        masks = setup.pseudo.masks(annotated)
        if not masks:
            return None
        return SemiTraining(
            "pseudo", PoolCrops(store, list(masks), transform, masks), cfg.pseudo_weight
        )
    if regions is None:
        pool = np.flatnonzero(~al_set.labelled).tolist()
    else:
        pool = sorted({image for image, _ in regions.pool()})
    if not pool:
        return None
    return SemiTraining(
        "mean_teacher",
        PoolCrops(store, pool, transform),
        cfg.consistency_weight,
        threshold=math.log(cfg.num_classes),
    )


def device_augmenter(
    cfg: ExperimentConfig, setup: RunSetup, generator: torch.Generator
) -> DeviceAugmenter | None:
    """Batched augmentation on the device for whole-image labels (``augment_on``); region
    training draws its crops around annotated pixels, on the CPU, so it gets None."""
    on_device = cfg.augment_on == "device" or (
        cfg.augment_on == "auto" and setup.device.type == "cuda"
    )
    if setup.regions is not None or not on_device:
        return None
    labelled = np.flatnonzero(setup.al_set.labelled)
    store = setup.train_store
    return DeviceAugmenter(
        [store.images[i] for i in labelled],
        [store.masks[i] for i in labelled],
        setup.patch,
        setup.device,
        generator,
    )


def record_cycle(state: RunState, result: CycleResult, setup: RunSetup) -> None:
    """Append the cycle to the history and keep what is labelled now."""
    history = state.history
    history.n_labelled.append(result.n_labelled)
    history.labelled_pixels.append(result.labelled_pixels)
    history.labelled_fraction.append(result.labelled_pixels / int(setup.train_store.pixels.sum()))
    history.test_dice.append(result.test_dice)
    history.acquired.append(result.acquired)
    history.test_dice_per_image.append(result.test_dice_per_image)
    history.test_dice_per_class.append(result.test_dice_per_class)
    history.train.append(result.train)
    history.seconds.append(result.seconds)
    state.labelled_map = setup.al_set.labelled_map.astype(int).tolist()
    if setup.regions is not None:
        state.labelled_regions = setup.regions.to_json(setup.train_store.names)


def cycle_summary(cycle: int, result: CycleResult, regions: bool) -> str:
    picked = ", ".join(a["name"] for a in result.acquired) or "-"
    if regions and result.acquired:
        n_images = len({a["name"] for a in result.acquired})
        picked = f"{len(result.acquired)} regions of {n_images} images"
    return (
        f"cycle {cycle}: {result.n_labelled} labelled, test Dice {result.test_dice:.4f}, "
        f"{result.seconds['total']:.0f}s; acquired {picked}"
    )


__all__ = ["ConfigError", "DataError", "ExperimentConfig", "run_active_learning"]
