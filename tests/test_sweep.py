"""sweep.py: local sweeps end to end, resumption after SIGKILL, submitit and SLURM, bad input."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from utils.config import validate
from utils.runs.lock import run_lock
from utils.runs.state import run_record_config
from utils.sweep.plan import (
    Job,
    SweepError,
    check_resumable,
    parse_config_tokens,
    parse_grid,
    parse_runs,
    plan_jobs,
)
from utils.sweep.slurm import make_executor, read_submissions, submission_error, submit

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("bald_0", "bald_1", "random_0", "random_1")


def demo_tokens(synthetic_root: Path, results_dir: Path) -> list[str]:
    """The demo named config on the test's synthetic data, cut down to a few seconds a run."""
    return [
        "demo",
        f"data_path={synthetic_root / 'GlaS'}",
        f"splits_path={synthetic_root / 'splits'}",
        f"results_dir={results_dir}",
        "patch_size=[32,32]",
        "base_width=4",
        "epochs=2",
        "al_cycles=2",
        "mc_iters=2",
    ]


def sweep_command(
    tokens: list[str],
    *options: str,
    heuristics: tuple[str, ...] = ("bald", "random"),
    runs: str = "0-1",
    parallel: int = 2,
) -> list[str]:
    return [
        sys.executable,
        "sweep.py",
        "--heuristics",
        *heuristics,
        "--runs",
        runs,
        "--parallel",
        str(parallel),
        "--no-progress",
        *options,
        "--",
        *tokens,
    ]


def run_sweep(command: list[str], **options) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, **options)


def test_local_sweep_over_demo_ends_with_a_report_of_both_heuristics(clean_sweep: Path) -> None:
    for stem in RUNS:
        record = json.loads((clean_sweep / f"{stem}.json").read_text())
        assert record["complete"] and len(np.load(clean_sweep / f"{stem}.npy")) == 3
        assert (clean_sweep / "logs" / f"{stem}.log").exists()
    table = (clean_sweep / "summary.csv").read_text().splitlines()
    assert {line.split(",")[0] for line in table[1:]} == {"bald", "random"}
    assert all(line.split(",")[1] == "2" for line in table[1:])
    assert (clean_sweep / "learning_curves.png").stat().st_size > 0


def test_rerun_of_a_finished_sweep_runs_nothing(synthetic_root: Path, clean_sweep: Path) -> None:
    before = {stem: (clean_sweep / f"{stem}.npy").stat().st_mtime_ns for stem in RUNS}
    again = run_sweep(sweep_command(demo_tokens(synthetic_root, clean_sweep)))
    assert again.returncode == 0, again.stderr
    assert "4 finished or running elsewhere, 0 to run" in again.stdout
    assert before == {stem: (clean_sweep / f"{stem}.npy").stat().st_mtime_ns for stem in RUNS}


def test_a_finished_run_whose_results_were_deleted_gets_them_back(
    synthetic_root: Path, clean_sweep: Path, tmp_path: Path
) -> None:
    for stem in RUNS:
        for suffix in (".npy", ".json", ".state.json"):
            shutil.copyfile(clean_sweep / f"{stem}{suffix}", tmp_path / f"{stem}{suffix}")
    (tmp_path / "bald_0.npy").unlink()
    (tmp_path / "random_1.json").unlink()
    again = run_sweep(sweep_command(demo_tokens(synthetic_root, tmp_path)))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 finished or running elsewhere, 2 to run" in again.stdout
    for stem in RUNS:
        npy = (tmp_path / f"{stem}.npy").read_bytes()
        assert npy == (clean_sweep / f"{stem}.npy").read_bytes(), stem
        # The same record, but for where the files are (a rewritten one says where they are now).
        records = [json.loads((d / f"{stem}.json").read_text()) for d in (tmp_path, clean_sweep)]
        for record in records:
            del record["config"]["results_dir"]
        assert records[0] == records[1], stem
    rows = {r["heuristic"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert rows["bald"]["n_runs"] == rows["random"]["n_runs"] == "2"


def _cycles_done(results: Path) -> int:
    total = 0
    for stem in RUNS:
        try:
            total += json.loads((results / f"{stem}.state.json").read_text())["cycles_done"]
        except (OSError, ValueError, KeyError):
            pass
    return total


def test_sigkill_then_rerun_gives_the_uninterrupted_sweep(
    synthetic_root: Path, clean_sweep: Path, tmp_path: Path
) -> None:
    command = sweep_command(demo_tokens(synthetic_root, tmp_path))
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while _cycles_done(tmp_path) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)  # the sweep and its runs, as a terminal's kill would
    process.wait()
    done = _cycles_done(tmp_path)
    assert 2 <= done < 12, "the sweep must be killed part-way for this test to mean anything"
    deadline = time.monotonic() + 10  # the kernel releases the killed runs' locks
    while any(_lock_held(tmp_path / f"{s}.lock") for s in RUNS) and time.monotonic() < deadline:
        time.sleep(0.05)

    resumed = run_sweep(command)
    assert resumed.returncode == 0, resumed.stderr
    for stem in RUNS:
        assert (tmp_path / f"{stem}.npy").read_bytes() == (clean_sweep / f"{stem}.npy").read_bytes()
    assert (tmp_path / "summary.csv").exists()


def test_a_sweep_under_nohup_outlives_its_terminal(synthetic_root: Path, tmp_path: Path) -> None:
    command = sweep_command(demo_tokens(synthetic_root, tmp_path), heuristics=("random",), runs="0")
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN),  # what nohup does
    )
    deadline = time.monotonic() + 120
    lock = tmp_path / "random_0.lock"
    while not _lock_held(lock) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _lock_held(lock), "the run must be running for this test to mean anything"
    os.killpg(process.pid, signal.SIGHUP)  # the terminal closes: the sweep and its run get it
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert json.loads((tmp_path / "random_0.json").read_text())["complete"] is True


def test_a_sweep_killed_alone_takes_its_running_job_with_it(
    synthetic_root: Path, tmp_path: Path
) -> None:
    import contextlib

    # Far longer than the wait below: the job must not end by itself and release its lock.
    tokens = [t for t in demo_tokens(synthetic_root, tmp_path) if t != "epochs=2"]
    command = sweep_command([*tokens, "epochs=5000"], heuristics=("random",), runs="0", parallel=1)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    lock = tmp_path / "random_0.lock"
    try:
        deadline = time.monotonic() + 120
        while not _lock_held(lock) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _lock_held(lock), "the run must hold its lock for this test to mean anything"
        # The sweep alone, as the OOM killer would: no handler runs to kill its jobs, only the
        # parent-death signal each job asked the kernel for.
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        deadline = time.monotonic() + 10
        while _lock_held(lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _lock_held(lock), "the job outlived its sweep and still holds the run's lock"
        assert not (tmp_path / "random_0.json").exists()  # released by dying, not by finishing
    finally:
        with contextlib.suppress(ProcessLookupError):  # a job left behind, on wrong code
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _lock_held(path: Path) -> bool:
    from utils.runs.lock import is_locked

    return is_locked(path) is not None


def test_submitit_job_is_requeued_after_preemption_and_resumes(
    synthetic_root: Path, clean_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # as each of the clean sweep's 2 parallel runs had
    named, updates = parse_config_tokens(demo_tokens(synthetic_root, tmp_path))
    [job] = plan_jobs(["bald"], [0], named, updates, workdir=ROOT)
    executor = make_executor("local", tmp_path / "slurm" / "%j", {"timeout_min": 10})
    [handle] = submit(executor, [job])
    state = tmp_path / "bald_0.state.json"
    deadline = time.monotonic() + 120
    while not state.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    holder = re.search(r"process (\d+)", (tmp_path / "bald_0.lock").read_text())
    os.kill(int(holder[1]), signal.SIGUSR2)  # what SLURM sends before preemption or time-out
    result = handle.result()
    log = Path(handle.paths.stdout).read_text()
    assert "Requeued job" in log and "resuming bald_0 after cycle" in log
    assert (tmp_path / "bald_0.npy").read_bytes() == (clean_sweep / "bald_0.npy").read_bytes()
    assert result == [round(float(d), 4) for d in np.load(tmp_path / "bald_0.npy")]


def _fake_slurm(bin_dir: Path, record: Path) -> None:
    """``sbatch`` that keeps the script it is given and answers like SLURM, and an ``srun``."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        f'#!/bin/sh\n/bin/cp "$1" {record}\necho "Submitted batch job 4242"\n'
    )
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in ("sbatch", "srun"):
        (bin_dir / tool).chmod(0o755)


def test_slurm_array_carries_partition_gpus_time_and_parallelism(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sweep

    record = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    argv = [
        "--executor",
        "slurm",
        "--heuristics",
        "bald",
        "random",
        "--runs",
        "0-4",
        "--partition",
        "gpu-long",
        "--gpus-per-job",
        "1",
        "--cpus-per-job",
        "6",
        "--time-min",
        "90",
        "--array-parallelism",
        "3",
        "--",
        *demo_tokens(synthetic_root, tmp_path / "results"),
    ]
    assert sweep.main(argv) == 0
    script = record.read_text()
    assert "#SBATCH --partition=gpu-long" in script
    assert "#SBATCH --gpus-per-node=1" in script
    assert "#SBATCH --cpus-per-task=6" in script
    assert "#SBATCH --time=90" in script
    assert "#SBATCH --array=0-9%3" in script  # 2 heuristics x 5 runs, 3 at a time
    assert "#SBATCH --signal=USR2@" in script  # the preemption warning submitit requeues on
    assert str(tmp_path / "results" / "slurm") in script
    # Each job's threads are set before its python starts, from the CPUs SLURM gives it.
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "SRUN_CPUS_PER_TASK"):
        assert script.index(f"export {name}=$SLURM_CPUS_PER_TASK\n") < script.index("srun")
    # The job unpickles this project's classes wherever the sweep was started.
    assert script.index(f"export PYTHONPATH={ROOT}${{PYTHONPATH:+") < script.index("srun")


def test_a_stop_while_sbatch_answers_still_records_the_array(
    synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib
    from types import SimpleNamespace

    import sweep

    _fake_slurm(tmp_path / "bin", tmp_path / "submitted.sh")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    handles = [SimpleNamespace(job_id=f"4242_{task}") for task in range(4)]
    monkeypatch.setattr(sweep, "submit", lambda executor, jobs: handles)

    @contextlib.contextmanager
    def stop_as_the_hold_ends():  # where a signal held while sbatch ran is delivered
        yield
        raise SystemExit(130)

    monkeypatch.setattr(sweep, "stop_signals_held", stop_as_the_hold_ends)
    results = tmp_path / "results"
    argv = ["--executor", "slurm", "--gpus-per-job", "0", "--heuristics", "bald", "random"]
    with pytest.raises(SystemExit):
        sweep.main([*argv, "--runs", "0-1", "--", *demo_tokens(synthetic_root, results)])
    submitted = read_submissions(results / "slurm")
    assert sorted(submitted) == ["bald_0", "bald_1", "random_0", "random_1"]
    assert sorted(submitted.values()) == [f"4242_{task}" for task in range(4)]


def test_two_slurm_sweeps_started_together_submit_each_run_once(
    synthetic_root: Path, tmp_path: Path
) -> None:
    bin_dir, calls, started = tmp_path / "bin", tmp_path / "sbatch_calls", tmp_path / "started"
    bin_dir.mkdir()
    tools = {
        # Slow enough that the second sweep asks before the first has recorded its array.
        "sbatch": f"echo call >> {calls}\ntouch {started}\nsleep 10\n"
        'echo "Submitted batch job 4242"',
        "squeue": 'for task in 0 1 2 3; do echo "4242_$task PENDING"; done',
        "srun": "exit 0",
    }
    for tool, body in tools.items():
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    tokens = demo_tokens(synthetic_root, tmp_path / "results")
    command = sweep_command(tokens, "--executor", "slurm", "--gpus-per-job", "0")
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not started.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    second = run_sweep(command, env=env)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert "submitted 4 jobs to SLURM (array 4242" in out
    assert second.returncode == 0, second.stderr
    assert "skipping bald_0: SLURM job 4242_0 is PENDING" in second.stdout
    assert "0 to run" in second.stdout
    assert calls.read_text().splitlines() == ["call"]


def _slurm_bin(tmp_path: Path, record: Path, squeue: str) -> str:
    """A PATH whose ``sbatch`` keeps the script it is given and answers job 4343, and whose
    ``squeue`` runs ``squeue``: a real SLURM, where there is one, is not asked."""
    env = _with_sbatch(tmp_path, f'/bin/cp "$1" {record}\necho "Submitted batch job 4343"')
    (tmp_path / "bin" / "squeue").write_text(f"#!/bin/sh\n{squeue}\n")
    (tmp_path / "bin" / "squeue").chmod(0o755)
    return env["PATH"]


def test_a_slurm_sweep_does_not_submit_a_run_running_elsewhere(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import sweep

    record, results = tmp_path / "submitted.sh", tmp_path / "results"
    monkeypatch.setenv("PATH", _slurm_bin(tmp_path, record, "exit 0"))  # an empty queue
    results.mkdir()
    argv = ["--executor", "slurm", "--gpus-per-job", "0", "--heuristics", "bald", "--runs", "0-1"]
    # Held by this process, as by a local sweep or an interactive active.py on the login node:
    # nothing but the sweep's own check keeps SLURM from starting it a second time.
    with run_lock(results / "bald_0.lock"):
        assert sweep.main([*argv, "--", *demo_tokens(synthetic_root, results)]) == 0
    out = capsys.readouterr().out
    assert f"skipping bald_0: already running in process {os.getpid()}" in out
    assert "1 finished or running elsewhere, 1 to run" in out
    # bald_1 alone: submitit sends a single job, without --array.
    assert "#SBATCH --array" not in record.read_text()
    assert read_submissions(results / "slurm") == {"bald_1": "4343"}


def test_a_run_that_ends_while_the_sweep_waits_to_submit_is_not_submitted(
    synthetic_root: Path,
    clean_sweep: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import contextlib

    import sweep

    record, results = tmp_path / "submitted.sh", tmp_path / "results"
    monkeypatch.setenv("PATH", _slurm_bin(tmp_path, record, "exit 0"))

    @contextlib.contextmanager
    def another_sweep_submitting(path: Path):  # bald_0 finishes while this sweep waits
        for suffix in (".json", ".npy", ".state.json"):
            shutil.copyfile(clean_sweep / f"bald_0{suffix}", results / f"bald_0{suffix}")
        yield

    monkeypatch.setattr(sweep, "waiting_lock", another_sweep_submitting)
    argv = ["--executor", "slurm", "--gpus-per-job", "0", "--heuristics", "bald", "--runs", "0-1"]
    assert sweep.main([*argv, "--", *demo_tokens(synthetic_root, results)]) == 0
    assert "1 finished or running elsewhere, 1 to run" in capsys.readouterr().out
    assert read_submissions(results / "slurm") == {"bald_1": "4343"}


def test_a_squeue_outage_does_not_submit_again_the_runs_submitted_before(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import sweep
    from utils.sweep.slurm import SUBMITTED_FILE

    record, results = tmp_path / "submitted.sh", tmp_path / "results"
    outage = 'echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1'
    monkeypatch.setenv("PATH", _slurm_bin(tmp_path, record, outage))
    (results / "slurm").mkdir(parents=True)
    # bald_0 was submitted by an earlier run of the command, and may be queued still.
    (results / "slurm" / SUBMITTED_FILE).write_text(json.dumps({"bald_0": "4242_0"}))
    argv = ["--executor", "slurm", "--gpus-per-job", "0", "--heuristics", "bald", "--runs", "0-1"]
    assert sweep.main([*argv, "--", *demo_tokens(synthetic_root, results)]) == 0
    out, err = capsys.readouterr()
    assert "warning: squeue does not answer, so runs submitted before" in err
    assert "1 finished or running elsewhere, 1 to run" in out
    assert "#SBATCH --array" not in record.read_text()  # one job: bald_1
    assert read_submissions(results / "slurm") == {"bald_0": "4242_0", "bald_1": "4343"}
    # The new submission records the config it runs, which a later sweep compares with its own.
    entry = json.loads((results / "slurm" / SUBMITTED_FILE).read_text())["bald_1"]
    assert entry["config"]["epochs"] == 2 and entry["config"]["heuristic"] == "bald"


def test_a_queued_run_with_another_config_is_refused_before_anything_is_submitted(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    import sweep
    from utils.sweep.slurm import SUBMITTED_FILE

    record, results = tmp_path / "submitted.sh", tmp_path / "results"
    monkeypatch.setenv("PATH", _slurm_bin(tmp_path, record, 'echo "4242_0 PENDING"'))
    (results / "slurm").mkdir(parents=True)
    tokens = demo_tokens(synthetic_root, results)
    named, updates = parse_config_tokens(tokens)
    [queued] = plan_jobs(["bald"], [0], named, updates)
    entry = {"job_id": "4242_0", "config": queued.record_config()}
    (results / "slurm" / SUBMITTED_FILE).write_text(json.dumps({"bald_0": entry}))
    argv = ["--executor", "slurm", "--gpus-per-job", "0", "--heuristics", "bald", "--runs", "0-1"]
    # The same config: the queued job is left alone, the other run submitted.
    assert sweep.main([*argv, "--", *tokens]) == 0
    assert "skipping bald_0: SLURM job 4242_0 is PENDING" in capsys.readouterr().out
    # Another config: refused in one line, and nothing submitted.
    record.unlink()
    assert sweep.main([*argv, "--", *tokens, "epochs=3", "lr=0.05"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bald_0 is queued or running as SLURM job 4242_0" in err
    assert (
        "differs in epochs, lr); keep its config until it ends, cancel it (scancel 4242_0)" in err
    )
    assert not record.exists()


@pytest.mark.parametrize(
    ("listing", "partition", "gpus"),
    [
        ("debug* (null)\ngpu gpu:a100:4(S:0-1)\n", "gpu", 1),
        ("debug* (null)\ngpu gpu:a100:4(S:0-1)\n", None, 0),
        ("gpu* gpu:4\ncpu (null)\n", None, 1),
        ("gpu* gpu:4\ncpu (null)\n", "cpu", 0),
        (None, "gpu", 0),  # no sinfo: no GPUs asked for, so that sbatch does not refuse the array
    ],
)
def test_gpus_per_job_defaults_to_what_the_partition_has(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    listing: str | None,
    partition: str | None,
    gpus: int,
) -> None:
    import sweep

    record = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", record)
    if listing is not None:
        (tmp_path / "bin" / "sinfo").write_text(f"#!/bin/sh\nprintf '{listing}'\n")
        (tmp_path / "bin" / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no other sinfo
    argv = ["--executor", "slurm", "--heuristics", "bald", "--runs", "0"]
    argv += ["--partition", partition] if partition else []
    assert sweep.main([*argv, "--", *demo_tokens(synthetic_root, tmp_path / "results")]) == 0
    assert f"#SBATCH --gpus-per-node={gpus}\n" in record.read_text()


def _snapshot(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in results.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            "sbatch: error: Invalid generic resource (gres) specification",
            "sbatch refused the sweep: Invalid generic resource (gres) specification; the "
            "partition has no GPUs of that kind; use --gpus-per-job 0",
        ),
        (
            "sbatch: error: Batch job submission failed: Invalid partition name specified",
            "Invalid partition name specified; choose a --partition that `sinfo -s` lists",
        ),
        (
            "sbatch: error: CPU count per node can not be satisfied\nsbatch: error: Batch job "
            "submission failed: Requested node configuration is not available",
            "Requested node configuration is not available; no node of the partition has that "
            "many CPUs or GPUs; lower --cpus-per-job",
        ),
        (
            "sbatch: error: Batch job submission failed: Requested time limit is invalid "
            "(missing or exceeds some limit)",
            "lower --time-min to the partition's limit",
        ),
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
            "(connect failure)",
            "SLURM's controller does not answer",
        ),
        (
            "sbatch: error: QOSMaxSubmitJobPerUserLimit\nsbatch: error: Batch job submission "
            "failed: Job violates accounting/QOS policy (job submit limit, user's size and/or "
            "time limits)",
            "user's size and/or time limits); the account's limits refuse this many jobs",
        ),
        ("sbatch: error: Something new", "Something new; fix the SLURM options of sweep.py"),
    ],
)
def test_sbatch_refusals_name_their_fix(answer: str, message: str) -> None:
    error = str(submission_error(answer))
    assert "\n" not in error and message in error and error.endswith("nothing was submitted")


def test_a_refused_submission_is_one_line_and_loses_nothing(
    synthetic_root: Path, clean_sweep: Path, tmp_path: Path
) -> None:
    before = _snapshot(clean_sweep)
    refusal = "echo 'sbatch: error: Invalid generic resource (gres) specification' >&2; exit 1"
    env = _with_sbatch(tmp_path, refusal)
    options = ("--executor", "slurm", "--gpus-per-job", "1")
    command = sweep_command(demo_tokens(synthetic_root, clean_sweep), *options, runs="0-2")
    done = run_sweep(command, env=env)  # runs 0 and 1 finished, run 2 to submit
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "(gres) specification; the partition has no GPUs" in done.stderr
    before.pop("slurm/submit.lock", None)  # there already when another SLURM test ran first
    after = _snapshot(clean_sweep)
    assert after.pop("slurm/submit.lock") == b""  # the empty lock that submissions are made under
    assert after == before  # finished runs kept, nothing of the refused array left


def _with_sbatch(tmp_path: Path, body: str) -> dict[str, str]:
    """An environment whose ``sbatch`` runs ``body``, with an ``srun`` (submitit looks for one,
    so these tests do not need SLURM installed)."""
    (tmp_path / "bin").mkdir()
    for tool, text in (("sbatch", body), ("srun", "exit 0")):
        (tmp_path / "bin" / tool).write_text(f"#!/bin/sh\n{text}\n")
        (tmp_path / "bin" / tool).chmod(0o755)
    return {**os.environ, "PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"}


def test_an_sbatch_answer_without_a_job_id_is_one_line_that_keeps_the_array_files(
    synthetic_root: Path, tmp_path: Path
) -> None:
    env = _with_sbatch(tmp_path, "echo queued")
    results = tmp_path / "results"
    command = sweep_command(demo_tokens(synthetic_root, results), "--executor", "slurm")
    done = run_sweep(command, env=env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: "), done.stderr
    assert "sbatch gave no job id (Could not make sense of sbatch output" in done.stderr
    assert "check `squeue --me`" in done.stderr
    # The array may be queued all the same, and its jobs need the files it was submitted with.
    assert list((results / "slurm").glob("*.pkl"))


def test_slurm_rerun_after_the_array_ends_writes_the_report(
    synthetic_root: Path, clean_sweep: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sweep

    record = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    (clean_sweep / "summary.csv").unlink()
    argv = ["--executor", "slurm", "--heuristics", "bald", "random", "--runs", "0-1", "--"]
    assert sweep.main([*argv, *demo_tokens(synthetic_root, clean_sweep)]) == 0
    assert not record.exists()  # nothing left to submit
    assert (clean_sweep / "summary.csv").read_text().startswith("heuristic,")


@pytest.mark.parametrize(
    ("options", "tokens", "message"),
    [
        (["--heuristics", "bald", "bold"], [], "unknown heuristic 'bold'"),
        (["--parallel", "0"], [], "--parallel must be >= 1"),
        ([], ["epochs=many"], "epochs must be an integer"),
        ([], ["epoch=3"], "unknown config key 'epoch'; did you mean 'epochs'?"),
        ([], ["dmeo"], "unknown named config 'dmeo'"),
        ([], ["image_scale=-1"], "image_scale must be > 0"),
        (["--grid", "run=1,2"], [], "--grid cannot sweep run; use --runs"),
        (["--grid", "save_maps=True,False"], [], "cannot sweep save_maps; use it after -- for"),
        (["--gpus-per-job", "-1"], [], "--gpus-per-job must be >= 0, got -1"),
        (["--cpus-per-job", "0"], [], "--cpus-per-job must be >= 1, got 0"),
        ([], ["seed=3"], "seed after -- would override every job"),
        ([], ["full_supervision"], "full_supervision after -- would override every job"),
        (["--executor", "slurm"], ["overwrite=True"], "overwrite=True on SLURM would start"),
        (["--executor", "slurm"], [], "--executor slurm needs SLURM's sbatch on PATH"),
        (["--mps"], [], "--mps needs nvidia-cuda-mps-control on PATH"),
        (["--executor", "slurm", "--mps"], [], "--mps applies to --executor local"),
    ],
)
def test_bad_input_is_one_line_before_any_job_starts(
    synthetic_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    options: list[str],
    tokens: list[str],
    message: str,
) -> None:
    import sweep

    results = tmp_path / "results"
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable))  # no sbatch here
    command = sweep_command(demo_tokens(synthetic_root, results) + tokens, *options)
    assert sweep.main(command[2:]) == 2  # in-process: the command line is tested below
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and stderr.startswith("error: ")
    assert message in stderr
    assert not list(results.glob("*.npy")) and not (results / "logs").exists()


def test_a_results_dir_that_cannot_be_made_is_one_line_before_any_job(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import sweep

    (tmp_path / "a_file").write_text("not a folder")
    results = tmp_path / "a_file" / "results"
    argv = ["--heuristics", "random", "--runs", "0", "--no-progress", "--"]
    assert sweep.main([*argv, *demo_tokens(synthetic_root, results)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: results_dir={results} cannot be"), err


@pytest.mark.parametrize(
    ("text", "runs"),
    [("0-4", [0, 1, 2, 3, 4]), ("5,2,0", [0, 2, 5]), ("0-2,7,1", [0, 1, 2, 7]), ("3", [3])],
)
def test_runs_are_read_as_sorted_indices(text: str, runs: list[int]) -> None:
    assert parse_runs(text) == runs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0-4,9-7", "--runs '0-4,9-7': 9-7 runs backwards; write 7-9"),
        ("a", "is not a list of runs"),
        ("-1", "is not a list of runs"),
        ("0,,1", "is not a list of runs"),
        ("3-", "is not a list of runs"),  # not run 3 alone
    ],
)
def test_bad_runs_are_refused(text: str, message: str) -> None:
    with pytest.raises(SweepError, match=re.escape(message)):
        parse_runs(text)


def test_config_without_the_double_dash_is_one_line_naming_it(
    capsys: pytest.CaptureFixture,
) -> None:
    import sweep

    assert sweep.main(["--heuristics", "bald", "random", "--runs", "0-1", "demo", "epochs=2"]) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1
    assert stderr == (
        "error: sweep.py does not take 'demo epochs=2'; active.py config goes after --: "
        "sweep.py ... -- demo epochs=2\n"
    )
    with pytest.raises(SystemExit):  # a misspelt option keeps argparse's message
        sweep.main(["--paralel", "2", "--", "demo"])
    assert "unrecognized arguments: --paralel 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # so does a stray value that is no config
        sweep.main(["--runs", "0", "1", "--", "demo"])
    assert "unrecognized arguments: 1" in capsys.readouterr().err
    # After a list option, the config is read as one more heuristic.
    assert sweep.main(["--heuristics", "bald", "random", "demo"]) == 2
    assert capsys.readouterr().err == (
        "error: --heuristics takes heuristics, not 'demo'; active.py config goes after --: "
        "sweep.py --heuristics ... -- demo\n"
    )


def test_sweep_refuses_a_changed_config_before_running(
    synthetic_root: Path, clean_sweep: Path
) -> None:
    tokens = [t for t in demo_tokens(synthetic_root, clean_sweep) if t != "epochs=2"]
    done = run_sweep(sweep_command([*tokens, "epochs=3"]))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "with another config (epochs: 2 -> 3)" in done.stderr
    # With its data folder missing too, that is named first, as active.py does.
    missing = clean_sweep.parent / "no_such_data"
    moved = [f"data_path={missing}" if t.startswith("data_path=") else t for t in tokens]
    done = run_sweep(sweep_command([*moved, "epochs=3", "synthetic=False"]))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert done.stderr.startswith(f"error: data folder {missing} does not exist; download GlaS")


def test_sweep_skips_a_run_another_process_holds(synthetic_root: Path, tmp_path: Path) -> None:
    tokens = demo_tokens(synthetic_root, tmp_path)
    command = sweep_command(tokens, heuristics=("random",), parallel=1)
    with run_lock(tmp_path / "random_0.lock"):
        done = run_sweep(command)
    assert done.returncode == 0, done.stderr
    assert f"skipping random_0: already running in process {os.getpid()}" in done.stdout
    assert (tmp_path / "random_1.npy").exists() and not (tmp_path / "random_0.npy").exists()


def test_progress_counts_a_run_whose_files_say_finished_as_done_not_running(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from utils.sweep.local import Progress

    named, updates = parse_config_tokens(demo_tokens(synthetic_root, tmp_path))
    jobs = plan_jobs(["bald", "random"], [0], named, updates)
    state = {"cycles_done": 3, "finished": True}
    for suffix in (".npy", ".json"):  # a finished run's results, which the state vouches for
        (tmp_path / f"{jobs[0].stem}{suffix}").touch()
    (tmp_path / f"{jobs[0].stem}.state.json").write_text(json.dumps(state))
    display = Progress(jobs, show=False)
    display.update(jobs)  # both processes still alive; the first has written its last cycle
    assert display.postfix == "runs 1/2 done, 1 running"
    display.close()


def test_progress_ignores_the_old_state_of_a_run_to_overwrite(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from utils.sweep.local import Progress

    named, updates = parse_config_tokens(demo_tokens(synthetic_root, tmp_path))
    jobs = plan_jobs(["random"], [0], named, {**updates, "overwrite": True})
    state_file = tmp_path / f"{jobs[0].stem}.state.json"
    state_file.write_text(json.dumps({"cycles_done": 3, "finished": True}))
    display = Progress(jobs, show=False)
    display.update(jobs)  # the new run has not finished a cycle yet
    assert display.start_cycles == 0 and display.cycles() == 0
    assert display.postfix == "runs 0/1 done, 1 running"
    state_file.write_text(json.dumps({"cycles_done": 1, "finished": False}))
    os.utime(state_file, (display.sweep_began + 1, display.sweep_began + 1))
    assert display.cycles() == 1  # its first cycle
    display.close()


def test_grid_runs_every_combination_under_its_own_name(synthetic_root: Path) -> None:
    named, updates = parse_config_tokens(demo_tokens(synthetic_root, Path("unused")))
    jobs = plan_jobs(
        ["bald", "random"],
        [0, 1],
        named,
        updates,
        [{"lr": 0.1, "patch_size": [32, 32]}, {"lr": 0.01, "patch_size": [32, 32]}],
        full_supervision=True,
    )
    stems = [job.stem for job in jobs]
    assert len(stems) == len(set(stems)) == 10  # 2 x 2 x 2 + one reference per grid point
    assert "bald@lr=0.01,patch_size=32x32_1" in stems
    assert "full@lr=0.1,patch_size=32x32_0" in stems
    assert {job.config.lr for job in jobs} == {0.1, 0.01}


def test_a_grid_over_strategies_shares_one_full_supervision_reference(
    synthetic_root: Path,
) -> None:
    named, updates = parse_config_tokens(demo_tokens(synthetic_root, Path("unused")))
    grid = parse_grid(["strategy=power,softmax"])
    jobs = plan_jobs(["entropy", "random"], [0], named, updates, grid, full_supervision=True)
    assert sorted(job.stem for job in jobs) == [
        "entropy-power_0",
        "entropy-softmax_0",
        "full_0",
        "random_0",
    ]
    # A key that changes selection only gets one reference per value of the other keys.
    grid = parse_grid(["lr=0.1,0.01", "temperature=1,2"])
    jobs = plan_jobs(["entropy"], [0], named, {**updates, "strategy": "power"}, grid, True)
    assert [job.stem for job in jobs if job.stem.startswith("full")] == [
        "full@lr=0.1_0",
        "full@lr=0.01_0",
    ]
    assert len(jobs) == 6
    with pytest.raises(SweepError, match="differ in region_shape; that does not change such a"):
        plan_jobs(["entropy"], [0], named, updates, parse_grid(["region_shape=tile,superpixel"]))
    # Values that differ only in characters a result name cannot hold share its tag.
    with pytest.raises(SweepError, match="differ in data_path; their --grid values give the same"):
        plan_jobs(["entropy"], [0], named, updates, parse_grid(["data_path=a/b,a-b"]))


def test_a_later_grid_in_another_order_reuses_the_full_supervision_reference(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from utils.runs.state import History, RunState, save_cycle

    named, updates = parse_config_tokens(demo_tokens(synthetic_root, tmp_path))
    first = plan_jobs(
        ["entropy"], [0], named, updates, parse_grid(["strategy=power,softmax"]), True
    )
    full = next(job for job in first if job.stem == "full_0")
    config = run_record_config(validate(full.config))
    state = RunState(config, [1] * 4, History(), cycles_done=1, finished=True)
    save_cycle(full.paths, state)
    for grid in ("strategy=softmax,power", "label_unit=region,image", "semi=pseudo", "al_cycles=3"):
        later = plan_jobs(["entropy"], [0], named, updates, parse_grid([grid]), True)
        assert check_resumable(later)["full_0"].finished, grid
    # Keys that change what full supervision computes still refuse it.
    with pytest.raises(SweepError, match="full_0 with another config .lr: "):
        check_resumable(plan_jobs(["entropy"], [0], named, {**updates, "lr": 0.5}, None, True))


def test_a_result_name_too_long_for_its_files_is_refused_before_anything_runs(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from utils.io import atomic_save_json
    from utils.runs.state import max_stem_bytes

    named, updates = parse_config_tokens(demo_tokens(synthetic_root, tmp_path))
    for semi, longest in (("none", ".state.json"), ("pseudo", ".pseudo-{cycles}.npz")):
        config = {**updates, "semi": semi}
        cfg = validate(plan_jobs(["bald"], [0], named, config)[0].config)
        limit = max_stem_bytes(cfg)
        base = len(f"bald{'+pseudo' if semi == 'pseudo' else ''}@_0")
        fits = "t" * (limit - base)
        stem = plan_jobs(["bald"], [0], named, {**config, "tag": fits})[0].stem
        assert len(stem) == limit
        # At the limit, the longest file a run writes (through its temporary) still works.
        atomic_save_json(tmp_path / (stem + longest.format(cycles=cfg.al_cycles)), {})
        with pytest.raises(SweepError, match=r"^invalid config after --: the result name bald"):
            plan_jobs(["bald"], [0], named, {**config, "tag": fits + "t"})


def test_a_run_starting_while_the_sweep_probes_its_lock_still_starts(tmp_path: Path) -> None:
    import fcntl
    import threading

    path = tmp_path / "bald_0.lock"
    probe = os.open(path, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(probe, fcntl.LOCK_SH)  # what is_locked holds for an instant, here for 0.3 s
    threading.Timer(0.3, os.close, (probe,)).start()
    with run_lock(path):
        assert str(os.getpid()) in path.read_text()


class QuickJob(Job):
    """A job that runs a line of Python instead of a run; ``{mark}`` names a file of its own."""

    script = "pass"

    def command(self, python: str = sys.executable) -> list[str]:
        mark = Path(self.config.results_dir) / f"{self.stem}.ran"
        return [python, "-c", self.script.format(mark=repr(str(mark)))]


def test_more_jobs_at_once_than_cores_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from utils.sweep.local import available_cpus, run_local

    cores = available_cpus()
    jobs = [QuickJob(f"x_{i}", (), {"results_dir": str(tmp_path)}, 1) for i in range(cores + 1)]
    assert run_local(jobs, parallel=cores, progress=False) == []
    assert capsys.readouterr().err == ""
    assert run_local(jobs, parallel=cores + 1, progress=False) == []
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--parallel {cores + 1} on {cores} CPU cores" in err, err


class RefusedJob(QuickJob):
    """A job that ends on a run's refusal: another process holds it, or its data is missing."""

    script = (
        "import sys; sys.exit('error: ' + ("
        "'x_0 is already running in process 7 on node (lock x_0.lock); wait for it' "
        "if {mark}.endswith('x_0.ran') else 'data/GlaS/train_1.bmp is missing; restore it'))"
    )


def test_a_run_another_sweep_started_meanwhile_is_skipped_not_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from utils.sweep.local import run_local

    jobs = [RefusedJob(f"x_{i}", (), {"results_dir": str(tmp_path)}, 1) for i in (0, 1)]
    assert run_local(jobs, parallel=1, progress=False) == ["x_1"]
    out = capsys.readouterr().out
    assert "skipping x_0: x_0 is already running in process 7 on node" in out
    assert "x_1 failed (exit 1): error: data/GlaS/train_1.bmp is missing" in out


class ThreadsJob(QuickJob):
    """A job that writes the OpenMP thread count it was given."""

    script = "import os; open({mark}, 'w').write(os.environ['OMP_NUM_THREADS'])"


def test_a_local_sweep_in_a_slurm_allocation_splits_its_cpus_not_the_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from utils.sweep.local import run_local

    monkeypatch.setattr(os, "sched_getaffinity", lambda _: set(range(128)), raising=False)
    job = ThreadsJob("x_0", (), {"results_dir": str(tmp_path)}, 1)
    monkeypatch.setenv("SLURM_CPUS_ON_NODE", "12")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "8")
    assert run_local([job], parallel=2, progress=False) == []
    assert (tmp_path / "x_0.ran").read_text() == "4"
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")  # an allocation without --cpus-per-task
    assert run_local([job], parallel=2, progress=False) == []
    assert (tmp_path / "x_0.ran").read_text() == "6"
    monkeypatch.delenv("SLURM_CPUS_ON_NODE")
    assert run_local([job], parallel=2, progress=False) == []
    assert (tmp_path / "x_0.ran").read_text() == "64"


class MarkJob(QuickJob):
    """A job that only leaves a mark that it ran."""

    script = "open({mark}, 'w').close()"


def test_a_run_taken_or_finished_by_another_sweep_meanwhile_is_not_started(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from utils.sweep.local import run_local

    jobs = [MarkJob(f"x_{i}", (), {"results_dir": str(tmp_path)}, 1) for i in range(3)]
    # Both happen after the sweep checked its runs: a second sweep on the same folder.
    (tmp_path / "x_2.state.json").write_text(json.dumps({"cycles_done": 1, "finished": True}))
    for suffix in (".npy", ".json"):
        (tmp_path / f"x_2{suffix}").touch()
    with run_lock(tmp_path / "x_1.lock"):
        assert run_local(jobs, parallel=1, progress=False) == []
    assert sorted(p.name for p in tmp_path.glob("*.ran")) == ["x_0.ran"]
    out = capsys.readouterr().out
    assert f"skipping x_1: already running in process {os.getpid()}" in out
    assert "skipping x_2: finished by another process" in out


def test_failed_runs_are_named_after_the_report_or_its_absence(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import sweep
    from tests.test_report import write_run

    for run in (0, 1):
        write_run(tmp_path, "random", run, [4, 6], [0.5, 0.6])
    assert sweep.write_report(tmp_path, ["bald_0"], "LOGS") == 1
    out, err = capsys.readouterr()
    assert "\nreport: " in out and err == (
        "error: 1 runs failed (bald_0); their logs are in LOGS\n"
    )
    # With nothing to report, both are said: a report refusal must not hide the failures.
    assert sweep.write_report(tmp_path / "empty", ["bald_0"], "LOGS") == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: no report: ") and lines[1].startswith("error: 1 runs")
    assert sweep.write_report(tmp_path, [], "LOGS") == 0


class SleepJob(QuickJob):
    """A job that sleeps for a minute."""

    script = "import time; time.sleep(60)"


def test_a_stop_held_while_a_job_starts_still_kills_that_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import contextlib

    import utils.sweep.local
    from utils.sweep.local import run_local

    started = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            started.append(self)

    @contextlib.contextmanager
    def stop_as_the_hold_ends():  # where a signal held during the fork is delivered
        yield
        raise SystemExit(143)

    monkeypatch.setattr(utils.sweep.local, "stop_signals_held", stop_as_the_hold_ends)
    monkeypatch.setattr(utils.sweep.local.subprocess, "Popen", Recorded)
    job = SleepJob("x_0", (), {"results_dir": str(tmp_path)}, 1)
    with pytest.raises(SystemExit):
        run_local([job], parallel=1, progress=False)
    (process,) = started
    assert process.wait(timeout=10) == -signal.SIGKILL  # killed, not left to sleep


def test_a_recorded_stop_starts_no_further_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import utils.sweep.stopping
    from utils.sweep.local import run_local

    monkeypatch.setattr(utils.sweep.stopping, "_stop_signal", [signal.SIGTERM])
    jobs = [MarkJob(f"x_{i}", (), {"results_dir": str(tmp_path)}, 1) for i in range(2)]
    with pytest.raises(SystemExit) as stopped:
        run_local(jobs, parallel=2, progress=False)
    assert stopped.value.code == 128 + signal.SIGTERM and not list(tmp_path.glob("*.ran"))


@pytest.mark.parametrize(
    ("line", "refusal"),
    [
        ("error: data folder x does not exist; put images in x/images", True),
        ("error: bald_0: the loss is NaN at cycle 3; lower lr", True),
        ("torch.OutOfMemoryError: CUDA out of memory", False),
    ],
)
def test_only_a_runs_own_lasting_refusal_keeps_it_from_being_submitted_again(
    line: str, refusal: bool
) -> None:
    from utils.sweep.slurm import refused

    assert refused(line) is refusal


def test_a_lock_still_held_after_a_requeue_is_not_a_lasting_refusal(tmp_path: Path) -> None:
    from utils.runs.lock import RunLockedError
    from utils.sweep.slurm import refused

    with run_lock(tmp_path / "bald_0.lock"), pytest.raises(RunLockedError) as held:
        with run_lock(tmp_path / "bald_0.lock"):
            pass
    assert not refused(f"error: {held.value}")  # the line active.py ends on


def test_a_failed_slurm_job_is_summed_up_by_its_runs_own_error(tmp_path: Path) -> None:
    from utils.sweep.slurm import last_error

    log = tmp_path / "266_0" / "266_0_0_log.err"
    log.parent.mkdir()
    log.write_text(
        "submitit ERROR (2026-12-01) - Submitted job triggered an exception\n"
        "Traceback (most recent call last):\n"
        '  File "active.py", line 9, in main\n'
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n"
        "slurmstepd: *** JOB 266 CANCELLED AT 2026-12-01 ***\n"
        "srun: error: node3: task 0: Exited with exit code 1\n"
    )
    assert last_error(tmp_path, "266_0") == (
        "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    )
    log.write_text("error: data folder x does not exist; put images in x/images\n")
    assert (
        last_error(tmp_path, "266_0")
        == "error: data folder x does not exist; put images in x/images"
    )
    assert last_error(tmp_path, "267").startswith("no log at ")


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ('echo "266_0 PENDING"; echo "266_1 RUNNING"', {"266_0": "PENDING", "266_1": "RUNNING"}),
        ('echo "slurm_load_jobs error: Unable to contact slurm controller" >&2; exit 1', None),
    ],
)
def test_a_queue_that_squeue_cannot_list_is_not_taken_for_empty(
    script: str, expected: dict | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from utils.sweep.slurm import queued_jobs

    squeue = tmp_path / "squeue"
    squeue.write_text(f"#!/bin/sh\n{script}\n")
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert queued_jobs() == expected
