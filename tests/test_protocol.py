"""reproduce_cifar10_cpu.sh: the commands each part runs, with a stand-in interpreter that
records them (no training), each parsed by the real script's parse_args."""

import os
import shlex
import stat
import subprocess

import pytest
from conftest import ROOT

from noisylabels import incv_train, noisy_cv, table

SCRIPT = os.path.join(ROOT, "reproduce_cifar10_cpu.sh")
SELECTION = "incv/cifar10/sym/0.5/incv/seed0/cifar10_sym0.5_INCV_results.csv"


def _run(tmp_path, part, *, selection=True, launcher="local"):
    """Run one part with PYTHON = a recorder; returns (completed process, recorded argv's)."""
    record = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    # one write per call (the table1-8px part runs two at once; O_APPEND keeps lines whole)
    fake.write_text(f'#!/usr/bin/env bash\nline=$(printf "%q " "$@")\n'
                    f'echo "$line" >> {shlex.quote(str(record))}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    out = tmp_path / "out"
    if selection:
        (out / SELECTION).parent.mkdir(parents=True, exist_ok=True)
        (out / SELECTION).write_text("index,label,select\n")
    env = dict(os.environ, PYTHON=str(fake), OUT=str(out), DATA_DIR=str(tmp_path / "data"))
    env["LAUNCHER"] = launcher  # never the caller's environment's
    proc = subprocess.run(["bash", SCRIPT, part], env=env, capture_output=True, text=True,
                          check=False)
    calls = [shlex.split(line) for line in record.read_text().splitlines()] \
        if record.exists() else []
    return proc, calls


def _parse(call):
    """The real parser of the script a call runs (a typo in a flag fails here)."""
    module = {"noisy_cv.py": noisy_cv, "incv_train.py": incv_train, "table.py": table}[call[0]]
    return module.parse_args(call[1:])


def test_all_parts_run_the_protocol_commands(tmp_path):
    proc, calls = _run(tmp_path, "all")
    assert proc.returncode == 0, proc.stderr
    parsed = [(c[0], _parse(c)) for c in calls]
    theory = [a for s, a in parsed if s == "noisy_cv.py" and a.n_train == 5000]
    assert len(theory) == 1
    assert theory[0].noise_pattern == ["sym", "asym"]
    assert theory[0].noisy_ratio == [0.2, 0.4, 0.5, 0.6, 0.8]
    assert theory[0].arch == "resnet20" and theory[0].augment == "none"
    small = [a for s, a in parsed if s == "incv_train.py" and a.image_size == 8]
    assert len(small) == 8 and {a.arch for a in small} == {"resnet20"}  # table1-8px: 4 x 2
    assert {a.arch for s, a in parsed if s == "incv_train.py" and a.image_size == 32} == {"cnn"}
    parsed = [(s, a) for s, a in parsed if getattr(a, "image_size", 32) == 32
              and not any(p.endswith("table1-8px") for p in getattr(a, "paths", []))]
    scaling = sorted(a.n_train for s, a in parsed if s == "noisy_cv.py" and a.n_train != 5000)
    assert scaling == [2000, 10000]
    incv = [a for s, a in parsed if s == "incv_train.py"]
    fig3 = [(a.noise_pattern, a.noisy_ratio) for a in incv
            if a.incv_only and a.incv_optimizer == "fresh"]
    assert fig3 == [(["sym"], [0.5]), (["asym"], [0.4])]
    table1 = [a for a in incv if not a.incv_only]
    assert sorted(m for a in table1 for m in a.method) == ["coteaching", "incv", "incv",
                                                           "standard"]
    with_selection = [a for a in table1 if a.incv_results]
    assert sorted(a.selection for a in with_selection) == ["authors", "fused"]
    assert all(a.incv_results.endswith(SELECTION) for a in with_selection)
    assert len({a.epochs for a in table1}) == 1  # the methods compared at the same length
    carry = [a for a in incv if a.incv_optimizer == "carry"]
    assert len(carry) == 1 and carry[0].noise_pattern == ["sym"] and carry[0].incv_only
    assert carry[0].incv_epochs == incv[0].incv_epochs  # comparable with the incv part
    assert not any(a.resume for a in incv)  # nothing started: --resume would refuse
    runs = [a for s, a in parsed if s != "table.py"]
    assert all(a.skip_existing for a in runs)
    assert all(a.data_dir == str(tmp_path / "data") and a.no_download for a in runs)
    figure = [a for s, a in parsed if s == "table.py"]  # Table 1 + fused vs authors' curves
    assert len(figure) == 1 and figure[0].curves.endswith("table1_curves.png")
    assert [os.path.basename(p) for p in figure[0].paths] == ["table1", "table1-authors"]


def test_resume_only_for_a_started_run(tmp_path):
    started = tmp_path / "out" / "table1" / "cifar10" / "sym" / "0.5" / "incv" / "seed0"
    started.mkdir(parents=True)
    (started / "config.json").write_text("{}")
    proc, calls = _run(tmp_path, "table1")
    assert proc.returncode == 0, proc.stderr
    args = [_parse(c) for c in calls]
    assert [(a.method, a.resume) for a in args] == [(["incv"], True),
                                                   (["coteaching", "standard"], False)]


def test_table1_needs_the_incv_part(tmp_path):
    proc, calls = _run(tmp_path, "table1", selection=False)
    assert proc.returncode == 2 and calls == []
    assert "run the incv part first" in proc.stderr


@pytest.mark.parametrize("part", ["bogus", "Theory"])
def test_unknown_part(tmp_path, part):
    proc, calls = _run(tmp_path, part)
    assert proc.returncode == 2 and calls == []
    assert f"unknown part '{part}'" in proc.stderr


def test_pilots_part_runs_the_regime_pilots(tmp_path):
    proc, calls = _run(tmp_path, "pilots", selection=False)  # needs no INCV selection
    assert proc.returncode == 0, proc.stderr
    parsed = [(c[0], _parse(c)) for c in calls]
    runs = [a for s, a in parsed if s == "incv_train.py"]
    assert len(runs) == 10 and [s for s, _ in parsed] == ["incv_train.py"] * 10 + ["table.py"]
    aug, runs = runs[-1], runs[:-1]  # INCV's first iteration in the 8x8 regime, augmented
    assert (aug.arch, aug.image_size, aug.n_train, aug.augment) == ("resnet20", 8, 20000,
                                                                    "standard")
    assert (aug.method, aug.incv_only, aug.incv_iterations, aug.incv_epochs) == (
        ["incv"], True, 1, 20)
    assert (aug.noise_pattern, aug.noisy_ratio, aug.seed) == (["sym"], [0.8, 0.5], [0])
    assert aug.skip_existing and not aug.resume
    assert os.path.dirname(aug.results_dir).endswith("pilots")
    assert all(a.augment == "none" for a in runs)
    small, runs = runs[4:], runs[:4]
    assert {(a.arch, a.n_train, a.image_size) for a in runs} == {("resnet20", 5000, 32)}
    assert [(a.arch, a.image_size, a.n_train, a.epochs) for a in small] == [
        ("cnn", 16, 10000, 40), ("resnet20", 16, 10000, 40), ("cnn_x2", 16, 10000, 40),
        ("resnet20", 16, 20000, 30), ("resnet20", 8, 20000, 20)]
    assert all(a.method == ["standard"] and a.intra_op_threads == 1 for a in small)
    assert all(a.skip_existing and not a.resume for a in small)
    assert all(a.noise_pattern == ["sym"] and a.noisy_ratio == [0.5] for a in runs)
    assert all(a.skip_existing and not a.resume and a.no_download for a in runs)
    dirs = [os.path.basename(a.results_dir) for a in runs]
    assert len(set(dirs)) == 4 and all(os.path.dirname(a.results_dir).endswith("pilots")
                                       for a in runs)
    standard = [a for a in runs if a.method == ["standard"]]
    assert [(a.precision, a.batch_size, a.epochs) for a in standard] == [
        ("float32", 128, 30), ("mixed_bfloat16", 128, 30), ("mixed_bfloat16", 32, 30)]
    incv = [a for a in runs if a.method == ["incv"]]
    assert len(incv) == 1 and incv[0].incv_only and incv[0].incv_iterations == 1
    assert (incv[0].batch_size, incv[0].precision) == (32, "mixed_bfloat16")
    assert parsed[-1][1].paths == [os.path.dirname(runs[0].results_dir)]


def test_pilots_part_resumes_a_started_pilot(tmp_path):
    started = (tmp_path / "out" / "pilots" / "p4-r20-none-n5k-e30-bs32-bf16" / "cifar10" /
               "sym" / "0.5" / "standard" / "seed0")
    started.mkdir(parents=True)
    (started / "config.json").write_text("{}")
    proc, calls = _run(tmp_path, "pilots", selection=False)
    assert proc.returncode == 0, proc.stderr
    resumed = [_parse(c).batch_size == 32 and _parse(c).method == ["standard"]
               for c in calls if c[0] == "incv_train.py" and _parse(c).resume]
    assert resumed == [True]


def test_all_does_not_run_the_pilots(tmp_path):
    _, calls = _run(tmp_path, "all")
    assert not any("pilots" in arg for c in calls for arg in c)


TABLE1_ROWS = ["standard", "fcorrection", "decoupling", "coteaching", "mentornet", "d2l", "incv"]


def _check_table1_protocol(a, out):
    """The 8x8 regime's flags, the same in every command of the table1-8px part."""
    assert (a.arch, a.image_size, a.n_train, a.augment) == ("resnet20", 8, 20000, "none")
    assert (a.epochs, a.incv_epochs, a.incv_iterations) == (30, 20, 2)
    assert (a.intra_op_threads, a.inter_op_threads) == (1, 1)
    assert a.seed == [0, 1, 2] and a.skip_existing and a.no_download
    if a.incv_forget_rate == "estimate":  # the grid: seven rows, four columns
        assert a.method == TABLE1_ROWS and a.results_dir == str(out / "table1-8px")
    else:  # the oracle ablation: INCV + Co-teaching alone, in its own folder
        assert (a.method, a.incv_forget_rate) == (["incv"], "true_noise_of_s")
        assert a.results_dir == str(out / "table1-8px-oracle")


def _settings(runs):
    return sorted((a.incv_forget_rate, p, r) for a in runs for p in a.noise_pattern
                  for r in a.noisy_ratio)


TABLE1_SETTINGS = [("estimate", "asym", 0.4), ("estimate", "sym", 0.2), ("estimate", "sym", 0.5),
                   ("estimate", "sym", 0.8), ("true_noise_of_s", "asym", 0.4),
                   ("true_noise_of_s", "sym", 0.2), ("true_noise_of_s", "sym", 0.5),
                   ("true_noise_of_s", "sym", 0.8)]


def test_table1_8px_part_runs_the_whole_table_two_tasks_at_a_time(tmp_path):
    proc, calls = _run(tmp_path, "table1-8px", selection=False)  # needs no INCV selection
    assert proc.returncode == 0, proc.stderr
    parsed = [(c[0], _parse(c)) for c in calls]
    runs = [a for s, a in parsed if s == "incv_train.py"]
    assert [s for s, _ in parsed] == ["incv_train.py"] * 8 + ["table.py"]
    out = tmp_path / "out"
    for a in runs:  # each grid as two tasks side by side, continuing what started
        _check_table1_protocol(a, out)
        assert a.num_tasks == 2 and a.resume
    assert _settings(runs[::2]) == _settings(runs[1::2]) == TABLE1_SETTINGS
    assert sorted(a.task for a in runs) == [0] * 4 + [1] * 4
    figure = parsed[-1][1]
    assert figure.paths == [str(out / "table1-8px"), str(out / "table1-8px-oracle")]
    assert figure.curves.endswith("curves.png")
    assert (out / "table1-8px" / "sym-task0.log").exists()
    assert (out / "table1-8px" / "oracle-asym-task1.log").exists()


def test_table1_8px_part_submits_job_arrays_through_the_launcher(tmp_path):
    from noisylabels import slurm

    proc, calls = _run(tmp_path, "table1-8px", selection=False, launcher="slurm")
    assert proc.returncode == 0, proc.stderr
    assert [c[0] for c in calls] == ["slurm.py"] * 4  # no table yet: the arrays are queued
    out = tmp_path / "out"
    runs = []
    for c in calls:
        launcher = slurm.parse_args(c[1:])
        assert launcher.script == "incv_train.py"
        assert (launcher.cpus_per_task, launcher.mem) == (1, "6G")
        a = incv_train.parse_args(launcher.script_args)
        _check_table1_protocol(a, out)
        assert a.task is None  # the launcher adds --task / --resume per array task
        runs.append(a)
    assert _settings(runs) == TABLE1_SETTINGS
    assert "squeue" in proc.stdout


def test_table1_8px_part_names_a_failed_task_and_a_bad_launcher(tmp_path):
    fail = tmp_path / "python"  # one task fails: the part says which, and stops
    fail.write_text('#!/usr/bin/env bash\n[[ " $* " == *" --task 1 "* ]] && exit 3\nexit 0\n')
    fail.chmod(0o755)
    env = dict(os.environ, PYTHON=str(fail), OUT=str(tmp_path / "out"), LAUNCHER="local")
    proc = subprocess.run(["bash", SCRIPT, "table1-8px"], env=env, capture_output=True,
                          text=True, check=False)
    assert proc.returncode == 1 and "sym-task1 failed" in proc.stderr
    assert "sym-task0 failed" not in proc.stderr and "asym" not in proc.stderr  # stopped
    proc = subprocess.run(["bash", SCRIPT, "table1-8px"], env={**env, "LAUNCHER": "sge"},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: LAUNCHER='sge': choose local or slurm"
