"""Running a sweep through submitit: one SLURM job array, or submitit's local executor to test.

Each job calls ``active.ex.run`` in-process and requeues itself when preempted or timed out
(submitit's checkpointing); the requeued run resumes from its last completed cycle.

A job uses as many CPU threads as SLURM gave it CPUs (``SLURM_CPUS_PER_TASK``), the local
executor's rule of one share of the cores per job. Nothing else enforces it: on a cluster without
CPU binding (``TaskPlugin=task/none``) torch would start one thread per core of the node, and jobs
sharing a node would then run many times slower than alone.
"""

from __future__ import annotations

import contextlib
import getpass
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils import PROJECT_ROOT
from utils.io import atomic_save_json
from utils.runs.lock import ALREADY_RUNNING
from utils.runs.state import config_differences
from utils.sweep.local import THREAD_VARIABLES
from utils.sweep.plan import Job, SweepError


def _submitit_checkpointable() -> type:
    import submitit

    return submitit.helpers.Checkpointable


class SweepJob(_submitit_checkpointable()):
    """A submitit callable that runs one job in-process and requeues itself when preempted.

    Requeueing needs no saved state of its own: the run saves its state after every cycle, so the
    requeued job simply runs again and resumes from there.
    """

    def __init__(self, job: Job):
        self.job = job

    def __call__(self) -> list[float]:
        use_allocated_cpus()
        os.chdir(self.job.workdir)
        if str(PROJECT_ROOT) not in sys.path:
            sys.path.insert(0, str(PROJECT_ROOT))
        from active import ex

        updates = {**self.job.updates, "progress": False}
        run = ex.run(config_updates=updates, named_configs=list(self.job.named_configs))
        return run.result


def use_allocated_cpus() -> None:
    """Give torch the job's CPUs, and say in the job's log how many threads it had and has.

    The sbatch script's ``job_setup`` is what counts: torch loads while submitit unpickles
    the job, before this runs, and OpenMP reads ``OMP_NUM_THREADS`` only when it loads.
    """
    cpus = os.environ.get("SLURM_CPUS_PER_TASK")
    if not cpus:
        return
    import torch

    loaded_with = torch.get_num_threads()
    torch.set_num_threads(int(cpus))
    print(
        f"threads: torch {torch.get_num_threads()} (loaded with {loaded_with}), "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, SLURM_CPUS_PER_TASK={cpus}",
        flush=True,
    )


def job_setup() -> list[str]:
    """sbatch script lines that run before the job's python starts, hence before torch loads.

    The threads follow the job's CPUs, and ``srun`` is told them too: from SLURM 22.05 to 23.02
    it does not inherit ``--cpus-per-task``, and under CPU binding the run would get one core.
    The project goes on ``PYTHONPATH`` because submitit unpickles the job, a class of this
    module, in the folder the sweep was started from, which need not be the project's.
    """
    threads = [f"export {name}=$SLURM_CPUS_PER_TASK" for name in THREAD_VARIABLES]
    project = shlex.quote(str(PROJECT_ROOT))
    return [
        *threads,
        "export SRUN_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK",
        f"export PYTHONPATH={project}${{PYTHONPATH:+:$PYTHONPATH}}",
    ]


def slurm_parameters(
    partition: str | None,
    gpus_per_job: int,
    cpus_per_job: int,
    time_min: int,
    array_parallelism: int,
) -> dict[str, Any]:
    """submitit ``update_parameters`` for the SLURM array of a sweep."""
    parameters: dict[str, Any] = {
        "slurm_gpus_per_node": gpus_per_job,
        "slurm_cpus_per_task": cpus_per_job,
        "timeout_min": time_min,
        "slurm_array_parallelism": array_parallelism,
        "slurm_setup": job_setup(),
        "name": "active-learning-sweep",
    }
    if partition:
        parameters["slurm_partition"] = partition
    return parameters


def make_executor(cluster: str, folder: Path, parameters: dict[str, Any]) -> Any:
    """A submitit executor: ``cluster`` is ``slurm`` or, for a dry run here, ``local``/``debug``."""
    import submitit

    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise SweepError(
            "--executor slurm needs SLURM's sbatch on PATH; run on a login node of the cluster, "
            "or use --executor local"
        )
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    if cluster != "slurm":
        parameters = {k: v for k, v in parameters.items() if not k.startswith("slurm_")}
    executor.update_parameters(**parameters)
    return executor


def partition_has_gpus(partition: str | None) -> bool:
    """Whether ``partition`` (or the default one) has GPUs, as ``sinfo`` lists its GRES.

    False when ``sinfo`` cannot say: a wrong guess of no GPUs still runs, on the CPU, whereas a
    GPU request on a partition without GPUs is refused by sbatch.
    """
    try:
        listing = subprocess.run(
            ["sinfo", "-h", "-o", "%P %G"], capture_output=True, text=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    for line in listing.splitlines():
        name, _, gres = line.strip().partition(" ")
        default = name.endswith("*")
        if name.rstrip("*") == partition or (partition is None and default):
            if re.search(r"(^|,)gpu[:(]", gres):
                return True
    return False


# sbatch's refusals at submission, and the option of sweep.py that fixes each.
SBATCH_FIXES = (
    (
        "generic resource",
        "the partition has no GPUs of that kind; use --gpus-per-job 0 or a --partition with GPUs",
    ),
    ("invalid partition", "choose a --partition that `sinfo -s` lists"),
    (
        "node configuration is not available",
        "no node of the partition has that many CPUs or GPUs; lower --cpus-per-job or "
        "--gpus-per-job (`sinfo -o '%P %c %G'` lists what the nodes have)",
    ),
    # Before "time limit": the QOS refusal says "job submit limit, user's size and/or time
    # limits", and the usual cause is the number of jobs.
    (
        "qos",
        "the account's limits refuse this many jobs or this long a one; sweep fewer --runs at "
        "a time, or lower --time-min",
    ),
    ("time limit", "lower --time-min to the partition's limit (`sinfo -o '%P %l'`)"),
    ("array", "the array is larger than the cluster allows; sweep fewer --runs at a time"),
    ("contact slurm controller", "SLURM's controller does not answer; ask its administrators"),
)


def submission_error(message: str) -> SweepError:
    """One line from sbatch's refusal: its own last error line and the option that fixes it."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower()] or lines or ["no message"]
    cause = re.sub(r"^(sbatch: error: )?(Batch job submission failed: )?", "", errors[-1])
    fix = next(
        (fix for key, fix in SBATCH_FIXES if key in cause.lower()),
        "fix the SLURM options of sweep.py (--partition, --gpus-per-job, --cpus-per-job, "
        "--time-min, --array-parallelism)",
    )
    return SweepError(f"sbatch refused the sweep: {cause}; {fix}; nothing was submitted")


def submit(executor: Any, jobs: Sequence[Job]) -> list[Any]:
    """Submit ``jobs`` as one array; return submitit's job handles.

    ``SweepError`` in one line when sbatch refuses it: submitit would raise its ``FailedJobError``
    after printing sbatch's output itself, so its printing is caught here and its message kept.
    The files submitit wrote for the refused array are removed; nothing else is touched.
    """
    from submitit.core.utils import FailedJobError, FailedSubmissionError, JobPaths

    callables = [SweepJob(job) for job in jobs]
    folder = JobPaths.get_first_id_independent_folder(executor.folder)
    existing = {folder, *folder.rglob("*")} if folder.exists() else set()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stderr(printed), executor.batch():
            handles = [executor.submit(fn) for fn in callables]
    except FailedJobError as err:
        _remove_new(folder, existing)
        raise submission_error(f"{printed.getvalue()}\n{err}") from None
    except FailedSubmissionError as err:
        answer = str(err).splitlines()[0]
        raise SweepError(
            f"sbatch gave no job id ({answer}); check `squeue --me` before running the sweep "
            "again, and that the sbatch on PATH is SLURM's"
        ) from None
    except OSError as err:
        _remove_new(folder, existing)
        raise SweepError(f"sbatch could not run: {err}; check SLURM's installation") from None
    return handles


def _remove_new(folder: Path, existing: set[Path]) -> None:
    """Remove ``folder`` and what is in it, except ``existing``; the deepest first."""
    present = [folder, *folder.rglob("*")] if folder.exists() else []
    new = [path for path in present if path not in existing]
    for path in sorted(new, key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            path.rmdir()
        else:
            path.unlink()


# Which SLURM job last ran each run, so that a rerun of the sweep can tell a queued run from a
# failed one: ``{stem: job id}`` (``"266_0"`` for an array task, ``"267"`` for a single job).
SUBMITTED_FILE = "submitted.json"
# Held from reading that file to recording a submission in it.
SUBMIT_LOCK = "submit.lock"


def record_submission(folder: Path, jobs: Sequence[Job], handles: Sequence[Any]) -> None:
    """Add the submitted jobs' ids, and the configs they run, to ``folder/submitted.json``
    (``folder``: the sweep's logs)."""
    submitted = _read_entries(folder)
    for job, handle in zip(jobs, handles, strict=True):
        submitted[job.stem] = {"job_id": str(handle.job_id), "config": job.record_config()}
    atomic_save_json(folder / SUBMITTED_FILE, submitted)


def forget_submissions(folder: Path, stems: Sequence[str]) -> None:
    """Drop ``stems`` from ``folder/submitted.json``: the next run of the sweep submits them as
    new runs."""
    submitted = _read_entries(folder)
    atomic_save_json(
        folder / SUBMITTED_FILE, {k: v for k, v in submitted.items() if k not in stems}
    )


def submitted_config_differences(folder: Path, job: Job) -> list[str]:
    """Keys in which ``job``'s config differs from the one its recorded SLURM job runs; none
    when they agree, or when the job was recorded without its config."""
    entry = _read_entries(folder).get(job.stem)
    if not isinstance(entry, dict) or not isinstance(entry.get("config"), dict):
        return []
    return config_differences(entry["config"], job.record_config())


def refused(line: str) -> bool:
    """Whether a job's last line (``last_error``) is its run's own one-line refusal (bad data, a
    NaN loss, another config), which the same job would meet again."""
    # A lock still held for a requeued job's dead first attempt (an NFS lease) passes.
    return line.startswith("error:") and ALREADY_RUNNING not in line


def read_submissions(folder: Path) -> dict[str, str]:
    """Each recorded run's SLURM job id."""
    return {
        stem: str(entry["job_id"] if isinstance(entry, dict) else entry)
        for stem, entry in _read_entries(folder).items()
        if not isinstance(entry, dict) or "job_id" in entry
    }


def _read_entries(folder: Path) -> dict[str, Any]:
    """``submitted.json``: run -> {"job_id", "config"}, or run -> job id as first written."""
    try:
        entries = json.loads((folder / SUBMITTED_FILE).read_text())
        return {str(k): v for k, v in entries.items()}
    except (OSError, ValueError, AttributeError):
        return {}


def queued_jobs() -> dict[str, str] | None:
    """This user's jobs in SLURM's queue, one entry per array task: job id -> state; None when
    squeue does not answer, which is not an empty queue."""
    command = ["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"]
    try:
        listing = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if listing.returncode != 0:
        return None
    pairs = (line.split() for line in listing.stdout.splitlines())
    return {fields[0]: fields[1] for fields in pairs if len(fields) == 2}


def last_error(folder: Path, job_id: str) -> str:
    """The line a job's run ended with: its own ``error:`` line, else the last line of its
    stderr that is not SLURM's or submitit's."""
    path = folder / job_id / f"{job_id}_0_log.err"
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return f"no log at {path}"
    own = [line for line in lines if line and not line.startswith(("srun:", "submitit "))]
    errors = [line for line in own if re.match(r"(error|[\w.]*Error)\b", line, re.IGNORECASE)]
    return (errors or own or [f"an empty log, {path}"])[-1]
