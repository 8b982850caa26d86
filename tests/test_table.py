"""table.py: collect_runs / table_* / format_* on synthetic run directories."""

import csv
import io
import json
import os
import runpy
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, subprocess_env

from noisylabels import table

# incv_train.py runs on "cifar10": accuracy (model1) per (pattern, ratio, method, seed).
ACC = {("sym", 0.5, "incv"): [0.85, 0.84, None],        # seed 2: partial (config.json only)
       ("sym", 0.5, "coteaching"): [0.80, 0.82, 0.78],
       ("sym", 0.5, "standard"): [0.60, 0.62, 0.61],
       ("asym", 0.4, "incv"): [0.86, 0.87, 0.85],
       ("asym", 0.4, "coteaching"): [0.83, "missing", 0.80],  # seed 1 never ran
       ("asym", 0.4, "standard"): [0.77, 0.75, 0.76]}


# Methods that train one network (summary test_accuracy.model2 null).
ONE_NETWORK = ("standard", "fcorrection", "mentornet", "d2l")


def _write(path, name, obj):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, name), "w") as f:
        json.dump(obj, f)


def _train_run(root, pattern, ratio, method, seed, acc, *, incv_only=False, arch="resnet32",
               epochs=200, n_train=50000, image_size=None):
    out = os.path.join(root, "cifar10", pattern, f"{ratio:g}", method, f"seed{seed}")
    args = {"dataset": "cifar10", "arch": arch, "epochs": epochs, "lr": 0.001,
            "seed": [0, 1, 2], "results_dir": root, "incv_only": incv_only}
    if image_size is not None:  # runs before --image_size reached CIFAR did not record it
        args["image_size"] = image_size
    _write(out, "config.json", {"args": args, "n_train": n_train, "run": {
        "method": method, "pattern": pattern, "ratio": ratio, "seed": seed}})
    if acc is None:
        return out
    s = {"dataset": "cifar10", "method": method, "pattern": pattern, "ratio": ratio,
         "seed": seed, "arch": arch, "epochs": epochs, "n_train": n_train,
         "actual_noise_ratio": ratio + 0.01 * seed}
    if method in ("incv", "coteaching"):
        s["estimated_noise_ratio"] = ratio - 0.1 + 0.02 * seed
    if method == "incv":
        s["incv"] = [{"iteration": i, "selected": 100 * i + seed, "candidates": 50 - i,
                      "removed": 10, "keep_best": i < 3, "label_precision": 0.9 + 0.01 * seed,
                      "label_recall": 0.5 + 0.1 * i} for i in (1, 2)]
    if not incv_only:
        two = method not in ONE_NETWORK
        s["test_accuracy"] = {"model1": acc, "model2": acc - 0.05 if two else None,
                              "mean": acc - 0.025 if two else acc}
    _write(out, "summary.json", s)
    return out


def _cv_run(root, pattern, ratio, seed, acc, *, finished=True):
    out = os.path.join(root, "digits", pattern, f"{ratio:g}", f"seed{seed}")
    _write(out, "config.json", {"args": {"dataset": "digits", "arch": "cnn", "epochs": 30},
                                "n_train": 1347, "run": {"pattern": pattern, "ratio": ratio,
                                                         "seed": seed}})
    if finished:
        _write(out, "summary.json", {
            "dataset": "digits", "arch": "cnn", "pattern": pattern, "ratio": ratio,
            "seed": seed, "epochs": 30, "n_train": 1347, "noisy_accuracy": acc,
            "label_precision": 0.9 + 0.01 * seed, "label_recall": None if seed else 0.7,
            "test_accuracy": 0.9, "estimated_noise_ratio": 0.15, "actual_noise_ratio": 0.2,
            "held_out_true_accuracy": 0.4 + 0.1 * seed,
            "theory": {"accuracy": 0.64, "label_precision": 0.99, "label_recall": 0.8}})
        with open(os.path.join(out, "log.jsonl"), "w") as f:  # training accuracy per epoch
            f.writelines(json.dumps({"epoch": e, "accuracy": a}) + "\n"
                         for e, a in ((1, 0.5), (2, 0.9 + 0.05 * seed)))
    return out


@pytest.fixture
def results(tmp_path):
    root = str(tmp_path / "results")
    paths = {}
    for (pattern, ratio, method), accs in ACC.items():
        for seed, acc in enumerate(accs):
            if acc != "missing":
                paths[pattern, ratio, method, seed] = _train_run(root, pattern, ratio, method,
                                                                 seed, acc)
    paths["incv_only"] = _train_run(root, "sym", 0.8, "incv", 0, 0.0, incv_only=True)
    for seed, acc in enumerate([0.70, 0.74]):
        _cv_run(root, "sym", 0.2, seed, acc)
    paths["cv_partial"] = _cv_run(root, "sym", 0.2, 2, None, finished=False)
    return root, paths


def _row(rows, **match):
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    assert len(found) == 1, (match, found)
    return found[0]


def test_collect_runs_statuses(results):
    root, paths = results
    runs = table.collect_runs([root, os.path.join(root, "cifar10")])  # overlap: read once
    assert len(runs) == 17 + 1 + 3
    by_path = {r["path"]: r for r in runs}
    partial = by_path[os.path.normpath(paths["sym", 0.5, "incv", 2])]
    assert partial["status"] == "partial" and "unfinished" in partial["reason"]
    assert partial["kind"] == "train" and partial["method"] == "incv" and partial["seed"] == 2
    cv = by_path[os.path.normpath(paths["cv_partial"])]
    assert cv["kind"] == "cv" and cv["status"] == "partial" and cv["dataset"] == "digits"


def test_accuracy_means_stds_counts(results):
    root, _ = results
    rows = table.table_accuracy(table.collect_runs([root]))
    measured = [r for r in rows if r["source"] == "measured"]
    assert len(measured) == 6  # the incv_only run has no accuracy
    for (pattern, ratio, method), accs in ACC.items():
        vals = [100 * a for a in accs if isinstance(a, float)]
        r = _row(measured, setting=f"{pattern} {ratio:g}",
                 method=table.METHOD_LABELS[method])
        assert r["n"] == len(vals)
        assert r["accuracy_mean"] == pytest.approx(np.mean(vals))
        assert r["accuracy_std"] == pytest.approx(np.std(vals, ddof=1))
        both = [v - (2.5 if method != "standard" else 0.0) for v in vals]
        assert r["accuracy_both_mean"] == pytest.approx(np.mean(both))
        assert r["group"] == "cifar10 / resnet32 / 200 epochs / n_train 50000"
    incv = _row(measured, setting="sym 0.5", method="INCV + Co-teaching")
    assert incv["n"] == 2 and incv["seeds"] == "0 1"  # the partial seed 2 is not averaged in
    assert incv["accuracy_mean"] == pytest.approx(84.5)
    assert _row(measured, setting="asym 0.4", method="Co-teaching")["seeds"] == "0 2"


def test_paper_rows_for_the_settings_found(results):
    root, _ = results
    paper = [r for r in table.table_accuracy(table.collect_runs([root]))
             if r["source"] == "paper"]
    assert len(paper) == 6 * 2 and {r["setting"] for r in paper} == {"sym 0.5", "asym 0.4"}
    r = _row(paper, method="INCV + Co-teaching (paper)", setting="sym 0.5")
    assert (r["accuracy_mean"], r["accuracy_std"], r["n"]) == (84.78, 0.33, 5)
    assert _row(paper, method="D2L (paper)", setting="asym 0.4")["accuracy_mean"] == 85.57


# arXiv:1905.05040, Table 1 (CIFAR-10; sym 0.2, sym 0.5, sym 0.8, asym 0.4), as printed.
PAPER_TABLE_1 = """
F-correction 85.08±0.43 76.02±0.19 34.76±4.53 83.55±2.15
Decoupling 86.72±0.32 79.31±0.62 36.90±4.61 75.27±0.83
Co-teaching 89.05±0.32 82.12±0.59 16.21±3.02 84.55±2.81
MentorNet 88.36±0.46 77.10±0.44 28.89±2.29 77.33±0.79
D2L 86.12±0.43 67.39±13.62 10.02±0.04 85.57±1.21
INCV+Co-teaching 89.71±0.18 84.78±0.33 52.27±3.50 86.04±0.54
"""


def test_paper_numbers_match_table_1():
    expected = {}
    for line in PAPER_TABLE_1.strip().splitlines():
        name, *cells = line.split()
        expected[name.replace("+", " + ")] = tuple(
            tuple(float(x) for x in c.split("±")) for c in cells)
    assert table.PAPER_CIFAR10 == expected
    assert table.PAPER_SETTINGS == ("sym 0.2", "sym 0.5", "sym 0.8", "asym 0.4")


def test_not_included_lists_partial_missing_and_incv_only(results):
    root, paths = results
    rows = table.table_not_included(table.collect_runs([root]))
    reasons = {r["path"]: r["reason"] for r in rows}
    assert "unfinished" in reasons[os.path.normpath(paths["sym", 0.5, "incv", 2])]
    assert "unfinished" in reasons[os.path.normpath(paths["cv_partial"])]
    missing = os.path.join(root, "cifar10", "asym", "0.4", "coteaching", "seed1")
    assert reasons[missing].startswith("missing seed 1")
    assert "--incv_only" in reasons[os.path.normpath(paths["incv_only"])]
    # the incv_only run is a group of its own (selection only), whose one seed is complete:
    # the full runs' seeds 1 and 2 are not missing from it
    sym08 = os.path.join(root, "cifar10", "sym", "0.8", "incv")
    assert not [p for p, why in reasons.items() if p.startswith(sym08) and "missing" in why]
    assert len(rows) == 2 + 1 + 1


def test_duplicate_run_is_listed_not_averaged(results, tmp_path):
    root, paths = results
    copy = str(tmp_path / "elsewhere" / "seed0")
    shutil.copytree(paths["sym", 0.5, "standard", 0], copy)
    runs = table.collect_runs([root, str(tmp_path / "elsewhere")])
    r = _row(table.table_accuracy(runs), setting="sym 0.5", method="Standard")
    assert r["n"] == 3
    dup = [x for x in table.table_not_included(runs) if "duplicate" in x["reason"]]
    assert len(dup) == 1


def test_runs_of_other_epochs_n_train_arch_or_image_size_are_never_averaged_together(
        tmp_path):
    variants = {"": {}, "e100": {"epochs": 100}, "n5000": {"n_train": 5000},
                "r110": {"arch": "resnet110"}, "px8": {"image_size": 8}}
    for k, (name, kw) in enumerate(variants.items()):
        root = str(tmp_path / "results" / (name or "paper"))
        for seed in range(3):
            _train_run(root, "sym", 0.5, "standard", seed, 0.1 * k + 0.01 * seed, **kw)
    runs = table.collect_runs([str(tmp_path / "results")])
    assert [r["status"] for r in runs] == ["done"] * 15  # no duplicates across variants
    rows = [r for r in table.table_accuracy(runs) if r["source"] == "measured"]
    assert sorted(r["group"] for r in rows) == sorted([
        "cifar10 / resnet32 / 200 epochs / n_train 50000",
        "cifar10 / resnet32 / 100 epochs / n_train 50000",
        "cifar10 / resnet32 / 200 epochs / n_train 5000",
        "cifar10 / resnet110 / 200 epochs / n_train 50000",
        "cifar10 / resnet32 / 200 epochs / n_train 50000 / 8x8 images"])
    for k, (name, kw) in enumerate(variants.items()):
        pixels = " / 8x8 images" if kw.get("image_size") else ""
        r = _row(rows, group=f"cifar10 / {kw.get('arch', 'resnet32')} / "
                             f"{kw.get('epochs', 200)} epochs / n_train {kw.get('n_train', 50000)}"
                             + pixels)
        assert r["n"] == 3 and r["accuracy_mean"] == pytest.approx(100 * (0.1 * k + 0.01))
    assert table.table_not_included(runs) == []


def test_selection_noise_and_noisy_cv_tables(results):
    root, _ = results
    tables = table.build_tables(table.collect_runs([root]))
    it2 = _row(tables["incv_selection"], setting="asym 0.4", iteration=2)
    assert it2["n"] == 3 and it2["selected_mean"] == pytest.approx(201.0)
    assert it2["label_precision_mean"] == pytest.approx(0.91)
    assert it2["label_recall_mean"] == pytest.approx(0.7)
    it1 = _row(tables["incv_selection"], setting="sym 0.5", iteration=1)
    assert it1["n"] == 2  # partial run excluded
    sel_only = _row(tables["incv_selection"], setting="sym 0.8", iteration=1)
    assert sel_only["n"] == 1  # an --incv_only run: its --epochs trained nothing
    assert sel_only["group"] == "cifar10 / resnet32 / selection only / n_train 50000"
    noise_rows = tables["noise_ratio"]
    r = _row(noise_rows, setting="asym 0.4", method="INCV + Co-teaching")
    assert r["estimated_noise_ratio_mean"] == pytest.approx(0.32)
    assert r["actual_noise_ratio_mean"] == pytest.approx(0.41)
    assert r["actual_noise_ratio_std"] == pytest.approx(0.01)
    assert not [x for x in noise_rows if x["method"] == "Standard"]
    cv = _row(tables["noisy_cv"], setting="sym 0.2")
    assert cv["n"] == 2 and cv["group"] == "digits / cnn / 30 epochs / n_train 1347"
    assert cv["accuracy_mean"] == pytest.approx(0.72)
    assert cv["accuracy_std"] == pytest.approx(np.std([0.70, 0.74], ddof=1))
    assert cv["accuracy_theory"] == pytest.approx(0.64)
    assert cv["label_recall_mean"] == 0.7 and cv["label_recall_n"] == 1  # one null
    assert cv["label_recall_std"] is None
    # the theory's regime: the last epoch's training accuracy, held-out true-label accuracy
    assert cv["train_accuracy_mean"] == pytest.approx(0.925)
    assert cv["held_out_true_accuracy_mean"] == pytest.approx(0.45)


def test_markdown_output(results):
    root, paths = results
    md = table.format_markdown(table.build_tables(table.collect_runs([root])))
    assert "| method | sym 0.5 | asym 0.4 |" in md
    std = np.std([85.0, 84.0], ddof=1)
    assert f"| INCV + Co-teaching | 84.50 ± {std:.2f} (n=2) | 86.00 ± 1.00 (n=3) |" in md
    assert "| INCV + Co-teaching (paper) | 84.78 ± 0.33 | 86.04 ± 0.54 |" in md
    assert md.index("| Standard |") < md.index("| F-correction (paper) |")
    assert "sample std (ddof=1)" in md and "model1" in md
    assert "| sym 0.2 | 2 | 0.720 ± 0.028 | 0.640 |" in md
    assert "0.700 (n=1)" in md  # LR: one seed's value is null
    not_included = md[md.index("## Not included"):]
    assert os.path.normpath(paths["sym", 0.5, "incv", 2]) in not_included
    assert "missing seed 1" in not_included


def test_csv_output_parses_back(results):
    root, _ = results
    tables = table.build_tables(table.collect_runs([root]))
    rows = list(csv.DictReader(io.StringIO(table.format_csv(tables))))
    assert len(rows) == sum(len(t) for t in tables.values())
    acc = [r for r in rows if r["table"] == "accuracy"]
    r = _row(acc, setting="sym 0.5", method="Standard", source="measured")
    assert int(r["n"]) == 3 and float(r["accuracy_mean"]) == pytest.approx(61.0)
    assert float(r["accuracy_std"]) == pytest.approx(1.0)
    paper = _row(acc, setting="sym 0.5", method="Co-teaching (paper)")
    assert float(paper["accuracy_mean"]) == 82.12 and paper["source"] == "paper"
    assert len([r for r in rows if r["table"] == "not_included"]) == 4


def test_single_seed_has_no_std(tmp_path):
    _train_run(str(tmp_path), "sym", 0.2, "standard", 0, 0.5)
    tables = table.build_tables(table.collect_runs([str(tmp_path)]))
    r = _row(tables["accuracy"], source="measured")
    assert (r["n"], r["accuracy_mean"], r["accuracy_std"]) == (1, 50.0, None)
    assert "| Standard | 50.00 (n=1) |" in table.format_markdown(tables)
    assert tables["not_included"] == []


def test_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        table.collect_runs([str(tmp_path / "nowhere")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no runs under .*empty"):
        table.collect_runs([str(tmp_path / "empty")])


def test_out_writes_markdown_and_csv(results, tmp_path, monkeypatch):
    root, _ = results
    out = str(tmp_path / "report" / "table.md")
    monkeypatch.setattr(sys, "argv", ["table.py", root, "--format", "both",
                                      "--out", out])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(os.path.join(ROOT, "table.py"), run_name="__main__")
    assert exit_.value.code == 0
    with open(out) as f:
        assert f.read().startswith("# Results")
    with open(str(tmp_path / "report" / "table.csv")) as f:
        assert f.readline().startswith("table,")
    assert sorted(os.listdir(tmp_path / "report")) == ["table.csv", "table.md"]  # no temp left


def test_command_line(results, tmp_path):
    root, _ = results
    env = subprocess_env()
    done = subprocess.run([sys.executable, "table.py", root, "--format", "csv"],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert _row(rows, setting="asym 0.4", method="Standard", source="measured")["n"] == "3"
    bad = str(tmp_path / "no_such_results")
    done = subprocess.run([sys.executable, "table.py", bad], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode != 0 and bad in done.stderr and "does not exist" in done.stderr
    assert "Traceback" not in done.stderr


def test_mean_of_both_networks_and_provenance_marks(tmp_path):
    root = str(tmp_path)
    out = _train_run(root, "sym", 0.5, "coteaching", 0, 0.6)
    summary = json.load(open(os.path.join(out, "summary.json")))
    del summary["test_accuracy"]["mean"]  # an older summary: recomputed from both networks
    summary["data_provenance"] = {"official": False, "files": {"test_batch": "0" * 32}}
    _write(out, "summary.json", summary)
    tables = table.build_tables(table.collect_runs([root]))
    r = _row(tables["accuracy"], source="measured")
    assert r["accuracy_mean"] == pytest.approx(60.0)
    assert r["accuracy_both_mean"] == pytest.approx(57.5)
    assert "not the official CIFAR files" in r["note"]
    md = table.format_markdown(tables)
    assert "| Co-teaching | 57.50 (n=1) † |" in md and "Mean of both networks" in md
    assert "not the official CIFAR files" in md


def test_variants_get_their_own_rows_not_duplicates(tmp_path):
    """--selection authors and --incv_optimizer carry make a variant of a method, not a
    second seed: own rows, labelled; the default-flag runs keep the plain label."""
    fused = _train_run(str(tmp_path / "a"), "sym", 0.5, "incv", 0, 0.80)
    authors = _train_run(str(tmp_path / "b"), "sym", 0.5, "incv", 0, 0.70)
    carry = _train_run(str(tmp_path / "c"), "sym", 0.5, "incv", 0, 0.60)
    for run, flag, value in ((fused, "selection", "fused"), (authors, "selection", "authors"),
                             (carry, "incv_optimizer", "carry")):
        with open(os.path.join(run, "config.json")) as f:
            config = json.load(f)
        config["args"][flag] = value
        _write(run, "config.json", config)
    runs = table.collect_runs([str(tmp_path)])
    assert [r["status"] for r in runs] == ["done"] * 3
    tables = table.build_tables(runs)
    acc = {r["method"]: r["accuracy_mean"] for r in tables["accuracy"] if r["source"] == "measured"}
    assert acc == {"INCV + Co-teaching": pytest.approx(80.0),
                   "INCV + Co-teaching (authors' selection)": pytest.approx(70.0),
                   "INCV + Co-teaching (Adam state carried)": pytest.approx(60.0)}
    settings = {r["setting"] for r in tables["incv_selection"]}
    assert settings == {"sym 0.5", "sym 0.5 (authors' selection)", "sym 0.5 (Adam state carried)"}
    assert all(r["n"] == 1 for r in tables["incv_selection"])  # never averaged together
    text = table.format_markdown(tables)
    assert text.index("| INCV + Co-teaching |") < text.index("| INCV + Co-teaching (authors'")


def test_curves_overlay_every_finished_training_run(tmp_path, monkeypatch):
    """--curves: one figure with both networks' per-epoch test accuracy of each finished run
    (a variant labelled apart); without any such run, a clear error."""
    from noisylabels import plots

    fused = _train_run(str(tmp_path / "a"), "sym", 0.5, "incv", 0, 0.80)
    authors = _train_run(str(tmp_path / "b"), "sym", 0.5, "incv", 0, 0.70)
    _train_run(str(tmp_path / "c"), "sym", 0.5, "coteaching", 0, None)  # unfinished: left out
    with open(os.path.join(authors, "config.json")) as f:
        config = json.load(f)
    config["args"]["selection"] = "authors"
    _write(authors, "config.json", config)
    for run, acc in ((fused, 0.8), (authors, 0.7)):
        with open(os.path.join(run, "log.jsonl"), "w") as f:
            for epoch in (1, 2):
                f.write(json.dumps({"epoch": epoch, "test_accuracy_model1": acc * epoch / 2,
                                    "test_accuracy_model2": acc - 0.1}) + "\n")
    seen = {}
    monkeypatch.setattr(plots, "plot_curves",
                        lambda curves, path, title: seen.update(curves=curves, path=path))
    out = str(tmp_path / "curves.png")
    table.main(table.parse_args([str(tmp_path), "--curves", out]))
    labels = [label for label, _ in seen["curves"]]
    assert labels == ["sym 0.5, INCV + Co-teaching, seed 0",
                      "sym 0.5, INCV + Co-teaching (authors' selection), seed 0"]
    assert [r["test_accuracy_model1"] for r in seen["curves"][1][1]] == [0.35, 0.7]
    assert seen["path"] == out
    monkeypatch.undo()
    table.main(table.parse_args([str(tmp_path), "--curves", out]))  # the real figure
    assert os.path.getsize(out) > 1000
    with pytest.raises(ValueError, match="--curves: no finished"):
        table.write_curves(table.collect_runs([str(tmp_path / "c")]), out)


def test_cifar10_best_epoch_shows_the_fall_from_the_peak(tmp_path):
    root = str(tmp_path)
    for seed, curve in enumerate([(0.30, 0.39, 0.31), (0.32, 0.37, 0.33)]):
        out = _train_run(root, "sym", 0.5, "standard", seed, curve[-1])
        with open(os.path.join(out, "log.jsonl"), "w") as f:
            f.writelines(json.dumps({"epoch": e + 1, "test_accuracy_model1": a}) + "\n"
                         for e, a in enumerate(curve))
    tables = table.build_tables(table.collect_runs([root]))
    r = _row(tables["accuracy"], source="measured")
    assert r["accuracy_mean"] == pytest.approx(32.0)  # final epoch
    assert r["accuracy_best_epoch_mean"] == pytest.approx(38.0)  # the peak of each seed
    md = table.format_markdown(tables)
    best = md[md.index("Network 1 at its best epoch on the test set"):]
    assert "not a result" in best and "| Standard | 38.00 ± 1.41 (n=2) |" in best
    assert "best epoch" not in md[:md.index("Network 1 at its best epoch")]


def test_curves_of_several_seeds_are_a_panel_per_setting(tmp_path, monkeypatch):
    from noisylabels import plots

    for pattern, ratio in (("sym", 0.5), ("asym", 0.4)):
        for method in ("incv", "standard"):
            for seed in (0, 1):
                out = _train_run(str(tmp_path), pattern, ratio, method, seed, 0.5)
                with open(os.path.join(out, "log.jsonl"), "w") as f:
                    f.writelines(json.dumps({"epoch": e, "test_accuracy_model1": 0.1 * e + seed})
                                 + "\n" for e in (1, 2))
    seen = {}
    monkeypatch.setattr(plots, "plot_seed_curves",
                        lambda panels, path, title: seen.update(panels=panels, path=path))
    out = str(tmp_path / "fig4.png")
    table.main(table.parse_args([str(tmp_path), "--curves", out]))
    assert sorted(seen["panels"]) == ["asym 0.4", "sym 0.5"]
    methods = seen["panels"]["sym 0.5"]
    assert sorted(methods) == ["INCV + Co-teaching", "Standard"]
    assert [[r["test_accuracy_model1"] for r in rows] for rows in methods["Standard"]] == [
        [0.1, 0.2], [1.1, 1.2]]
    monkeypatch.undo()
    table.main(table.parse_args([str(tmp_path), "--curves", out]))  # the real figure
    assert os.path.getsize(out) > 1000


# Table 1's rows, in its order, and what the table calls our runs of each method.
TABLE_1 = ("F-correction", "Decoupling", "Co-teaching", "MentorNet", "D2L",
           "INCV + Co-teaching")
METHODS = ("standard", "fcorrection", "decoupling", "coteaching", "mentornet", "d2l", "incv",
           "cl", "ncv")


def _set(run, *, args=None, summary=None, log=None):
    """Amend a fabricated run: flags into config.json's args, fields into summary.json, and
    log.jsonl's rows (epochs 1, 2, ...)."""
    for name, extra in (("config", args), ("summary", summary)):
        if extra:
            with open(os.path.join(run, f"{name}.json")) as f:
                obj = json.load(f)
            (obj["args"] if name == "config" else obj).update(extra)
            _write(run, f"{name}.json", obj)
    if log is not None:
        with open(os.path.join(run, "log.jsonl"), "w") as f:
            f.writelines(json.dumps({"epoch": e + 1, **row}) + "\n" for e, row in enumerate(log))
    return run


def _measured(md, header="| method | sym 0.5 |"):
    """The method names of the first accuracy table under ``header`` in Markdown ``md``."""
    lines = md[md.index(header):].split("\n\n")[0].splitlines()[2:]
    return [line.split(" | ")[0].lstrip("| ") for line in lines]


def test_table_1_rows_in_the_papers_order_with_the_papers_numbers(tmp_path):
    """Every method gets its paper name; rows: Standard, Table 1's six in its order, the
    other selectors; the paper's rows after ours in the same order, its numbers unchanged."""
    assert [table.METHOD_LABELS[m] for m in METHODS] == [
        "Standard", *TABLE_1[:-1], "INCV + Co-teaching", "Confident learning + Co-teaching",
        "Noisy CV rule + Co-teaching"]
    assert set(table.PAPER_CIFAR10) == set(TABLE_1)  # a paper row for each name
    root = str(tmp_path)
    for k, method in enumerate(sorted(METHODS)):  # written in another order than the paper's
        for seed in (0, 1):
            _train_run(root, "sym", 0.5, method, seed, 0.5 + 0.01 * k + 0.02 * seed)
    tables = table.build_tables(table.collect_runs([root]))
    md = table.format_markdown(tables)
    ours = [table.METHOD_LABELS[m] for m in METHODS]
    assert _measured(md) == ours + [f"{name} (paper)" for name in TABLE_1]
    for k, method in enumerate(sorted(METHODS)):
        acc = 100 * (0.5 + 0.01 * k) + 1.0
        r = _row(tables["accuracy"], method=table.METHOD_LABELS[method], source="measured")
        assert r["accuracy_mean"] == pytest.approx(acc) and r["n"] == 2
        assert r["accuracy_std"] == pytest.approx(np.std([acc - 1, acc + 1], ddof=1))
        assert r["note"] == ""
    for name, cells in table.PAPER_CIFAR10.items():
        mean, std = cells[table.PAPER_SETTINGS.index("sym 0.5")]
        assert f"| {name} (paper) | {mean:.2f} ± {std:.2f} |" in md
    # the accuracy table's best-epoch and both-networks views keep the order too
    both = md[md.index("Mean of both networks"):]
    assert _measured(both) == ours + [f"{name} (paper)" for name in TABLE_1]
    assert "Decoupling two; their diagnostics follow" in md


def test_a_methods_own_flags_split_only_that_methods_runs(tmp_path):
    """A non-default flag of a method makes a labelled row of that method, never averaged
    with the default one; another method's run under that flag is the same run (one row,
    no 'runs differ' note)."""
    root = str(tmp_path)
    variants = {"fcorrection": ({"fcorrection_T": "true"}, "F-correction (true T)"),
                "decoupling": ({"decoupling_min_batch": 0.2}, "Decoupling (rho 0.2)"),
                "mentornet": ({"mentornet_variant": "self_paced"}, "MentorNet (self-paced)"),
                "d2l": ({"d2l_rollback": "reference", "d2l_window": 3},
                        "D2L (window 3, reference's no-op rollback)")}
    every = {k: v for flags, _ in variants.values() for k, v in flags.items()}
    defaults = {name: default for specs in table.METHOD_FLAGS.values()
                for name, _, default, *_ in specs}
    for method, (flags, _) in variants.items():
        _set(_train_run(str(tmp_path / "a"), "sym", 0.5, method, 0, 0.6), args=defaults)
        _set(_train_run(str(tmp_path / "b"), "sym", 0.5, method, 0, 0.4), args=flags)
    for seed, flags in ((0, defaults), (1, every)):  # Standard, Co-teaching under all of them
        for method in ("standard", "coteaching"):
            _set(_train_run(root, "sym", 0.5, method, seed, 0.5 + 0.1 * seed), args=flags)
    runs = table.collect_runs([root])
    assert {r["status"] for r in runs} == {"done"}  # a variant is not a duplicate seed
    rows = [r for r in table.table_accuracy(runs) if r["source"] == "measured"]
    for method, (_, label) in variants.items():
        assert _row(rows, method=table.METHOD_LABELS[method])["accuracy_mean"] == 60.0
        assert _row(rows, method=label)["accuracy_mean"] == pytest.approx(40.0)
    for label in ("Standard", "Co-teaching"):
        r = _row(rows, method=label)
        assert (r["n"], r["note"]) == (2, "")
        assert r["accuracy_mean"] == pytest.approx(55.0)
    assert len(rows) == 2 * len(variants) + 2
    md = table.format_markdown(table.build_tables(runs))
    assert _measured(md) == ["Standard", "F-correction", "F-correction (true T)",
                             "Decoupling", "Decoupling (rho 0.2)", "Co-teaching", "MentorNet",
                             "MentorNet (self-paced)", "D2L",
                             "D2L (window 3, reference's no-op rollback)"] + [
        f"{name} (paper)" for name in TABLE_1]
    # every flag of every method has a label; a value without one falls back to its name
    assert set(table._METHOD_VARIANTS) == set(defaults)
    assert table._variant({"fcorrection_T": "ncv", "fcorrection_percentile": 100},
                          "fcorrection") == " (T from the noisy-CV ratio, T at percentile 100)"
    assert table._variant({"mentornet_variant": "other"}, "mentornet") == (
        " (mentornet_variant other)")
    assert table._variant({"d2l_init_epoch": 0.0}, "d2l") == " (init epoch 0 of 200)"
    assert table._variant({"incv_forget_rate": "true_noise_of_s"}, "incv") == (
        " (oracle forget rate: S's true noise)")
    assert table._variant({"incv_forget_rate": "true_noise_of_s"}, "coteaching") == ""
    assert table._variant({**every, "selection": "authors"}, "incv") == (
        " (authors' selection)")
    assert table._variant(defaults, "fcorrection") == ""
    assert table._variant({"d2l_window": "five"}, "d2l") == " (window five)"
    assert table._variant({"d2l_init_epoch": "late"}, "d2l") == " (d2l_init_epoch late)"


def test_a_run_from_before_a_methods_flag_existed_counts_at_its_default(tmp_path):
    """An older config lacks a method flag added later (--incv_forget_rate): beside a run
    that records its default, both are seeds of one cell with no 'runs differ' note; a run
    with a non-default value is still its own row."""
    root = str(tmp_path)
    _train_run(root, "sym", 0.5, "incv", 0, 0.4)  # its config has no incv_forget_rate
    _set(_train_run(root, "sym", 0.5, "incv", 1, 0.6), args={"incv_forget_rate": "estimate"})
    _set(_train_run(str(tmp_path / "oracle"), "sym", 0.5, "incv", 0, 0.5),
         args={"incv_forget_rate": "true_noise_of_s"})
    rows = [r for r in table.table_accuracy(table.collect_runs([root]))
            if r["source"] == "measured"]
    r = _row(rows, method="INCV + Co-teaching")
    assert (r["n"], r["note"], r["accuracy_mean"]) == (2, "", pytest.approx(50.0))
    assert len(rows) == 2 and _row(rows, method="INCV + Co-teaching (oracle forget rate: "
                                                 "S's true noise)")["n"] == 1
    # a flag that really differs between seeds is still named
    _set(_train_run(root, "sym", 0.5, "incv", 2, 0.5), args={"lr": 0.01})
    rows = table.table_accuracy(table.collect_runs([root]))
    assert "runs differ in lr" in _row(rows, method="INCV + Co-teaching",
                                           source="measured")["note"]


def test_diagnostics_of_the_other_methods(tmp_path, results):
    """One row per setting and method (Table 1's order), mean ± sample std over seeds of the
    numbers each run wrote; a variant gets its own row; none without such runs."""
    root = str(tmp_path / "runs")
    t_error, epoch, at_best = (0.05, 0.07, None), (10, 12, 14), (0.5, 0.6, 0.7)
    turning, alpha = (12, None, 16), (0.8, 1.0, 0.6)
    weight, disagree, clean = (0.7, 0.8, 0.9), (0.3, 0.4, 0.2), (0.2, 0.3, 0.4)
    forget, e_s, lp = (0.6, 0.7, 0.8), (0.1, 0.2, 0.3), (0.8, 0.7, 0.9)
    for seed in range(3):
        fc = {"fcorrection_T": "estimated", "condition_number": 3.0}
        if t_error[seed] is not None:  # a run whose true T is unknown has no error
            fc["mean_abs_error"] = t_error[seed]
        _set(_train_run(root, "sym", 0.5, "fcorrection", seed, 0.4), summary={
            "fcorrection": fc, "lowest_val_loss_epoch": {
                "epoch": epoch[seed], "val_noisy_loss": 1.0, "test_accuracy": at_best[seed]}})
        _set(_train_run(root, "sym", 0.5, "d2l", seed, 0.4), summary={
            "d2l": {"init_epoch": 40, "window": 5, "rollback": "real"},
            "d2l_turning_epoch": turning[seed], "d2l_final_alpha": alpha[seed]})
        _set(_train_run(root, "sym", 0.5, "mentornet", seed, 0.4),
             log=[{"weight": 0.1}, {"weight": weight[seed]}])  # the final epoch's counts
        _set(_train_run(root, "sym", 0.5, "decoupling", seed, 0.4),
             log=[{"disagree": 0.9, "disagree_clean": 0.9},
                  {"disagree": disagree[seed], "disagree_clean": clean[seed]}])
        _set(_train_run(root, "sym", 0.5, "coteaching", seed, 0.4), summary={
            "forget_rate": forget[seed], "actual_noise_ratio": 0.5})
        _set(_train_run(root, "sym", 0.5, "incv", seed, 0.4), summary={
            "forget_rate": e_s[seed], "expected_noise_of_selected": e_s[seed],
            "selection": {"label_precision": lp[seed]}})
    _set(_train_run(str(tmp_path / "sp"), "sym", 0.5, "mentornet", 0, 0.4),
         args={"mentornet_variant": "self_paced"}, log=[{"weight": 0.55}])
    # the oracle ablation: S's true noise as the forget rate, e_S from e beside it
    _set(_train_run(str(tmp_path / "sp"), "sym", 0.5, "incv", 0, 0.4),
         args={"incv_forget_rate": "true_noise_of_s"}, summary={
             "forget_rate": 0.25, "expected_noise_of_selected": 0.1,
             "selection": {"label_precision": 0.75}})
    tables = table.build_tables(table.collect_runs([str(tmp_path / "runs"),
                                                    str(tmp_path / "sp")]))
    rows = tables["diagnostics"]
    assert [r["method"] for r in rows] == [
        "F-correction", "Decoupling", "Co-teaching", "MentorNet", "MentorNet (self-paced)",
        "D2L", "INCV + Co-teaching", "INCV + Co-teaching (oracle forget rate: S's true noise)"]

    def check(row, name, values, scale=1.0):
        v = [scale * x for x in values if x is not None]
        assert row[f"{name}_mean"] == pytest.approx(np.mean(v))
        assert row[f"{name}_std"] == pytest.approx(np.std(v, ddof=1))

    fc = _row(rows, method="F-correction")
    check(fc, "T_error", t_error)
    assert fc["n"] == 3 and fc["T_error_n"] == 2
    check(fc, "lowest_val_loss_epoch", epoch)
    check(fc, "lowest_val_loss_accuracy", at_best, 100.0)
    d2l = _row(rows, method="D2L")
    assert d2l["turned"] == 2
    check(d2l, "turning_epoch", turning)
    check(d2l, "final_alpha", alpha)
    check(_row(rows, method="MentorNet"), "final_weight", weight)
    sp = _row(rows, method="MentorNet (self-paced)")
    assert (sp["n"], sp["final_weight_mean"], sp["final_weight_std"]) == (1, 0.55, None)
    dec = _row(rows, method="Decoupling")
    check(dec, "final_disagree", disagree)
    check(dec, "final_disagree_clean", clean)
    cot = _row(rows, method="Co-teaching")
    check(cot, "forget_rate", forget)
    assert (cot["actual_noise_mean"], cot["actual_noise_std"]) == (0.5, 0.0)
    incv = _row(rows, method="INCV + Co-teaching")
    check(incv, "forget_rate", e_s)
    check(incv, "e_S", e_s)
    check(incv, "noise_of_s", [1.0 - x for x in lp])
    oracle = _row(rows, method="INCV + Co-teaching (oracle forget rate: S's true noise)")
    assert (oracle["forget_rate_mean"], oracle["e_S_mean"]) == (0.25, 0.1)
    assert oracle["noise_of_s_mean"] == pytest.approx(0.25)
    md = table.format_markdown(tables)
    section = md[md.index("## Table 1's methods: diagnostics"):]
    assert ("| sym 0.5 | Co-teaching | 3 | forget rate 0.700 ± 0.100 (its estimate of e, or "
            "--forget_rate); actual noise 0.500 ± 0.000 |") in section
    assert ("| sym 0.5 | INCV + Co-teaching | 3 | forget rate 0.200 ± 0.100; e_S from e "
            "0.200 ± 0.100; S's true noise (1 - LP) 0.200 ± 0.100 |") in section
    assert ("| INCV + Co-teaching (oracle forget rate: S's true noise) | 1 | forget rate "
            "0.250; e_S from e 0.100; S's true noise (1 - LP) 0.250 |") in section
    assert "| setting | method | n | diagnostics |" in section
    assert (r"| sym 0.5 | F-correction | 3 | mean \|T̂ − T\| 0.060 ± 0.014 (n=2); "
            "reference's checkpoint rule: lowest noisy-validation loss at epoch 12.0 ± 2.0, "
            "test accuracy 60.00 ± 10.00 % |") in section
    assert ("| sym 0.5 | D2L | 3 | turning point in 2 of 3 seeds, epoch 14.0 ± 2.8; "
            "final alpha 0.800 ± 0.200 |") in section
    assert "| MentorNet | 3 | final-epoch mean sample weight 0.800 ± 0.100 |" in section
    assert "| MentorNet (self-paced) | 1 | final-epoch mean sample weight 0.550 |" in section
    assert ("| Decoupling | 3 | final-epoch disagreement fraction 0.300 ± 0.100 (clean "
            "labels among them 0.300 ± 0.100) |") in section
    assert md.index("| F-correction |") < md.index("## Table 1's methods: diagnostics")
    assert md.index("## Table 1's methods: diagnostics") < md.index("## Not included")
    csv_rows = [r for r in csv.DictReader(io.StringIO(table.format_csv(tables)))
                if r["table"] == "diagnostics"]
    assert float(_row(csv_rows, method="D2L")["turned"]) == 2
    # none of the diagnosed methods (standard training only): no section, no rows
    old = table.build_tables([r for r in table.collect_runs([results[0]])
                              if r["method"] == "standard"])
    text = table.format_markdown(old)
    assert old["diagnostics"] == [] and "diagnostics" not in text and "follow" not in text


def _legends(monkeypatch, root, out):
    """Run --curves on ``root``; return each panel's legend: [(label, line colour)]."""
    from matplotlib.colors import to_rgba

    from noisylabels import plots

    figures = []
    monkeypatch.setattr(plots.utils, "save_figure", lambda fig, path: figures.append(fig))
    table.main(table.parse_args([root, "--curves", out]))
    (fig,) = figures
    legends = []
    for ax in fig.axes:
        handles, labels = ax.get_legend_handles_labels()
        legends.append([(label, to_rgba(h.get_color())) for h, label in zip(handles, labels)])
    return legends


def test_curves_draw_every_method_in_its_own_colour(tmp_path, monkeypatch):
    """--curves with one seed: every method's networks, Table 1's names and order in the
    legend, a colour per method; with several seeds a panel per setting, a method keeping
    its colour in every panel."""
    one = str(tmp_path / "one")
    for k, method in enumerate(sorted(METHODS)):
        run = _train_run(one, "sym", 0.5, method, 0, 0.5)
        two = method not in ONE_NETWORK
        _set(run, log=[{"test_accuracy_model1": 0.1 * k + 0.01 * e,
                        **({"test_accuracy_model2": 0.2} if two else {})} for e in (1, 2)])
    (legend,) = _legends(monkeypatch, one, str(tmp_path / "one.png"))
    nets = [(table.METHOD_LABELS[m], net) for m in METHODS
            for net in ("model1", "model2") if net == "model1" or m not in ONE_NETWORK]
    assert [label for label, _ in legend] == [f"sym 0.5, {name}, seed 0 ({net})"
                                              for name, net in nets]
    colour = {}
    for (name, _), (_, c) in zip(nets, legend):
        assert colour.setdefault(name, c) == c  # both networks of a run share its colour
    assert len(set(colour.values())) == len(METHODS)

    many = str(tmp_path / "many")
    for pattern, ratio in (("sym", 0.5), ("asym", 0.4)):
        for method in METHODS if pattern == "sym" else METHODS[::-1]:
            for seed in (0, 1):
                run = _train_run(many, pattern, ratio, method, seed, 0.5)
                _set(run, log=[{"test_accuracy_model1": 0.3 + 0.01 * seed} for _ in "ab"])
    panels = _legends(monkeypatch, many, str(tmp_path / "many.png"))
    assert len(panels) == 2
    for legend in panels:
        assert [label for label, _ in legend] == [f"{table.METHOD_LABELS[m]} (2 seeds)"
                                                  for m in METHODS]
    assert panels[0] == panels[1]  # same colour per method in both panels
    assert len({c for _, c in panels[0]}) == len(METHODS)
    from matplotlib.colors import to_rgba

    from noisylabels import plots

    for n in (3, 12, 25):  # beyond tab10's ten colours, still one apiece
        assert len({to_rgba(c) for c in plots.colours(n)}) == n


def test_a_selector_variant_is_its_own_row_not_a_further_seed(tmp_path):
    """The oracle forget rate re-runs seed 0's selection: the selectors table keeps it apart
    (n=1 each), as the accuracy table does."""
    sel = {"selection": {"selected": 100, "candidates": 50, "label_precision": 0.8,
                         "label_recall": 0.4}}
    _set(_train_run(str(tmp_path / "a"), "sym", 0.5, "incv", 0, 0.4), summary=sel)
    _set(_train_run(str(tmp_path / "b"), "sym", 0.5, "incv", 0, 0.5), summary=sel,
         args={"incv_forget_rate": "true_noise_of_s"})
    rows = table.build_tables(table.collect_runs([str(tmp_path / "a"),
                                                  str(tmp_path / "b")]))["selectors"]
    assert sorted((r["method"], r["n"]) for r in rows) == [
        ("INCV", 1), ("INCV (oracle forget rate: S's true noise)", 1)]
