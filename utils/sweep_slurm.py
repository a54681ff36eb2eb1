"""Running a sweep through submitit: one SLURM job array, or submitit's local executor to test.

Each job calls ``active.ex.run`` in-process and requeues itself when preempted or timed out
(submitit's checkpointing); the requeued run resumes from its last completed cycle.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from utils.sweep import Job, SweepError


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
        os.chdir(self.job.workdir)
        if self.job.workdir not in sys.path:
            sys.path.insert(0, self.job.workdir)
        from active import ex

        updates = {**self.job.updates, "progress": False}
        run = ex.run(config_updates=updates, named_configs=list(self.job.named_configs))
        return run.result


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
        "name": "glas-sweep",
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


def submit(executor: Any, jobs: Sequence[Job]) -> list[Any]:
    """Submit ``jobs`` as one array; return submitit's job handles."""
    callables = [SweepJob(job) for job in jobs]
    with executor.batch():
        handles = [executor.submit(fn) for fn in callables]
    return handles
