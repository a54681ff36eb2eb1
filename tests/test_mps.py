"""--mps: the daemon starts before the jobs, they see its folders, and it quits at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_sweep import ROOT, demo_tokens, sweep_command
from utils.sweep.local import run_local
from utils.sweep.mps import MPSError, mps_daemon
from utils.sweep.plan import Job

# Stands in for nvidia-cuda-mps-control: logs each call with the pipe folder it was given, and
# with "done" once the file $FAKE_MPS_WATCH exists.
FAKE_CONTROL = """#!/bin/sh
watch=""
[ -n "$FAKE_MPS_WATCH" ] && { [ -e "$FAKE_MPS_WATCH" ] && watch=" done" || watch=" pending"; }
if [ "$1" = "-d" ]; then
  [ -n "$FAKE_MPS_FAIL" ] && { echo "$FAKE_MPS_FAIL" >&2; exit 1; }
  echo "start $CUDA_MPS_PIPE_DIRECTORY$watch" >> "$FAKE_MPS_LOG"
  if [ -n "$FAKE_MPS_HANG" ]; then exec sleep "$FAKE_MPS_HANG"; fi
else
  echo "$(cat) $CUDA_MPS_PIPE_DIRECTORY$watch" >> "$FAKE_MPS_LOG"
fi
"""


@pytest.fixture
def fake_control(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    control = bin_dir / "nvidia-cuda-mps-control"
    control.write_text(FAKE_CONTROL)
    control.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MPS_LOG", str(tmp_path / "control.log"))
    return tmp_path / "control.log"


def test_daemon_starts_with_private_folders_and_quits(fake_control: Path) -> None:
    with mps_daemon() as env:
        pipe = Path(env["CUDA_MPS_PIPE_DIRECTORY"])
        assert pipe.is_dir() and Path(env["CUDA_MPS_LOG_DIRECTORY"]).is_dir()
        assert fake_control.read_text().splitlines() == [f"start {pipe}"]
    assert fake_control.read_text().splitlines() == [f"start {pipe}", f"quit {pipe}"]
    assert not pipe.parent.exists()


def test_daemon_quits_when_the_sweep_fails(fake_control: Path) -> None:
    with pytest.raises(KeyboardInterrupt), mps_daemon() as env:
        raise KeyboardInterrupt
    assert fake_control.read_text().splitlines()[-1] == f"quit {env['CUDA_MPS_PIPE_DIRECTORY']}"


def test_a_daemon_that_cannot_start_is_one_line(
    fake_control: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_FAIL", "An instance of this daemon is already running")
    with pytest.raises(MPSError, match="-d failed \\(An instance of this daemon is already"):
        with mps_daemon():
            pass
    assert not fake_control.exists()  # never started, so never told to quit


def test_a_start_that_hangs_is_one_line_and_the_daemon_is_told_to_quit(
    fake_control: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MPS_HANG", "30")
    with pytest.raises(MPSError, match="-d failed \\(timed out\\)"):
        with mps_daemon(timeout_s=1.0):
            pass
    # It may have forked a daemon before it hung, so that one is told to quit.
    assert [line.split()[0] for line in fake_control.read_text().splitlines()] == ["start", "quit"]


def test_a_start_cut_short_by_a_signal_is_told_to_quit(
    fake_control: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import utils.sweep.mps

    class StartThenInterrupt(subprocess.Popen):
        def wait(self, timeout: float | None = None) -> int:
            code = super().wait(timeout)
            if self.args[1:] == ["-d"]:
                raise KeyboardInterrupt  # as the sweep's signal handler does, after the fork
            return code

    monkeypatch.setattr(utils.sweep.mps.subprocess, "Popen", StartThenInterrupt)
    with pytest.raises(KeyboardInterrupt), mps_daemon():
        pass
    assert [line.split()[0] for line in fake_control.read_text().splitlines()] == ["start", "quit"]


class EnvJob(Job):
    """A job whose process writes the MPS pipe folder it sees, instead of running active.py."""

    def command(self, python: str = sys.executable) -> list[str]:
        out = Path(self.config.results_dir) / f"{self.stem}.env"
        code = f"import os; open({str(out)!r}, 'w').write(os.environ['CUDA_MPS_PIPE_DIRECTORY'])"
        return [python, "-c", code]


def test_every_job_sees_the_daemon(fake_control: Path, tmp_path: Path) -> None:
    jobs = [EnvJob(f"x_{i}", (), {"results_dir": str(tmp_path)}, 1) for i in range(3)]
    with mps_daemon() as env:
        assert run_local(jobs, parallel=2, progress=False, extra_env=env) == []
    for job in jobs:
        assert (tmp_path / f"{job.stem}.env").read_text() == env["CUDA_MPS_PIPE_DIRECTORY"]


def test_sweep_with_mps_runs_between_start_and_quit(
    fake_control: Path, synthetic_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    monkeypatch.setenv("FAKE_MPS_WATCH", str(results / "random_0.json"))
    tokens = demo_tokens(synthetic_root, results)
    command = sweep_command(tokens, "--mps", heuristics=("random",), runs="0", parallel=1)
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((results / "random_0.json").read_text())["complete"]
    calls = [(line.split()[0], line.split()[-1]) for line in fake_control.read_text().splitlines()]
    assert calls == [("start", "pending"), ("quit", "done")]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])  # scancel or kill; Ctrl-C
def test_daemon_quits_when_the_sweep_is_terminated(
    fake_control: Path, synthetic_root: Path, tmp_path: Path, signum: int
) -> None:
    import time

    tokens = demo_tokens(synthetic_root, tmp_path / "results")
    command = sweep_command(tokens, "--mps", heuristics=("random",), runs="0", parallel=1)
    sweep = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not fake_control.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    sweep.send_signal(signum)
    code = sweep.wait(timeout=60)
    stderr = sweep.stderr.read().decode()
    assert code == 128 + signum, stderr
    calls = [line.split()[0] for line in fake_control.read_text().splitlines()]
    assert calls == ["start", "quit"]
    name = signal.Signals(signum).name
    assert stderr.endswith(f"sweep: stopped by {name}; the same command resumes it\n"), stderr
    assert "Traceback" not in stderr
