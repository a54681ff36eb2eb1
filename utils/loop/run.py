"""The label -> train -> acquire loop, as a plain function of an explicit config.

``active.py`` only wires Sacred to this; everything here can be called and tested without it.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baal.active import ActiveLearningDataset

from data.datasets import check_data_folder, open_dataset
from data.device_augment import DeviceAugmenter
from data.regions import IGNORE, RegionLabels, superpixel_segments
from data.segmentation import (
    SPLITS,
    DataError,
    ImageStore,
    SegmentationDataset,
)
from data.transforms import effective_patch_size, train_transform
from heuristics.strategies import initial_labelled
from models import UNet, mc_dropout_copy
from utils.config import ConfigError, ExperimentConfig, validate
from utils.io import make_results_dir
from utils.loop.acquisition import AcquisitionSettings, acquire
from utils.loop.device import describe_machine, pick_device, resolve_precision, samples_per_pass
from utils.loop.inference import MCSettings, evaluate_bma
from utils.loop.semi import POOL_PIXEL, PoolCrops, PseudoLabelBank, pseudo_label_quality
from utils.loop.training import SemiTraining, TrainSettings, train_model
from utils.loop.units import ImageUnit, LabellingUnit, RegionUnit
from utils.runs.lock import run_lock
from utils.runs.state import (
    History,
    ResumeError,
    RunPaths,
    RunState,
    load_state,
    machine_changes,
    names_digest,
    note_machine,
    note_unknown_machine,
    run_paths,
    run_record_config,
    save_cycle,
)
from utils.text import counted

Logger = Callable[[str, float, int], None]
ArtifactSink = Callable[[Path], None]


def _say(message: str) -> None:
    print(message, flush=True)


def region_tile(cfg: ExperimentConfig, store: ImageStore) -> tuple[int, int]:
    """``region_size`` at the loaded scale; refused when under 8 pixels or over the image."""
    tile = (
        round(cfg.region_size[0] * cfg.image_scale),
        round(cfg.region_size[1] * cfg.image_scale),
    )
    given = (
        f"region_size={cfg.region_size} at image_scale={cfg.image_scale} gives regions of "
        f"{tile[0]}x{tile[1]} pixels (height x width)"
    )
    if min(tile) < 8:
        raise ConfigError(f"{given}; they must be at least 8 pixels a side: raise region_size")
    shorter = [
        (name, image.shape[1:])
        for name, image in zip(store.names, store.images, strict=True)
        if image.shape[1] < tile[0] or image.shape[2] < tile[1]
    ]
    if shorter:
        (name, (height, width)), others = shorter[0], len(shorter) - 1
        raise ConfigError(
            f"{given}, larger than image {name} ({height}x{width} at this scale"
            f"{f', and {others} more' if others else ''}); a region must fit every image: "
            "lower region_size"
        )
    return tile


MIN_IMAGE_SIDE = 32  # five 2x poolings leave a 1-pixel bottleneck; smaller is meaningless


def check_scaled_size(stores: dict[str, ImageStore], image_scale: float) -> None:
    smallest, name = min(
        (min(image.shape[1:]), name)
        for store in stores.values()
        for image, name in zip(store.images, store.names, strict=True)
    )
    if smallest < MIN_IMAGE_SIDE:
        lowest = lowest_scale(smallest, image_scale)
        raise ConfigError(
            f"image_scale={image_scale} leaves the smallest image, {name}, "
            f"{counted(smallest, 'pixel')} on a side, under the {MIN_IMAGE_SIDE} a segmentation "
            "needs; use "
            + (f"image_scale >= {lowest:g}" if lowest else "a larger image_scale")
            + f", or leave {name} out"
        )


def lowest_scale(scaled_side: int, image_scale: float) -> float | None:
    """An ``image_scale`` (2 significant digits) that gives a side ``scaled_side`` pixels long at
    ``image_scale`` at least ``MIN_IMAGE_SIDE`` pixels, whatever its original length: the scaled
    side was rounded, so the original may be up to half a pixel shorter than it suggests. None
    for a 1-pixel side, which any original up to 1.5 / image_scale pixels shrinks to."""
    if scaled_side <= 1:
        return None
    shortest_original = (scaled_side - 0.5) / image_scale
    needed = MIN_IMAGE_SIDE / shortest_original
    step = 10.0 ** (math.floor(math.log10(needed)) - 1)
    return round(math.ceil(needed / step) * step, 12)


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
    cfg = validate(cfg)
    if cfg.unannotated_value >= 0:
        raise ConfigError(
            "unannotated_value is for `active.py suggest`; a simulated run reads whole masks, "
            "so leave it at -1"
        )
    paths = run_paths(cfg)
    make_results_dir(paths.results_dir)
    with run_lock(paths.lock):
        return _run_locked(cfg, paths, log_scalar, add_artifact)


@dataclass
class RunSetup:
    """What a run builds once, before its first cycle: data, model and the settings of each
    step. Built from the config alone, so a resumed run rebuilds the same one."""

    stores: dict[str, ImageStore]  # split -> images; "val" only with model_selection=val
    unit: LabellingUnit  # whole images or regions: the pool state
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
    acquisition: AcquisitionSettings
    pseudo: PseudoLabelBank | None = None  # semi=pseudo: the last acquisition pass's labels
    machine: dict[str, Any] = field(default_factory=dict)  # where it runs (describe_machine)
    split_files: dict[str, Path] = field(default_factory=dict)  # split -> where its rows came from

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
    paths: RunPaths,
    log_scalar: Logger,
    add_artifact: ArtifactSink,
) -> np.ndarray:
    config = run_record_config(cfg)
    try:
        state = load_state(paths, config, cfg.overwrite)
    except ResumeError:
        # A missing data folder comes first: the clash's way out (another results_dir, or
        # overwrite=True) would only lead the user to it.
        check_data_folder(cfg)
        raise
    if state is not None and state.finished:
        missing = [path.name for path in (paths.npy, paths.json) if not path.exists()]
        if missing:
            # Deleted by hand: without them the report refuses the folder or leaves the run out.
            save_cycle(paths, state)
            _say(f"{paths.stem}: rewrote {' and '.join(missing)} from {paths.state.name}")
        if cfg.semi == "pseudo":
            remove_pseudo_labels(paths, keep=None)  # left by a kill before the last removal
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
        if paths.json.exists() and not paths.npy.exists():
            # A run killed between its first record and results: the report would refuse the
            # folder over that record until this run saves its first cycle.
            paths.json.unlink()
        state = start_state(cfg, config, setup, n_val)
    else:
        restore_state(state, setup, paths)
        _say(f"resuming {paths.stem} after cycle {state.cycles_done - 1}")
        note_unknown_machine(state)
        changes = machine_changes(state.history.machines, setup.machine)
        if changes:
            # Not refused: a cluster's nodes differ, and a sweep's --parallel sets the threads.
            _say(
                f"warning: {paths.stem}'s cycles so far ran under another machine or other "
                f"settings ({'; '.join(changes)}), so the cycles from here on are not bitwise "
                "those of a run kept under one setup; its record lists each setup under "
                "'machines'"
            )

    last_cycle = 0 if cfg.full_supervision else cfg.al_cycles
    for cycle in range(state.cycles_done, last_cycle + 1):
        result = run_cycle(cfg, setup, cycle, last_cycle, log_scalar)
        record_cycle(state, result, setup)
        state.cycles_done, state.finished = cycle + 1, result.finished
        if setup.pseudo is not None and not result.finished:
            setup.pseudo.save(paths.pseudo_labels(cycle))  # before the state that needs it
        save_cycle(paths, state)
        if setup.pseudo is not None:
            remove_pseudo_labels(paths, keep=None if result.finished else cycle)
        _say(cycle_summary(cycle, result, setup.unit))
        if result.finished:
            break

    for path in (paths.npy, paths.json):
        add_artifact(path)
    return np.load(paths.npy)


def remove_pseudo_labels(paths: RunPaths, keep: int | None) -> None:
    """Delete the run's pseudo-labels but cycle ``keep``'s, which its state resumes from: not
    only the previous cycle's, since a run killed before deleting them leaves them behind."""
    for path in paths.all_pseudo_labels():
        if keep is None or path != paths.pseudo_labels(keep):
            path.unlink(missing_ok=True)


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
    train_set = SegmentationDataset(stores["train"], train_transform(patch))
    al_set = ActiveLearningDataset(train_set, pool_specifics={"transform": None})
    unit = make_unit(cfg, stores["train"], al_set)
    # The model's initial weights depend on the run alone, and every cycle starts from them.
    torch.manual_seed(cfg.run)
    model = UNet(3, cfg.num_classes, cfg.base_width, dropout=cfg.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    return RunSetup(
        stores=stores,
        unit=unit,
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
        acquisition=AcquisitionSettings.from_config(
            cfg, device, amp_dtype, paths.results_dir / "maps" / paths.stem
        ),
        pseudo=PseudoLabelBank(cfg.pseudo_threshold) if cfg.semi == "pseudo" else None,
        machine=describe_machine(device, amp_dtype),
        split_files=data.split_files,
    )


def make_unit(
    cfg: ExperimentConfig, store: ImageStore, al_set: ActiveLearningDataset
) -> LabellingUnit:
    # Full supervision labels every image whole, so it trains the same under either unit: a
    # sweep's grid over label units shares its one reference (FULL_SUPERVISION_IGNORES).
    if cfg.label_unit == "region" and not cfg.full_supervision:
        return RegionUnit(store, al_set, make_regions(cfg, store), cfg.n_data_to_label)
    return ImageUnit(store, al_set, cfg.n_data_to_label)


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
    for split, store in setup.stores.items():
        setattr(state, f"{split}_digest", names_digest(store.names))
    al_set = setup.unit.al_set
    if cfg.full_supervision:
        al_set.label(list(range(len(setup.train_store))))
    else:
        rng = np.random.default_rng(cfg.run)
        al_set.label(initial_labelled(setup.train_store.labels, cfg.n_label_start, rng).tolist())
    setup.unit.start()
    return state


def restore_state(state: RunState, setup: RunSetup, paths: RunPaths) -> None:
    """Put back what an interrupted run had labelled, and the pool's pseudo-labels."""
    # States from before a split's digest existed lack it: that split is taken on trust, and
    # its digest is recorded from here on.
    for split, store in setup.stores.items():
        digest, key = names_digest(store.names), f"{split}_digest"
        if not getattr(state, key):
            setattr(state, key, digest)
        if getattr(state, key) != digest:
            where = setup.split_files.get(split, "its split file")
            raise ResumeError(
                f"{paths.stem}: the {split} split is not the one this run began on (other "
                f"images, or in another order, in {where}); restore that split, or pass "
                "overwrite=True to start afresh"
            )
    setup.unit.al_set.labelled_map = np.asarray(state.labelled_map, dtype=int)
    if setup.pseudo is not None:
        path = paths.pseudo_labels(state.cycles_done - 1)
        if not path.exists():
            raise ResumeError(
                f"{paths.stem}: {path.name}, the pseudo-labels the next cycle trains on, is "
                "missing; restore it, or pass overwrite=True to start afresh"
            )
        setup.pseudo.load(path)
    setup.unit.restore(state, paths.stem)


def run_cycle(
    cfg: ExperimentConfig,
    setup: RunSetup,
    cycle: int,
    last_cycle: int,
    log_scalar: Logger,
) -> CycleResult:
    """Train from the initial weights on what is labelled, test, and acquire unless it is the
    last cycle or the pool is empty."""
    started = time.perf_counter()
    generator = seed_cycle(cfg.run, cycle)
    model, unit = setup.model, setup.unit
    model.load_state_dict(setup.initial_weights)
    n_labelled = unit.n_labelled()
    labelled_pixels = unit.labelled_pixels()
    train_info = train_model(
        model,
        unit.training_data(setup.patch),
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
    if setup.pseudo is not None and setup.pseudo.labels:
        train_info["pseudo_labels"] = pseudo_label_quality(
            setup.pseudo.labels, unit.annotated, setup.train_store.masks, cfg.num_classes
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
    finished = cycle == last_cycle or not unit.pool()
    on_probs = None
    if setup.pseudo is not None and not finished:
        setup.pseudo.clear()
        on_probs = setup.pseudo.add
    acquired = []
    if not finished:
        acquired = acquire(
            unit, setup.acquisition, model, mc_model, setup.mc_settings, cycle, on_probs
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
    store, unit = setup.train_store, setup.unit
    transform = train_transform(setup.patch)
    if cfg.semi == "pseudo":
        masks = setup.pseudo.masks(unit.annotated)
        if not masks:
            return None
        return SemiTraining(
            "pseudo", PoolCrops(store, list(masks), transform, masks), cfg.pseudo_weight
        )
    pool = unit.unlabelled_images()
    if not pool:
        return None
    annotated = {image: unit.annotated(image) for image in pool}
    masks = {
        image: torch.full(done.shape, POOL_PIXEL, dtype=torch.int64).masked_fill(done, IGNORE)
        for image, done in annotated.items()
        if done is not None
    }
    return SemiTraining(
        "mean_teacher",
        PoolCrops(store, pool, transform, masks, fill=POOL_PIXEL),
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
    if not setup.unit.whole_images or not on_device:
        return None
    labelled = np.flatnonzero(setup.unit.al_set.labelled)
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
    note_machine(history.machines, setup.machine, len(history.test_dice) - 1)
    state.labelled_map = setup.unit.al_set.labelled_map.astype(int).tolist()
    setup.unit.save(state)


def cycle_summary(cycle: int, result: CycleResult, unit: LabellingUnit) -> str:
    picked = unit.summary(result.acquired)
    return (
        f"cycle {cycle}: {result.n_labelled} labelled, test Dice {result.test_dice:.4f}, "
        f"{result.seconds['total']:.0f}s; acquired {picked}"
    )


__all__ = ["ConfigError", "DataError", "ExperimentConfig", "run_active_learning"]
