"""Running a sweep's jobs on this machine, ``parallel`` at a time, with one progress display.

Each job is ``python active.py with ...`` in its own process, with its share of the CPU threads;
on a GPU all jobs share the device (through CUDA MPS when ``sweep.py --mps`` starts it).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from utils.runs.lock import ALREADY_RUNNING, is_locked
from utils.sweep.plan import Job, cycles_done
from utils.sweep.stopping import check_stop, release_stop_signals, stop_signals_held

# The variables that set a job's CPU threads. Every executor sets them to the job's share of the
# cores before the job's python starts: OpenMP reads them once, when torch loads.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _die_with_parent() -> None:
    """In the child: receive SIGKILL when the sweep dies, so no orphan keeps a run's lock."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    release_stop_signals()


def available_cpus() -> int:
    """This process's CPU cores; inside a SLURM allocation at most the CPUs it was given (per
    task with ``--cpus-per-task``, else on this node), since without CPU binding
    (``TaskPlugin=task/none``) the affinity mask is the whole node."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    for variable in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        allocated = os.environ.get(variable, "")
        if allocated.isdigit() and int(allocated) > 0:
            return min(cores, int(allocated))
    return cores


@dataclass
class Progress:
    """One display for the whole sweep: runs and cycles done, and the time left."""

    jobs: Sequence[Job]
    show: bool = True
    started: float = field(default_factory=time.monotonic)
    start_cycles: int = 0
    bar: Any = None
    postfix: str = ""

    def __post_init__(self) -> None:
        from tqdm import tqdm

        self.total = sum(job.total_cycles for job in self.jobs)
        # The state files of runs to overwrite say what the old runs did, not these.
        self.sweep_began = time.time()
        self.overwritten = {job.stem for job in self.jobs if job.config.overwrite}
        self.start_cycles = self.cycles()
        # No monitor thread: a stop signal must reach the main thread, which holds it back
        # while it forks (``stop_signals_held``); a thread that does not would take it then.
        tqdm.monitor_interval = 0
        self.bar = tqdm(
            total=self.total,
            initial=self.start_cycles,
            desc="sweep",
            unit="cycle",
            disable=not self.show,
            dynamic_ncols=True,
        )

    def cycles(self, status: dict[str, tuple[int, bool]] | None = None) -> int:
        """Cycles done over all jobs, from ``status`` (``cycles_done`` by stem) or the files."""
        status = status or self.status()
        return sum(
            job.total_cycles if status[job.stem][1] else min(status[job.stem][0], job.total_cycles)
            for job in self.jobs
        )

    def status(self) -> dict[str, tuple[int, bool]]:
        """``cycles_done`` of every job, by stem."""
        return {job.stem: self.job_status(job) for job in self.jobs}

    def job_status(self, job: Job) -> tuple[int, bool]:
        return cycles_done(job, self.sweep_began if job.stem in self.overwritten else None)

    def update(self, running: Sequence[Job]) -> None:
        status = self.status()  # one read of each state file
        now = self.cycles(status)
        finished = {stem for stem, (_, done) in status.items() if done}
        # A run whose files say finished is done, though its process may not have exited yet.
        busy = sum(job.stem not in finished for job in running)
        postfix = f"runs {len(finished)}/{len(self.jobs)} done, {busy} running"
        if now != self.bar.n or postfix != self.postfix:
            self.postfix = postfix
            self.bar.set_postfix_str(postfix, refresh=False)
            self.bar.update(now - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def run_local(
    jobs: Sequence[Job],
    parallel: int,
    progress: bool = True,
    say: Callable[[str], None] = print,
    poll_s: float = 0.5,
    extra_env: dict[str, str] | None = None,
) -> list[str]:
    """Run ``jobs`` here, ``parallel`` at a time; return the stems that failed.

    Each job's output goes to ``results_dir/logs/{stem}.log``. The CPU threads are split evenly
    among ``parallel`` job slots. ``extra_env`` reaches every job (the MPS daemon's folders).
    """
    # By --parallel, not by the jobs left: a resumed sweep then gives every run the thread count
    # an uninterrupted one would, and CPU results are bitwise only with the same count.
    threads = max(1, available_cpus() // parallel)
    if parallel > available_cpus() and len(jobs) > available_cpus():
        print(
            f"warning: --parallel {parallel} on {available_cpus()} CPU cores: the jobs share "
            "cores, one thread each, so on the CPU each runs slower and the sweep gains little "
            f"over --parallel {available_cpus()}",
            file=sys.stderr,
            flush=True,
        )
    env = {**os.environ, **dict.fromkeys(THREAD_VARIABLES, str(threads))}
    env.update(extra_env or {})
    pending, running, failed = list(jobs), {}, []
    display = Progress(jobs, show=progress)
    try:
        while pending or running:
            while pending and len(running) < parallel:
                check_stop()
                job = pending.pop(0)
                # Checked when the sweep began; another sweep on the same results_dir may have
                # taken or finished the run since.
                elsewhere = _taken_since(job, display)
                if elsewhere is not None:
                    display.bar.write(f"skipping {job.stem}: {elsewhere}")
                    continue
                log_path = job.results_dir / "logs" / f"{job.stem}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                # A stop held during the fork arrives as the hold ends: the job must be in
                # ``running`` by then, for the clean-up below to kill it.
                with log_path.open("ab") as log, stop_signals_held():
                    process = subprocess.Popen(
                        [*job.command(), "progress=False"],
                        cwd=job.workdir,
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        preexec_fn=_die_with_parent,
                    )
                    running[job.stem] = (job, process, log_path)
            check_stop()
            for stem, (_, process, log_path) in list(running.items()):
                code = process.poll()
                if code is None:
                    continue
                del running[stem]
                line = _last_line(log_path)
                if code != 0 and line.startswith("error:") and ALREADY_RUNNING in line:
                    # Another sweep started it between the check above and the job's own lock.
                    display.bar.write(f"skipping {stem}: {line.removeprefix('error: ')}")
                elif code != 0:
                    failed.append(stem)
                    display.bar.write(f"{stem} failed (exit {code}): {line}")
            display.update([job for job, _, _ in running.values()])
            if running:
                time.sleep(poll_s)
    finally:
        for _, process, _ in running.values():
            process.kill()
        display.close()
    return failed


def _taken_since(job: Job, display: Progress) -> str | None:
    """Why ``job`` is no longer this sweep's to start, or None."""
    holder = is_locked(job.paths.lock)
    if holder is not None:
        return f"already running in {holder}"
    return "finished by another process" if display.job_status(job)[1] else None


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1] if lines else "no output"
