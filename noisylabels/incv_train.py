"""INCV clean-sample selection, then the modified Co-teaching (Chen et al. 2019, sec. 3-4).

INCV (Iterative Noisy Cross-Validation) splits the candidate set C in halves, trains on the
selected set S plus one half (always from the same initial weights), predicts the other
half and moves the samples whose prediction equals their noisy label into S; with
symmetric noise it also drops the largest-loss candidates. The modified Co-teaching then
trains two networks on S, each on the small-loss samples its peer picked, joined by
batches from C after a warm-up. Baselines in the same script: plain Co-teaching (Han et
al. 2018) on the whole noisy set, and standard cross-entropy training.

Paper run (a GPU job; docs/speed.md has the run times)::

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

from . import (
    algorithms,
    devices,
    flags,
    grid,
    locks,
    metrics,
    noise,
    plots,
    preemption,
    selection,
    utils,
)
from .data import describe_provenance, split_halves
from .progress import done_line, incv_iteration_line

METHODS = ("incv", "cl", "ncv", "coteaching", "standard") + algorithms.ALGORITHMS
# The methods that train Co-teaching (the --selection flag applies to them).
COTEACHING_METHODS = ("incv", "cl", "ncv", "coteaching")
# Selectors judged on one 2-fold round's out-of-sample probabilities (selection.py).
ONE_ROUND_SELECTORS = ("cl", "ncv")
SELECTIONS = ("fused", "authors")  # coteaching.SELECTIONS (tests check they agree)
INCV_OPTIMIZERS = ("fresh", "carry")  # incv.INCV_OPTIMIZERS
# The paper's epochs, also coteaching.PAPER_EPOCHS and incv.PAPER_INCV_EPOCHS (which scale the
# schedules; tests check they agree): literals here so that --help needs no TensorFlow.
PAPER_EPOCHS, PAPER_INCV_EPOCHS = 200, 50


def incv_config(args):
    """The ``incv.INCVConfig`` of the flags."""
    from . import incv

    return flags.config_from(incv.INCVConfig, args, epochs="incv_epochs",
                             iterations="incv_iterations", optimizer="incv_optimizer",
                             parallel="incv_parallel")


def coteaching_config(args):
    """The ``coteaching.CoTeachingConfig`` of the flags."""
    from . import coteaching

    return flags.config_from(coteaching.CoTeachingConfig, args)


def run_one(args, data, method, pattern, ratio, seed, out, printer, T=None):
    """One run of ``method`` into ``out``; returns its summary.

    The labels, then the method's selection (INCV, a one-round selector), the baseline's
    forget rate or another method's preparation (``algorithms/``), then the training every
    method shares (``coteaching.train_two_networks``).
    """
    from . import coteaching  # Keras-based: loaded by main() after utils.load_backend()

    t0 = time.time()
    run = _run_labels(args, data, method, pattern, ratio, seed, out, T)
    plan, n = None, len(run["y_noisy"])
    if method in algorithms.ALGORITHMS:  # Table 1's other methods: their own preparation
        plan = algorithms.load(method).prepare(_method_context(args, data, run, printer))
        s_idx = np.arange(n) if plan.train_idx is None else plan.train_idx
        c_idx, forget, warmup = np.arange(0), 0.0, 0
    elif method == "incv" or method in ONE_ROUND_SELECTORS:  # a selection, then Co-teaching
        sets = _selected_sets(args, data, method, run, printer)
        if sets is None:  # --incv_only
            run["summary"]["seconds"] = round(time.time() - t0, 1)
            return run["summary"]
        s_idx, c_idx, forget, warmup = sets
    else:  # plain Co-teaching or standard training on the whole noisy set
        s_idx, c_idx, warmup = np.arange(n), np.arange(0), 0
        forget = _baseline_forget_rate(args, data, method, run, printer)
    if method in COTEACHING_METHODS or method == "standard":
        run["summary"]["forget_rate"] = forget
    rows = coteaching.train_two_networks(
        coteaching_config(args), data, run["y_noisy"], s_idx, c_idx, seed=seed,
        forget_rate=forget, warmup=warmup, out=out, printer=printer,
        standard=(method == "standard"), method=plan)
    summary = run["summary"]
    if plan is not None and plan.summarize is not None:
        summary.update(plan.summarize(rows))
    summary["test_accuracy"] = final_test_accuracy(rows)
    if "test_top5_accuracy_model1" in rows[-1]:  # more than 5 classes
        summary["test_top5_accuracy"] = final_test_accuracy(rows, key="test_top5_accuracy")
    summary["seconds"] = round(time.time() - t0, 1)
    plots.plot_test_curves(os.path.dirname(os.path.dirname(out)), seed,
                           os.path.join(out, "test_accuracy.png"),
                           f"{data.name}, {pattern} {'' if ratio is None else f'{ratio:g}'}, "
                           f"seed {seed}")
    return summary


def _selected_sets(args, data, method, run, printer):
    """INCV's or a one-round selector's S and C, and the modified Co-teaching's e_S and
    warm-up from its noise estimate: ``(s_idx, c_idx, forget_rate, warmup)``; None with
    ``--incv_only``."""
    from . import coteaching

    if method == "incv":
        st = _select_incv(args, data, run, printer)
    else:
        st = _select_one_round(args, data, run, printer)
    s_idx, c_idx = np.flatnonzero(st["selected"]), np.flatnonzero(st["candidate"])
    # e_S and the warm-up from the selector's e, the same for every selector (sec. 4)
    cot = coteaching.plan(st["eval_ratio"], noise_type=run["rules"],
                          num_classes=data.num_classes, epochs=args.epochs)
    run["summary"].update(expected_noise_of_selected=cot["forget_rate"],
                          warmup_epochs=cot["warmup"])
    if args.incv_only:
        return None
    if len(s_idx) == 0:
        raise ValueError(f"{method}'s selection S is empty in {run['out']} (no training "
                         "sample kept): nothing to train Co-teaching on. Train the "
                         "selection's networks longer (--incv_epochs) or check the labels")
    if method == "incv" and args.incv_forget_rate != "estimate":
        from_e = cot["forget_rate"]
        cot = oracle_plan(args.incv_forget_rate, y_noisy=run["y_noisy"], y_true=run["y_true"],
                          s_idx=s_idx, noise_type=run["rules"], num_classes=data.num_classes,
                          epochs=args.epochs, warmup=cot["warmup"])
        run["summary"].update(forget_rate_source=args.incv_forget_rate,
                              warmup_epochs=cot["warmup"])
        printer(f"--incv_forget_rate {args.incv_forget_rate}: forget rate "
                f"{cot['forget_rate']:.4f} (from e: {from_e:.4f}), warm-up to epoch "
                f"{cot['warmup']}")
    return s_idx, c_idx, cot["forget_rate"], cot["warmup"]


def oracle_plan(source, *, y_noisy, y_true, s_idx, noise_type, num_classes, epochs, warmup):
    """The modified Co-teaching's forget rate and warm-up from the clean labels: an oracle
    ablation that separates INCV's selection from the schedule its estimate e sets.

    Parameters
    ----------
    source : {"true_ratio", "true_noise_of_s"}
        ``true_ratio``: :func:`coteaching.plan` with the true noise ratio of the training
        set (mean of ``y_noisy != y_true``) in place of e (forget rate e_S and warm-up);
        ``true_noise_of_s``: the true noise ratio of S itself (1 - LP), the warm-up kept.
    y_noisy, y_true : ndarray of int, shape (n,)
    s_idx : ndarray of int, shape (|S|,)
        The selected set (non-empty).
    noise_type : {"sym", "asym"}
    num_classes, epochs, warmup : int
        ``warmup``: the one from e, kept by ``true_noise_of_s``.

    Returns
    -------
    dict
        ``forget_rate`` and ``warmup`` as :func:`coteaching.plan`.
    """
    from . import coteaching

    if y_true is None:
        raise ValueError(f"--incv_forget_rate {source} needs the clean labels, which these "
                         "labels as given lack: use --incv_forget_rate estimate")
    y_noisy, y_true = np.asarray(y_noisy), np.asarray(y_true)
    if source == "true_ratio":
        return coteaching.plan(float(np.mean(y_noisy != y_true)), noise_type=noise_type,
                               num_classes=num_classes, epochs=epochs)
    if source == "true_noise_of_s":
        s_idx = np.asarray(s_idx)
        return {"forget_rate": float(np.mean(y_noisy[s_idx] != y_true[s_idx])),
                "warmup": warmup}
    raise ValueError(f"unknown --incv_forget_rate {source!r}: choose estimate, true_ratio "
                     "or true_noise_of_s")


def _method_context(args, data, run, printer):
    """What a method's ``prepare`` reads (``algorithms/``): the flags, the data, the run's
    labels (``true_T``: the known transition matrix of synthetic noise, or None), where it
    writes, its summary, and plain Co-teaching's forget rate on demand."""
    import types

    return types.SimpleNamespace(
        args=args, data=data, config=coteaching_config(args), seed=run["seed"],
        out=run["out"], printer=printer, y_noisy=run["y_noisy"], y_true=run["y_true"],
        true_T=run["T"], rules=run["rules"], summary=run["summary"],
        strategy=devices.device_strategy(args.devices),
        forget_rate=lambda: _baseline_forget_rate(args, data, "coteaching", run, printer))


def _run_labels(args, data, method, pattern, ratio, seed, out, T):
    """A run's labels (noisy, clean if known, the authors' CSV column), its summary's head,
    and labels.npz; the labels of an ``--incv_results`` CSV for a reused INCV selection."""
    from . import incv

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
    if method in COTEACHING_METHODS:
        summary["coteaching_selection"] = args.selection
    if method == "incv" and not args.incv_results:
        summary["incv_optimizer"] = args.incv_optimizer
    y_true, y_noisy, T = noise.run_labels(data, pattern, ratio, seed=seed, T=T)
    if y_true is None:
        T = None
    # The authors' CSV has a clean-label column y: -1 where the clean labels are unknown.
    y_csv = y_true if y_true is not None else np.full(len(y_noisy), -1, np.int64)
    reused = None
    if args.incv_results and method == "incv":
        y_noisy, reused = incv.read_incv_csv(args.incv_results, y_csv,
                                             num_classes=data.num_classes)
    summary["actual_noise_ratio"] = (None if y_true is None
                                     else noise.actual_noise_ratio(y_true, y_noisy))
    utils.save_npz(os.path.join(out, "labels.npz"), y_noisy=y_noisy,
                   train_index=data.train_index,
                   **({} if y_true is None else {"y_true": y_true}))
    return {"y_true": y_true, "y_noisy": y_noisy, "y_csv": y_csv, "rules": rules, "T": T,
            "pattern": pattern, "ratio": ratio, "seed": seed, "out": out, "summary": summary,
            "reused_selection": reused}


def _select_incv(args, data, run, printer):
    """INCV's selection (resumable), its files, and its summary entries; or the selection
    of ``--incv_results``. Returns the selection state (``incv.incv_select``)."""
    from . import incv

    out, seed, y_noisy, y_true = run["out"], run["seed"], run["y_noisy"], run["y_true"]
    pattern, ratio = run["pattern"], run["ratio"]
    st = run["reused_selection"]
    if st is None:
        state_path = os.path.join(out, "incv_state.npz")
        if args.resume and os.path.isfile(state_path):
            st = incv.load_incv_state(state_path)
            printer(f"  resuming INCV after iteration {len(st['iterations'])}")
        st = incv.incv_select(
            y_noisy, num_classes=data.num_classes, pattern=run["rules"], seed=seed,
            iterations=args.incv_iterations, state=st, y_true=y_true,
            **incv.training_fns(incv_config(args), data, y_noisy, seed=seed, out=out,
                                printer=printer,
                                runs_done=2 * len(st["iterations"]) if st else 0),
            on_iteration=lambda s: (incv.save_incv_state(state_path, s), printer(
                "  " + incv_iteration_line(s["iterations"][-1], args.incv_iterations))))
        setting = pattern if ratio is None else f"{pattern}{ratio:g}"
        incv.write_incv_csv(os.path.join(out, f"{data.name}_{setting}_INCV_results.csv"),
                            run["y_csv"], y_noisy, st)
        if st["oos_probs"] is not None:  # out-of-sample, from INCV's first iteration
            utils.save_npz(os.path.join(out, "probabilities.npz"),
                           train_index=data.train_index, y_noisy=y_noisy,
                           probs=st["oos_probs"])
        if st["iterations"] and y_true is not None:  # LP / LR need clean labels
            plots.plot_incv(st["iterations"], os.path.join(out, "incv.png"),
                            f"INCV on {data.name}, {pattern} "
                            f"{'' if ratio is None else f'{ratio:g}'}")
    # Also for a reused selection (--incv_results: no held-out losses there).
    incv.write_cleaned_set(os.path.join(out, "cleaned_set.csv"),
                           index=data.train_index, given_label=y_noisy,
                           selected=st["selected"], candidate=st["candidate"],
                           heldout_loss=st.get("heldout_loss"),
                           path_column=data.train_paths, class_names=data.class_names)
    summary = run["summary"]
    if st.get("oos_probs") is not None and np.isfinite(st["oos_probs"]).all():
        summary["noise_estimates"] = {**selection.noise_estimates(
            st["oos_probs"], y_noisy, num_classes=data.num_classes, y_true=y_true),
            "incv_first_half": st["eval_ratio"]}
    summary.update(estimated_noise_ratio=st["eval_ratio"],
                   estimated_noise_ratio_is="incv_first_half" if st["iterations"]
                   else "incv_results_csv", incv=st["iterations"],
                   selection=_selection_metrics(y_true, y_noisy, st))
    return st


def _select_one_round(args, data, run, printer):
    """Confident learning's or the noisy-CV rule's selection from one 2-fold round's
    out-of-sample probabilities, its files and summary entries."""
    method, y_noisy, y_true = run["summary"]["method"], run["y_noisy"], run["y_true"]
    probs, source = out_of_sample_probs(args, data, y_noisy, seed=run["seed"], out=run["out"],
                                        printer=printer)
    st = selection.SELECTORS[method](probs, y_noisy, num_classes=data.num_classes)
    write_selection(run["out"], data, run["y_csv"], y_noisy, st, probs, method=method,
                    pattern=run["pattern"], ratio=run["ratio"])
    sel = _selection_metrics(y_true, y_noisy, st)
    run["summary"].update(
        estimated_noise_ratio=st["eval_ratio"],
        estimated_noise_ratio_is=selection.ESTIMATE_OF[method], probabilities_from=source,
        selection=sel, noise_estimates=selection.noise_estimates(
            probs, y_noisy, num_classes=data.num_classes, y_true=y_true))
    lp_lr = ("" if y_true is None else f", LP {sel['label_precision']:.4f}, LR "
             f"{sel['label_recall']:.4f}")
    printer(f"  {method}: |S| {sel['selected']}, |C| {sel['candidates']}{lp_lr}, "
            f"estimated noise {st['eval_ratio']:.4f}")
    return st


def _baseline_forget_rate(args, data, method, run, printer):
    """Plain Co-teaching's forget rate: ``--forget_rate``, or the noise ratio estimated as
    INCV's first step does (train on one half, predict the other); 0 for standard training."""
    from . import incv

    if method == "standard":
        return 0.0
    if args.forget_rate is not None:
        return args.forget_rate
    y_noisy, seed = run["y_noisy"], run["seed"]
    half, held = split_halves(len(y_noisy), rng=utils.rng_for(seed, "split"),
                              larger_first=True, sort=True)
    probs = incv.make_incv_train_fn(incv_config(args), data, y_noisy, seed=seed, out=run["out"],
                                    printer=printer)(half, held, True, "noise-estimate")
    forget = noise.estimate_noise_ratio((probs.argmax(1) == y_noisy[held]).mean(),
                                        data.num_classes)
    run["summary"].update(estimated_noise_ratio=forget,
                          estimated_noise_ratio_is="coteaching_half_run")
    return forget


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


# The flags that cannot change the probabilities of INCV's first 2-fold round: where results
# go and how progress is shown, the grid (the labels and the seed's run directory are
# compared directly), and what acts only after that round (later iterations, Co-teaching,
# reusing a selection). Every other flag, a new one included, must match for --method cl /
# ncv to reuse an INCV run's probabilities.
_NOT_OOS_FLAGS = frozenset(flags.BOOKKEEPING_FLAGS) - {"devices", "data_dir", "no_download"} \
    | set(flags.GRID_FLAGS) | {"epochs", "incv_iterations", "tk", "forget_rate", "selection",
                              "keep_optimizer_state", "incv_only", "incv_results"} \
    | {spec[0] for specs in algorithms.FLAGS.values() for spec in specs}  # other methods'


def oos_mismatches(theirs, ours):
    """The flags (name, theirs, ours) in which an INCV run's config.json ``args`` differ
    from this call's ``vars(args)`` in a way that can change its first round's
    probabilities; a flag the run did not record counts as its default (None / False)."""
    diffs = []
    for key, value in ours.items():
        if key in _NOT_OOS_FLAGS:
            continue
        old = theirs.get(key, None if value is not False else False)
        if utils.jsonable(old) != utils.jsonable(value):
            diffs.append((key, old, value))
    return diffs


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
        if not oos_mismatches(theirs, vars(args)):
            with np.load(npz) as f:
                if (np.array_equal(f["y_noisy"], y_noisy)
                        and np.array_equal(f["train_index"], data.train_index)
                        and np.isfinite(f["probs"]).all()):
                    printer(f"  out-of-sample probabilities: INCV's first iteration, {npz}")
                    return f["probs"], npz
    train_fn = incv.make_incv_train_fn(incv_config(args), data, y_noisy, seed=seed, out=out,
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
                        "et al. 2018 on the whole noisy set; standard = cross-entropy "
                        "training; Table 1's other rows: fcorrection = Patrini et al. 2017 "
                        "(forward loss, estimated T), decoupling = Malach & Shalev-Shwartz "
                        "2017, mentornet = Jiang et al. 2018 (MentorNet PD), d2l = Ma et al. "
                        "2018")
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
    algorithms.add_arguments(p)
    p.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last INCV iteration / epoch; "
                        "refused when a run's config.json records other flags, and an "
                        "error when no run of the grid has started")
    args = p.parse_args(argv)
    flags.check_run_arguments(p, args, positive=("epochs", "incv_epochs", "incv_iterations",
                                                  "batch_size"))
    if args.forget_rate is not None and not 0.0 <= args.forget_rate < 1.0:
        p.error(f"--forget_rate must be in [0, 1), got {args.forget_rate}")
    if args.selection == "authors" and args.devices == "all":
        p.error("--selection authors runs on one device: use --selection fused with "
                "--devices all, or --devices default")
    if args.incv_only and args.incv_results:
        p.error("--incv_only and --incv_results contradict each other: choose one")
    _check_method_arguments(p, args)
    flags.check_backend_arguments(p, args)
    return args


def _check_method_arguments(p, args):
    """The four methods' flags (algorithms.FLAGS): ranges and combinations, one line each."""
    new = [m for m in args.method if m in algorithms.ALGORITHMS]
    if new and args.devices == "all":
        p.error(f"--method {' '.join(new)} trains on one device: use --devices default")
    if not 0.0 < args.fcorrection_val_split < 1.0:
        p.error(f"--fcorrection_val_split must be in (0, 1), got {args.fcorrection_val_split}")
    if not 0.0 < args.fcorrection_percentile <= 100.0:
        p.error(f"--fcorrection_percentile must be in (0, 100], got "
                f"{args.fcorrection_percentile}")
    if not 0.0 < args.decoupling_min_batch <= 1.0:
        # 0 would divide a batch without disagreements by 0 (NaN weights)
        p.error(f"--decoupling_min_batch must be in (0, 1], got {args.decoupling_min_batch}")
    if not 0.0 < args.mentornet_percentile <= 1.0:
        p.error(f"--mentornet_percentile must be in (0, 1], got {args.mentornet_percentile}")
    if not 0.0 <= args.mentornet_decay < 1.0:
        p.error(f"--mentornet_decay must be in [0, 1), got {args.mentornet_decay}")
    try:
        algorithms.dropout_table(args.mentornet_dropout)
    except ValueError as err:
        p.error(str(err))
    if args.d2l_window < 2:
        p.error(f"--d2l_window must be at least 2 (a standard deviation), got "
                f"{args.d2l_window}")
    if args.d2l_init_epoch < 0:
        p.error(f"--d2l_init_epoch must be >= 0, got {args.d2l_init_epoch}")


def run_dir(args, dataset, pattern, ratio, method, seed):
    return os.path.join(args.results_dir, *noise.setting_dir(dataset, pattern=pattern,
                                                             ratio=ratio), method, f"seed{seed}")


def main(args):
    thread_record = flags.start_framework(args)  # threads, --backend, --precision
    from . import incv  # Keras-based: after load_backend()

    printer = print
    # checks --devices; runs build their models on it
    devices.run_strategy(args.devices, batch_size=args.batch_size, printer=printer)
    data = flags.load_training_data(args, printer)
    settings, T = flags.noise_plan(args, data, printer)
    if data.provenance is not None:
        printer(describe_provenance(data.provenance))
    # before --list_runs too: slurm.py lists a grid to submit it, so a grid that cannot run
    # is refused there instead of failing in every array task
    if "fcorrection" in args.method and args.fcorrection_T == "true" and not data.clean_known:
        raise ValueError("--fcorrection_T true needs the clean labels, which these labels "
                         "as given lack: use --fcorrection_T estimated or ncv")
    if "incv" in args.method and args.incv_forget_rate != "estimate" and not data.clean_known:
        raise ValueError(f"--incv_forget_rate {args.incv_forget_rate} needs the clean labels, "
                         "which these labels as given lack: use --incv_forget_rate estimate")
    runs = [(seed, pattern, ratio, method, run_dir(args, data.name, pattern, ratio, method, seed))
            for seed in args.seed for pattern, ratio in settings for method in args.method]
    # --task / --num_tasks (or a SLURM array task): this call's part of the grid, whole
    # (setting, seed) units, so cl / ncv find their INCV run's probabilities (grid.py)
    selected, listed = grid.plan_task(args, [dict(zip(("seed", "pattern", "ratio", "method",
                                                       "run_dir"), r)) for r in runs], printer)
    if args.list_runs:
        return listed
    runs = [runs[k] for k in selected]
    todo, summaries = utils.plan_runs([r[-1] for r in runs], skip_existing=args.skip_existing,
                                      overwrite=args.overwrite, resume=args.resume,
                                      printer=printer)
    flags.check_resume(args, [(r[-1], dict(zip(("seed", "pattern", "ratio", "method"), r)))
                              for r in runs], threads=thread_record,
                             allow_none=grid.is_task(args))
    if args.incv_results and "incv" in args.method:  # checked before any run directory
        # the CSV's clean-label column y is -1 where the clean labels are unknown
        incv.read_incv_csv(args.incv_results, data.y_train if data.clean_known else
                           np.full(len(data.y_train), -1, np.int64),
                           num_classes=data.num_classes)
    todo = [runs[k] for k in todo]
    locks.check_unlocked([r[-1] for r in todo])  # before anything is trained
    with preemption.installed():  # SIGTERM / SIGUSR1: stop after an epoch's checkpoint
        for k, (seed, pattern, ratio, method, out) in enumerate(todo, 1):
            with locks.RunLock(out, printer=printer):  # one process per run directory
                summaries.append(_run_locked(args, data, method, pattern, ratio, seed, out,
                                             printer, T, k=k, n=len(todo),
                                             threads=thread_record))
    return summaries


def _run_locked(args, data, method, pattern, ratio, seed, out, printer, T, *, k, n, threads=None):
    """One run of the grid loop, its lock held: directory, config (kept when resuming),
    :func:`run_one`, summary.json (last: it marks the run finished)."""
    resuming = args.resume and os.path.isfile(os.path.join(out, "config.json"))
    utils.prepare_run_dir(out, overwrite=args.overwrite, resume=args.resume)
    if not resuming:
        utils.write_json(os.path.join(out, "config.json"), utils.run_config(
            args, run={"method": method, "pattern": pattern, "ratio": ratio, "seed": seed,
                       "noise_type": noise.rule_pattern(pattern, args.noise_type)},
            n_train=int(len(data.y_train)), num_classes=data.num_classes,
            data_provenance=data.provenance, threads=threads,
            **flags.dataset_extras(data, out)))
    setting = pattern if ratio is None else f"{pattern} e={ratio:g}"
    printer(f"[{k}/{n}] {method} on {data.name} {setting} seed {seed} -> {out}")
    summary = run_one(args, data, method, pattern, ratio, seed, out, printer, T=T)
    utils.write_json(os.path.join(out, "summary.json"), summary)
    printer("  " + done_line(summary, out))
    return summary


def entry_point():
    """The console command (``pip install .``): parse, run, exit with the status."""
    sys.exit(utils.cli(main, parse_args()))


if __name__ == "__main__":
    entry_point()
