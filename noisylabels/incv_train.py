"""INCV clean-sample selection, then the modified Co-teaching (Chen et al. 2019, sec. 3-4).

INCV (Iterative Noisy Cross-Validation) splits the candidate set C in halves, trains on the
selected set S plus one half (always from the same initial weights), predicts the other
half and moves the samples whose prediction equals their noisy label into S; with
symmetric noise it also drops the largest-loss candidates. The modified Co-teaching then
trains two networks on S, each on the small-loss samples its peer picked, joined by
batches from C after a warm-up. Baselines in the same script: plain Co-teaching (Han et
al. 2018) on the whole noisy set, and standard cross-entropy training.

Paper run (a GPU job; see README for run times)::

    python incv_train.py --dataset cifar10 --noise_pattern sym --noisy_ratio 0.5

Small on a CPU::

    python incv_train.py --dataset digits --arch cnn --incv_epochs 20 --epochs 40 \
        --method incv coteaching standard
    python incv_train.py --dataset cifar10 --n_train 5000 --incv_epochs 3 --epochs 5

INCV beside confident learning (cleanlab) and the plain noisy-CV rule, on the same
out-of-sample predictions (INCV's first iteration), each followed by the same Co-teaching::

    python incv_train.py --dataset digits --arch cnn --incv_epochs 10 --epochs 30 \
        --method incv cl ncv

Just clean a dataset (selection only), or reuse a selection::

    python incv_train.py --dataset cifar10 --incv_only
    python incv_train.py --dataset cifar10 --incv_results results/.../cifar10_sym0.5_INCV_results.csv

Outputs per run: <results_dir>/<dataset>/<pattern>/<ratio>/<method>/seed<k>/ with
config.json, log.jsonl (one line per epoch), summary.json, the authors' per-sample CSV
(INCV), incv.png (LP/LR of S per iteration) and test_accuracy.png (every method found for
the same setting overlaid). A killed run continues with --resume.
"""

import argparse
import os
import sys
import time

import numpy as np

from . import devices, flags, metrics, noise, plots, selection, utils
from .data import describe_provenance, load_training_data, split_halves
from .progress import done_line, incv_iteration_line

METHODS = ("incv", "cl", "ncv", "coteaching", "standard")
# Selectors judged on one 2-fold round's out-of-sample probabilities (selection.py).
ONE_ROUND_SELECTORS = ("cl", "ncv")
SELECTIONS = ("fused", "authors")  # coteaching.SELECTIONS (tests check they agree)
INCV_OPTIMIZERS = ("fresh", "carry")  # incv.INCV_OPTIMIZERS
# The paper's epochs, also coteaching.PAPER_EPOCHS and incv.PAPER_INCV_EPOCHS (which scale the
# schedules; tests check they agree): literals here so that --help needs no TensorFlow.
PAPER_EPOCHS, PAPER_INCV_EPOCHS = 200, 50


def run_one(args, data, method, pattern, ratio, seed, out, printer, T=None):
    """One run of ``method`` into ``out``; returns its summary."""
    from . import (
        coteaching,  # Keras-based: loaded by main() after utils.load_backend()
        incv,
    )

    t0 = time.time()
    # Labels as given / a matrix file: the rules follow the declared --noise_type.
    rules = noise.rule_pattern(pattern, args.noise_type)
    summary = {"dataset": data.name, "method": method, "pattern": pattern, "ratio": ratio,
               "seed": seed, "arch": args.arch, "epochs": args.epochs,
               "n_train": int(len(data.y_train)), "noise_type": rules,
               "clean_labels_known": bool(data.clean_known)}
    if data.class_names:
        summary["class_names"] = list(data.class_names)
    import keras

    summary["backend"] = keras.backend.backend()  # --backend / KERAS_BACKEND, as run
    if data.provenance is not None:
        summary["data_provenance"] = data.provenance
    if method != "standard":
        summary["coteaching_selection"] = args.selection
    if method == "incv" and not args.incv_results:
        summary["incv_optimizer"] = args.incv_optimizer
    y_true, y_noisy, T = noise.run_labels(data, pattern, ratio, seed=seed, T=T)
    # The authors' CSV has a clean-label column y: -1 where the clean labels are unknown.
    y_csv = y_true if y_true is not None else np.full(len(y_noisy), -1, np.int64)
    if args.incv_results and method == "incv":
        y_noisy, st = incv.read_incv_csv(args.incv_results, y_csv, num_classes=data.num_classes)
    else:
        st = None
    summary["actual_noise_ratio"] = (None if y_true is None
                                     else noise.actual_noise_ratio(y_true, y_noisy))
    utils.save_npz(os.path.join(out, "labels.npz"), y_noisy=y_noisy,
                   train_index=data.train_index,
                   **({} if y_true is None else {"y_true": y_true}))
    n = len(y_noisy)
    s_idx, c_idx = np.arange(n), np.arange(0)

    if method == "incv":
        state_path = os.path.join(out, "incv_state.npz")
        if st is None:
            if args.resume and os.path.isfile(state_path):
                st = incv.load_incv_state(state_path)
                printer(f"  resuming INCV after iteration {len(st['iterations'])}")
            st = incv.incv_select(
                y_noisy, num_classes=data.num_classes, pattern=rules, seed=seed,
                iterations=args.incv_iterations, state=st, y_true=y_true,
                **_incv_training(args, data, y_noisy, seed=seed, out=out, printer=printer,
                                 runs_done=2 * len(st["iterations"]) if st else 0),
                on_iteration=lambda s: (incv.save_incv_state(state_path, s), printer(
                    "  " + incv_iteration_line(s["iterations"][-1],
                                                     args.incv_iterations))))
            setting = pattern if ratio is None else f"{pattern}{ratio:g}"
            incv.write_incv_csv(os.path.join(out, f"{data.name}_{setting}_INCV_results.csv"),
                                y_csv, y_noisy, st)
            if st["oos_probs"] is not None:  # out-of-sample, from INCV's first iteration
                utils.save_npz(os.path.join(out, "probabilities.npz"),
                               train_index=data.train_index, y_noisy=y_noisy,
                               probs=st["oos_probs"])
            if st["iterations"] and y_true is not None:  # LP / LR need clean labels
                plots.plot_incv(st["iterations"], os.path.join(out, "incv.png"),
                          f"INCV on {data.name}, {pattern} {'' if ratio is None else f'{ratio:g}'}")
        # Also for a reused selection (--incv_results: no held-out losses there).
        incv.write_cleaned_set(os.path.join(out, "cleaned_set.csv"),
                               index=data.train_index, given_label=y_noisy,
                               selected=st["selected"], candidate=st["candidate"],
                               heldout_loss=st.get("heldout_loss"),
                               path_column=data.train_paths,
                               class_names=data.class_names)
        if st.get("oos_probs") is not None and np.isfinite(st["oos_probs"]).all():
            summary["noise_estimates"] = selection.noise_estimates(
                st["oos_probs"], y_noisy, num_classes=data.num_classes, y_true=y_true)
        sel = _selection_metrics(y_true, y_noisy, st)
        summary.update(estimated_noise_ratio=st["eval_ratio"], incv=st["iterations"],
                       selection=sel)
    elif method in ONE_ROUND_SELECTORS:
        probs, source = out_of_sample_probs(args, data, y_noisy, seed=seed, out=out,
                                            printer=printer)
        st = selection.SELECTORS[method](probs, y_noisy, num_classes=data.num_classes)
        write_selection(out, data, y_csv, y_noisy, st, probs, method=method, pattern=pattern,
                        ratio=ratio)
        sel = _selection_metrics(y_true, y_noisy, st)
        summary.update(estimated_noise_ratio=st["eval_ratio"], probabilities_from=source,
                       selection=sel, noise_estimates=selection.noise_estimates(
                           probs, y_noisy, num_classes=data.num_classes, y_true=y_true))
        lp_lr = ("" if y_true is None else f", LP {sel['label_precision']:.4f}, LR "
                 f"{sel['label_recall']:.4f}")
        printer(f"  {method}: |S| {sel['selected']}, |C| {sel['candidates']}{lp_lr}, "
                f"estimated noise {st['eval_ratio']:.4f}")
    if method == "incv" or method in ONE_ROUND_SELECTORS:
        s_idx, c_idx = np.flatnonzero(st["selected"]), np.flatnonzero(st["candidate"])
        e = st["eval_ratio"]  # e_S and the warm-up from it, the same for every selector (sec. 4)
        forget = noise.expected_noise_of_selected(e, rules, data.num_classes)
        warmup = coteaching.warmup_epochs(rules, e, args.epochs)
        summary.update(expected_noise_of_selected=forget, warmup_epochs=warmup)
        if args.incv_only:
            summary["seconds"] = round(time.time() - t0, 1)
            return summary
    elif method == "coteaching":
        if args.forget_rate is not None:
            forget = args.forget_rate
        else:  # estimate e as INCV's first step does: train on one half, predict the other
            half, held = split_halves(n, rng=utils.rng_for(seed, "split"))
            probs = incv.make_incv_train_fn(args, data, y_noisy, seed=seed, out=out, printer=printer)(
                half, held, True, "noise-estimate")
            forget = noise.estimate_noise_ratio((probs.argmax(1) == y_noisy[held]).mean(),
                                                data.num_classes)
            summary["estimated_noise_ratio"] = forget
        warmup = 0
    else:
        forget, warmup = 0.0, 0
    summary["forget_rate"] = forget

    rows = coteaching.train_two_networks(args, data, y_noisy, s_idx, c_idx, seed=seed, forget_rate=forget,
                              warmup=warmup, out=out, printer=printer,
                              standard=(method == "standard"))
    summary["test_accuracy"] = final_test_accuracy(rows)
    if "test_top5_accuracy_model1" in rows[-1]:  # more than 5 classes
        summary["test_top5_accuracy"] = final_test_accuracy(rows, key="test_top5_accuracy")
    summary["seconds"] = round(time.time() - t0, 1)
    plots.plot_test_curves(os.path.dirname(os.path.dirname(out)), seed,
                     os.path.join(out, "test_accuracy.png"),
                     f"{data.name}, {pattern} {'' if ratio is None else f'{ratio:g}'}, "
                     f"seed {seed}")
    return summary


def _selection_metrics(y_true, y_noisy, st):
    """|S|, |C|, LP and LR of a selection state (LP / LR None where clean labels are unknown)."""
    sel = (metrics.selection_metrics(y_true, y_noisy, st["selected"]) if y_true is not None
           else {"label_precision": None, "label_recall": None,
                 "selected": int(st["selected"].sum())})
    return {**sel, "candidates": int(st["candidate"].sum())}


def final_test_accuracy(rows, *, key="test_accuracy"):
    """Final-epoch clean test accuracy of network 1, network 2 and their mean (the standard
    baseline: network 1 only, its mean is network 1). No epoch is chosen on the test set.

    Parameters
    ----------
    rows : list of dict
        The per-epoch log rows (``<key>_model1``, optionally ``<key>_model2``).
    key : str
        "test_accuracy", or "test_top5_accuracy" (logged when there are more than 5 classes).
    """
    last = rows[-1]
    accs = [last.get(f"{key}_{net}") for net in ("model1", "model2")]
    both = [a for a in accs if a is not None]
    return {"model1": accs[0], "model2": accs[1],
            "mean": float(sum(both) / len(both)) if both else None}


# The flags that make two runs' first INCV iteration the same computation.
_OOS_FLAGS = ("dataset", "data_dir", "n_train", "arch", "incv_epochs", "lr", "batch_size",
              "augment")


def out_of_sample_probs(args, data, y_noisy, *, seed, out, printer):
    """One 2-fold round's out-of-sample probabilities for ``--method cl`` / ``ncv``.

    INCV's first iteration is that round (same halves, same initial weights, same
    training): when the INCV run of the same setting and seed is finished with the same
    training flags and labels, its ``probabilities.npz`` is reused, so the selectors judge
    the very same predictions; otherwise the round is trained here. Returns (probs,
    where they came from).
    """
    from . import incv

    seed_dir = os.path.basename(out)
    sibling = os.path.join(os.path.dirname(os.path.dirname(out)), "incv", seed_dir)
    npz, cfg = os.path.join(sibling, "probabilities.npz"), os.path.join(sibling, "config.json")
    if os.path.isfile(npz) and os.path.isfile(os.path.join(sibling, "summary.json")) \
            and os.path.isfile(cfg):
        theirs = utils.read_json(cfg).get("args", {})
        if all(theirs.get(k) == getattr(args, k) for k in _OOS_FLAGS):
            with np.load(npz) as f:
                if (np.array_equal(f["y_noisy"], y_noisy)
                        and np.array_equal(f["train_index"], data.train_index)
                        and np.isfinite(f["probs"]).all()):
                    printer(f"  out-of-sample probabilities: INCV's first iteration, {npz}")
                    return f["probs"], npz
    train_fn = incv.make_incv_train_fn(args, data, y_noisy, seed=seed, out=out,
                                       printer=printer)
    probs = selection.cross_validation_probs(train_fn, len(y_noisy), data.num_classes,
                                             seed=seed)
    return probs, "trained: one 2-fold round (INCV's first iteration)"


def write_selection(out, data, y_csv, y_noisy, st, probs, *, method, pattern, ratio):
    """The files INCV writes, for a one-round selector: the authors' CSV columns (``y_csv``:
    the clean labels, -1 where unknown), cleaned_set.csv (held-out loss from ``probs``)
    and probabilities.npz."""
    from . import incv

    setting = pattern if ratio is None else f"{pattern}{ratio:g}"
    incv.write_incv_csv(os.path.join(out, f"{data.name}_{setting}_{method.upper()}_results.csv"),
                        y_csv, y_noisy, st)
    incv.write_cleaned_set(os.path.join(out, "cleaned_set.csv"), index=data.train_index,
                           given_label=y_noisy, selected=st["selected"],
                           candidate=st["candidate"],
                           heldout_loss=metrics.cross_entropy(probs, y_noisy),
                           path_column=data.train_paths, class_names=data.class_names)
    utils.save_npz(os.path.join(out, "probabilities.npz"), train_index=data.train_index,
                   y_noisy=y_noisy, probs=probs)


def _incv_training(args, data, y_noisy, *, seed, out, printer, runs_done=0):
    """``--incv_parallel``: INCV's two runs of an iteration side by side in one training
    step (pair) or one after the other (sequential). Sequential also under a multi-replica
    --devices, which the paired step does not split across replicas, and under
    ``--incv_optimizer carry``, where each run starts from the previous run's Adam state (a
    chain that two simultaneous runs cannot follow)."""
    from . import incv

    if args.incv_parallel == "pair" and args.incv_optimizer == "fresh" and \
            devices.device_strategy(args.devices).num_replicas_in_sync == 1:
        return {"train_pair_fn": incv.make_incv_train_pair_fn(args, data, y_noisy, seed=seed,
                                                              out=out, printer=printer)}
    return {"train_fn": incv.make_incv_train_fn(args, data, y_noisy, seed=seed, out=out,
                                                printer=printer, runs_done=runs_done)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flags.add_run_arguments(p, arch="resnet32",
                            arch_help="network for INCV and for training (the authors': "
                                      "ResNet-32)",
                            batch_help="batch size (of the S part in Co-teaching)")
    p.add_argument("--method", type=str, nargs="+", default=["incv"], choices=METHODS,
                   help="incv = INCV + modified Co-teaching; cl = confident learning's selection "
                        "(cleanlab) + the same Co-teaching; ncv = the plain noisy cross-"
                        "validation rule (prediction == label) + the same; coteaching = Han "
                        "et al. 2018 on the whole noisy set; standard = cross-entropy training")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS,
                   help="Co-teaching / standard epochs (lr drops, warm-up and Tk scale with it)")
    p.add_argument("--incv_epochs", type=int, default=PAPER_INCV_EPOCHS,
                   help="epochs of each INCV training run (its lr drops scale with it)")
    p.add_argument("--incv_iterations", type=int, default=4, help="INCV iterations")
    p.add_argument("--incv_parallel", type=str, default="pair", choices=("pair", "sequential"),
                   help="pair: train INCV's two runs of an iteration side by side in one "
                        "training step (same results up to float rounding order, faster); "
                        "sequential: one after the other")
    p.add_argument("--tk", type=float, default=10.0,
                   help="Co-teaching's Tk: epochs (of 200) over which the forget rate ramps up")
    p.add_argument("--forget_rate", type=float, default=None,
                   help="--method coteaching: forget rate (default: estimated noise ratio)")
    p.add_argument("--selection", type=str, default="fused", choices=SELECTIONS,
                   help="Co-teaching's small-loss picks: fused = from the training-mode pass "
                        "over the whole batch (one compiled pass); authors = as the authors' "
                        "predict() (inference mode) then train_on_batch on the picked samples "
                        "(BatchNorm statistics of the picks)")
    p.add_argument("--incv_optimizer", type=str, default="fresh", choices=INCV_OPTIMIZERS,
                   help="Adam state at the start of each INCV run: fresh = zeroed (Algorithm "
                        "1 restarts from the same initialisation); carry = the state of the "
                        "checkpoint the previous run ended with, as the authors' load_model "
                        "restored it (weights reset only)")
    p.add_argument("--keep_optimizer_state", action="store_true",
                   help="keep Adam's state at lr drops (the authors re-compiled: a fresh Adam)")
    p.add_argument("--incv_only", action="store_true",
                   help="stop after INCV selection (write the CSV; no Co-teaching)")
    p.add_argument("--incv_results", type=str, default=None,
                   help="CSV of an earlier INCV selection: skip INCV and train on it")
    p.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last INCV iteration / epoch; "
                        "refused when a run's config.json records other flags, and an "
                        "error when no run of the grid has started")
    args = p.parse_args(argv)
    flags.check_run_arguments(p, args, positive=("epochs", "incv_epochs", "incv_iterations",
                                                  "batch_size"))
    if args.forget_rate is not None and not 0.0 <= args.forget_rate < 1.0:
        p.error(f"--forget_rate must be in [0, 1), got {args.forget_rate}")
    if args.overwrite and args.resume:
        p.error("--overwrite and --resume contradict each other: choose one")
    if args.selection == "authors" and args.devices == "all":
        p.error("--selection authors runs on one device: use --selection fused with "
                "--devices all, or --devices default")
    if args.incv_only and args.incv_results:
        p.error("--incv_only and --incv_results contradict each other: choose one")
    flags.check_backend_arguments(p, args)
    return args


def run_dir(args, dataset, pattern, ratio, method, seed):
    return os.path.join(args.results_dir, *noise.setting_dir(dataset, pattern=pattern,
                                                             ratio=ratio), method, f"seed{seed}")


def main(args):
    utils.load_backend(args.backend)
    flags.set_precision(args.precision)
    from . import incv  # Keras-based: after load_backend()

    printer = print
    devices.run_strategy(args, printer)  # checks --devices; runs build their models on it
    data = load_training_data(args, printer)
    settings, T = flags.noise_plan(args, data, printer)
    if data.provenance is not None:
        printer(describe_provenance(data.provenance))
    runs = [(seed, pattern, ratio, method, run_dir(args, data.name, pattern, ratio, method, seed))
            for seed in args.seed for pattern, ratio in settings for method in args.method]
    todo, summaries = utils.plan_runs([r[-1] for r in runs], skip_existing=args.skip_existing,
                                      overwrite=args.overwrite, resume=args.resume,
                                      printer=printer)
    flags.check_resume(args, [(r[-1], dict(zip(("seed", "pattern", "ratio", "method"), r)))
                              for r in runs])
    if args.incv_results and "incv" in args.method:  # checked before any run directory
        # the CSV's clean-label column y is -1 where the clean labels are unknown
        incv.read_incv_csv(args.incv_results, data.y_train if data.clean_known else
                           np.full(len(data.y_train), -1, np.int64),
                           num_classes=data.num_classes)
    todo = [runs[k] for k in todo]
    for k, (seed, pattern, ratio, method, out) in enumerate(todo, 1):
        resuming = args.resume and os.path.isfile(os.path.join(out, "config.json"))
        utils.prepare_run_dir(out, overwrite=args.overwrite, resume=args.resume)
        if not resuming:
            utils.write_json(os.path.join(out, "config.json"), utils.run_config(
                args, run={"method": method, "pattern": pattern, "ratio": ratio, "seed": seed,
                           "noise_type": noise.rule_pattern(pattern, args.noise_type)},
                n_train=int(len(data.y_train)), num_classes=data.num_classes,
                data_provenance=data.provenance, **flags.dataset_extras(data, out)))
        setting = pattern if ratio is None else f"{pattern} e={ratio:g}"
        printer(f"[{k}/{len(todo)}] {method} on {data.name} {setting} seed {seed} -> {out}")
        summary = run_one(args, data, method, pattern, ratio, seed, out, printer, T=T)
        utils.write_json(os.path.join(out, "summary.json"), summary)
        printer("  " + done_line(summary, out))
        summaries.append(summary)
    return summaries


def entry_point():
    """The console command (``pip install .``): parse, run, exit with the status."""
    sys.exit(utils.cli(main, parse_args()))


if __name__ == "__main__":
    entry_point()
