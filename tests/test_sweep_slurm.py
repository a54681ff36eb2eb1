"""sweep.py --executor slurm through a real SLURM scheduler (the tests marked ``slurm``).

They need a cluster that answers ``sbatch`` here and runs jobs on this machine's files, with at
least 2 CPUs in its default partition: ``.ci/start_slurm.sh`` starts such a one-node cluster as
root. Without one they skip, saying why. Every SLURM result is compared, bit for bit, with a local
sweep of the same jobs given the same CPU threads per job.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_sweep import ROOT, demo_tokens, run_sweep, sweep_command
from utils.sweep.local import available_cpus

pytestmark = pytest.mark.slurm

# Each job's CPUs: the share that --parallel 2 gives a local job on this machine.
THREADS = max(1, available_cpus() // 2)
RUNS = ("bald_0", "random_0", "bald_1", "random_1")  # the array's order: run-major
# For the requeue: cycles long enough that a run requeued after its first one is still running
# when SLURM kills it (KillWait after its SIGTERM, which submitit ignores), so it has to resume.
LONGER = ["epochs=12", "al_cycles=3"]


def why_no_slurm() -> str | None:
    if shutil.which("sbatch") is None:
        return "no SLURM here (sbatch not on PATH); start one as root with .ci/start_slurm.sh"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"scontrol ping failed ({err}); start SLURM with .ci/start_slurm.sh"
    if "UP" not in ping.stdout:
        answer = (ping.stdout + ping.stderr).strip().splitlines() or ["no answer"]
        return f"SLURM's controller is not up ({answer[0]}); start it with .ci/start_slurm.sh"
    states = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True).stdout
    if not re.search(r"^(idle|mixed|allocated|completing)", states, re.MULTILINE):
        return f"no SLURM node can take jobs (sinfo: {' '.join(states.split()) or 'no nodes'})"
    return None


@pytest.fixture(scope="module")
def cluster() -> None:
    reason = why_no_slurm()
    if reason:
        pytest.skip(reason)


def tokens(synthetic_root: Path, results: Path, longer: bool) -> list[str]:
    return [*demo_tokens(synthetic_root, results), *(LONGER if longer else [])]


def slurm_command(
    synthetic_root: Path,
    results: Path,
    runs: str,
    longer: bool,
    heuristics: tuple[str, ...] = ("bald", "random"),
) -> list[str]:
    options = ["--executor", "slurm", "--cpus-per-job", str(THREADS), "--time-min", "10"]
    options += ["--array-parallelism", "2"]
    settings = tokens(synthetic_root, results, longer)
    return sweep_command(settings, *options, heuristics=heuristics, runs=runs)


def local_sweep(synthetic_root: Path, results: Path, runs: str, longer: bool) -> Path:
    """The jobs run here, 2 at a time: ``THREADS`` threads each."""
    done = run_sweep(sweep_command(tokens(synthetic_root, results, longer), runs=runs))
    assert done.returncode == 0, done.stderr
    return results


@pytest.fixture(scope="module")
def local_longer(
    cluster: None, synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return local_sweep(synthetic_root, tmp_path_factory.mktemp("local_longer"), "0", True)


def submitted_array(stdout: str, kind: str = "array") -> str:
    """The SLURM id that sweep.py printed: an array's, or with ``kind="job"`` a single job's."""
    jobs = "1 job" if kind == "job" else r"\d+ jobs"
    found = re.search(rf"submitted {jobs} to SLURM \({kind} (\d+);", stdout)
    assert found, stdout
    return found[1]


def wait_for(array: str, timeout_s: float = 300) -> None:
    """Until SLURM lists no task of ``array``; cancels the array if it takes too long."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        listed = subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True)
        if listed.returncode == 0 and not listed.stdout.strip():
            return
        time.sleep(0.5)
    subprocess.run(["scancel", array])
    pytest.fail(f"array {array} still in SLURM's queue after {timeout_s} s; cancelled")


def job_log(results: Path, array: str, task: int) -> str:
    return (results / "slurm" / f"{array}_{task}" / f"{array}_{task}_0_log.out").read_text()


def assert_same_results(results: Path, reference: Path, stems: tuple[str, ...]) -> None:
    for stem in stems:
        assert (results / f"{stem}.npy").read_bytes() == (reference / f"{stem}.npy").read_bytes()
        assert json.loads((results / f"{stem}.json").read_text())["complete"]


def test_slurm_sweep_gives_the_local_results_and_the_rerun_writes_the_report(
    cluster: None, synthetic_root: Path, clean_sweep: Path, tmp_path: Path
) -> None:
    command = slurm_command(synthetic_root, tmp_path, "0-1", longer=False)
    # sbatch passes the submitting shell's variables on; the job must set its own threads.
    wrong = str(THREADS + 1)
    submitted = run_sweep(command, env={**os.environ, "OMP_NUM_THREADS": wrong})
    assert submitted.returncode == 0, submitted.stderr
    assert f"0 GPUs and {THREADS} CPUs each" in submitted.stdout  # no GPUs in the partition
    array = submitted_array(submitted.stdout)
    wait_for(array)
    for task in range(len(RUNS)):
        log = job_log(tmp_path, array, task)
        expected = f"threads: torch {THREADS} (loaded with {THREADS}), OMP_NUM_THREADS={THREADS},"
        assert expected in log, log

    report = run_sweep(command)
    assert report.returncode == 0, report.stderr
    assert "4 finished or running elsewhere, 0 to run" in report.stdout
    assert (tmp_path / "summary.csv").read_text().startswith("heuristic,")
    assert_same_results(tmp_path, clean_sweep, RUNS)


def _cycles_done(results: Path, stem: str) -> int:
    try:
        return json.loads((results / f"{stem}.state.json").read_text())["cycles_done"]
    except (OSError, ValueError, KeyError):
        return 0


def test_a_requeued_array_task_resumes_and_ends_as_if_uninterrupted(
    cluster: None, synthetic_root: Path, local_longer: Path, tmp_path: Path
) -> None:
    submitted = run_sweep(slurm_command(synthetic_root, tmp_path, "0", longer=True))
    assert submitted.returncode == 0, submitted.stderr
    array = submitted_array(submitted.stdout)
    deadline = time.monotonic() + 120
    while _cycles_done(tmp_path, "bald_0") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    requeue = subprocess.run(["scontrol", "requeue", f"{array}_0"], capture_output=True, text=True)
    assert requeue.returncode == 0, requeue.stderr
    wait_for(array)

    log = job_log(tmp_path, array, 0)
    assert log.count("Starting with JobEnvironment") == 2, f"the task must start twice:\n{log}"
    resumed = re.search(r"resuming bald_0 after cycle (\d+)", log)
    assert resumed, f"the requeued task did not resume (did it end before SLURM killed it?):\n{log}"
    assert int(resumed[1]) < 3
    assert_same_results(tmp_path, local_longer, ("bald_0", "random_0"))


def test_a_single_run_goes_as_a_plain_job_and_gives_the_local_result(
    cluster: None, synthetic_root: Path, clean_sweep: Path, tmp_path: Path
) -> None:
    # The common case of a rerun after one run failed: submitit submits one job without --array.
    # Started from another folder than the project's, as a lab's job scripts often are.
    command = slurm_command(synthetic_root, tmp_path, "1", longer=False, heuristics=("random",))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command[command.index("sweep.py")] = str(ROOT / "sweep.py")
    submitted = subprocess.run(command, cwd=elsewhere, capture_output=True, text=True)
    assert submitted.returncode == 0, submitted.stderr
    job = submitted_array(submitted.stdout, kind="job")
    wait_for(job)
    log = (tmp_path / "slurm" / job / f"{job}_0_log.out").read_text()
    assert f"threads: torch {THREADS} (loaded with {THREADS})" in log, log
    assert_same_results(tmp_path, clean_sweep, ("random_1",))


def test_a_refused_submission_is_one_line_that_names_the_fix(
    cluster: None, synthetic_root: Path, tmp_path: Path
) -> None:
    command = slurm_command(synthetic_root, tmp_path, "0-1", longer=False)
    done = run_sweep([*command[:2], "--gpus-per-job", "1", *command[2:]])
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1, done.stderr
    assert "generic resource" in done.stderr and "use --gpus-per-job 0" in done.stderr
    assert not list(tmp_path.glob("*.npy"))


def test_a_rerun_names_a_failed_job_and_leaves_a_queued_one_alone(
    cluster: None, tmp_path: Path
) -> None:
    # A node held by another job keeps the sweep's job pending.
    blocker = subprocess.run(
        ["sbatch", "--parsable", "--exclusive", "--output", "/dev/null", "--wrap", "sleep 300"],
        capture_output=True,
        text=True,
    )
    assert blocker.returncode == 0, blocker.stderr
    try:
        settings = [
            "dataset=folder",
            f"data_path={tmp_path / 'no_slides'}",  # the run fails when the job starts
            f"results_dir={tmp_path}",
        ]
        options = ["--executor", "slurm", "--cpus-per-job", "1", "--time-min", "5"]
        command = sweep_command(settings, *options, heuristics=("random",), runs="0")
        first = run_sweep(command)
        assert first.returncode == 0, first.stderr
        job = submitted_array(first.stdout, kind="job")
        pending = run_sweep(command)
        assert f"skipping random_0: SLURM job {job} is PENDING" in pending.stdout, pending.stdout
        assert "0 to run" in pending.stdout and "submitted" not in pending.stdout
    finally:
        subprocess.run(["scancel", blocker.stdout.strip()])
    wait_for(job)
    # The run refused to start: submitted again it would be refused again, and the report
    # never written. The rerun names it, reports, and fails; the one after submits it again.
    failed = run_sweep(command)
    line = f"random_0: SLURM job {job} ended on the run's refusal (error: data folder"
    assert line in failed.stderr and "does not exist" in failed.stderr, failed.stderr
    assert failed.returncode == 1 and "submitted" not in failed.stdout, failed.stdout
    assert "1 runs failed (random_0)" in failed.stderr and "run this command again" in failed.stderr
    again = run_sweep(command)
    assert again.returncode == 0, again.stderr
    wait_for(submitted_array(again.stdout, kind="job"))
