"""Thread settings (noisylabels/threads.py): the choice from a core count, the cores a
process may use (affinity, cgroup quota), the flags, their record in config.json and the
``--resume`` comparison; the benchmark's rounds, median and --sweep logic."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from noisylabels import flags, incv_train, noisy_cv, threads, utils

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DIGITS = ["--dataset", "digits", "--arch", "cnn", "--n_train", "300", "--epochs", "1",
          "--noise_pattern", "sym", "--noisy_ratio", "0.5", "--verbose", "0"]


# -- the choice --------------------------------------------------------------------------

@pytest.mark.parametrize("cores", [1, 2, 16])
def test_the_choice_is_tensorflows_defaults_the_fastest_measured(cores):
    chosen = threads.choose_threads(cores)
    assert (chosen["intra_op"], chosen["inter_op"]) == (threads.TF_DEFAULT, threads.TF_DEFAULT)
    assert chosen["cores"] == cores and chosen["chosen"] == ["intra_op", "inter_op"]


def test_flags_override_the_choice_and_zero_keeps_tensorflows_default():
    assert threads.choose_threads(2, intra_op=1) == {"intra_op": 1, "inter_op": 0, "cores": 2,
                                                     "chosen": ["inter_op"]}
    assert threads.choose_threads(4, intra_op=0, inter_op=0) == {
        "intra_op": 0, "inter_op": 0, "cores": 4, "chosen": []}
    assert threads.choose_threads(2, inter_op=3)["intra_op"] == 0


@pytest.mark.parametrize("kwargs", [{"cores": 0}, {"cores": 2.0}, {"cores": True},
                                    {"cores": 2, "intra_op": -1}, {"cores": 2, "inter_op": 1.5}])
def test_bad_values_are_value_errors(kwargs):
    cores = kwargs.pop("cores")
    with pytest.raises(ValueError):
        threads.choose_threads(cores, **kwargs)


# -- the cores a process may use -----------------------------------------------------------

def _cgroup(tmp_path, v2=None, v1=None):
    root = tmp_path / "cgroup"
    root.mkdir()
    if v2 is not None:
        (root / "cpu.max").write_text(v2 + "\n")
    if v1 is not None:
        (root / "cpu").mkdir()
        (root / "cpu" / "cpu.cfs_quota_us").write_text(f"{v1[0]}\n")
        (root / "cpu" / "cpu.cfs_period_us").write_text(f"{v1[1]}\n")
    return str(root)


@pytest.mark.parametrize("v2, v1, affinity, expected", [
    (None, None, {0, 1, 2, 3}, 4),              # no cgroup files: the affinity mask
    ("max 100000", None, {0, 1, 2, 3}, 4),      # v2 without a quota
    ("150000 100000", None, {0, 1, 2, 3}, 2),   # 1.5 CPUs: rounded up
    ("50000 100000", None, {0, 1}, 1),          # half a CPU: still one thread
    ("800000 100000", None, {0, 1}, 2),         # a quota above the mask: the mask
    (None, (-1, 100000), {0, 1, 2}, 3),         # v1 without a quota
    (None, (200000, 100000), {0, 1, 2, 3, 4, 5}, 2),  # v1 quota of 2 CPUs
    ("garbage", None, {0, 1}, 2),               # unreadable: ignored
])
def test_available_cores_is_the_affinity_capped_by_the_quota(tmp_path, v2, v1, affinity,
                                                             expected):
    root = _cgroup(tmp_path, v2, v1)
    assert threads.available_cores(affinity=affinity, cgroup_root=root) == expected


def test_available_cores_of_this_process_is_within_the_cpu_count():
    assert 1 <= threads.available_cores() <= (os.cpu_count() or 1)


# -- flags -------------------------------------------------------------------------------

@pytest.mark.parametrize("parse", [noisy_cv.parse_args, incv_train.parse_args])
def test_both_scripts_take_the_thread_flags(parse, tmp_path):
    args = parse(DIGITS + ["--results_dir", str(tmp_path)])
    assert args.intra_op_threads is None and args.inter_op_threads is None
    args = parse(DIGITS + ["--intra_op_threads", "3", "--inter_op_threads", "0",
                           "--results_dir", str(tmp_path)])
    assert (args.intra_op_threads, args.inter_op_threads) == (3, 0)
    chosen = threads.settings_from_args(args, cores=2)
    assert (chosen["intra_op"], chosen["inter_op"], chosen["chosen"]) == (3, 0, [])


@pytest.mark.parametrize("flag", ["--intra_op_threads", "--inter_op_threads"])
def test_a_negative_thread_count_is_refused_at_parse_time(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        noisy_cv.parse_args(DIGITS + [flag, "-1", "--results_dir", str(tmp_path)])
    assert exit_info.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"{os.path.basename(sys.argv[0])}: error: {flag} must be a non-negative " \
                   "integer (0: TensorFlow's default), got -1"
    assert not os.listdir(tmp_path)


def test_record_keeps_the_settings_in_effect_and_how_they_were_chosen():
    chosen = threads.choose_threads(2, intra_op=1)
    assert threads.record(chosen, {"intra_op": 1, "inter_op": 1}) == {
        "intra_op": 1, "inter_op": 1, "cores": 2, "chosen_from_cores": ["inter_op"]}
    # asked for (1, 1) but TensorFlow already ran with its defaults: the defaults recorded
    assert threads.record(chosen, {"intra_op": 0, "inter_op": 0})["intra_op"] == 0


def test_the_script_applies_and_records_the_settings(tmp_path):
    """A real run in its own process (TensorFlow's pools are built once per process):
    config.json records what TensorFlow ran with, read back from it."""
    results = tmp_path / "results"
    env = {k: v for k, v in os.environ.items() if k != "NOISY_LABELS_DEBUG"}
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "noisy_cv.py"), *DIGITS, "--intra_op_threads",
         "1", "--inter_op_threads", "1", "--results_dir", str(results)],
        capture_output=True, text=True, env={**env, "TF_CPP_MIN_LOG_LEVEL": "3"}, cwd=ROOT,
        timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (config,) = [os.path.join(d, "config.json") for d, _, files in os.walk(results)
                 if "config.json" in files]
    recorded = utils.read_json(config)
    assert recorded["threads"] == {"intra_op": 1, "inter_op": 1, "cores":
                                   threads.available_cores(), "chosen_from_cores": []}
    assert recorded["args"]["intra_op_threads"] == 1


# -- --resume ----------------------------------------------------------------------------

def test_resume_mismatch_compares_the_settings_in_effect():
    assert threads.resume_mismatch({"intra_op": 2, "inter_op": 1, "cores": 2},
                                   {"intra_op": 2, "inter_op": 1, "cores": 4}) is None
    assert threads.resume_mismatch({"intra_op": 2, "inter_op": 1},
                                   {"intra_op": 0, "inter_op": 0}) == (
        {"intra_op": 2, "inter_op": 1}, {"intra_op": 0, "inter_op": 0})
    # recorded before thread settings were: TensorFlow's defaults
    assert threads.resume_mismatch(None, {"intra_op": 0, "inter_op": 0}) is None
    assert threads.resume_mismatch(None, {"intra_op": 2, "inter_op": 1}) is not None


def _started_run(tmp_path, argv, recorded):
    args = incv_train.parse_args(argv + ["--results_dir", str(tmp_path)])
    out = incv_train.run_dir(args, "digits", "sym", 0.5, "incv", 0)
    os.makedirs(out)
    utils.write_json(os.path.join(out, "config.json"), {
        "args": dict(vars(args)), "run": {"method": "incv", "pattern": "sym", "ratio": 0.5,
                                          "seed": 0}, "threads": recorded})
    return out


RUN = {"seed": 0, "pattern": "sym", "ratio": 0.5, "method": "incv"}


def test_resume_with_the_same_settings_passes_whatever_the_flags_say(tmp_path):
    out = _started_run(tmp_path, DIGITS, {"intra_op": 2, "inter_op": 1, "cores": 2,
                                          "chosen_from_cores": ["intra_op", "inter_op"]})
    # the flags are bookkeeping: explicit values equal to what auto chose are the same run
    args = incv_train.parse_args(DIGITS + ["--intra_op_threads", "2", "--inter_op_threads",
                                           "1", "--resume", "--results_dir", str(tmp_path)])
    flags.check_resume(args, [(out, RUN)], threads={"intra_op": 2, "inter_op": 1})


def test_resume_with_other_settings_is_refused_naming_both(tmp_path):
    out = _started_run(tmp_path, DIGITS, {"intra_op": 2, "inter_op": 1})
    args = incv_train.parse_args(DIGITS + ["--resume", "--results_dir", str(tmp_path)])
    with pytest.raises(ValueError, match="made with other flags") as err:
        flags.check_resume(args, [(out, RUN)], threads={"intra_op": 0, "inter_op": 0})
    assert "--intra_op_threads/--inter_op_threads" in str(err.value)
    assert "[2, 1] there, [0, 0] now" in str(err.value)


# -- tests/benchmark.py: rounds, median, sweep ---------------------------------------------

@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(HERE, "benchmark.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # parses no flags on import (not __main__)
    return module


def test_round_stats_are_best_median_and_worst(bench):
    rounds = [{"images": 100, "wall_s": s} for s in (1.0, 0.5, 0.25, 2.0)]
    assert bench.round_stats(rounds) == {"best": 400.0, "median": 150.0, "worst": 50.0}
    with pytest.raises(ValueError):
        bench.round_stats([])


def test_targets_are_judged_on_the_median(bench):
    def path(*rates):
        return {"median_images_per_s": sorted(rates)[len(rates) // 2]}
    # a lucky best round of the pair (2x) must not meet the 1.3x target: the median is 1.1x
    results = {"keras_fit": path(100, 100, 100), "paired_fit": path(110, 110, 200)}
    rows, markdown = bench.targets(results)
    (pair,) = [r for r in rows if r["what"].startswith("INCV pair vs one network")]
    assert pair["ratio"] == pytest.approx(1.1) and pair["target"] == 1.3
    assert "| INCV pair vs one network (keras_fit) | 1.10x | >= 1.3x | missed by 15% |" \
        in markdown


def test_sweep_settings_parse_and_dedupe_on_this_machine(bench):
    assert bench.parse_setting("2,1") == (2, 1) and bench.parse_setting("auto") == (None, None)
    for bad in ("2", "a,b", "-1,1", "1,2,3"):
        with pytest.raises(ValueError, match="--sweep"):
            bench.parse_setting(bad)
    # auto is TensorFlow's default (0,0): kept once, under the name given first
    assert bench.dedupe_settings([(0, 0), (None, None), (2, 1), (1, 1)], 2) == [
        (0, 0), (2, 1), (1, 1)]
    assert bench.dedupe_settings([(None, None), (2, 2), (0, 0)], 2) == [(None, None), (2, 2)]
    assert bench.setting_label((None, None), 2) == "auto (0,0)"
    assert bench.setting_label((0, 0), 2) == "TF default (0,0)"


def test_sweep_runs_every_setting_in_its_own_process_interleaved(tmp_path, bench):
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, os.path.join(HERE, "benchmark.py"), "--images", "32",
         "--batch_size", "16", "--rounds", "2", "--arch", "cnn", "--paths", "keras_fit",
         "--sweep", "0,0", "1,1", "auto", "2,1", "--out", str(out)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads(out.read_text())
    labels = [c["label"] for c in saved["sweep"]]
    assert labels == ["TF default (0,0)", "1,1", "2,1"]  # auto is (0,0): run once
    for column in saved["sweep"]:
        assert len(column["paths"]["keras_fit"]["rounds"]) == 2
        want = [int(v) for v in column["label"].split("(")[-1].rstrip(")").split(",")]
        assert [column["threads"]["intra_op"], column["threads"]["inter_op"]] == want
    # rounds interleaved: every setting's second round ended after all the first rounds
    ends = [[r["finished"] for r in c["paths"]["keras_fit"]["rounds"]] for c in saved["sweep"]]
    assert min(e[1] for e in ends) > max(e[0] for e in ends)
    assert "| one network: make_train_dataset + fit | " in proc.stdout
    assert "PyTorch (own process)" in saved["table"]
