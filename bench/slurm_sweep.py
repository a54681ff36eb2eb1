"""The demo sweep through SLURM against the same sweep run locally: wall time and cycle times.

    python bench/slurm_sweep.py [--runs 0-1] [--heuristics bald random] [--parallel 2]
        [--slurm-first]

Needs a SLURM cluster that runs jobs on this machine's files (``.ci/start_slurm.sh`` starts a
one-node one as root). Runs ``sweep.py --executor local --parallel P`` and then ``sweep.py
--executor slurm --array-parallelism P --cpus-per-job C``, with C the CPUs that the local sweep
gives each job, so both run the same jobs with the same threads. The SLURM sweep's time runs from
its submission until the rerun that writes the report has ended. Prints each job's cycle times
(from its record), whether both sweeps' learning curves are bitwise equal, and a last line that
starts with ``RESULT``. Results go to a temp dir; the demo's synthetic data is generated under
``data/synthetic`` first, outside the timing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project's packages importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import ROOT, busy_cpu_percent, machine_summary  # noqa: E402


def prepare_demo_data() -> None:
    from data.datasets import prepare_synthetic
    from utils.sweep.plan import parse_config_tokens, plan_jobs

    named, updates = parse_config_tokens(["demo"])
    [job] = plan_jobs(["random"], [0], named, updates, workdir=ROOT)
    prepare_synthetic(job.config)


def sweep(options: list[str], results: Path, args: argparse.Namespace) -> str:
    command = [sys.executable, "sweep.py", "--heuristics", *args.heuristics, "--runs", args.runs]
    command += ["--no-progress", *options, "--", "demo", f"results_dir={results}"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"error: {' '.join(command)} failed:\n{done.stderr}")
    return done.stdout


def wait_for(array: str) -> None:
    while subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True).stdout:
        time.sleep(0.2)


def run_local(results: Path, args: argparse.Namespace) -> float:
    print(f"local: CPU busy before {busy_cpu_percent():.0f}%", flush=True)
    started = time.monotonic()
    sweep(["--executor", "local", "--parallel", str(args.parallel)], results, args)
    return time.monotonic() - started


def run_slurm(results: Path, args: argparse.Namespace, cpus: int) -> tuple[float, float]:
    """Wall seconds until the array has ended, and until the rerun has written the report."""
    options = ["--executor", "slurm", "--cpus-per-job", str(cpus), "--gpus-per-job", "0"]
    options += ["--array-parallelism", str(args.parallel), "--time-min", "60"]
    print(f"SLURM: CPU busy before {busy_cpu_percent():.0f}%", flush=True)
    started = time.monotonic()
    answer = sweep(options, results, args)
    found = re.search(r"\((?:array|job) (\d+)", answer)  # one run is a job, not an array
    if found is None:
        raise SystemExit(f"error: sweep.py submitted no job:\n{answer}")
    try:
        wait_for(found[1])
    finally:  # an interrupted benchmark leaves no jobs behind
        subprocess.run(["scancel", found[1]])
    ended = time.monotonic() - started
    sweep(options, results, args)
    return ended, time.monotonic() - started


def cycle_seconds(results: Path) -> dict[str, list[float]]:
    return {
        path.stem: [c["total"] for c in json.loads(path.read_text())["seconds_per_cycle"]]
        for path in sorted(results.glob("*_[0-9]*.json"))
        if not path.name.endswith(".state.json")
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", default="0-1")
    parser.add_argument("--heuristics", nargs="+", default=["bald", "random"])
    parser.add_argument("--parallel", type=int, default=2, help="jobs at once, both ways (2)")
    parser.add_argument(
        "--slurm-first", action="store_true", help="time the SLURM sweep before the local one"
    )
    args = parser.parse_args()
    if shutil.which("sbatch") is None:
        raise SystemExit("error: no sbatch on PATH; start a cluster with .ci/start_slurm.sh")
    os.chdir(ROOT)
    from utils.sweep.local import available_cpus

    cpus = max(1, available_cpus() // args.parallel)
    prepare_demo_data()
    with tempfile.TemporaryDirectory() as tmp:
        local, slurm = Path(tmp, "local"), Path(tmp, "slurm")
        if args.slurm_first:
            array_s, slurm_s = run_slurm(slurm, args, cpus)
        local_s = run_local(local, args)
        if not args.slurm_first:
            array_s, slurm_s = run_slurm(slurm, args, cpus)
        local_cycles, slurm_cycles = cycle_seconds(local), cycle_seconds(slurm)
        same = all(
            (local / f"{stem}.npy").read_bytes() == (slurm / f"{stem}.npy").read_bytes()
            for stem in local_cycles
        )
    print(f"{machine_summary()}; {args.parallel} jobs at once, {cpus} threads per job")
    print("| run | local: cycle s | SLURM: cycle s |\n|---|---|---|")
    for stem, seconds in local_cycles.items():
        shown = [" / ".join(f"{s:.1f}" for s in c) for c in (seconds, slurm_cycles[stem])]
        print(f"| {stem} | {shown[0]} | {shown[1]} |")
    print(f"local sweep {local_s:.1f} s; SLURM: array {array_s:.1f} s, report {slurm_s:.1f} s")
    print(f"learning curves bitwise equal: {same}")
    print(
        f"RESULT local_s={local_s:.1f} slurm_s={slurm_s:.1f} overhead_s={slurm_s - local_s:.1f} "
        f"within_30s={slurm_s <= local_s + 30} bitwise_equal={same}"
    )


if __name__ == "__main__":
    main()
