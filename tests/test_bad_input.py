"""Bad input ends with one line "error: ..." naming the flag or file and the fix, a non-zero
exit status, no traceback and nothing written; the package installs as its modules are.

Most checks fail before training starts (at parse time or while loading the data); the
subprocess runs check what a user sees from the command line.
"""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tomllib

from noisylabels import data, flags, incv_train, noisy_cv, table, utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = ["--dataset", "digits", "--arch", "cnn", "--n_train", "300", "--incv_epochs", "1",
          "--incv_iterations", "1", "--epochs", "1", "--noise_pattern", "sym",
          "--noisy_ratio", "0.5", "--verbose", "0"]


def _run(script, *argv, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "NOISY_LABELS_DEBUG"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def _one_error_line(stderr):
    """The error line a user sees: the last line, "error: ...", and no traceback."""
    assert "Traceback" not in stderr, stderr
    last = stderr.strip().splitlines()[-1]
    assert "error: " in last, stderr
    return last


def _cli_error(main, args, capsys):
    """Run a script's main through utils.cli in this process: (exit status, error line)."""
    status = utils.cli(main, args)
    return status, _one_error_line(capsys.readouterr().err)


def _parse_error(parse, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    return exit_info.value.code, _one_error_line(capsys.readouterr().err)


# -- flags out of range, repeated grid values ------------------------------------------------

@pytest.mark.parametrize("parse, argv, message", [
    (noisy_cv.parse_args, ["--lr", "0"], "--lr must be a positive number, got 0.0"),
    (noisy_cv.parse_args, ["--lr", "-0.1"], "--lr must be a positive number, got -0.1"),
    (incv_train.parse_args, ["--lr", "nan"], "--lr must be a positive number, got nan"),
    (incv_train.parse_args, ["--tk", "0"], "--tk must be a positive number, got 0.0"),
    (incv_train.parse_args, ["--forget_rate", "1"], "--forget_rate must be in [0, 1), got 1.0"),
    (incv_train.parse_args, ["--forget_rate", "-0.1"], "--forget_rate must be in [0, 1)"),
    (noisy_cv.parse_args, ["--seed", "0", "-1"], "--seed must be a non-negative integer, got -1"),
    (incv_train.parse_args, ["--noisy_ratio", "0.1", "0.1000000001"],
     "--noisy_ratio values 0.1 and 0.1000000001 share the run directory name '0.1'"),
])
def test_flag_out_of_range_is_refused(parse, argv, message, capsys):
    status, line = _parse_error(parse, argv, capsys)
    assert status == 2 and message in line


def test_repeated_grid_values_run_once_with_a_note(capsys):
    args = incv_train.parse_args(["--noisy_ratio", "0.5", "0.50", "0.2", "--seed", "0", "0",
                                  "--method", "incv", "standard", "incv",
                                  "--noise_pattern", "sym", "sym"])
    assert args.noisy_ratio == [0.5, 0.2] and args.seed == [0]
    assert args.method == ["incv", "standard"] and args.noise_pattern == ["sym"]
    err = capsys.readouterr().err
    assert "note: --noisy_ratio repeats a value; each run is made once: 0.5 0.2" in err
    assert "note: --seed repeats" in err and "note: --method repeats" in err


def test_n_train_larger_than_the_training_set_says_so():
    args = noisy_cv.parse_args(["--dataset", "digits", "--n_train", "5000"])
    printed = []
    d = flags.load_training_data(args, printed.append)
    assert len(d.y_train) == 1347
    assert printed == ["note: --n_train 5000 is more than the 1347 training images of digits: "
                       "all 1347 are used"]


# -- results directory -----------------------------------------------------------------------

def test_results_dir_under_a_file_is_refused_before_anything(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = _run("noisy_cv.py", "--dataset", "digits", "--results_dir", str(blocker / "runs"))
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert f"--results_dir '{blocker / 'runs'}' lies under the file '{blocker}'" in line
    assert blocker.read_text() == "not a folder" and sorted(os.listdir(tmp_path)) == ["a_file"]


def test_results_dir_without_permission_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # tests may run as root
    status, line = _parse_error(incv_train.parse_args, ["--results_dir", str(tmp_path / "r")],
                                capsys)
    assert status == 2 and "--results_dir" in line and "no permission to write" in line


@pytest.mark.parametrize("error", [
    PermissionError(13, "Permission denied", "/results/x/config.json"),
    NotADirectoryError(20, "Not a directory", "/results/file/x"),
    OSError(28, "No space left on device", "/results/x/checkpoint.npz"),
])
def test_cli_reports_system_errors_with_the_path(error, capsys):
    def main(args):
        raise error

    status, line = _cli_error(main, None, capsys)
    assert status == 2
    assert line.startswith(f"error: {error.strerror}: '{error.filename}'")
    assert "--results_dir" in line


def test_cli_reports_a_diverged_training(capsys):
    def main(args):
        raise utils.TrainingDiverged("training diverged: loss=nan at epoch 2")

    assert _cli_error(main, None, capsys) == (2, "error: training diverged: loss=nan at "
                                                 "epoch 2")


# -- .npz datasets ---------------------------------------------------------------------------

def _npz(path, **override):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.integers(0, 256, (40, 8, 8), dtype=np.uint8),
              "y_train": np.arange(40) % 4,
              "x_test": rng.integers(0, 256, (8, 8, 8), dtype=np.uint8),
              "y_test": np.arange(8) % 4}
    arrays.update(override)
    np.savez(path, **arrays)
    return str(path)


def _bad_pixels(value):
    x = np.full((40, 8, 8), 0.5, np.float32)
    x[3, 2, 1] = value
    return x


@pytest.mark.parametrize("override, message", [
    ({"y_test": np.array([0, 1, 2, 999, 3, 0, 1, 2])},
     "y_test holds classes the training set lacks (999); y_train has 0 1 2 3"),
    ({"y_train": np.arange(40) % 4 + 1, "y_test": np.arange(8) % 4 + 1},
     "y_train must use the classes 0..3 (each at least once), found 1 2 3 4"),
    ({"y_train": np.arange(40) % 4 * 2, "y_test": np.zeros(8, int)},
     "y_train must use the classes 0..3 (each at least once), found 0 2 4 6"),
    ({"x_train": _bad_pixels(np.nan)}, "x_train holds 1 NaN or infinite pixel values"),
    ({"x_train": _bad_pixels(np.inf)}, "x_train holds 1 NaN or infinite pixel values"),
    ({"x_train": np.zeros((0, 8, 8), np.uint8), "y_train": np.zeros(0, int)},
     "x_train holds no images"),
])
def test_bad_npz_is_refused_at_load(tmp_path, override, message):
    path = _npz(tmp_path / "mine.npz", **override)
    with pytest.raises(ValueError) as err:
        data.load_dataset(path)
    assert str(err.value).startswith(path) and message in str(err.value)


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated zip", b"\x80\x04garbage"])
def test_corrupt_or_empty_npz_names_the_file(tmp_path, content):
    path = tmp_path / "broken.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError) as err:
        data.load_dataset(str(path))
    assert f"--dataset file '{path}' is not a readable .npz" in str(err.value)


def test_corrupt_npz_from_the_command_line(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"\x80\x04garbage")
    results = tmp_path / "results"
    r = _run("noisy_cv.py", "--dataset", str(path), "--results_dir", str(results))
    assert r.returncode == 2
    assert f"error: --dataset file '{path}' is not a readable .npz" in _one_error_line(r.stderr)
    assert not results.exists()


# -- a training whose loss becomes NaN -------------------------------------------------------

def test_stop_on_non_finite_loss_raises():
    from noisylabels import training

    cb = training.StopOnNonFiniteLoss(" (log: x/log.jsonl)")
    cb.on_epoch_end(0, {"loss": 0.5, "val_acc_noisy_labels": float("nan")})  # tracking NaN: ok
    with pytest.raises(utils.TrainingDiverged, match=r"\(log: x/log.jsonl\): loss2=inf at "
                                                      r"epoch 3; no summary written"):
        cb.on_epoch_end(2, {"loss1": 0.5, "loss2": float("inf")})


def test_diverged_training_stops_without_a_summary(tmp_path):
    results = tmp_path / "results"
    r = _run("noisy_cv.py", "--dataset", "digits", "--arch", "cnn", "--n_train", "200",
             "--epochs", "3", "--noisy_ratio", "0.2", "--lr", "1e30", "--verbose", "0",
             "--results_dir", str(results))
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert "error: training diverged" in line and "Lower --lr" in line
    out = results / "digits" / "sym" / "0.2" / "seed0"
    assert not (out / "summary.json").exists()
    rows = (out / "log.jsonl").read_text().splitlines()
    assert rows and all(json.loads(x, parse_constant=_no_constant) for x in rows)


# -- JSON lines are strict JSON --------------------------------------------------------------

def _no_constant(name):
    raise AssertionError(f"not strict JSON: {name}")


def test_jsonl_line_writes_null_for_nan_and_infinity():
    line = utils.jsonl_line({"a": float("nan"), "b": np.float32("inf"), "c": [1.5, -np.inf],
                             "d": np.int64(3)})
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert json.loads(line, parse_constant=_no_constant) == {"a": None, "b": None,
                                                             "c": [1.5, None], "d": 3}


def test_jsonl_logger_writes_strict_json(tmp_path):
    import keras

    from noisylabels import training

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
    training.compile_classifier(model)
    path = str(tmp_path / "log.jsonl")
    printed = []
    logger = training.JsonlLogger(path, extra={"run": "iteration1-half1"}, printer=printed.append,
                                  epochs=4)
    logger.set_model(model)
    logger.set_params({"epochs": 4})
    for epoch in range(2):
        logger.on_epoch_begin(epoch)
        logger.on_epoch_end(epoch, {"loss": 0.25, "val_acc_noisy_labels": float("nan")})
    rows = [json.loads(x, parse_constant=_no_constant) for x in open(path)]
    assert [r["val_acc_noisy_labels"] for r in rows] == [None, None]
    assert printed[1].startswith("  iteration1-half1 2/4: loss=0.25 val_acc_noisy_labels=nan (")
    assert "left)" in printed[1]


# -- table.py on hand-edited summaries -------------------------------------------------------

@pytest.mark.parametrize("summary, reason", [
    ([1, 2], "summary.json holds a JSON list, not an object"),
    ("done", "summary.json holds a JSON str, not an object"),
    ({"method": "incv", "test_accuracy": {"model1": "0.9"}},
     "'test_accuracy.model1' is \"0.9\", not a number"),
    ({"method": "incv", "test_accuracy": 0.9},
     "'test_accuracy' of an incv_train.py run must be an object"),
    ({"noisy_accuracy": [0.5]}, "'noisy_accuracy' is [0.5], of the wrong type"),
    ({"method": "incv", "incv": [{"iteration": 1, "label_precision": "high"}]},
     "'incv' must be a list of objects with numeric fields"),
])
def test_table_lists_a_hand_edited_summary_as_not_included(tmp_path, summary, reason):
    run = tmp_path / "results" / "digits" / "sym" / "0.5" / "incv" / "seed0"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"args": {"dataset": "digits"}, "run": {
        "method": "incv", "pattern": "sym", "ratio": 0.5, "seed": 0}}))
    (run / "summary.json").write_text(json.dumps(summary))
    r = _run("table.py", str(tmp_path / "results"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    not_included = r.stdout.split("## Not included")[1]
    assert f"- `{run}`: " in not_included and reason in not_included


def test_table_lists_a_config_of_the_wrong_type(tmp_path):
    run = tmp_path / "seed0"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"args": ["--lr", "1"]}))
    rows = table.table_not_included(table.collect_runs([str(tmp_path)]))
    assert rows == [{"table": "not_included", "path": str(run),
                     "reason": "config.json: 'args' is a list, not an object"}]


# -- --incv_results: every problem found before a run directory is made ----------------------

@pytest.fixture(scope="module")
def digits_300():
    """The training labels of DIGITS (--n_train 300, seed 0) and a valid selection CSV's rows."""
    d = flags.load_training_data(incv_train.parse_args(DIGITS), print)
    rows = [{"y": int(y), "y_noisy": int(y), "select": str(i % 2 == 0),
             "candidate": str(i % 2 == 1), "eval_ratio": 0.4} for i, y in enumerate(d.y_train)]
    return d.y_train, rows


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return str(path)


def _incv_results_case(case, tmp_path, rows):
    if case == "missing":
        return str(tmp_path / "nowhere.csv"), "--incv_results file"
    if case == "directory":
        return str(tmp_path), "is a directory: give the"
    if case == "malformed":
        bad = [dict(r) for r in rows]
        bad[7]["select"] = "yes"
        return _write_csv(tmp_path / "m.csv", bad), "is not an INCV selection written by"
    if case == "not a number":
        bad = [dict(r) for r in rows]
        bad[3]["y_noisy"] = "cat"
        return _write_csv(tmp_path / "n.csv", bad), "is not an INCV selection written by"
    if case == "no columns":
        (tmp_path / "c.csv").write_text("index,label\n1,2\n")
        return str(tmp_path / "c.csv"), "needs the columns"
    if case == "another training set":
        return _write_csv(tmp_path / "o.csv", rows[:-1]), "was made for another training set"
    if case == "selects nothing":
        none = [{**r, "select": "False", "candidate": "True"} for r in rows]
        return _write_csv(tmp_path / "e.csv", none), "selects no sample"
    if case == "label out of range":
        bad = [dict(r) for r in rows]
        bad[0]["y_noisy"] = 10
        return _write_csv(tmp_path / "l.csv", bad), "y_noisy holds labels outside 0..9"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing", "directory", "malformed", "not a number",
                                  "no columns", "another training set", "selects nothing",
                                  "label out of range"])
def test_bad_incv_results_is_refused_before_any_run_directory(case, digits_300, tmp_path,
                                                              capsys):
    path, message = _incv_results_case(case, tmp_path, digits_300[1])
    results = tmp_path / "results"
    args = incv_train.parse_args(DIGITS + ["--incv_results", path,
                                           "--results_dir", str(results)])
    status, line = _cli_error(incv_train.main, args, capsys)
    assert status == 2
    assert f"--incv_results '{path}'" in line or f"--incv_results file '{path}'" in line
    assert message in line
    assert not results.exists()  # the corrected retry is not refused as an earlier run


def test_a_valid_incv_results_passes_the_check(digits_300, tmp_path):
    from noisylabels import incv

    y_train, rows = digits_300
    y_noisy, st = incv.read_incv_csv(_write_csv(tmp_path / "ok.csv", rows), y_train,
                                     num_classes=10)
    assert np.array_equal(y_noisy, y_train) and st["selected"].sum() == 150
    assert not (st["selected"] & st["candidate"]).any() and st["eval_ratio"] == 0.4


# -- --resume --------------------------------------------------------------------------------

def _started_run(results, argv):
    """A run directory as incv_train.py leaves it when killed: config.json (no summary)."""
    args = incv_train.parse_args(argv + ["--results_dir", str(results)])
    out = incv_train.run_dir(args, "digits", "sym", 0.5, "incv", 0)
    os.makedirs(out)
    utils.write_json(os.path.join(out, "config.json"), {
        "args": dict(vars(args)), "run": {"method": "incv", "pattern": "sym", "ratio": 0.5,
                                          "seed": 0}})
    return out


def test_resume_with_other_flags_names_them_and_touches_nothing(tmp_path, capsys):
    out = _started_run(tmp_path, DIGITS)
    before = open(os.path.join(out, "config.json")).read()
    changed = [x if x != "cnn" else "resnet20" for x in DIGITS]
    changed[changed.index("--epochs") + 1] = "5"
    args = incv_train.parse_args(changed + ["--lr", "0.01", "--resume",
                                            "--results_dir", str(tmp_path)])
    status, line = _cli_error(incv_train.main, args, capsys)
    assert status == 2 and f"--resume: the run in '{out}' was made with other flags" in line
    assert '--arch "cnn" there, "resnet20" now' in line
    assert "--epochs 1 there, 5 now" in line and "--lr 0.001 there, 0.01 now" in line
    assert "--overwrite" in line
    assert os.listdir(out) == ["config.json"]
    assert open(os.path.join(out, "config.json")).read() == before


def test_resume_accepts_other_bookkeeping_flags_and_a_smaller_grid(tmp_path):
    _started_run(tmp_path, DIGITS + ["--seed", "0", "1"])
    args = incv_train.parse_args(DIGITS + ["--verbose", "2", "--devices", "all", "--resume",
                                           "--data_dir", "elsewhere", "--results_dir",
                                           str(tmp_path)])
    runs = [(incv_train.run_dir(args, "digits", "sym", 0.5, "incv", 0),
             {"seed": 0, "pattern": "sym", "ratio": 0.5, "method": "incv"})]
    flags.check_resume(args, runs)  # no error


@pytest.mark.parametrize("extra, flag", [
    (["--seed", "1", "0"], "--seed (its first value draws the --n_train subset) 0 there, 1 now"),
    (["--keep_optimizer_state"], "--keep_optimizer_state false there, true now"),
    (["--incv_only"], "--incv_only false there, true now"),
])
def test_resume_compares_every_flag_that_changes_the_run(tmp_path, extra, flag):
    out = _started_run(tmp_path, DIGITS)
    args = incv_train.parse_args(DIGITS + extra + ["--resume", "--results_dir",
                                                   str(tmp_path)])
    with pytest.raises(ValueError, match="made with other flags") as err:
        flags.check_resume(args, [(out, {"seed": 0, "pattern": "sym", "ratio": 0.5,
                                         "method": "incv"})])
    assert flag in str(err.value)


def test_resume_mismatches_treats_a_newer_flag_at_its_default_as_equal():
    config = {"args": {"lr": 0.001}, "run": {"seed": 0}}
    assert flags.resume_mismatches({"lr": 0.001, "new_flag": None, "new_switch": False},
                                   {"seed": 0}, config) == []
    assert flags.resume_mismatches({"lr": 0.001, "new_flag": 3}, {"seed": 0}, config) == [
        ("new_flag", "(not recorded)", 3)]


def test_resume_of_a_run_older_than_a_methods_flags_and_of_another_methods_flag():
    """A run recorded before Table 1's methods' flags existed resumes when they are at their
    defaults; a method's flag never blocks another method's run, and still blocks its own."""
    old = {"args": {"lr": 0.001}, "run": {"seed": 0, "method": "incv"}}
    now = {"lr": 0.001, "fcorrection_T": "estimated", "mentornet_percentile": 0.7,
           "d2l_window": 5}
    assert flags.resume_mismatches(now, {"seed": 0, "method": "incv"}, old) == []
    assert flags.resume_mismatches({**now, "mentornet_percentile": 0.5},
                                   {"seed": 0, "method": "incv"}, old) == []
    own = {"args": {**now}, "run": {"seed": 0, "method": "mentornet"}}
    assert flags.resume_mismatches({**now, "mentornet_percentile": 0.5},
                                   {"seed": 0, "method": "mentornet"}, own) == [
        ("mentornet_percentile", 0.7, 0.5)]
    # INCV + Co-teaching's own flag, newer than the 8x8 Table 1 runs: the same rules
    assert flags.resume_mismatches({**now, "incv_forget_rate": "estimate"},
                                   {"seed": 0, "method": "incv"}, old) == []
    assert flags.resume_mismatches({**now, "incv_forget_rate": "true_noise_of_s"},
                                   {"seed": 0, "method": "coteaching"},
                                   {**old, "run": {"seed": 0, "method": "coteaching"}}) == []
    assert flags.resume_mismatches({**now, "incv_forget_rate": "true_noise_of_s"},
                                   {"seed": 0, "method": "incv"}, old) == [
        ("incv_forget_rate", "(not recorded)", "true_noise_of_s")]
    old_d2l = {"args": {"lr": 0.001}, "run": {"seed": 0, "method": "d2l"}}
    assert flags.resume_mismatches({**now, "d2l_window": 3},
                                   {"seed": 0, "method": "d2l"}, old_d2l) == [
        ("d2l_window", "(not recorded)", 3)]


def test_resume_with_nothing_to_resume_is_an_error(tmp_path):
    results = tmp_path / "results"
    r = _run("incv_train.py", *DIGITS, "--resume", "--results_dir", str(results))
    assert r.returncode == 2
    line = _one_error_line(r.stderr)
    assert line == (f"error: --resume: nothing to resume: no run of this grid has started "
                    f"under --results_dir '{results}' (no config.json): check --results_dir "
                    "and the flags, or leave out --resume to start the runs")
    assert not results.exists()


# -- installable package, --help without TensorFlow ------------------------------------------

def test_pyproject_installs_one_package_and_its_commands():
    """Only ``noisylabels`` is installed (no generic top-level module such as ``utils``);
    every console command names a function of it, and every root file is a thin entry point
    to the package's module of the same name."""
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)
    packages = project["tool"]["setuptools"]["packages"]  # the package and its sub-packages
    assert packages[0] == "noisylabels"
    assert all(p.startswith("noisylabels.") for p in packages[1:])
    assert "py-modules" not in project["tool"]["setuptools"]
    for command, target in project["project"]["scripts"].items():
        module, func = target.split(":")
        assert module.startswith("noisylabels.")
        source = open(os.path.join(ROOT, *module.split(".")) + ".py").read()
        assert f"def {func}():" in source, command
    for f in sorted(os.listdir(ROOT)):
        if f.endswith(".py"):
            text = open(os.path.join(ROOT, f)).read()
            assert f"from noisylabels import {f[:-3]} as _impl" in text, f
            assert os.path.exists(os.path.join(ROOT, "noisylabels", f)), f
    for dep in project["project"]["dependencies"]:
        assert "==" not in dep and ">=" in dep and ",<" in dep, dep


@pytest.mark.parametrize("script", ["noisy_cv.py", "incv_train.py", "table.py"])
def test_help_loads_no_tensorflow_and_prints_no_log_lines(script):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    module = script[:-3]
    code = (f"import sys; sys.argv = ['{script}', '--help']; import {module}\n"
            f"try:\n    {module}.parse_args()\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage:") and "LOADED []" in r.stdout
    assert r.stderr == ""
    r = subprocess.run([sys.executable, os.path.join(ROOT, script), "--help"],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=120)
    assert r.returncode == 0 and r.stderr == "" and "usage:" in r.stdout


# -- Table 1's other methods (algorithms/): their flags ----------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--devices", "all", "--method", "standard", "decoupling"],
     "--method decoupling trains on one device: use --devices default"),
    (["--mentornet_dropout", "0.5,10"],
     "--mentornet_dropout must cover 100 percent of training, got 10 in '0.5,10'"),
    (["--mentornet_dropout", "0.5,17,0.05"], "--mentornet_dropout needs rate,count pairs"),
    (["--decoupling_min_batch", "2"], "--decoupling_min_batch must be in (0, 1], got 2.0"),
    (["--decoupling_min_batch", "0"], "--decoupling_min_batch must be in (0, 1], got 0.0"),
    (["--d2l_window", "1"], "--d2l_window must be at least 2 (a standard deviation), got 1"),
    (["--mentornet_percentile", "0"], "--mentornet_percentile must be in (0, 1], got 0.0"),
])
def test_bad_flags_of_the_new_methods_are_refused(argv, message, capsys):
    status, line = _parse_error(incv_train.parse_args, DIGITS + argv, capsys)
    assert status == 2 and message in line


def test_fcorrection_true_T_without_clean_labels_is_refused_before_any_run(tmp_path, capsys):
    xtr, ytr, xte, yte = data._load_digits()
    given = str(tmp_path / "crowd.npz")  # labels as given, the clean ones unknown
    np.savez(given, x_train=np.rint(xtr * 255).astype(np.uint8), y_train_noisy=ytr,
             x_test=np.rint(xte * 255).astype(np.uint8), y_test=yte)
    results = tmp_path / "results"
    argv = ["--dataset", given, "--arch", "cnn", "--n_train", "200", "--epochs", "1",
            "--verbose", "0", "--results_dir", str(results), "--method", "fcorrection"]
    status, line = _cli_error(incv_train.main, incv_train.parse_args(
        argv + ["--fcorrection_T", "true"]), capsys)
    assert status == 2 and line == (
        "error: --fcorrection_T true needs the clean labels, which these labels as given "
        "lack: use --fcorrection_T estimated or ncv")
    assert not results.exists()
    status, line = _cli_error(incv_train.main, incv_train.parse_args(
        argv[:-1] + ["incv", "--incv_forget_rate", "true_noise_of_s"]), capsys)
    assert status == 2 and line == (
        "error: --incv_forget_rate true_noise_of_s needs the clean labels, which these labels "
        "as given lack: use --incv_forget_rate estimate")
    assert not results.exists()
    # --list_runs (what slurm.py submits from) refuses it too, not the array tasks later
    status, line = _cli_error(incv_train.main, incv_train.parse_args(
        argv[:-1] + ["incv", "--incv_forget_rate", "true_ratio", "--list_runs"]), capsys)
    assert status == 2 and line.startswith("error: --incv_forget_rate true_ratio needs the "
                                           "clean labels")
    assert not results.exists()
