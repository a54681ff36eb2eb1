"""The label -> train -> acquire loop, as a plain function of an explicit config.

``active.py`` only wires Sacred to this; everything here can be called and tested without it.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from baal.active import ActiveLearningDataset

from data.create_splits import write_splits
from data.glas import (
    SPLITS,
    DataError,
    GlasDataset,
    ImageStore,
    read_grades,
    read_split,
    split_csv_path,
)
from data.synthetic import generate_synthetic_glas
from data.transforms import effective_patch_size, train_transform
from heuristics import HEURISTICS, NEEDS_MC, PIXEL_MAPS, resolve_heuristic
from heuristics.acquisition import select_for_labelling
from models import UNet, mc_dropout_copy
from utils.config import ExperimentConfig, check_config
from utils.device import pick_device, resolve_precision, samples_per_pass
from utils.inference import MCSettings, evaluate_bma, score_pool
from utils.run_lock import run_lock
from utils.run_state import (
    TAG_PATTERN,
    History,
    RunPaths,
    RunState,
    jsonable,
    load_state,
    result_name,
    save_cycle,
)
from utils.training import TrainSettings, train_model

FULL_SUPERVISION_NAME = "full"


class ConfigError(ValueError):
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
        (cfg.num_classes == 2, "num_classes must be 2 (gland vs background) for GlaS"),
        (0.0 <= cfg.dropout < 1.0, f"dropout must be in [0, 1), got {cfg.dropout}"),
        (cfg.precision in ("auto", "bf16", "fp32"), "precision must be auto, bf16 or fp32"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    return heuristic


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
    """Generate the demo's synthetic GlaS and its splits where they are absent."""
    data_path = Path(cfg.data_path)
    if not (data_path / "Grade.csv").exists():
        height, width = cfg.synthetic_size
        n_train, n_test_a, n_test_b = cfg.synthetic_counts
        generate_synthetic_glas(
            data_path,
            n_train=n_train,
            n_test_a=n_test_a,
            n_test_b=n_test_b,
            height=height,
            width=width,
            seed=0,
        )
        _say(f"generated synthetic GlaS in {data_path}")
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
    name = FULL_SUPERVISION_NAME if cfg.full_supervision else heuristic
    return RunPaths(Path(cfg.results_dir), f"{result_name(name, cfg.tag)}_{cfg.run}")


def run_record_config(cfg: ExperimentConfig, heuristic: str) -> dict[str, Any]:
    """The config as the run's state and record keep it: canonical names, JSON types."""
    name = FULL_SUPERVISION_NAME if cfg.full_supervision else heuristic
    return jsonable({**{f.name: getattr(cfg, f.name) for f in fields(cfg)}, "heuristic": name})


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

    if cfg.synthetic:
        prepare_synthetic(cfg)
    read_grades(cfg.data_path)  # fails early, with instructions, when GlaS is not there
    rows = {split: read_split(cfg.splits_path, split) for split in SPLITS}
    if cfg.n_label_start > len(rows["train"]):
        raise ConfigError(
            f"n_label_start={cfg.n_label_start} is larger than the train split "
            f"({len(rows['train'])} images in {split_csv_path(cfg.splits_path, 'train')}); "
            "lower n_label_start"
        )
    device = pick_device(cfg.device)
    amp_dtype = resolve_precision(cfg.precision, device)
    stores = {s: ImageStore(cfg.data_path, r, cfg.image_scale) for s, r in rows.items()}
    check_scaled_size(stores, cfg.image_scale)
    patch = effective_patch_size(tuple(cfg.patch_size), stores["train"].min_size)
    _say(
        f"{paths.stem}: {len(rows['train'])} train / {len(rows['val'])} val / "
        f"{len(rows['test'])} test images, patch {patch[0]}x{patch[1]}, device {device}, "
        f"precision {amp_dtype or torch.float32}"
    )

    train_set = GlasDataset(stores["train"], train_transform(patch))
    al_set = ActiveLearningDataset(train_set, pool_specifics={"transform": None})
    val_set, test_set = GlasDataset(stores["val"]), GlasDataset(stores["test"])
    torch.manual_seed(cfg.run)
    model = UNet(3, cfg.num_classes, cfg.base_width, dropout=cfg.dropout)
    model = model.to(device, memory_format=torch.channels_last)
    initial_weights = copy.deepcopy(model.state_dict())
    train_settings = TrainSettings(
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=cfg.nesterov,
        weight_decay=cfg.weight_decay,
        lr_step_size=cfg.lr_step_size,
        lr_gamma=cfg.lr_gamma,
        num_workers=cfg.num_workers,
    )
    per_pass = samples_per_pass(cfg.mc_samples_per_pass, device)
    mc_settings = MCSettings(cfg.mc_iters, per_pass, device, amp_dtype)

    if state is None:
        state = RunState(config=config, labelled_map=[], history=History())
        if cfg.full_supervision:
            al_set.label(list(range(len(train_set))))
        else:
            rng = np.random.default_rng(cfg.run)
            al_set.label(initial_labelled(stores["train"].labels, cfg.n_label_start, rng).tolist())
    else:
        al_set.labelled_map = np.asarray(state.labelled_map, dtype=int)
        _say(f"resuming {paths.stem} after cycle {state.cycles_done - 1}")

    last_cycle = 0 if cfg.full_supervision else cfg.al_cycles
    for cycle in range(state.cycles_done, last_cycle + 1):
        started = time.perf_counter()
        generator = seed_cycle(cfg.run, cycle)
        model.load_state_dict(initial_weights)
        n_labelled = int(al_set.n_labelled)
        train_info = train_model(
            model,
            al_set,
            val_set,
            train_settings,
            device,
            amp_dtype,
            generator,
            progress=cfg.progress,
            description=f"cycle {cycle} train ({n_labelled} labelled)",
        )
        trained = time.perf_counter()
        mc_model = mc_dropout_copy(model)
        per_image = evaluate_bma(mc_model, test_set, mc_settings, progress=cfg.progress)
        dice = float(np.mean(list(per_image.values())))
        log_scalar("test_dice", dice, cycle)
        log_scalar("n_labelled", n_labelled, cycle)
        log_scalar("best_val_loss", train_info["best_val_loss"], cycle)

        tested = time.perf_counter()
        finished = cycle == last_cycle or int(al_set.n_unlabelled) == 0
        acquired = (
            []
            if finished
            else acquire(cfg, heuristic, al_set, stores["train"], mc_model, mc_settings, cycle)
        )
        now = time.perf_counter()
        history = state.history
        history.n_labelled.append(n_labelled)
        history.test_dice.append(dice)
        history.acquired.append(acquired)
        history.test_dice_per_image.append(per_image)
        history.train.append(train_info)
        history.seconds.append(
            {
                "train": round(trained - started, 2),
                "test": round(tested - trained, 2),
                "acquire": round(now - tested, 2),
                "total": round(now - started, 2),
            }
        )
        state.labelled_map = al_set.labelled_map.astype(int).tolist()
        state.cycles_done, state.finished = cycle + 1, finished
        save_cycle(paths, state)
        picked = ", ".join(a["name"] for a in acquired) or "-"
        _say(
            f"cycle {cycle}: {n_labelled} labelled, test Dice {dice:.4f}, "
            f"{history.seconds[-1]['total']:.0f}s; acquired {picked}"
        )
        if finished:
            break

    for path in (paths.npy, paths.json):
        add_artifact(path)
    return np.load(paths.npy)


def acquire(
    cfg: ExperimentConfig,
    heuristic: str,
    al_set: ActiveLearningDataset,
    store: ImageStore,
    mc_model: torch.nn.Module,
    mc_settings: MCSettings,
    cycle: int,
) -> list[dict[str, Any]]:
    """Score the pool, label the chosen images, save figures if asked; return what was labelled."""
    pool = al_set.pool
    pool_indices = np.flatnonzero(~al_set.labelled)  # oracle index of each pool position
    want_maps = cfg.save_maps and heuristic in PIXEL_MAPS
    if heuristic in NEEDS_MC:
        result = score_pool(
            mc_model, pool, heuristic, mc_settings, keep_maps=want_maps, progress=cfg.progress
        )
        scores = result.scores
    else:
        # Random scores need no model pass; an empty tensor carries the pool size.
        scores = HEURISTICS[heuristic](torch.empty(len(pool_indices), 0, 0, 0, 0)).numpy()
        result = None
    grades = store.labels[pool_indices]
    chosen = select_for_labelling(scores, grades, cfg.n_data_to_label, cfg.balance_al)
    acquired = [{"name": store.names[pool_indices[i]], "score": float(scores[i])} for i in chosen]
    al_set.label([int(i) for i in chosen])
    if cfg.save_maps or cfg.save_uncerts:
        save_cycle_figures(cfg, heuristic, cycle, store, scores, acquired, result)
    return acquired


def save_cycle_figures(
    cfg: ExperimentConfig,
    heuristic: str,
    cycle: int,
    store: ImageStore,
    scores: np.ndarray,
    acquired: list[dict[str, Any]],
    result: Any,
) -> None:
    from utils.figures import save_score_distribution, save_uncertainty_map

    folder = Path(cfg.results_dir) / "maps" / f"{heuristic}_{cfg.run}" / f"cycle_{cycle}"
    if cfg.save_uncerts:
        save_score_distribution(
            folder / "pool_scores.png",
            scores,
            np.array([a["score"] for a in acquired]),
            heuristic,
            cycle,
        )
    if cfg.save_maps and result is not None:
        for item in acquired:
            index = store.names.index(item["name"])
            uncertainty, gland = result.maps[item["name"]]
            save_uncertainty_map(
                folder / f"{item['name']}.png",
                store.images[index].permute(1, 2, 0).numpy(),
                store.masks[index].numpy(),
                gland,
                uncertainty,
                item["score"],
                item["name"],
                heuristic,
            )


__all__ = ["ConfigError", "DataError", "ExperimentConfig", "run_active_learning"]
