"""Against a real SLURM (a one-node cluster: bash .ci/slurm_up.sh): a grid submitted as one
job array by slurm.py, every run finished exactly once and equal to the grid run in one
process (files, numbers, table.py); a re-submitted finished grid submits nothing; a task
stopped mid-run (SIGUSR1 as before a time limit, then ``scontrol requeue`` as on
preemption) requeued and continued to the uninterrupted run's result.

Skipped where SLURM is absent (no ``sinfo``, or no node that takes jobs), unless
``NOISYLABELS_REQUIRE_SLURM=1`` (set by .ci/run): then they fail instead.
"""

import os
import re
import shutil
import subprocess
import sys
import time

import pytest
from conftest import GRID, ROOT, read_jsonl, subprocess_env
from test_grid import ONE, assert_same_runs, table_text

from noisylabels import noisy_cv

REQUIRED = os.environ.get("NOISYLABELS_REQUIRE_SLURM") == "1"


def _slurm_problem():
    """Why SLURM cannot run jobs here, or None."""
    for tool in ("sinfo", "sbatch", "squeue", "scontrol", "scancel"):
        if shutil.which(tool) is None:
            return f"no '{tool}' on PATH"
    try:
        r = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True,
                           timeout=30)
    except (OSError, subprocess.SubprocessError) as err:
        return f"sinfo failed: {err}"
    states = set(r.stdout.split())
    if r.returncode != 0 or not states & {"idle", "mix", "alloc", "comp"}:
        return f"no node takes jobs (sinfo: {(r.stdout + r.stderr).strip() or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def cluster():
    problem = _slurm_problem()
    if problem and REQUIRED:
        pytest.fail(f"NOISYLABELS_REQUIRE_SLURM=1 but SLURM cannot run jobs: {problem}")
    if problem:
        pytest.skip(f"no SLURM here ({problem}); bash .ci/slurm_up.sh brings up a one-node "
                    "cluster (root, Debian)")


def _launch(*argv):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "slurm.py"), *argv],
                       capture_output=True, text=True, env=subprocess_env(), cwd=ROOT,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    m = re.search(r"^submitted job (\d+)", r.stdout, re.M)
    return (m.group(1) if m else None), r.stdout


_PENDING_SINCE = {}  # requeued task -> when it was first seen waiting for its BeginTime
REQUEUE_GRACE_S = 3.0


def _pending_now(job):
    """A requeued task waits (BeginTime) before it may start again: let it start once it has
    waited ``REQUEUE_GRACE_S``. Not at once: slurmd may still be cleaning up the killed task,
    and a launch in that window fails ("Job N already killed, do not launch batch job"), the
    task then ending FAILED instead of resuming (seen once here, 0.5 s after a requeue)."""
    r = subprocess.run(["squeue", "-h", "-j", job, "-o", "%i %T %r"], capture_output=True,
                       text=True, timeout=30)
    waiting = {line.split()[0] for line in r.stdout.splitlines()
               if line.split()[1:3] == ["PENDING", "BeginTime"]}
    for task in set(_PENDING_SINCE) - waiting:  # started (or ended) since: a later requeue
        del _PENDING_SINCE[task]                # waits its own grace
    for line in r.stdout.splitlines():
        task, state, reason = line.split()[:3]
        if state == "PENDING" and reason == "BeginTime":
            since = _PENDING_SINCE.setdefault(task, time.time())
            if time.time() - since >= REQUEUE_GRACE_S:
                subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"],
                               capture_output=True, timeout=30)
                del _PENDING_SINCE[task]
    return r.stdout.strip()


def _wait(job, timeout=900):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if not _pending_now(job):
            return
        time.sleep(1)
    subprocess.run(["scancel", job], timeout=30)
    raise AssertionError(f"job {job} did not end within {timeout} s")


def _wait_lines(path, n, job, timeout=600):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isfile(path) and len(read_jsonl(path)) >= n:
            return
        _pending_now(job)
        time.sleep(0.2)
    subprocess.run(["scancel", job], timeout=30)
    raise AssertionError(f"{path} did not reach {n} lines within {timeout} s")


def _task_logs(results):
    logs = []
    for folder, _, names in os.walk(os.path.join(results, "slurm")):
        logs += [open(os.path.join(folder, n)).read() for n in names if n.endswith(".out")]
    return logs


def test_grid_as_one_array_equals_the_sequential_grid(cluster, sequential_grid, tmp_path):
    results = str(tmp_path)
    job, out = _launch("--cpus_per_task", "1", "incv_train.py", *GRID, "--results_dir", results)
    assert job and "4 array tasks (0-3 of 4 units, 8 runs to do" in out
    assert f"squeue -j {job}" in out and "--list_runs" in out
    _wait(job)
    logs = _task_logs(results)
    assert len(logs) == 4, logs
    text = "\n".join(logs)
    # every run started exactly once, in exactly one task, and finished
    starts = re.findall(r"^\[\d/2\] (\w+) on digits (\w+) e=0\.4 seed (\d) -> (\S+)$", text, re.M)
    assert sorted(s[:3] for s in starts) == sorted(
        (m, p, s) for m in ("incv", "ncv") for p in ("sym", "asym") for s in "01"), text[-3000:]
    for *_, run in starts:
        assert os.path.isfile(os.path.join(run, "summary.json"))
        assert [r["epoch"] for r in read_jsonl(os.path.join(run, "log.jsonl"))] == [1]
    shutil.move(os.path.join(results, "slurm"), str(tmp_path.parent / f"{tmp_path.name}-logs"))
    assert_same_runs(sequential_grid, results)
    assert table_text(sequential_grid) == table_text(results)
    # the same command again: all finished, nothing submitted
    job2, out = _launch("--cpus_per_task", "1", "incv_train.py", *GRID, "--results_dir",
                        results)
    assert job2 is None and "nothing to submit: 8 of 8 runs of the grid are finished" in out
    assert not os.path.exists(os.path.join(results, "slurm"))


def test_a_stopped_and_requeued_task_ends_as_the_uninterrupted_run(cluster, tmp_path):
    argv = ONE + ["--epochs", "24"]
    results = str(tmp_path / "slurm-run")
    job, _ = _launch("noisy_cv.py", *argv, "--results_dir", results)
    log = os.path.join(results, "digits", "sym", "0.4", "seed0", "log.jsonl")
    _wait_lines(log, 2, job)
    # as before a time limit (sbatch --signal=B:USR1@N): the run stops, the task requeues itself
    subprocess.run(["scancel", "--signal=USR1", "--batch", f"{job}_0"], check=True, timeout=30)
    _wait_lines(log, len(read_jsonl(log)) + 2, job)
    # as on preemption: SLURM sends SIGTERM and requeues the task
    subprocess.run(["scontrol", "requeue", f"{job}_0"], check=True, timeout=30)
    _wait(job)
    (text,) = _task_logs(results)
    assert len(re.findall(r"^== task 0 ", text, re.M)) == 3, text[-3000:]
    assert "stopped: SIGUSR1 received: stopped after epoch" in text
    assert "note: asked SLURM to requeue job" in text
    assert "stopped: SIGTERM received: stopped after epoch" in text
    assert len(re.findall(r"resuming after epoch \d+", text)) == 2
    assert [r["epoch"] for r in read_jsonl(log)] == list(range(1, 25))
    ref = str(tmp_path / "uninterrupted")
    noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", ref]))
    shutil.rmtree(os.path.join(results, "slurm"))
    assert_same_runs(ref, results, atol=1e-6)
