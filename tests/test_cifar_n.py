"""CIFAR-10N / CIFAR-100N (human label noise) on generated files of the release's format: a
zip archive holding one pickle of a dict of numpy arrays, as torch.save writes it (the
licensed label files never enter the repository). Loading without torch, the order check,
each label set, the missing / corrupt / mismatched file errors (one line, exit 2, nothing
written), the --n_train subset mapping, the published rows of table.py and a tiny run of
both scripts."""

import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import ROOT, subprocess_env, write_cifar

from noisylabels import cifar_n, data, flags, incv_train, metrics, noisy_cv, table, utils

N_PER_BATCH = 40  # 5 training batches: 200 training images, 40 test images
QUICK = ["--arch", "cnn", "--verbose", "0"]


def write_pt(path, arrays, *, folder="archive"):
    """A CIFAR-N-format file: torch.save's zip layout (``<folder>/data.pkl`` and
    ``<folder>/version``, stored uncompressed) around one protocol-2 pickle of ``arrays``."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr(f"{folder}/data.pkl", pickle.dumps(arrays, protocol=2))
        z.writestr(f"{folder}/version", "3\n")


def _flip(y, fraction, num_classes, seed):
    """Labels with about ``fraction`` of them moved to the next class (a human-like,
    non-symmetric confusion)."""
    rng = np.random.default_rng(seed)
    y = y.copy()
    at = rng.random(len(y)) < fraction
    y[at] = (y[at] + 1) % num_classes
    return y


@pytest.fixture(scope="module")
def cifar10n_dir(tmp_path_factory):
    """A data folder: tiny CIFAR-10 batches in the python layout and a CIFAR-10_human.pt
    whose clean_label is their training labels in order."""
    root = tmp_path_factory.mktemp("c10n")
    written = write_cifar(str(root / "cifar-10-batches-py"),
                          [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                          b"labels", N_PER_BATCH, 10)
    clean = np.concatenate([np.asarray(written[f"data_batch_{i}"][1], np.int64)
                            for i in range(1, 6)])
    arrays = {"clean_label": clean,
              "aggre_label": _flip(clean, 0.1, 10, 1), "worse_label": _flip(clean, 0.4, 10, 2),
              "random_label1": _flip(clean, 0.17, 10, 3),
              "random_label2": _flip(clean, 0.18, 10, 4),
              "random_label3": _flip(clean, 0.18, 10, 5)}
    write_pt(str(root / "CIFAR-10_human.pt"), arrays)
    return str(root), arrays


@pytest.fixture(scope="module")
def cifar100n_dir(tmp_path_factory):
    """The same for CIFAR-100N, with the release's folder name inside the zip and its coarse
    labels as plain lists (as the real file holds them)."""
    root = tmp_path_factory.mktemp("c100n")
    written = write_cifar(str(root / "cifar-100-python"), ["train", "test"], b"fine_labels",
                          200, 100)
    clean = np.asarray(written["train"][1], np.int64)
    arrays = {"clean_label": clean, "noisy_label": _flip(clean, 0.4, 100, 6),
              "clean_coarse_label": [int(c) // 5 for c in clean],
              "noisy_coarse_label": [int(c) // 5 for c in clean]}
    write_pt(str(root / "CIFAR-100_human.pt"), arrays, folder="CIFAR-100_human")
    return str(root), arrays


def _copy_data_dir(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return str(dst)


# -- reading the file --------------------------------------------------------------------

def test_label_file_reads_without_torch(cifar10n_dir):
    root, arrays = cifar10n_dir
    got = cifar_n.read_label_file(os.path.join(root, "CIFAR-10_human.pt"))
    assert set(got) == set(arrays)
    for k, v in arrays.items():
        assert got[k].dtype == np.int64 and np.array_equal(got[k], v)
    assert "torch" not in sys.modules  # nothing imported it


def test_label_file_with_lists_and_another_folder_name(cifar100n_dir):
    root, arrays = cifar100n_dir
    got = cifar_n.read_label_file(os.path.join(root, "CIFAR-100_human.pt"))
    assert np.array_equal(got["clean_coarse_label"], arrays["clean_coarse_label"])
    assert got["noisy_label"].shape == (200,)


def test_label_file_refuses_pickles_that_build_other_objects(tmp_path):
    """The unpickler builds numpy arrays only: a pickle calling anything else is refused
    before it runs (a downloaded file cannot execute code)."""
    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"clean_label": Boom()}, protocol=2))
    with pytest.raises(ValueError, match="refusing to load"):
        cifar_n.read_label_file(str(path))
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("content, message", [
    (b"", "not a torch.save zip archive"),
    (b"PK\x03\x04 truncated", "not a torch.save zip archive"),
    ("zip-without-pickle", "expected one data.pkl"),
    ("zip-with-garbage-pickle", "cannot read its pickle"),
    ("zip-with-a-list", "expected a dict of label arrays"),
    ("zip-with-2d-array", "not a 1-d array of integer labels"),
])
def test_corrupt_label_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "CIFAR-10_human.pt"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        with zipfile.ZipFile(path, "w") as z:
            if content == "zip-with-garbage-pickle":
                z.writestr("archive/data.pkl", b"\x80\x02}q\x00(X")
            elif content == "zip-with-a-list":
                z.writestr("archive/data.pkl", pickle.dumps([1, 2], protocol=2))
            elif content == "zip-with-2d-array":
                z.writestr("archive/data.pkl",
                           pickle.dumps({"clean_label": np.zeros((2, 2), np.int64)}))
            else:
                z.writestr("archive/version", "3\n")
    with pytest.raises(ValueError, match=message) as err:
        cifar_n.read_label_file(str(path))
    assert str(path) in str(err.value)


# -- the dataset ---------------------------------------------------------------------------

@pytest.mark.parametrize("label_set, key", list(cifar_n.LABEL_SETS["cifar10n"].items()))
def test_each_cifar10n_label_set(cifar10n_dir, label_set, key):
    root, arrays = cifar10n_dir
    d = data.load_dataset("cifar10n", data_dir=root, download=False, label_set=label_set)
    assert d.name == "cifar10n" and d.label_set == label_set and d.num_classes == 10
    assert d.clean_known and np.array_equal(d.y_train, arrays["clean_label"])
    assert np.array_equal(d.y_train_noisy, arrays[key])
    assert d.x_train.shape == (200, 32, 32, 3) and d.x_test.shape == (40, 32, 32, 3)
    p = d.provenance
    assert p["label_set"] == label_set and p["label_file"] == "CIFAR-10_human.pt"
    assert p["label_file_md5"] == data.file_md5(os.path.join(root, "CIFAR-10_human.pt"))
    assert p["label_file_official"] is False and p["official"] is False  # generated files
    assert "md5 differs from the released file" in data.describe_provenance(p)


def test_default_label_sets_are_the_noisiest(cifar10n_dir, cifar100n_dir):
    d = data.load_dataset("cifar10n", data_dir=cifar10n_dir[0], download=False)
    assert d.label_set == "worse"
    assert np.array_equal(d.y_train_noisy, cifar10n_dir[1]["worse_label"])
    d = data.load_dataset("cifar100n", data_dir=cifar100n_dir[0], download=False)
    assert d.label_set == "noisy" and d.num_classes == 100
    assert np.array_equal(d.y_train_noisy, cifar100n_dir[1]["noisy_label"])


def test_released_md5_is_recognised(cifar10n_dir, monkeypatch):
    root, _ = cifar10n_dir
    digest = data.file_md5(os.path.join(root, "CIFAR-10_human.pt"))
    monkeypatch.setitem(cifar_n.DATASETS, "cifar10n",
                        ("cifar10", "CIFAR-10_human.pt", digest))
    d = data.load_dataset("cifar10n", data_dir=root, download=False)
    assert d.provenance["label_file_official"] is True
    assert "the released file, md5 checked" in data.describe_provenance(d.provenance)


def test_order_check_rejects_a_file_of_another_order(cifar10n_dir, tmp_path):
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    arrays = dict(cifar10n_dir[1])
    # the images in another order (e.g. the binary version's): the same labels, permuted
    arrays["clean_label"] = np.roll(arrays["clean_label"], 1)
    os.remove(os.path.join(root, "CIFAR-10_human.pt"))
    write_pt(os.path.join(root, "CIFAR-10_human.pt"), arrays)
    with pytest.raises(ValueError, match="not in the python-version order"):
        data.load_dataset("cifar10n", data_dir=root, download=False)


@pytest.mark.parametrize("change, message", [
    (lambda a: {k: v[:-1] for k, v in a.items()}, "labels 199 images"),
    (lambda a: {k: v for k, v in a.items() if k != "clean_label"}, "has no clean_label"),
    (lambda a: {k: v for k, v in a.items() if k != "worse_label"}, "has no worse_label"),
    (lambda a: {**a, "worse_label": a["worse_label"] + 10}, "must hold 200 labels in 0..9"),
])
def test_mismatched_label_files_are_clear_errors(cifar10n_dir, tmp_path, change, message):
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    os.remove(os.path.join(root, "CIFAR-10_human.pt"))
    write_pt(os.path.join(root, "CIFAR-10_human.pt"), change(dict(cifar10n_dir[1])))
    with pytest.raises(ValueError, match=message):
        data.load_dataset("cifar10n", data_dir=root, download=False)


def test_cifar100_file_for_cifar10_images_is_refused(cifar10n_dir, cifar100n_dir, tmp_path):
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    os.remove(os.path.join(root, "CIFAR-10_human.pt"))
    with zipfile.ZipFile(os.path.join(cifar100n_dir[0], "CIFAR-100_human.pt")) as z:
        arrays = pickle.loads(z.read("CIFAR-100_human/data.pkl"))
    arrays["clean_label"] = arrays["clean_label"][:200]
    write_pt(os.path.join(root, "CIFAR-10_human.pt"), arrays)
    with pytest.raises(ValueError, match="wrong file for this dataset"):
        data.load_dataset("cifar10n", data_dir=root, download=False)


def test_missing_label_file_names_where_to_get_it(cifar10n_dir, tmp_path):
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    os.remove(os.path.join(root, "CIFAR-10_human.pt"))
    with pytest.raises(FileNotFoundError) as err:
        data.load_dataset("cifar10n", data_dir=root, download=False)
    text = str(err.value)
    assert os.path.join(root, "CIFAR-10_human.pt") in text and cifar_n.RELEASE_URL in text
    assert "--data_dir" in text


def test_label_set_of_another_dataset_is_refused(cifar10n_dir, capsys):
    with pytest.raises(ValueError, match="--label_set noisy is not a label set of cifar10n"):
        data.load_dataset("cifar10n", data_dir=cifar10n_dir[0], label_set="noisy")
    with pytest.raises(ValueError, match="--label_set is for --dataset"):
        data.load_dataset("digits", label_set="worse")
    for parse in (incv_train.parse_args, noisy_cv.parse_args):
        for argv, message in ((["--dataset", "cifar10n", "--label_set", "noisy"],
                               ("--label_set noisy is not a label set of cifar10n: choose one "
                                "of worse, aggre, random1, random2, random3")),
                              (["--dataset", "cifar10", "--label_set", "worse"],
                               ("--label_set is for --dataset cifar10n / cifar100n, not "
                                "'cifar10': drop it"))):
            with pytest.raises(SystemExit) as exit_info:
                parse(argv)
            assert exit_info.value.code == 2
            assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)


def test_n_train_subset_maps_back_to_the_50000_indices(cifar10n_dir):
    root, arrays = cifar10n_dir
    args = incv_train.parse_args(["--dataset", "cifar10n", "--data_dir", root,
                                  "--no_download", "--n_train", "60", "--label_set", "aggre"])
    d = flags.load_training_data(args, lambda text: None)
    idx = d.train_index
    assert len(idx) == 60 and len(set(idx)) == 60 and idx.max() >= 60  # a strict subset
    assert np.array_equal(d.y_train, arrays["clean_label"][idx])
    assert np.array_equal(d.y_train_noisy, arrays["aggre_label"][idx])


# -- the scripts: errors, then a tiny end-to-end run ---------------------------------------

@pytest.mark.parametrize("script", [incv_train, noisy_cv])
@pytest.mark.parametrize("breakage, message", [
    ("missing", "needs the label file"),
    ("corrupt", "is not a torch.save zip archive"),
    ("mismatched", "not in the python-version order"),
])
def test_bad_label_file_exits_2_with_one_line_and_writes_nothing(
        cifar10n_dir, tmp_path, capsys, script, breakage, message):
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    pt = os.path.join(root, "CIFAR-10_human.pt")
    os.remove(pt)
    if breakage == "corrupt":
        with open(pt, "wb") as f:
            f.write(b"<html>404: Not Found</html>")  # a failed download
    elif breakage == "mismatched":
        arrays = dict(cifar10n_dir[1])
        arrays["clean_label"] = arrays["clean_label"][::-1].copy()
        write_pt(pt, arrays)
    out = tmp_path / "results"
    args = script.parse_args(["--dataset", "cifar10n", "--data_dir", root, "--no_download",
                              "--results_dir", str(out), "--epochs", "1"] + QUICK)
    assert utils.cli(script.main, args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len([line for line in err if line.startswith("error: ")]) == 1
    assert err[-1].startswith("error: ") and message in err[-1] and pt in err[-1]
    assert not out.exists()


def test_missing_label_file_from_the_command_line(cifar10n_dir, tmp_path):
    """What a user of a fresh clone sees without the file: one line naming the download."""
    root = _copy_data_dir(cifar10n_dir[0], tmp_path / "d")
    os.remove(os.path.join(root, "CIFAR-10_human.pt"))
    out = tmp_path / "results"
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "incv_train.py"), "--dataset", "cifar10n",
         "--label_set", "worse", "--data_dir", root, "--results_dir", str(out)],
        capture_output=True, text=True, env=subprocess_env(), cwd=ROOT, timeout=300,
        check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: cifar10n needs the label file") and cifar_n.RELEASE_URL in last
    assert not out.exists()


def test_incv_train_end_to_end_filed_under_the_label_set(cifar10n_dir, tmp_path):
    root, arrays = cifar10n_dir
    args = incv_train.parse_args(
        ["--dataset", "cifar10n", "--label_set", "worse", "--data_dir", root,
         "--no_download", "--n_train", "120", "--incv_epochs", "1", "--incv_iterations", "1",
         "--epochs", "1", "--method", "incv", "ncv", "standard",
         "--results_dir", str(tmp_path)] + QUICK)
    runs = {r["method"]: r for r in incv_train.main(args)}
    for method in ("incv", "ncv", "standard"):
        run = tmp_path / "cifar10n" / "worse" / method / "seed0"
        assert (run / "summary.json").is_file(), method
        cfg = utils.read_json(run / "config.json")
        assert cfg["run"]["pattern"] == "worse" and cfg["run"]["noise_type"] == "sym"
        assert cfg["data_provenance"]["label_set"] == "worse"
    labels = np.load(tmp_path / "cifar10n" / "worse" / "incv" / "seed0" / "labels.npz")
    idx = labels["train_index"]
    assert np.array_equal(labels["y_noisy"], arrays["worse_label"][idx])
    assert np.array_equal(labels["y_true"], arrays["clean_label"][idx])
    r = runs["incv"]
    assert r["pattern"] == "worse" and r["ratio"] is None and r["noise_type"] == "sym"
    assert r["actual_noise_ratio"] == pytest.approx(
        np.mean(arrays["worse_label"][idx] != arrays["clean_label"][idx]))
    assert r["selection"]["label_precision"] is not None  # clean labels known
    est = r["noise_estimates"]
    assert np.allclose(est["empirical_T"], metrics.normalized_confusion(
        arrays["clean_label"][idx], arrays["worse_label"][idx], 10))
    assert est["actual"] == pytest.approx(r["actual_noise_ratio"])
    assert runs["ncv"]["selection"]["selected"] > 0
    assert runs["standard"]["test_accuracy"]["model1"] is not None
    md = table.format_markdown(table.build_tables(table.collect_runs([str(tmp_path)])))
    assert "| Co-teaching (CIFAR-N paper) | 83.83 ± 0.13 |" in md
    assert "| Standard (cross-entropy) (CIFAR-N paper) | 77.69 ± 1.55 |" in md


def test_noisy_cv_end_to_end_compares_with_the_empirical_T(cifar10n_dir, tmp_path):
    root, arrays = cifar10n_dir
    args = noisy_cv.parse_args(["--dataset", "cifar10n", "--label_set", "aggre",
                                "--data_dir", root, "--no_download", "--epochs", "1",
                                "--results_dir", str(tmp_path)] + QUICK)
    (s,) = noisy_cv.main(args)
    out = tmp_path / "cifar10n" / "aggre" / "seed0"
    assert utils.read_json(out / "summary.json")["pattern"] == "aggre"
    labels = np.load(out / "labels.npz")
    idx, held = labels["train_index"], labels["idx_held"]
    clean, given = arrays["clean_label"][idx], arrays["aggre_label"][idx]
    assert np.array_equal(labels["y_noisy"], given)
    # no matrix exists for human noise: the theory uses the empirical T of clean vs given
    assert np.allclose(s["transition_matrix"], metrics.normalized_confusion(clean, given, 10))
    assert np.allclose(s["empirical_transition_matrix"],
                       metrics.normalized_confusion(clean[held], given[held], 10))
    assert s["actual_noise_ratio"] == pytest.approx(np.mean(clean != given))
    assert (out / "noise_matrices.png").is_file()


# -- table.py: the CIFAR-N paper's rows beside ours ----------------------------------------

def _fake_run(root, label_set, method, accs, dataset="cifar10n"):
    run = os.path.join(root, dataset, label_set, method, "seed0")
    os.makedirs(run)
    utils.write_json(os.path.join(run, "config.json"), {
        "args": {"dataset": dataset, "arch": "cnn", "epochs": len(accs)},
        "run": {"method": method, "pattern": label_set, "ratio": None, "seed": 0}})
    with open(os.path.join(run, "log.jsonl"), "w") as f:
        f.writelines(json.dumps({"test_accuracy_model1": a}) + "\n" for a in accs)
    utils.write_json(os.path.join(run, "summary.json"), {
        "dataset": dataset, "method": method, "pattern": label_set, "ratio": None,
        "seed": 0, "arch": "cnn", "epochs": len(accs), "n_train": 5000,
        "test_accuracy": {"model1": accs[-1], "model2": None, "mean": accs[-1]}})


def test_table_prints_published_rows_beside_ours(tmp_path):
    _fake_run(str(tmp_path), "worse", "coteaching", [0.30, 0.45, 0.40])
    _fake_run(str(tmp_path), "worse", "standard", [0.35, 0.50, 0.41])
    _fake_run(str(tmp_path), "aggre", "standard", [0.55, 0.60, 0.58])
    md = table.format_markdown(table.build_tables(table.collect_runs([str(tmp_path)])))
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| method |"))
    assert header == "| method | aggre | worse |"
    # ours at the final epoch, then the published rows, labelled
    assert "| Co-teaching | — | 40.00 (n=1) |" in lines
    assert "| Standard | 58.00 (n=1) | 41.00 (n=1) |" in lines
    assert "| Co-teaching (CIFAR-N paper) | 91.20 | 83.83 ± 0.13 |" in lines
    assert "| Standard (cross-entropy) (CIFAR-N paper) | — | 77.69 ± 1.55 |" in lines
    # the best epoch (chosen on the test set) only in its own, labelled table
    best = md.index("Ours at the best epoch")
    assert "| Co-teaching | — | 45.00 (n=1) |" in md[best:].splitlines()
    assert "| Standard | 60.00 (n=1) | 50.00 (n=1) |" in md[best:].splitlines()
    assert "ResNet-34, all 50,000 training images, 100 epochs" in md
    assert "arXiv:2110.12088" in md


def test_published_rows_only_for_cifar_n(tmp_path):
    _fake_run(str(tmp_path), "given", "coteaching", [0.5], dataset="mydata")
    md = table.format_markdown(table.build_tables(table.collect_runs([str(tmp_path)])))
    assert "CIFAR-N paper" not in md and "best epoch" not in md


def test_published_rows_are_constants_with_their_source():
    for (dataset, label_set), methods in table.CIFAR_N_PUBLISHED.items():
        assert label_set in cifar_n.LABEL_SETS[dataset]
        for method, (mean, std, source) in methods.items():
            assert method in incv_train.METHODS and 0 < mean < 100 and source
    assert table.CIFAR_N_DATASETS == tuple(cifar_n.DATASETS)


def test_flows_table_names_where_the_noise_goes(tmp_path):
    """The largest off-diagonal cells of the empirical T, CIFAR-10's class names, M and the
    CL matrix read at the same cell; runs of one seed sharing probabilities count once."""
    T = np.eye(10) * 0.9
    T[3, 5], T[3, 3] = 0.3, 0.6   # cat -> dog
    T[9, 1], T[9, 9] = 0.2, 0.7   # truck -> automobile
    for i in range(10):
        T[i, (i + 1) % 10] += 1 - T[i].sum()
    M = np.full((10, 10), 0.01)
    M[3, 5] = 0.25
    for method in ("incv", "cl"):
        _fake_run(str(tmp_path), "worse", method, [0.3])
        path = tmp_path / "cifar10n" / "worse" / method / "seed0" / "summary.json"
        summary = utils.read_json(path)
        summary["noise_estimates"] = {"empirical_T": T.tolist(), "confusion": M.tolist(),
                                      "cl_noise_matrix": (T * 0.5).tolist()}
        utils.write_json(path, summary)
    rows = table.table_flows(table.collect_runs([str(tmp_path)]))
    assert len(rows) == table.FLOWS_SHOWN and {r["n"] for r in rows} == {1}
    assert rows[0]["flow"] == "cat -> dog" and rows[0]["T"] == pytest.approx(0.3)
    assert rows[0]["M"] == pytest.approx(0.25) and rows[0]["CL"] == pytest.approx(0.15)
    assert rows[0]["T_row_noise"] == pytest.approx(0.4)
    assert rows[1]["flow"] == "truck -> automobile"
    md = table.format_markdown(table.build_tables(table.collect_runs([str(tmp_path)])))
    assert "| incv_train.py | worse | 1 | cat -> dog | 0.300 | 0.250 | 0.150 |" in md
