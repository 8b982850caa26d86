"""Tables from finished runs: the paper's Table 1 layout (methods x settings, final test
accuracy) and whether its ranking of the methods holds in ours
(:mod:`noisylabels.table_ranking`), its other methods' diagnostics, INCV's selection per
iteration, the noise-ratio estimates, and noisy_cv.py's measurements beside the closed forms.

    python table.py results/                       # Markdown to stdout
    python table.py results/grid --format csv --out results/grid/table.csv

Reads each run's ``config.json`` and ``summary.json`` under the given folders; runs that are
unfinished, malformed, or missing a seed are listed under "Not included", never averaged in.
Pipeline: :func:`collect_runs` -> ``table_*`` (rows: flat dicts) -> ``format_*``
(:mod:`noisylabels.table_format`, re-exported here).
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

from .algorithms import FLAGS as METHOD_FLAGS
from .data import dataset_name
from .published import (CIFAR_N_PROTOCOL, CIFAR_N_PUBLISHED, PAPER_CIFAR10,  # noqa: F401
                        PAPER_RUNS, PAPER_SETTINGS)
from .table_format import (format_comparison, format_csv, format_diagnostics,  # noqa: F401
                           format_markdown, format_ranking)
from .table_diagnostics import DIAGNOSED, table_diagnostics  # noqa: F401 (table.DIAGNOSED)
from .table_ranking import has_paper_numbers, table_ranking
from .utils import atomic_write, cli, read_json, read_jsonl

CIFAR_N_DATASETS = ("cifar10n", "cifar100n")  # cifar_n.DATASETS (no import: no numpy zip code)
# Table 1's row names, in its order (the accuracy table and the curves' legend follow this
# dict): Standard first (ours only, not in the paper), the other selectors after the paper's.
METHOD_LABELS = {"standard": "Standard", "fcorrection": "F-correction",
                 "decoupling": "Decoupling", "coteaching": "Co-teaching",
                 "mentornet": "MentorNet", "d2l": "D2L", "incv": "INCV + Co-teaching",
                 "cl": "Confident learning + Co-teaching", "ncv": "Noisy CV rule + Co-teaching"}
CIFAR_N_LABEL = "(CIFAR-N paper)"
# Datasets whose accuracy table also shows network 1 at its best epoch on the test set, and
# why (chosen on the test set, it is never a result).
BEST_EPOCH_CAPTIONS = {
    **{d: ("\nOurs at the best epoch of network 1 on the test set (chosen on the test set: for "
           "a like-for-like look at the CIFAR-N paper's rows only, not a result):\n")
       for d in CIFAR_N_DATASETS},
    "cifar10": ("\nNetwork 1 at its best epoch on the test set (chosen on the test set, so not "
                "a result: beside the final epoch above it shows how far each method fell from "
                "its peak, the paper's Fig. 4):\n")}
CIFAR_N_METHOD_LABELS = {"standard": "Standard (cross-entropy)", "coteaching": "Co-teaching"}
# Flags that pick which runs a call makes or how it bookkeeps: not what a run *is*.
_GRID_FLAGS = {"dataset", "data_dir", "no_download", "noise_pattern", "noisy_ratio", "method",
               "seed", "results_dir", "overwrite", "skip_existing", "resume", "verbose",
               "incv_only"}


# The summary.json fields the tables read, and the JSON types each may hold (None: null).
_NUMBER = (int, float)
_SUMMARY_TYPES = {
    "dataset": str, "method": str, "pattern": str, "arch": str, "ratio": _NUMBER,
    "seed": int, "epochs": int, "n_train": int, "noisy_accuracy": _NUMBER,
    "label_precision": _NUMBER, "label_recall": _NUMBER, "estimated_noise_ratio": _NUMBER,
    "actual_noise_ratio": _NUMBER, "test_accuracy": (dict, *_NUMBER), "theory": dict,
    "incv": list, "fcorrection": dict, "lowest_val_loss_epoch": dict,
    "d2l_turning_epoch": _NUMBER, "d2l_final_alpha": _NUMBER}
_NESTED_NUMBERS = {"test_accuracy": ("model1", "model2", "mean"),
                   "theory": ("accuracy", "label_precision", "label_recall"),
                   "fcorrection": ("mean_abs_error",),
                   "lowest_val_loss_epoch": ("epoch", "test_accuracy")}
_INCV_NUMBERS = ("iteration", "selected", "candidates", "removed", "label_precision",
                 "label_recall")


def _type_problem(name, obj):
    """Why a hand-edited ``name``.json cannot be read into a table, or None when it can."""
    def bad(value, types):
        return value is not None and (isinstance(value, bool) or not isinstance(value, types))

    if not isinstance(obj, dict):
        return f"{name}.json holds a JSON {type(obj).__name__}, not an object"
    if name == "config":
        for key in ("args", "run"):
            if bad(obj.get(key), dict):
                return f"config.json: '{key}' is a {type(obj[key]).__name__}, not an object"
        return None
    for key, types in _SUMMARY_TYPES.items():
        if bad(obj.get(key), types):
            return f"summary.json: '{key}' is {json.dumps(obj[key])[:40]}, of the wrong type"
    if obj.get("method") is not None and bad(obj.get("test_accuracy"), dict):
        return "summary.json: 'test_accuracy' of an incv_train.py run must be an object"
    for key, fields in _NESTED_NUMBERS.items():
        if isinstance(obj.get(key), dict):
            for field in fields:
                if bad(obj[key].get(field), _NUMBER):
                    return (f"summary.json: '{key}.{field}' is "
                            f"{json.dumps(obj[key][field])[:40]}, not a number")
    for it in obj.get("incv") or []:
        if not isinstance(it, dict) or any(bad(it.get(k), _NUMBER) for k in _INCV_NUMBERS):
            return "summary.json: 'incv' must be a list of objects with numeric fields"
    return None


def _read_run(path):
    """One run directory -> its record (see :func:`collect_runs`)."""
    files, status, reason = {}, "done", None
    for name in ("config", "summary"):
        f = os.path.join(path, name + ".json")
        try:
            files[name] = read_json(f) if os.path.isfile(f) else None
        except (OSError, ValueError) as err:
            files[name], status, reason = None, "unreadable", f"unreadable {name}.json: {err}"
        if files[name] is not None and _type_problem(name, files[name]):
            status, reason = "unreadable", _type_problem(name, files[name])
            files[name] = None
    summary, config = files["summary"], files["config"] or {}
    if summary is None and status == "done":
        status, reason = "partial", "unfinished: config.json but no summary.json"
    src, run, args = summary or {}, config.get("run") or {}, config.get("args") or {}

    def get(key, fallback=None):
        return src.get(key, run.get(key, fallback))

    dataset = src.get("dataset") or (dataset_name(args["dataset"]) if "dataset" in args else None)
    method = get("method")
    return {"path": path, "status": status, "reason": reason, "summary": summary,
            "kind": "train" if method is not None else "cv", "method": method,
            "variant": _variant(args, method),
            "dataset": dataset, "arch": get("arch", args.get("arch")),
            # an --incv_only run trains no final networks: its --epochs means nothing
            "epochs": None if args.get("incv_only") else get("epochs", args.get("epochs")),
            "n_train": src.get("n_train", config.get("n_train")), "pattern": get("pattern"),
            "ratio": get("ratio"), "seed": get("seed"),
            # --image_size (CIFAR downsampled, an image folder's side); older runs: 32
            "image_size": args.get("image_size", 32),
            # the method's own flags that an older config lacks count at their defaults
            # (as in _variant), so a run from before a flag existed is no "differing" seed
            "flags": {**{k: d for k, (owner, d) in _OWNER.items() if owner == method},
                      **{k: v for k, v in args.items()
                         if k not in _GRID_FLAGS and not _foreign(k, method)}}}


# Options that make a run a variant of its method (not a seed of it): flag -> (default,
# label). Runs with a non-default value get their own rows, labelled.
_VARIANTS = {"selection": ("fused", "authors' selection"),
             "incv_optimizer": ("fresh", "Adam state carried")}
# The flags of one method each (algorithms.FLAGS, defaults there): flag -> the label of a
# non-default value ("<flag> <value>" for a flag not listed). They split only their own
# method's runs: a Standard run made under --mentornet_variant self_paced is the same run.
_METHOD_VARIANTS = {
    "fcorrection_T": {"true": "true T", "ncv": "T from the noisy-CV ratio"}.get,
    "fcorrection_percentile": "T at percentile {:g}".format,
    "fcorrection_val_split": "validation split {:g}".format,
    "decoupling_min_batch": "rho {:g}".format,
    "mentornet_variant": {"self_paced": "self-paced"}.get,
    "mentornet_percentile": "p {:g}".format,
    "mentornet_decay": "decay {:g}".format,
    "mentornet_dropout": "dropout {}".format,
    "d2l_init_epoch": "init epoch {:g} of 200".format,
    "d2l_window": "window {}".format,
    "d2l_rollback": {"reference": "reference's no-op rollback"}.get,
    "incv_forget_rate": {"true_noise_of_s": "oracle forget rate: S's true noise",
                         "true_ratio": "forget rate from the true noise ratio"}.get}
_OWNER = {name: (method, default) for method, specs in METHOD_FLAGS.items()
          for name, _, default, *_ in specs}


def _variant(args, method=None):
    """" (authors' selection)" etc. for a run with a non-default variant flag, else "";
    a method's own flags (:data:`_METHOD_VARIANTS`) count for that method's runs only."""
    labels = [label for flag, (default, label) in _VARIANTS.items()
              if args.get(flag, default) != default]
    for flag, (owner, default) in _OWNER.items():
        value = args.get(flag, default)
        if owner == method and value != default:
            try:
                label = _METHOD_VARIANTS.get(flag, lambda v: None)(value)
            except (TypeError, ValueError):  # a hand-edited value ("{:g}" of a string)
                label = None
            labels.append(label or f"{flag} {value}")
    return f" ({', '.join(labels)})" if labels else ""


def _foreign(flag, method):
    """Whether ``flag`` is another method's own flag (it says nothing about this run)."""
    return flag in _OWNER and _OWNER[flag][0] != method


def _group(r):
    return r["kind"], r["dataset"], r["arch"], r["epochs"], r["n_train"], r["image_size"]


def _cell(r):
    return _group(r) + (r["pattern"], r["ratio"], r["method"], r["variant"])


def _method_label(method, variant):
    return METHOD_LABELS.get(method, method) + variant


def collect_runs(paths):
    """Every run directory (holding summary.json or config.json) under ``paths``.

    Parameters
    ----------
    paths : list of str
        Result folders, searched recursively; a run reached twice is read once.

    Returns
    -------
    list of dict
        One per run directory, sorted by path: ``path``, ``status`` ("done", "partial":
        no summary.json, "unreadable", "duplicate": same setting and seed as an earlier
        finished run), ``reason`` (None when done), ``summary``, ``kind`` ("train":
        incv_train.py, "cv": noisy_cv.py) and the run's identity: dataset, arch, epochs,
        n_train, pattern, ratio, method (None for cv), seed, flags (config.json's other
        flags). Runs are averaged only within one (kind, dataset, arch, epochs, n_train,
        image_size).

    Raises
    ------
    FileNotFoundError
        A path does not exist or is not a directory.
    ValueError
        A path holds no run directory.
    """
    dirs = {}
    for p in paths:
        if not os.path.isdir(p):
            raise FileNotFoundError(f"table: '{p}' " + (
                "is not a directory" if os.path.exists(p) else "does not exist"))
        found = {os.path.dirname(f) for name in ("summary.json", "config.json") for f in
                 glob.glob(os.path.join(glob.escape(p), "**", name), recursive=True)}
        if not found:
            raise ValueError(f"table: no runs under '{p}' (no summary.json or config.json)")
        for d in found:
            dirs.setdefault(os.path.realpath(d), os.path.normpath(d))
    runs, first = [_read_run(d) for d in sorted(dirs.values())], {}
    for r in runs:
        if r["status"] == "done":
            key = _cell(r) + (r["seed"],)
            if key in first:
                r["status"] = "duplicate"
                r["reason"] = f"duplicate: same setting and seed as {first[key]}"
            first.setdefault(key, r["path"])
    return runs


def _label(group):
    kind, dataset, arch, epochs, n_train, size = group
    length = "selection only" if kind == "train" and epochs is None else f"{epochs} epochs"
    pixels = "" if size == 32 else f" / {size}x{size} images"
    return f"{dataset} / {arch} / {length} / n_train {n_train}{pixels}"


def _setting(pattern, ratio):
    if ratio is None:  # labels as given ("given"), a matrix file ("T-<stem>"): no ratio
        return str(pattern)
    return f"{pattern} {ratio:g}" if isinstance(ratio, (int, float)) else f"{pattern} {ratio}"


def _order(key):
    """Sort key for (group, pattern, ratio, ...) tuples: sym before asym, ratio ascending."""
    group, pattern, ratio, *rest = key
    return (str(group), pattern != "sym", str(pattern), ratio if ratio is not None else -1,
            [str(x) for x in rest])


def _mean(values):
    v = [float(x) for x in values if x is not None]
    return float(np.mean(v)) if v else None


def _put(row, name, values, scale=1.0):
    """Set row[name_mean], row[name_std] (sample std, ddof=1; None when n < 2) over the
    non-null values, and row[name_n] only when nulls made that count differ from row's n."""
    v = [scale * float(x) for x in values if x is not None]
    row[f"{name}_mean"] = float(np.mean(v)) if v else None
    row[f"{name}_std"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
    if len(v) != row["n"]:
        row[f"{name}_n"] = len(v)
    return row


def _cells(runs, kind, key, keep=lambda r: True):
    cells = {}
    for r in runs:
        if r["status"] == "done" and r["kind"] == kind and keep(r):
            cells.setdefault(key(r), []).append(r)
    return sorted(cells.items(), key=lambda kv: _order(kv[0]))


def table_accuracy(runs):
    """The paper's main table, long format: one row per (group, setting, method) with the
    final clean test accuracy (%) of network 1 over seeds, plus the paper's CIFAR-10 rows
    (source "paper") for the settings measured on cifar10."""
    def has_acc(r):
        return (r["summary"].get("test_accuracy") or {}).get("model1") is not None

    rows = []
    for (group, pattern, ratio, method, variant), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["method"],
                                      r["variant"]), has_acc):
        keys = set().union(*(r["flags"] for r in rs))
        mixed = sorted(k for k in keys if len({json.dumps(r["flags"].get(k)) for r in rs}) > 1)
        notes = ["runs differ in " + ", ".join(mixed)] if mixed else []
        if any((r["summary"].get("data_provenance") or {}).get("official") is False
               for r in rs):
            notes.append("not the official CIFAR files (md5 differs: data_provenance)")
        row = {"table": "accuracy", "group": _label(group), "dataset": group[1],
               "setting": _setting(pattern, ratio), "method": _method_label(method, variant),
               "source": "measured", "n": len(rs),
               "seeds": " ".join(str(s) for s in sorted(r["seed"] for r in rs)),
               "note": "; ".join(notes)}
        rows.append(_put(row, "accuracy",
                         [r["summary"]["test_accuracy"]["model1"] for r in rs], 100.0))
        # Final epoch, mean of both networks (Standard: network 1); older summaries lack it.
        _put(row, "accuracy_both", [_mean_of_nets(r["summary"]["test_accuracy"]) for r in rs],
             100.0)
        if group[1] in BEST_EPOCH_CAPTIONS:  # a view beside the final epoch, not a result
            _put(row, "accuracy_best_epoch", [_best_logged(r["path"], "test_accuracy_model1")
                                              for r in rs], 100.0)
    for label in dict.fromkeys(r["group"] for r in rows):
        # the ranking table (table_ranking) ranks exactly these columns: one test for both
        found = {r["setting"] for r in rows if r["group"] == label
                 and has_paper_numbers(r["dataset"], r["setting"])}
        for name, values in PAPER_CIFAR10.items():
            rows += [{"table": "accuracy", "group": label, "dataset": "cifar10",
                      "setting": setting, "method": f"{name} (paper)", "source": "paper",
                      "n": PAPER_RUNS, "accuracy_mean": m, "accuracy_std": s,
                      "note": "arXiv:1905.05040, Table 1"}
                     for setting, (m, s) in zip(PAPER_SETTINGS, values) if setting in found]
    for label, dataset in dict.fromkeys((r["group"], r["dataset"]) for r in rows
                                        if r["dataset"] in CIFAR_N_DATASETS):
        found = {r["setting"] for r in rows if r["group"] == label and r["source"] == "measured"}
        for setting in sorted(found):
            for method, (m, s, source) in CIFAR_N_PUBLISHED.get((dataset, setting), {}).items():
                rows.append({"table": "accuracy", "group": label, "dataset": dataset,
                             "setting": setting,
                             "method": f"{CIFAR_N_METHOD_LABELS[method]} {CIFAR_N_LABEL}",
                             "source": "published", "n": None, "accuracy_mean": m,
                             "accuracy_std": s, "note": f"{CIFAR_N_PROTOCOL}; {source}",
                             "published_source": source})
    return rows


def _best_logged(run_dir, key):
    """The largest ``key`` over the rows of the run's log.jsonl (None when absent): a
    test-set-chosen epoch, shown only beside published best-epoch figures."""
    try:
        values = [row.get(key) for row in read_jsonl(os.path.join(run_dir, "log.jsonl"))]
    except (OSError, ValueError):
        return None
    values = [v for v in values if isinstance(v, (int, float))]
    return max(values) if values else None


def _mean_of_nets(acc):
    """Final-epoch test accuracy averaged over the run's networks (summary ``mean``, else
    recomputed from ``model1`` / ``model2``)."""
    if acc.get("mean") is not None:
        return acc["mean"]
    nets = [acc[k] for k in ("model1", "model2") if acc.get(k) is not None]
    return sum(nets) / len(nets) if nets else None


def table_selection(runs):
    """INCV per iteration: mean (and std) over seeds of |S|, |C|, removed, LP and LR."""
    its = {}
    for (group, pattern, ratio, variant), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["variant"]),
            lambda r: bool(r["summary"].get("incv"))):
        for r in rs:
            for it in r["summary"]["incv"]:
                its.setdefault((group, pattern, ratio, variant, it.get("iteration")),
                               []).append(it)
    rows = []
    for (group, pattern, ratio, variant, iteration), xs in sorted(
            its.items(), key=lambda kv: _order(kv[0])):
        row = {"table": "incv_selection", "group": _label(group),
               "setting": _setting(pattern, ratio) + variant, "iteration": iteration,
               "n": len(xs)}
        for k in ("selected", "candidates", "removed", "label_precision", "label_recall"):
            _put(row, k, [x.get(k) for x in xs])
        rows.append(row)
    return rows


def table_noise(runs):
    """Estimated (INCV's / Co-teaching's) vs actual noise ratio per setting and method."""
    rows = []
    for (group, pattern, ratio, method, variant), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["method"],
                                      r["variant"]),
            lambda r: "estimated_noise_ratio" in r["summary"]):
        row = {"table": "noise_ratio", "group": _label(group), "setting": _setting(
            pattern, ratio), "method": _method_label(method, variant), "n": len(rs)}
        for k in ("estimated_noise_ratio", "actual_noise_ratio"):
            _put(row, k, [r["summary"].get(k) for r in rs])
        rows.append(row)
    return rows


def table_noisy_cv(runs):
    """noisy_cv.py: measured vs theoretical held-out accuracy (w.r.t. noisy labels), LP
    and LR per setting, and the estimated vs actual noise ratio."""
    rows = []
    for (group, pattern, ratio), rs in _cells(
            runs, "cv", lambda r: (_group(r), r["pattern"], r["ratio"])):
        s = [r["summary"] for r in rs]
        row = {"table": "noisy_cv", "group": _label(group), "setting": _setting(pattern, ratio),
               "n": len(rs)}
        for name, key in (("accuracy", "noisy_accuracy"), ("label_precision",) * 2,
                          ("label_recall",) * 2):
            _put(row, name, [x.get(key) for x in s])
            row[f"{name}_theory"] = _mean((x.get("theory") or {}).get(name) for x in s)
        for k in ("estimated_noise_ratio", "actual_noise_ratio"):
            _put(row, k, [x.get(k) for x in s])
        # The theory's regime: a network that fits the noisy labels (training accuracy near
        # 1) and still generalises the clean signal (held-out accuracy w.r.t. true labels).
        _put(row, "train_accuracy", [_last_logged(r["path"], "accuracy") for r in rs])
        _put(row, "held_out_true_accuracy", [x.get("held_out_true_accuracy") for x in s])
        rows.append(row)
    return rows


def _last_logged(run_dir, key):
    """``key`` in the last row of the run's log.jsonl (None when absent or unreadable)."""
    try:
        rows = read_jsonl(os.path.join(run_dir, "log.jsonl"))
    except (OSError, ValueError):
        return None
    return rows[-1].get(key) if rows else None


SELECTOR_LABELS = {"incv": "INCV", "cl": "confident learning", "ncv": "noisy CV rule"}


def table_selectors(runs):
    """The selectors side by side (incv_train.py incv / cl / ncv): per setting and selector,
    |S|, |C|, LP and LR of the final selection over seeds (``summary.selection``)."""
    rows = []
    # a variant (e.g. the oracle forget rate's re-run of the same selection) is its own row,
    # never a further seed of the default one
    for (group, pattern, ratio, method, variant), rs in _cells(
            runs, "train", lambda r: (_group(r), r["pattern"], r["ratio"], r["method"],
                                      r["variant"]),
            lambda r: r["method"] in SELECTOR_LABELS and bool(r["summary"].get("selection"))):
        row = {"table": "selectors", "group": _label(group), "setting": _setting(
            pattern, ratio), "method": SELECTOR_LABELS[method] + variant, "n": len(rs)}
        for k in ("selected", "candidates", "label_precision", "label_recall"):
            _put(row, k, [r["summary"]["selection"].get(k) for r in rs])
        rows.append(row)
    return rows


def table_noise_estimates(runs):
    """Every noise estimator per setting: the paper's (held-out accuracy into the inverted
    formula, on all out-of-sample probabilities), confident learning's, INCV's own (its
    first half, as the authors), and the actual ratio; for noisy_cv.py runs also the mean
    absolute difference of M and of CL's matrix to the empirical T. Runs of one seed that
    share the same probabilities (INCV, cl, ncv) count once."""
    per_seed = {}
    for r in runs:
        if r["status"] != "done" or not (r["summary"] or {}).get("noise_estimates"):
            continue
        key = (r["kind"], _group(r), r["pattern"], r["ratio"])
        seen = per_seed.setdefault(key, {})
        est = dict(r["summary"]["noise_estimates"])
        # runs made before the estimates had one name each: "paper" was held_out_formula,
        # INCV's e (its first half) only the summary's estimated_noise_ratio
        if "paper" in est:
            est.setdefault("held_out_formula", est.pop("paper"))
        if r["method"] == "incv":
            est.setdefault("incv_first_half", r["summary"].get("estimated_noise_ratio"))
        seen.setdefault(r["seed"], {}).update({k: v for k, v in est.items()
                                               if v is not None})
    rows = []
    for (kind, group, pattern, ratio), seeds in sorted(
            per_seed.items(), key=lambda kv: _order((kv[0][1],) + kv[0][2:])):
        xs = list(seeds.values())
        row = {"table": "noise_estimates", "group": _label(group), "script": {
            "train": "incv_train.py", "cv": "noisy_cv.py"}[kind],
            "setting": _setting(pattern, ratio), "n": len(xs)}
        for k in ("held_out_formula", "confident_learning", "incv_first_half", "actual",
                  "confusion_to_T_mad", "cl_noise_matrix_to_T_mad"):
            _put(row, k, [x.get(k) for x in xs])
        rows.append(row)
    return rows


# The classes of CIFAR-10 in label order (batches.meta), for naming where the noise goes.
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
FLOWS_SHOWN = 6  # the largest off-diagonal entries of the empirical T per setting


def table_flows(runs):
    """Where the noise goes: per setting, the largest off-diagonal entries of the empirical
    T (P(noisy = j | true = i)) beside the held-out confusion M (P(prediction = j | true =
    i)) and confident learning's matrix at the same cell, averaged over seeds (runs of one
    seed sharing their probabilities count once). The paper's theory: M approaches T."""
    per_seed = {}
    for r in runs:
        est = (r["summary"] or {}).get("noise_estimates") if r["status"] == "done" else None
        if not est or est.get("empirical_T") is None or est.get("confusion") is None:
            continue
        key = (r["kind"], _group(r), r["pattern"], r["ratio"])
        per_seed.setdefault(key, {}).setdefault(r["seed"], est)
    rows = []
    for (kind, group, pattern, ratio), seeds in sorted(
            per_seed.items(), key=lambda kv: _order((kv[0][1],) + kv[0][2:])):
        ests = list(seeds.values())
        T, M = (np.mean([np.asarray(e[k], float) for e in ests], axis=0)
                for k in ("empirical_T", "confusion"))
        cls = [e["cl_noise_matrix"] for e in ests if e.get("cl_noise_matrix") is not None]
        CL = np.nanmean([np.asarray(m, float) for m in cls], axis=0) if cls else None
        names = (CIFAR10_CLASSES if group[1] in ("cifar10", "cifar10n") and len(T) == 10
                 else [str(i) for i in range(len(T))])
        off = [(T[i, j], i, j) for i in range(len(T)) for j in range(len(T)) if i != j]
        for t, i, j in sorted(off, reverse=True)[:FLOWS_SHOWN]:
            rows.append({"table": "flows", "group": _label(group),
                         "script": {"train": "incv_train.py", "cv": "noisy_cv.py"}[kind],
                         "setting": _setting(pattern, ratio), "n": len(ests),
                         "flow": f"{names[i]} -> {names[j]}", "T": float(t),
                         "M": float(M[i, j]),
                         "CL": None if CL is None or np.isnan(CL[i, j]) else float(CL[i, j]),
                         "T_row_noise": float(1 - T[i, i]), "M_row_error": float(1 - M[i, i])})
    return rows


def table_not_included(runs):
    """Runs left out of a table, and why: unfinished, unreadable, duplicate, no test
    accuracy (--incv_only), or a seed that other settings of the same group have."""
    rows = [{"table": "not_included", "path": r["path"], "reason": r["reason"]}
            for r in runs if r["status"] != "done"]
    for r in runs:
        if r["status"] == "done" and r["kind"] == "train":
            acc = r["summary"].get("test_accuracy")
            if acc is None or acc.get("model1") is None:
                rows.append({"table": "not_included", "path": r["path"], "reason": (
                    "no test accuracy (--incv_only run): in the selection tables only"
                    if acc is None else "test_accuracy.model1 is null")})
    seeds, cells = {}, {}
    for r in runs:
        if r["seed"] is not None and r["status"] != "unreadable":
            seeds.setdefault(_group(r), set()).add(r["seed"])
            cells.setdefault(_cell(r), {})[r["seed"]] = r["path"]
    for cell, have in sorted(cells.items(), key=lambda kv: str(kv[0])):
        for s in sorted(seeds[cell[:6]] - set(have)):
            rows.append({"table": "not_included", "path": os.path.join(
                os.path.dirname(next(iter(have.values()))), f"seed{s}"),
                "reason": f"missing seed {s}: other settings of {_label(cell[:6])} have it"})
    return rows


def build_tables(runs):
    """All tables of a report: {name: rows}, in report order."""
    accuracy = table_accuracy(runs)
    return {"accuracy": accuracy, "ranking": table_ranking(accuracy),
            "diagnostics": table_diagnostics(runs),
            "incv_selection": table_selection(runs),
            "noise_ratio": table_noise(runs), "noisy_cv": table_noisy_cv(runs),
            "selectors": table_selectors(runs), "noise_estimates": table_noise_estimates(runs),
            "flows": table_flows(runs), "not_included": table_not_included(runs)}


def write_curves(runs, path):
    """Overlay the per-epoch clean test accuracy of every finished incv_train.py run in
    ``runs`` (e.g. ``--selection fused`` beside ``authors``) in one figure at ``path``: every
    method present in its own colour, labelled with Table 1's row names, in its row order.

    Raises
    ------
    ValueError
        No finished run with a per-epoch test accuracy log.
    """
    from . import plots

    rank = list(METHOD_LABELS)

    def order(r):  # setting, then Table 1's row order (the legend's order)
        method = rank.index(r["method"]) if r["method"] in rank else len(rank)
        return (_order((_label(_group(r)), r["pattern"], r["ratio"])), method, str(r["method"]),
                r["variant"], r["seed"] is None, r["seed"] or 0)

    curves, panels = [], {}
    for r in sorted((r for r in runs if r["status"] == "done" and r["kind"] == "train"),
                    key=order):
        log = os.path.join(r["path"], "log.jsonl")
        if not os.path.isfile(log):
            continue
        rows = read_jsonl(log)
        if any(row.get("test_accuracy_model1") is not None for row in rows):
            setting, method = _setting(r["pattern"], r["ratio"]), _method_label(r["method"],
                                                                                 r["variant"])
            curves.append((f"{setting}, {method}, seed {r['seed']}", rows))
            panels.setdefault((_label(_group(r)), setting), {}).setdefault(method, []).append(rows)
    if not curves:
        raise ValueError("table: --curves: no finished incv_train.py run with a test accuracy "
                         "log (log.jsonl) under the given paths")
    groups = sorted({_label(_group(r)) for r in runs if r["status"] == "done"
                     and r["kind"] == "train"})
    if any(len(seeds) > 1 for methods in panels.values() for seeds in methods.values()):
        # several seeds: Fig. 4 with the seeds as thin lines, a panel per setting
        panels = {(s if len(groups) == 1 else f"{g}, {s}"): m for (g, s), m in panels.items()}
        plots.plot_seed_curves(panels, path, "; ".join(groups))
    else:
        plots.plot_curves(curves, path, "; ".join(groups))


def _table_main(args):
    runs = collect_runs(args.paths)
    if args.curves:
        write_curves(runs, args.curves)
        print(f"wrote {args.curves}", file=sys.stderr)
    tables = build_tables(runs)
    texts = {"markdown": [format_markdown(tables)], "csv": [format_csv(tables)],
             "both": [format_markdown(tables), format_csv(tables)]}[args.format]
    if args.out is None:
        print("\n".join(texts) if args.format != "both" else
              texts[0] + "\n```csv\n" + texts[1] + "```", end="")
        return
    base = os.path.splitext(args.out)[0]
    outs = [base + ".md", base + ".csv"] if args.format == "both" else [args.out]
    for path, text in zip(outs, texts):
        with atomic_write(path) as f:
            f.write(text)
        print(f"wrote {path}", file=sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description="Tables from the runs (summary.json / config.json) under each PATH; "
                    "unfinished and missing runs are listed, never averaged in.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="results folder(s)")
    p.add_argument("--format", choices=("markdown", "csv", "both"), default="markdown",
                   help="output format (both: Markdown, then the CSV)")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write FILE atomically instead of stdout (with --format both: "
                        "FILE's stem + .md and + .csv)")
    p.add_argument("--curves", metavar="PNG", default=None,
                   help="also write a figure of the per-epoch clean test accuracy of every "
                        "finished incv_train.py run found: both networks of each run overlaid, "
                        "or, when a method has several seeds, a panel per setting with network "
                        "1 of each seed thin and their mean bold")
    return p.parse_args(argv)


def main(args):
    return _table_main(args)


def entry_point():
    """The console command (``pip install .``): parse, run, exit with the status."""
    sys.exit(cli(main, parse_args()))


if __name__ == "__main__":
    entry_point()
