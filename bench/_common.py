"""Helpers shared by the benchmarks: the image pool, active.py's defaults, fresh worker processes.

Every measured path runs in its own ``python bench/<script>.py --worker NAME`` subprocess so that
its peak RSS (``ru_maxrss``) is its own and no path inherits another's warm caches or allocator
state. The worker prints one JSON line; ``run_worker`` returns it as a dict.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from data.glas import SplitRow, read_grades
from data.synthetic import generate_synthetic_glas

ROOT = Path(__file__).resolve().parents[1]

WORKER_TAG = "BENCH_WORKER_JSON "


def active_defaults() -> dict[str, Any]:
    """The experiment's config defaults, from their one definition (``utils.config``)."""
    from utils.config import defaults

    return defaults()


def make_synthetic_pool(out_dir: Path, n: int, height: int, width: int, seed: int = 0) -> Path:
    """Synthetic GlaS with ``n`` train images (about 1 in 5 is 0.8x smaller, as in GlaS)."""
    return generate_synthetic_glas(
        out_dir, n_train=n, n_test_a=0, n_test_b=0, height=height, width=width, seed=seed
    )


def pool_rows(data_path: str | Path, n: int) -> list[SplitRow]:
    """The first ``n`` images of ``Grade.csv`` as split rows, ``train_*`` images first."""
    grades = read_grades(data_path)
    names = sorted(grades, key=lambda name: not name.startswith("train_"))  # stable sort
    if n > len(names):
        raise SystemExit(f"--n {n} but {data_path} has only {len(names)} images")
    return [SplitRow(f"{name}.bmp", f"{name}_anno.bmp", grades[name]) for name in names[:n]]


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def busy_cpu_percent(seconds: float = 1.0) -> float:
    """System-wide CPU use over ``seconds`` while this process idles: other processes' load.

    Anything well above 0 means the timings that follow are shared with someone else; with
    libgomp's default spin-waiting a 2-thread torch run can then slow down by an order of
    magnitude (``OMP_WAIT_POLICY=PASSIVE`` limits the damage).
    """
    import psutil

    return psutil.cpu_percent(interval=seconds)


def emit(result: dict[str, Any]) -> None:
    """Worker side: hand the result to the parent as one tagged JSON line on stdout."""
    print(WORKER_TAG + json.dumps(result), flush=True)


def run_worker(script: Path, name: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run ``script --worker name --config JSON`` in a fresh interpreter; return its result."""
    command = [sys.executable, str(script), "--worker", name, "--config", json.dumps(config)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"worker {name} failed with exit status {done.returncode}")
    lines = [line for line in done.stdout.splitlines() if line.startswith(WORKER_TAG)]
    if not lines:
        sys.stderr.write(done.stdout + done.stderr)
        raise SystemExit(f"worker {name} printed no result")
    result = json.loads(lines[-1].removeprefix(WORKER_TAG))
    result["process_s"] = time.perf_counter() - started
    return result


def machine_summary() -> str:
    """CPU model (lscpu), logical CPUs, torch version and threads, and the GPU when there is one."""
    import torch

    model = platform.processor() or platform.machine()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        model = next(
            (ln.split(":", 1)[1].strip() for ln in lscpu.splitlines() if "Model name" in ln),
            model,
        )
    except (OSError, subprocess.CalledProcessError):
        pass
    summary = (
        f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads)"
    )
    if torch.cuda.is_available():
        summary += f", GPU {torch.cuda.get_device_name()}"
    return summary
