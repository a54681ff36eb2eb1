"""Time of the full default experiment, measured on its first cycles and extrapolated.

    python bench/experiment_cycle.py [--cycles 2] [--data-path DIR --splits-path DIR]
        [--set KEY=VALUE ...] [--profile DIR]

Runs ``utils.loop.run.run_active_learning`` with active.py's defaults (60 epochs, ``mc_iters=20``,
full resolution, ``al_cycles=15``: cycle 0 and 15 more) for the first ``--cycles`` cycles, on real
GlaS when given, else on a synthetic GlaS of the real size and counts (85 train, 60 testA, 20 testB
at 522x775) generated in a temporary folder. Each cycle's record splits its seconds into train /
test / acquire. The extrapolation to all 16 cycles assumes a constant test time and acquisition time
proportional to the pool size, and gives two figures for training:

* ``projected``: training time linear in the number of labelled images, fitted on the measured
  cycles after the first (which also pays for warm-up) when there are three or more; a negative
  fitted slope (noise between two close sizes) is clamped to 0, which makes it a lower bound.
* ``upper_bound``: training time proportional to the labelled images, from the last measured
  cycle. Per-epoch costs that do not grow with the labelled set (validation, the scheduler) make
  this an over-estimate for every later cycle.

``--profile DIR`` runs the cycles under ``torch.profiler`` and writes ``DIR/top10.txt``: the ten
operators with the most self time on the device (CUDA) and on the host. Host rows such as
``cudaStreamSynchronize`` or ``aten::item`` are syncs, ``cudaLaunchKernel`` counts launches, and
``aten::copy_`` and ``Memcpy`` rows are data movement. Profiling slows the run, so its timings
are not the projection's: measure and profile in separate calls.

The last line reads
``RESULT measured_cycles=<int> projected_run_minutes=<float> upper_bound_minutes=<float>``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench._common import active_defaults, machine_summary  # noqa: E402
from data.create_splits import write_splits  # noqa: E402
from data.glas import read_split  # noqa: E402
from data.synthetic import generate_synthetic_glas  # noqa: E402
from utils.config import ExperimentConfig, check_config, validate  # noqa: E402
from utils.io import atomic_write_text  # noqa: E402
from utils.loop.run import run_active_learning  # noqa: E402
from utils.runs.state import run_paths  # noqa: E402


def parse_override(text: str) -> tuple[str, object]:
    key, _, value = text.partition("=")
    try:
        return key, ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return key, value


def fit_training(n_labelled: list[int], train: list[float]) -> tuple[float, float]:
    """``(intercept, slope)`` of training seconds against labelled images, slope >= 0."""
    if len(n_labelled) >= 3:
        n_labelled, train = n_labelled[1:], train[1:]  # the first cycle also pays for warm-up
    if len(set(n_labelled)) < 2:
        return 0.0, train[-1] / n_labelled[-1]
    slope, intercept = np.polyfit(n_labelled, train, 1)
    if slope < 0:
        return float(np.mean(train)), 0.0
    return float(intercept), float(slope)


def project(
    seconds: list[dict[str, float]], n_labelled: list[int], config: dict, pool_size: int
) -> tuple[float, float, list[int]]:
    """Projected and upper-bound seconds of the whole run, and the labelled-set size of every
    planned cycle."""
    per_cycle = config["n_data_to_label"] * (2 if config["balance_al"] else 1)
    plan = [config["n_label_start"] + per_cycle * k for k in range(config["al_cycles"] + 1)]
    train = [s["train"] for s in seconds]
    intercept, slope = fit_training(n_labelled, train)
    per_image_upper = train[-1] / n_labelled[-1]
    test = float(np.mean([s["test"] for s in seconds]))
    acquired = [(s["acquire"], n) for s, n in zip(seconds, n_labelled, strict=True) if s["acquire"]]
    per_pool_image = np.mean([a / (pool_size - n) for a, n in acquired]) if acquired else 0.0
    fixed = sum(
        test + (per_pool_image * (pool_size - n) if k < len(plan) - 1 else 0.0)
        for k, n in enumerate(plan)
    )
    projected = fixed + sum(intercept + slope * n for n in plan)
    upper = fixed + sum(
        train[k] if k < len(train) else per_image_upper * n for k, n in enumerate(plan)
    )
    return projected, upper, plan


def profiler(enabled: bool) -> Any:
    """``torch.profiler.profile`` over the host and, where there is one, the CUDA device."""
    if not enabled:
        return contextlib.nullcontext()
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    return torch.profiler.profile(activities=activities)


def top_operators(profile: Any, rows: int = 10) -> str:
    """The ``rows`` operators with the most self time on the device (when profiled) and on the
    host, as torch's tables."""
    averages = profile.key_averages()
    sections = []
    if torch.cuda.is_available():
        table = averages.table(sort_by="self_cuda_time_total", row_limit=rows)
        sections.append(f"Top {rows} by self CUDA time\n{table}")
    table = averages.table(sort_by="self_cpu_time_total", row_limit=rows)
    sections.append(f"Top {rows} by self CPU time\n{table}")
    return "\n".join(sections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=2, help="cycles to measure (>= 1)")
    parser.add_argument("--data-path", help="real GlaS folder (default: synthetic, real size)")
    parser.add_argument("--splits-path", help="its splits folder (with --data-path)")
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE")
    parser.add_argument("--profile", type=Path, help="write torch.profiler's top 10 to DIR")
    args = parser.parse_args(argv)
    if args.profile is not None and args.profile.exists() and not args.profile.is_dir():
        parser.error(f"--profile {args.profile} is a file; give a folder for top10.txt")
    overrides = dict(parse_override(s) for s in args.set)
    try:
        check_config(overrides)  # a misspelt key would otherwise measure the defaults
    except ValueError as err:
        parser.error(f"--set: {err}")
    if overrides.get("label_unit", "image") != "image":
        parser.error("--set label_unit: the projection plans whole-image cycles only")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        if args.data_path:
            data_path, splits_path = Path(args.data_path), Path(args.splits_path)
        else:
            data_path, splits_path = tmp_path / "GlaS", tmp_path / "splits"
            generate_synthetic_glas(
                data_path, n_train=85, n_test_a=60, n_test_b=20, height=522, width=775, seed=0
            )
            write_splits(data_path, splits_path, seed=0)
        config = active_defaults()
        config.update(overrides)
        planned_cycles = config["al_cycles"]
        config.update(
            data_path=str(data_path),
            splits_path=str(splits_path),
            results_dir=str(tmp_path / "results"),
            al_cycles=args.cycles - 1,
            progress=False,
        )
        cfg = validate(ExperimentConfig.from_mapping(config))
        with profiler(args.profile is not None) as profile:
            run_active_learning(cfg)
        record = json.loads(run_paths(cfg).json.read_text())
        train_size = len(read_split(splits_path, "train"))

    config.update(al_cycles=planned_cycles)
    seconds, n_labelled = record["seconds_per_cycle"], record["n_labelled"]
    total, upper, plan = project(seconds, n_labelled, config, pool_size=train_size)
    print(machine_summary())
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
        table = atomic_write_text(args.profile / "top10.txt", top_operators(profile))
        print(table.read_text())
    print(f"{'cycle':>5} {'labelled':>8} {'train s':>8} {'test s':>7} {'acquire s':>9} {'Dice':>6}")
    for k, (s, n, d) in enumerate(zip(seconds, n_labelled, record["test_dice"], strict=True)):
        print(f"{k:>5} {n:>8} {s['train']:>8.1f} {s['test']:>7.1f} {s['acquire']:>9.1f} {d:>6.3f}")
    print(
        f"projected: {len(plan)} cycles, {plan[0]}..{plan[-1]} labelled: {total / 60:.1f} min "
        f"(upper bound {upper / 60:.1f} min)"
    )
    if not any(s["acquire"] for s in seconds):
        # The last measured cycle acquires nothing, so one cycle measures no acquisition at all.
        print("note: no measured cycle acquired, so the projection has no acquisition time; "
              "measure --cycles 2 or more")  # fmt: skip
    print(
        f"RESULT measured_cycles={len(seconds)} projected_run_minutes={total / 60:.2f} "
        f"upper_bound_minutes={upper / 60:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
