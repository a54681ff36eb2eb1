"""Run a whole comparison, heuristics x runs (x a grid of any other keys), in one command.

    python sweep.py --heuristics bald random --runs 0-4 --parallel 6 -- image_scale=0.5
    python sweep.py --heuristics bald random --runs 0-1 --parallel 2 -- demo
    python sweep.py --heuristics bald --runs 0-4 --grid image_scale=0.25,0.5 -- epochs=20
    python sweep.py --executor slurm --partition gpu --runs 0-9 -- al_cycles=10

Everything after ``--`` is active.py config, written exactly as after ``active.py with``. Each job
is one ``active.py`` run, so running the same sweep again continues it: finished runs are
skipped, interrupted ones resume from their last cycle, runs that another process is running are
left to it, and a changed config is refused. At the end the report (``utils.report``) is written
into ``results_dir``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path

# sacred imports pkg_resources, whose deprecation warning says nothing to our users.
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")

from utils.config import NAMED_CONFIGS  # noqa: E402
from utils.errors import UserError  # noqa: E402
from utils.io import make_results_dir  # noqa: E402
from utils.runs.lock import waiting_lock  # noqa: E402
from utils.sweep.local import run_local  # noqa: E402
from utils.sweep.mps import mps_daemon  # noqa: E402
from utils.sweep.plan import (  # noqa: E402
    Job,
    JobStatus,
    SweepError,
    check_resumable,
    parse_config_tokens,
    parse_grid,
    parse_runs,
    plan_jobs,
)
from utils.sweep.slurm import (  # noqa: E402
    SUBMIT_LOCK,
    forget_submissions,
    last_error,
    make_executor,
    partition_has_gpus,
    queued_jobs,
    read_submissions,
    record_submission,
    refused,
    slurm_parameters,
    submit,
    submitted_config_differences,
)
from utils.sweep.stopping import (  # noqa: E402
    STOP_SIGNALS,
    check_stop,
    stop_for,
    stop_signals_held,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sweep.py",
        description="Run heuristics x runs (x --grid) of active.py, locally or on SLURM.",
        epilog="Everything after -- is active.py config: named configs and KEY=VALUE pairs.",
    )
    parser.add_argument(
        "--heuristics",
        nargs="+",
        default=["bald", "random"],
        metavar="NAME",
        help="heuristics to compare (bald random)",
    )
    parser.add_argument("--runs", default="0-4", help="run indices, e.g. 0-4 or 0,2,5 (0-4)")
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2",
        help="sweep another config key too (repeatable; every combination is a job)",
    )
    parser.add_argument(
        "--full-supervision", action="store_true", help="add the full-supervision reference run"
    )
    parser.add_argument(
        "--executor", choices=["local", "slurm"], default="local", help="where jobs run (local)"
    )
    parser.add_argument("--parallel", type=int, default=1, help="local jobs at once (1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--mps",
        action="store_true",
        help="local, on one GPU: run the jobs' kernels side by side through a CUDA MPS daemon "
        "started for the sweep",
    )
    slurm = parser.add_argument_group("SLURM (--executor slurm)")
    slurm.add_argument("--partition", default=None, help="SLURM partition (the cluster's default)")
    slurm.add_argument(
        "--gpus-per-job",
        type=int,
        default=None,
        help="GPUs per job (default: 1 if the partition has GPUs, as sinfo lists them, else 0)",
    )
    slurm.add_argument("--cpus-per-job", type=int, default=8, help="CPUs and threads per job (8)")
    slurm.add_argument(
        "--time-min", type=int, default=120, help="time limit per job, in minutes (120)"
    )
    slurm.add_argument("--array-parallelism", type=int, default=16, help="array jobs at once (16)")
    return parser


def split_argv(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    argv = list(argv)
    if "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    own, config_tokens = split_argv(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, stray = parser.parse_known_args(own)
    if stray and all("=" in token or token in NAMED_CONFIGS for token in stray):
        # active.py config written without the -- in front of it.
        print(
            f"error: sweep.py does not take {' '.join(stray)!r}; active.py config goes after "
            f"--: sweep.py ... -- {' '.join(stray)}",
            file=sys.stderr,
            flush=True,
        )
        return 2
    if stray:
        parser.parse_args(own)  # argparse's own message for anything else
    try:
        return sweep(args, config_tokens)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return 2


def sweep(args: argparse.Namespace, config_tokens: list[str]) -> int:
    """Plan, check, run or submit, and report; every refusal is a ``UserError``."""
    if args.parallel < 1:
        raise SweepError(f"--parallel must be >= 1, got {args.parallel}")
    for name in ("gpus_per_job", "cpus_per_job", "time_min", "array_parallelism"):
        low = 0 if name == "gpus_per_job" else 1
        if (getattr(args, name) or 0) < low:
            flag = "--" + name.replace("_", "-")
            raise SweepError(f"{flag} must be >= {low}, got {getattr(args, name)}")
    if args.mps and args.executor != "local":
        raise SweepError("--mps applies to --executor local; SLURM jobs get a GPU each")
    named, updates = parse_config_tokens(config_tokens)
    jobs = plan_jobs(
        args.heuristics,
        parse_runs(args.runs),
        named,
        updates,
        parse_grid(args.grid),
        args.full_supervision,
    )
    if args.executor == "slurm" and any(job.config.overwrite for job in jobs):
        raise SweepError(
            "overwrite=True on SLURM would start a requeued job again from cycle 0, and redo "
            "every finished run each time this command is run to write the report; delete the "
            "old runs' files, or use another results_dir"
        )
    results_dir = jobs[0].results_dir
    make_results_dir(results_dir)
    statuses = check_resumable(jobs)
    executor = None
    if args.executor == "slurm":
        if args.gpus_per_job is None:
            args.gpus_per_job = int(partition_has_gpus(args.partition))
        parameters = slurm_parameters(
            args.partition,
            args.gpus_per_job,
            args.cpus_per_job,
            args.time_min,
            args.array_parallelism,
        )
        executor = make_executor("slurm", results_dir / "slurm" / "%j", parameters)

    slurm_logs = results_dir / "slurm"
    # Two sweeps of one results_dir on SLURM at once would each find a run not yet submitted and
    # submit it; the second waits here, then finds the first one's submissions.
    with waiting_lock(slurm_logs / SUBMIT_LOCK) if executor is not None else nullcontext():
        if executor is not None:  # read again: runs may have ended while another sweep submitted
            statuses = check_resumable(jobs)
        todo, refusals = runs_to_start(jobs, statuses, slurm_logs if executor else None)
        print(
            f"sweep: {len(jobs)} runs in {results_dir}, "
            f"{len(jobs) - len(todo) - len(refusals)} finished or running elsewhere, "
            + (f"{len(refusals)} refused, " if refusals else "")
            + f"{len(todo)} to run",
            flush=True,
        )
        if executor is not None and todo:
            # A stop while sbatch answers waits until its job ids are recorded: an array queued
            # but not recorded would be submitted again by the next run of this command.
            with stop_signals_held():
                handles = submit(executor, todo)
                record_submission(slurm_logs, todo, handles)
            ids = ", ".join(sorted({str(h.job_id).split("_")[0] for h in handles})) or "none"
            # submitit sends a single job without --array, so it has a plain job id.
            jobs_text = "1 job" if len(handles) == 1 else f"{len(handles)} jobs"
            kind = "job" if len(handles) == 1 else "array"
            print(
                f"submitted {jobs_text} to SLURM ({kind} {ids}; {args.gpus_per_job} GPUs and "
                f"{args.cpus_per_job} CPUs each); logs in {slurm_logs}; run this command again "
                "when they end to write the report",
                flush=True,
            )
            return 0

        finished = sum(statuses[job.stem].finished for job in jobs)
        running = len(jobs) - len(todo) - len(refusals) - finished
        if executor is not None and running:
            print(
                f"{running} runs still queued or running; run this command again when they end",
                flush=True,
            )
            return 0
        if refusals:
            # Reported once, with the report: the next run of this command, once their cause is
            # fixed, submits them again.
            forget_submissions(slurm_logs, list(refusals))
    failed = list(refusals)
    if todo:
        with mps_daemon() if args.mps else nullcontext(None) as extra_env:
            failed = run_local(
                todo, args.parallel, progress=not args.no_progress, extra_env=extra_env
            )
    check_stop()  # before the report, if a stop was lost while the last job ended
    if refusals:
        where = f"{slurm_logs}; fix their cause and run this command again to submit them"
    else:
        where = str(results_dir / "logs")
    return write_report(results_dir, failed, where)


def runs_to_start(
    jobs: list[Job], statuses: dict[str, JobStatus], slurm_logs: Path | None
) -> tuple[list[Job], dict[str, str]]:
    """The jobs to run or submit, and the runs whose SLURM job ended on their own lasting
    refusal (stem -> its line). ``slurm_logs``: the sweep's SLURM folder, None for a local one."""
    submitted = read_submissions(slurm_logs) if slurm_logs is not None else {}
    queue = queued_jobs() if submitted else {}
    if queue is None:
        print(
            "warning: squeue does not answer, so runs submitted before are taken to be still "
            "queued and are not submitted again; run this command again when SLURM answers",
            file=sys.stderr,
            flush=True,
        )
    todo, refusals = [], {}
    for job in jobs:
        status = statuses[job.stem]
        if status.finished:
            continue
        if status.running_in is not None:
            print(f"skipping {job.stem}: already running in {status.running_in}", flush=True)
            continue
        job_id = submitted.get(job.stem)
        if job_id is not None and (queue is None or job_id in queue):
            # Queued with the config it was submitted with, which the run would refuse later.
            differing = submitted_config_differences(slurm_logs, job)
            if differing:
                raise SweepError(
                    f"{job.stem} is queued or running as SLURM job {job_id} with another config "
                    f"(it differs in {', '.join(differing)}); keep its config until it ends, "
                    f"cancel it (scancel {job_id}) to run the new one, or use another "
                    "results_dir"
                )
        if job_id is not None and queue is None:
            continue
        if queue is not None and job_id in queue:  # queued, or started but not yet locked
            print(f"skipping {job.stem}: SLURM job {job_id} is {queue[job_id]}", flush=True)
            continue
        if job_id is not None:
            line = last_error(slurm_logs, job_id)
            if refused(line):
                # Submitted again, it would be refused again, and the report never written.
                refusals[job.stem] = line
                print(
                    f"{job.stem}: SLURM job {job_id} ended on the run's refusal ({line}); not "
                    "submitted again by this command",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            print(
                f"{job.stem}: SLURM job {job_id} ended before the run finished ({line}); "
                "submitting it again",
                file=sys.stderr,
                flush=True,
            )
        todo.append(job)
    return todo, refusals


def write_report(results_dir: Path, failed: list[str], logs: str) -> int:
    """Write the report; exit status 1, with one line naming ``failed`` and ``logs``, when
    runs failed or no report could be written."""
    from utils.report.cli import write_report as report
    from utils.runs.records import ReportError

    reported = True
    try:
        written = report(results_dir)
        print(f"report: {', '.join(str(p) for p in written)}", flush=True)
    except ReportError as err:
        print(f"error: no report: {err}", file=sys.stderr, flush=True)
        reported = False
    if failed:
        print(
            f"error: {len(failed)} runs failed ({', '.join(failed)}); their logs are in {logs}",
            file=sys.stderr,
            flush=True,
        )
    return 0 if reported and not failed else 1


def _unwind_on(signum: int, _frame: object) -> None:
    # Ctrl-C, scancel, kill and a closed terminal: the local jobs are killed and an MPS daemon
    # started for the sweep quits, instead of outliving it, with one line rather than a
    # traceback. A second signal must not cut that clean-up short.
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    # os.write: a print could land inside one of tqdm's writes to stderr and fail as reentrant.
    name = signal.Signals(signum).name
    try:
        os.write(2, f"sweep: stopped by {name}; the same command resumes it\n".encode())
    except OSError:  # stderr closed with the terminal: stop all the same
        pass
    stop_for(signum)


if __name__ == "__main__":
    for stop in STOP_SIGNALS:
        # One ignored from the start (SIGHUP under nohup, SIGINT in a script's background job)
        # stays ignored, here and in the jobs, which inherit it.
        if signal.getsignal(stop) is not signal.SIG_IGN:
            signal.signal(stop, _unwind_on)
    code = main()
    check_stop()
    raise SystemExit(code)
