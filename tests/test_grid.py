"""A grid split into tasks (--list_runs, --task / --num_tasks), noisy_cv.py --resume, runs
stopped by SIGTERM at a safe point, and run-directory locks. No SLURM needed (see
test_slurm.py for the real scheduler)."""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import GRID, ROOT, read_jsonl, subprocess_env

from noisylabels import flags, grid, incv_train, locks, noisy_cv, preemption, slurm, table, training

INCV = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--incv_epochs", "1",
        "--incv_iterations", "1", "--epochs", "2", "--noise_pattern", "sym", "asym",
        "--noisy_ratio", "0.4", "--method", "incv", "ncv", "standard", "--verbose", "0"]
ONE = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--noise_pattern", "sym",
       "--noisy_ratio", "0.4", "--verbose", "0"]
CV = ["--dataset", "digits", "--arch", "cnn", "--n_train", "200", "--noise_pattern", "sym",
      "--noisy_ratio", "0.2", "0.6", "--verbose", "0"]
# Fields that differ between two runs of the same computation.
VOLATILE = ("seconds", "started", "host", "command", "git_commit")


def _cli(script, *argv, env=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv],
                          capture_output=True, text=True, env=env or subprocess_env(),
                          cwd=ROOT, timeout=300)


def _strip(obj):
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _tree(results):
    """{relative path: content} of every run file that must agree between two grids."""
    out = {}
    for folder, dirs, names in os.walk(results):
        for name in names:
            path = os.path.join(folder, name)
            rel = os.path.relpath(path, results)
            if name.endswith(".json") and name != "noisy_cv_cnn.json":
                # paths inside (e.g. ncv's probabilities_from) relative to the results
                out[rel] = _strip(json.loads(open(path).read().replace(results, "RESULTS")))
                if name == "config.json":  # where and how the grid ran, not what a run is
                    out[rel]["args"] = {k: v for k, v in out[rel]["args"].items()
                                        if k not in flags.BOOKKEEPING_FLAGS}
                    # TensorFlow's thread settings are where the grid ran (a SLURM task's
                    # process chooses them, a test process may have started TensorFlow with
                    # its defaults); the results themselves are compared below
                    out[rel].pop("threads", None)
            elif name.endswith(".jsonl"):
                out[rel] = _strip([json.loads(line.replace(results, "RESULTS"))
                                   for line in open(path) if line.strip()])
            elif name.endswith(".npz"):
                with np.load(path) as f:
                    out[rel] = {k: f[k] for k in f.files}
            elif name.endswith(".csv"):
                out[rel] = open(path).read()
            else:
                out[rel] = None  # figures: present, not compared
    return out


def assert_same_runs(a, b, *, atol=0.0):
    ta, tb = _tree(a), _tree(b)
    assert sorted(ta) == sorted(tb)
    for rel, va in ta.items():
        vb = tb[rel]
        if isinstance(va, dict) and rel.endswith(".npz"):
            assert sorted(va) == sorted(vb), rel
            for k in va:
                np.testing.assert_allclose(va[k], vb[k], atol=atol, rtol=0, err_msg=f"{rel} {k}")
        elif atol and rel.endswith((".json", ".jsonl")):
            assert _close(va, vb, atol), rel
        else:
            assert va == vb, rel


def _close(a, b, atol):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], atol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, atol) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= atol
    return a == b


def table_text(results):
    held = io.StringIO()
    with contextlib.redirect_stdout(held):
        table.main(table.parse_args([results]))
    return held.getvalue().replace(results, "RESULTS")


# -- listing and splitting ---------------------------------------------------------------------

def test_list_runs_shows_units_and_writes_nothing(tmp_path, capsys):
    results = str(tmp_path / "grid")
    rows = incv_train.main(incv_train.parse_args(INCV + ["--seed", "0", "1", "--list_runs",
                                                         "--results_dir", results]))
    assert not os.path.exists(results)
    assert len(rows) == 2 * 2 * 3 and [r["index"] for r in rows] == list(range(12))
    # one unit per setting x seed, its methods in order: INCV before cl / ncv that reuse it
    assert [r["unit"] for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert [r["method"] for r in rows[:3]] == ["incv", "ncv", "standard"]
    assert {r["status"] for r in rows} == {"new"}
    text = capsys.readouterr().out
    assert "12 runs, 4 units" in text and "0 finished, 0 running, 0 started, 12 new" in text
    two = incv_train.main(incv_train.parse_args(INCV + ["--seed", "0", "1", "--list_runs",
                                                        "--task", "1", "--num_tasks", "2",
                                                        "--results_dir", results]))
    assert sorted({r["unit"] for r in two}) == [1, 3]


def test_task_flags_are_checked(capsys):
    for argv, message in [(["--task", "1"], "--task and --num_tasks go together"),
                          (["--task", "2", "--num_tasks", "2"], "--task must be in 0..1"),
                          (["--task", "0", "--num_tasks", "0"], "--num_tasks must be a positive")]:
        with pytest.raises(SystemExit) as exit_info:
            noisy_cv.parse_args(CV + argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_slurm_array_variables_pick_the_task():
    args = noisy_cv.parse_args(CV)
    notes = []
    grid.resolve_task(args, environ={"SLURM_ARRAY_TASK_ID": "3",
                                     "SLURM_ARRAY_TASK_COUNT": "5"}, printer=notes.append)
    assert (args.task, args.num_tasks) == (3, 5) and "SLURM array task 3 of 5" in notes[0]
    args = noisy_cv.parse_args(CV + ["--task", "0", "--num_tasks", "1"])
    grid.resolve_task(args, environ={"SLURM_ARRAY_TASK_ID": "3",
                                     "SLURM_ARRAY_TASK_COUNT": "5"})
    assert (args.task, args.num_tasks) == (0, 1)  # explicit flags win
    runs = [{"pattern": p, "ratio": 0.5, "seed": s, "run_dir": f"{p}{s}{m}"}
            for s in (0, 1) for p in ("sym", "asym") for m in "ab"]
    parts = [grid.select(runs, task=k, num_tasks=3) for k in range(3)]
    assert sorted(sum(parts, [])) == list(range(8))  # every run in exactly one task
    assert parts[0] == [0, 1, 6, 7]  # units 0 and 3, whole


def test_grid_in_tasks_equals_grid_in_one_process(sequential_grid, tmp_path):
    """Task 1 of 2 (units 1 and 3: asym, seeds 0 and 1; INCV, then ncv reusing INCV's
    probabilities) makes the same runs, files, numbers and table as the one process that
    ran the whole grid, where these runs came after others."""
    split = str(tmp_path)
    incv_train.main(incv_train.parse_args(GRID + ["--results_dir", split, "--task", "1",
                                                  "--num_tasks", "2"]))
    assert sorted(os.listdir(os.path.join(split, "digits"))) == ["asym"]
    one, part = (os.path.join(d, "digits", "asym") for d in (sequential_grid, split))
    assert_same_runs(one, part)
    assert table_text(one) == table_text(part)
    s = json.load(open(os.path.join(part, "0.4", "ncv", "seed1", "summary.json")))
    assert s["probabilities_from"].endswith(os.path.join("incv", "seed1", "probabilities.npz"))
    cfg = json.load(open(os.path.join(part, "0.4", "incv", "seed1", "config.json")))
    assert not {"task", "num_tasks", "list_runs"} & set(cfg["args"])  # not part of the run


def test_noisy_cv_grid_in_tasks_equals_one_process(tmp_path):
    """noisy_cv.py builds one network per seed for all its ratios: a task running the
    second ratio alone starts from the same initial weights."""
    one, split = str(tmp_path / "one"), str(tmp_path / "split")
    noisy_cv.main(noisy_cv.parse_args(CV + ["--epochs", "2", "--results_dir", one]))
    for k in (1, 0):
        noisy_cv.main(noisy_cv.parse_args(CV + ["--epochs", "2", "--results_dir", split,
                                                "--task", str(k), "--num_tasks", "2"]))
    assert_same_runs(one, split)
    assert table_text(one) == table_text(split)
    assert len(json.load(open(os.path.join(split, "digits", "noisy_cv_cnn.json")))) == 2


# -- noisy_cv.py --resume ----------------------------------------------------------------------

def test_noisy_cv_resume_equals_uninterrupted(tmp_path, monkeypatch):
    """--folds 2, killed in the second fold's second epoch: the first fold's predictions are
    read back, the second continues from its checkpoint, and everything ends as the
    uninterrupted run did."""
    argv = ONE + ["--epochs", "4", "--folds", "2"]
    ref = str(tmp_path / "ref")
    noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", ref]))
    out_dir = str(tmp_path / "run")
    real = training.EpochCheckpoint.on_epoch_end
    calls = []

    def die(self, epoch, logs=None):
        real(self, epoch, logs)
        calls.append(epoch)
        if len(calls) == 6:  # fold 2's second epoch is saved
            raise KeyboardInterrupt

    monkeypatch.setattr(training.EpochCheckpoint, "on_epoch_end", die)
    with pytest.raises(KeyboardInterrupt):
        noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", out_dir]))
    monkeypatch.setattr(training.EpochCheckpoint, "on_epoch_end", real)
    run = os.path.join(out_dir, "digits", "sym", "0.4", "seed0")
    assert not os.path.exists(os.path.join(run, "summary.json"))
    assert os.path.isfile(os.path.join(run, "fold1.npz"))
    with pytest.raises(FileExistsError):  # neither --resume nor --overwrite
        noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", out_dir]))
    with pytest.raises(ValueError, match="--lr 0.001 there, 0.01 now"):
        noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", out_dir, "--resume",
                                                  "--lr", "0.01"]))
    noisy_cv.main(noisy_cv.parse_args(argv + ["--results_dir", out_dir, "--resume"]))
    log = read_jsonl(os.path.join(run, "log.jsonl"))
    assert [(r["fold"], r["epoch"]) for r in log] == [(f, e) for f in (1, 2) for e in (1, 2, 3, 4)]
    assert_same_runs(ref, out_dir, atol=1e-6)


def test_noisy_cv_resume_with_nothing_started_is_an_error(tmp_path):
    r = _cli("noisy_cv.py", *CV, "--epochs", "1", "--resume", "--results_dir", str(tmp_path))
    assert r.returncode == 2 and "--resume: nothing to resume" in r.stderr
    with pytest.raises(SystemExit):
        noisy_cv.parse_args(CV + ["--resume", "--overwrite"])


# -- SIGTERM: stop at a safe point, continue to the uninterrupted result ----------------------

def _signal_when(proc, log, lines, sig=signal.SIGTERM, timeout=240):
    """Send ``sig`` to ``proc`` once ``log`` has at least ``lines`` lines."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if os.path.isfile(log) and len(read_jsonl(log)) >= lines:
            proc.send_signal(sig)
            return
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise AssertionError(f"no {lines} lines in {log} before the run ended: "
                         f"{proc.communicate()[1][-2000:]}")


@pytest.mark.parametrize("script, argv, rel, sig", [
    ("noisy_cv.py", ONE + ["--epochs", "30"],
     os.path.join("digits", "sym", "0.4", "seed0"), signal.SIGTERM),
    ("incv_train.py", ONE + ["--method", "standard", "--epochs", "30"],
     os.path.join("digits", "sym", "0.4", "standard", "seed0"), signal.SIGUSR1),
])
def test_signal_stops_at_an_epoch_end_and_resume_matches(script, argv, rel, sig, tmp_path):
    ref, out_dir = str(tmp_path / "ref"), str(tmp_path / "run")
    module = noisy_cv if script == "noisy_cv.py" else incv_train
    # The uninterrupted reference first, in this process: it fixes TensorFlow's thread
    # settings here (the scripts' choice, or what an earlier test left), which --resume
    # below compares with the child's; so the child is given the same ones.
    module.main(module.parse_args(argv + ["--results_dir", ref]))
    from noisylabels import threads

    now = threads.effective()
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *argv,
                             "--intra_op_threads", str(now["intra_op"]),
                             "--inter_op_threads", str(now["inter_op"]),
                             "--results_dir", out_dir], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(), cwd=ROOT)
    log = os.path.join(out_dir, rel, "log.jsonl")
    _signal_when(proc, log, 2, sig)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == preemption.EXIT_PREEMPTED, err
    assert f"stopped: {signal.Signals(sig).name} received: stopped after epoch" in err
    run = os.path.join(out_dir, rel)
    with np.load(os.path.join(run, "checkpoint.npz")) as f:
        done = int(f["epochs_done"])
    assert 2 <= done < 30 and [r["epoch"] for r in read_jsonl(log)] == list(range(1, done + 1))
    assert not os.path.exists(os.path.join(run, "summary.json"))
    assert not os.path.exists(locks.lock_path(run))  # released on the way out
    module.main(module.parse_args(argv + ["--results_dir", out_dir, "--resume"]))
    assert_same_runs(ref, out_dir, atol=1e-6)


# -- locks -------------------------------------------------------------------------------------

def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_locked_run_is_refused_with_the_holder_named(tmp_path):
    results = str(tmp_path)
    run = os.path.join(results, "digits", "sym", "0.4", "seed0")
    with locks.RunLock(run):
        r = _cli("noisy_cv.py", *ONE, "--epochs", "1",
                 "--results_dir", results, env=subprocess_env(SLURM_JOB_ID=""))
        assert r.returncode == 2
        line = r.stderr.strip().splitlines()[-1]  # after TensorFlow's own start-up lines
        assert line.startswith(f"error: run directory '{run}' is in use by another process "
                               f"(host {socket.gethostname()}, pid {os.getpid()}")
        assert os.listdir(run) == [locks.LOCK_NAME]  # nothing trained, nothing written
        assert grid.run_status(run) == "running"
    assert not os.path.exists(locks.lock_path(run))


def test_lock_records_the_slurm_job_and_keeps_a_heartbeat(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "41")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "40")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    with locks.RunLock(str(tmp_path), heartbeat=0.05, stale_after=1) as lock:
        holder, _ = locks.read_holder(str(tmp_path))
        assert holder["slurm_job_id"] == "40_2" and holder["pid"] == os.getpid()
        os.utime(lock.path, (0, 0))
        time.sleep(0.3)
        assert time.time() - os.stat(lock.path).st_mtime < 1  # the heartbeat touched it
        with pytest.raises(locks.RunLocked, match="SLURM job 40_2"):
            locks.RunLock(str(tmp_path)).acquire()


def test_a_stale_lock_is_taken_over_with_a_note(tmp_path, capsys):
    results = str(tmp_path)
    run = os.path.join(results, "digits", "sym", "0.4", "seed0")
    os.makedirs(run)
    dead = _dead_pid()
    with open(locks.lock_path(run), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": dead, "slurm_job_id": "7_1"}, f)
    assert grid.run_status(run) == "new"  # a dead holder's lock is no run
    noisy_cv.main(noisy_cv.parse_args(ONE + ["--epochs", "1", "--results_dir", results]))
    out = capsys.readouterr().out
    assert (f"note: took over the stale lock of '{run}' from host {socket.gethostname()}, "
            f"pid {dead}, SLURM job 7_1 (its process is gone)") in out
    assert os.path.isfile(os.path.join(run, "summary.json"))
    assert not os.path.exists(locks.lock_path(run))


def test_a_lock_from_another_host_is_stale_only_when_its_heartbeat_stopped(tmp_path):
    notes = []
    with open(locks.lock_path(str(tmp_path)), "w") as f:
        json.dump({"host": "node-that-is-gone", "pid": os.getpid()}, f)
    with pytest.raises(locks.RunLocked, match="host node-that-is-gone"):
        locks.RunLock(str(tmp_path), stale_after=60).acquire()
    old = time.time() - 120
    os.utime(locks.lock_path(str(tmp_path)), (old, old))
    with locks.RunLock(str(tmp_path), stale_after=60, printer=notes.append):
        assert locks.read_holder(str(tmp_path))[0]["host"] == socket.gethostname()
    assert "no heartbeat for 120 s" in notes[0]


# -- the launcher without SLURM ----------------------------------------------------------------

def test_launcher_without_slurm_points_to_the_one_machine_way(tmp_path):
    env = subprocess_env(PATH=os.path.dirname(sys.executable) + ":/nonexistent")
    r = _cli("slurm.py", "noisy_cv.py", *CV, "--results_dir", str(tmp_path), env=env)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: SLURM's sbatch is not on PATH") and "--task K --num_tasks N" \
        in line and "CUDA_VISIBLE_DEVICES" in line
    assert os.listdir(tmp_path) == []


def test_launcher_flags_are_checked(capsys):
    for argv, message in [(["--time", "soon", "noisy_cv.py"], "--time must be"),
                          (["noisy_cv.py", "--task", "1"], "the launcher sets --task"),
                          (["noisy_cv.py", "--overwrite"], "--overwrite would redo"),
                          (["--sbatch_option", "account=x", "noisy_cv.py"], "--sbatch_option")]:
        with pytest.raises(SystemExit) as exit_info:
            slurm.parse_args(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert slurm.array_spec([0, 1, 2, 5, 7, 8], 4) == "0-2,5,7-8%4"


def test_launcher_dry_run_writes_the_job_script(tmp_path, capsys):
    args = slurm.parse_args(["--dry_run", "--time", "2-00:00:00", "--gpus_per_task", "1",
                             "--cpus_per_task", "8", "--mem", "32G", "--partition", "gpu",
                             "--parallel", "2", "--sbatch_option=--account=lab",
                             "noisy_cv.py", *CV, "--seed", "0", "1", "--results_dir",
                             str(tmp_path)])
    assert slurm.main(args) is None
    (job,) = [os.path.join(d, "job.sh") for d, _, names in os.walk(tmp_path) if "job.sh" in names]
    text = open(job).read()
    for line in ("#SBATCH --array=0-3%2", "#SBATCH --time=2-00:00:00", "#SBATCH --gres=gpu:1",
                 "#SBATCH --cpus-per-task=8", "#SBATCH --mem=32G", "#SBATCH --partition=gpu",
                 "#SBATCH --account=lab", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300"):
        assert line in text.splitlines(), line
    assert '--skip_existing --resume --task "$SLURM_ARRAY_TASK_ID" --num_tasks 4' in text
    assert "nothing submitted (4 tasks, 4 runs to do)" in capsys.readouterr().out
