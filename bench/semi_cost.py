"""What learning from the pool costs: one cycle's training with each ``semi`` against ``none``.

Every method runs the same number of optimiser steps on the same labelled images (the
labelled batch is the same size; ``pseudo`` and ``mean_teacher`` add a pool batch of that size
to each step, and the mean teacher its MC-dropout passes). Each method runs in its own worker
process, one after the other, so none inherits another's warm caches::

    python bench/semi_cost.py --data-path data/GlaS --image-scale 0.25 --epochs 4
    python bench/semi_cost.py                      # synthetic GlaS when no data path is given

Prints one JSON line per method and a Markdown table for ``bench/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import (  # noqa: E402
    emit,
    machine_summary,
    make_synthetic_pool,
    pool_rows,
    run_worker,
)

METHODS = ("none", "pseudo", "mean_teacher")


def worker(method: str, config: dict) -> dict:
    import torch

    from data.glas import GlasDataset, ImageStore
    from data.regions import IGNORE
    from data.transforms import effective_patch_size, train_transform
    from models import UNet
    from utils.config import ExperimentConfig
    from utils.loop.run import train_settings
    from utils.loop.semi import PoolCrops
    from utils.loop.training import SemiTraining, train_model

    args = argparse.Namespace(**config, worker=method)
    torch.manual_seed(0)
    cfg = ExperimentConfig(epochs=args.epochs, image_scale=args.image_scale)
    store = ImageStore(args.data_path, pool_rows(args.data_path, args.n), args.image_scale)
    patch = effective_patch_size(tuple(cfg.patch_size), store.min_size)
    labelled = list(range(args.labelled))
    pool = list(range(args.labelled, len(store)))
    train_set = torch.utils.data.Subset(GlasDataset(store, train_transform(patch)), labelled)
    semi = None
    if args.worker == "pseudo":
        # Timing only: half of each pool image's pixels carry its label, as pseudo-labels would.
        masks = {i: store.masks[i].long() for i in pool}
        for mask in masks.values():
            mask[:, ::2] = IGNORE
        semi = SemiTraining("pseudo", PoolCrops(store, pool, train_transform(patch), masks), 1.0)
    elif args.worker == "mean_teacher":
        semi = SemiTraining("mean_teacher", PoolCrops(store, pool, train_transform(patch)), 0.1)
    model = UNet(3, 2, cfg.base_width, dropout=cfg.dropout).to(memory_format=torch.channels_last)
    settings = train_settings(cfg)

    def train(epochs: int) -> float:
        started = time.perf_counter()
        train_model(
            model,
            train_set,
            None,
            replace(settings, epochs=epochs),
            torch.device("cpu"),
            torch.bfloat16 if args.bf16 else None,
            torch.Generator().manual_seed(0),
            progress=False,
            semi=semi,
        )
        return time.perf_counter() - started

    train(1)  # the first steps build the CPU kernels for these shapes: not what is measured
    seconds = train(args.epochs)
    steps = args.epochs * -(-settings.repeats_per_epoch * len(labelled) // settings.batch_size)
    return {
        "method": args.worker,
        "seconds": round(seconds, 2),
        "steps": steps,
        "seconds_per_step": round(seconds / steps, 4),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-path", type=Path, default=None)
    parser.add_argument("--image-scale", type=float, default=0.25)
    parser.add_argument("--n", type=int, default=68, help="pool images (labelled + unlabelled)")
    parser.add_argument("--labelled", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast, as on a CPU with AMX")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        emit(worker(args.worker, json.loads(args.config)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        if args.data_path is None:
            args.data_path = make_synthetic_pool(Path(tmp) / "GlaS", args.n, 430, 570)
        config = {
            "data_path": str(args.data_path),
            "image_scale": args.image_scale,
            "n": args.n,
            "labelled": args.labelled,
            "epochs": args.epochs,
            "bf16": args.bf16,
        }
        rows = [run_worker(Path(__file__), m, config) for m in METHODS]
    print(machine_summary())
    for row in rows:
        print(json.dumps(row))
    base = rows[0]["seconds_per_step"]
    print("\n| semi | steps | s / step | x none |\n|---|---:|---:|---:|")
    for row in rows:
        ratio = row["seconds_per_step"] / base
        print(f"| `{row['method']}` | {row['steps']} | {row['seconds_per_step']} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
