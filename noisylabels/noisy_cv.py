"""Noisy cross-validation: the paper's theory check (Chen et al. 2019, sections 1-2).

Corrupt the training labels, split the noisy set into two random halves, train on one and
predict the other. A network that fits noisy labels reproduces the noise on unseen data,
so the held-out confusion matrix approaches the transition matrix T, and the held-out
accuracy, label precision (LP) and label recall (LR) of the "prediction == label" rule
approach closed forms of T. Each measured value is written beside its theory.

Paper run (a GPU job: ResNet-110, 200 epochs on 25k CIFAR-10 images)::

    python noisy_cv.py --noise_pattern sym --noisy_ratio 0.5

The paper's figure (both patterns, e = 0.0 ... 1.0), small on a CPU with embedded data::

    python noisy_cv.py --dataset digits --arch cnn --epochs 60 \
        --noise_pattern sym asym --noisy_ratio 0 0.1 0.2 0.3 0.4 0.5 0.6 0.7 0.8 0.9 1.0

CIFAR-10 at small scale::

    python noisy_cv.py --dataset cifar10 --n_train 5000 --epochs 3 --arch resnet32

Outputs: <results_dir>/<dataset>/<pattern>/<ratio>/seed<k>/ (config.json, labels.npz,
predictions.npz, log.jsonl, summary.json, confusion.png, noise_matrices.png) and, after the runs,
<results_dir>/<dataset>/noisy_cv_<arch>.png (+ .json) with every point of this call.
"""

import argparse
import os
import sys
import time

import numpy as np

from . import (
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
from .pipelines import resolve_augmentation

# Authors' theory-run schedule: Adam 1e-3, x0.1 after epoch 80, 0.01 after 120,
# 0.001 after 160, 0.0005 after 180 (of 200); scaled to --epochs.
LR_BOUNDARIES = (80, 120, 160, 180)
LR_FACTORS = (0.1, 0.01, 0.001, 0.0005)
PAPER_EPOCHS = 200


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    flags.add_run_arguments(p, arch="resnet110",
                            arch_help="network (the authors' theory run used ResNet-110)")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS,
                   help="training epochs (the lr schedule scales with it)")
    p.add_argument("--folds", type=int, default=1, choices=(1, 2),
                   help="1 = the paper's run (train on one half, predict the other); 2 = "
                        "also train the other half from the same initial weights, so every "
                        "training sample gets an out-of-sample prediction")
    p.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last finished epoch "
                        "(checkpoint.npz); refused when a run's config.json records other "
                        "flags, and an error when no run of the grid has started (but for "
                        "one --task of a split grid)")
    args = p.parse_args(argv)
    flags.check_run_arguments(p, args)
    flags.check_backend_arguments(p, args)
    return args


def run_dir(args, dataset, pattern, ratio, seed):
    return os.path.join(args.results_dir, *noise.setting_dir(dataset, pattern=pattern,
                                                             ratio=ratio), f"seed{seed}")


def summarize(*, y_true, y_noisy, idx_held, probs, test_probs, y_test, pattern, ratio,
              num_classes, T=None):
    """Held-out measurements next to their closed-form predictions (arXiv:1905.05040,
    sec. 2).

    ``T``: the matrix the noise was drawn from (default: the pattern's). Labels as given
    (and CIFAR-N's label sets) have none: the theory then uses the empirical T of the clean
    labels, and without clean
    labels (``y_true`` None) every measurement against them is None.
    """
    if y_true is None:
        return _summarize_without_clean_labels(y_noisy=y_noisy, idx_held=idx_held,
                                               probs=probs, test_probs=test_probs,
                                               y_test=y_test, num_classes=num_classes)
    yt, yn = y_true[idx_held], y_noisy[idx_held]
    pred = probs.argmax(1)
    selected = pred == yn
    sel = metrics.selection_metrics(yt, yn, selected)
    if T is None:
        T = (metrics.normalized_confusion(y_true, y_noisy, num_classes)
             if pattern not in noise.PATTERNS  # labels as given, CIFAR-N label sets
             else noise.transition_matrix(pattern, ratio, num_classes))
    prior = np.bincount(yt, minlength=num_classes)
    noisy_acc = float(selected.mean())
    return {
        "noisy_accuracy": noisy_acc,
        "label_precision": sel["label_precision"],
        "label_recall": sel["label_recall"],
        "selected": sel["selected"],
        "held_out_true_accuracy": float((pred == yt).mean()),
        "test_accuracy": float((test_probs.argmax(1) == y_test).mean()),
        "actual_noise_ratio": noise.actual_noise_ratio(y_true, y_noisy),
        "held_out_noise_ratio": noise.actual_noise_ratio(yt, yn),
        "estimated_noise_ratio": noise.estimate_noise_ratio(noisy_acc, num_classes),
        "confusion_matrix": metrics.normalized_confusion(yt, pred, num_classes),
        "transition_matrix": T,
        "empirical_transition_matrix": metrics.normalized_confusion(yt, yn, num_classes),
        "theory": {"accuracy": noise.expected_accuracy(T, prior),
                   "label_precision": noise.expected_label_precision(T, prior),
                   "label_recall": noise.expected_label_recall(T, prior)},
        "n_train": int(len(y_true)), "n_held_out": int(len(idx_held)),
        # the paper's and confident learning's estimates, M and CL's matrix vs. empirical T
        "noise_estimates": selection.noise_estimates(probs, yn, num_classes=num_classes,
                                                     y_true=yt),
        **top5_accuracy(test_probs, y_test),
    }


def top5_accuracy(probs, y):
    """``{"test_top5_accuracy": ...}`` when there are more than 5 classes, else {}."""
    if probs.shape[1] <= 5:
        return {}
    return {"test_top5_accuracy": metrics.top_k_accuracy(probs, y, 5)}


def _summarize_without_clean_labels(*, y_noisy, idx_held, probs, test_probs, y_test,
                                    num_classes):
    """Labels as given, no clean labels: what needs no ground truth is measured (held-out
    accuracy w.r.t. the given labels, the noise estimate, test accuracy); the rest is None."""
    noisy_acc = float((probs.argmax(1) == y_noisy[idx_held]).mean())
    return {
        "noisy_accuracy": noisy_acc, "label_precision": None, "label_recall": None,
        "selected": int((probs.argmax(1) == y_noisy[idx_held]).sum()),
        "held_out_true_accuracy": None,
        "test_accuracy": float((test_probs.argmax(1) == y_test).mean()),
        "actual_noise_ratio": None, "held_out_noise_ratio": None,
        "estimated_noise_ratio": noise.estimate_noise_ratio(noisy_acc, num_classes),
        "confusion_matrix": None, "transition_matrix": None,
        "empirical_transition_matrix": None,
        "theory": {"accuracy": None, "label_precision": None, "label_recall": None},
        "n_train": int(len(y_noisy)), "n_held_out": int(len(idx_held)),
        **top5_accuracy(test_probs, y_test),
        "noise_estimates": selection.noise_estimates(probs, y_noisy[idx_held],
                                                     num_classes=num_classes),
    }


def run_one(args, data, model, initial_weights, pattern, ratio, seed, out, printer, T=None,
            resume=False):
    """One noisy cross-validation run into ``out``; returns its summary. Each epoch is
    checkpointed in ``out``; ``resume`` continues from the last one (training.train_folds)."""
    from . import training

    y_true, y_noisy, T = noise.run_labels(data, pattern, ratio, seed=seed, T=T)
    idx_fit, idx_held = split_halves(len(y_noisy), rng=utils.rng_for(seed, "split"),
                                     larger_first=True, sort=True)
    utils.save_npz(os.path.join(out, "labels.npz"), y_noisy=y_noisy, idx_fit=idx_fit,
                   idx_held=idx_held, train_index=data.train_index,
                   **({} if y_true is None else {"y_true": y_true}))
    t0 = time.time()
    schedule = training.PiecewiseLR(args.lr, LR_BOUNDARIES, LR_FACTORS,
                                 paper_epochs=PAPER_EPOCHS, epochs=args.epochs)
    # --folds 2 also trains the other fold (same initial weights): every training sample
    # then has an out-of-sample prediction, and the measurements below use all of them.
    folds = [(idx_fit, idx_held), (idx_held, idx_fit)][:args.folds]
    runs = training.train_folds(
        model, initial_weights, data.x_train, y_noisy, folds=folds, x_test=data.x_test,
        epochs=args.epochs, batch_size=args.batch_size, schedule=schedule,
        augment=resolve_augmentation(args.augment, data.name), seed=seed,
        y_true=y_true, log_path=os.path.join(out, "log.jsonl"), verbose=args.verbose,
        printer=printer if args.verbose != 1 else None,  # never inside Keras' progress bar
        checkpoint_dir=out, resume=resume)
    probs, test_probs = runs[0]["probs"], runs[0]["test_probs"]
    idx_all = np.concatenate([held for _, held in folds])
    probs_all = np.concatenate([r["probs"] for r in runs])
    whole = {}
    if args.folds == 2:
        oos = np.empty((len(y_noisy), probs.shape[1]), np.float32)
        oos[idx_all] = probs_all
        whole = {"train_index": data.train_index, "oos_probs": oos}
    utils.save_npz(os.path.join(out, "predictions.npz"), idx_held=idx_held,
                   held_out_probs=probs, test_probs=test_probs, **whole)
    summary = summarize(y_true=y_true, y_noisy=y_noisy, idx_held=idx_all, probs=probs_all,
                        test_probs=test_probs, y_test=data.y_test, pattern=pattern,
                        ratio=ratio, num_classes=data.num_classes, T=T)
    summary.update(dataset=data.name, arch=args.arch, pattern=pattern, ratio=ratio, seed=seed,
                   epochs=args.epochs, folds=args.folds, seconds=round(time.time() - t0, 1),
                   noise_type=noise.rule_pattern(pattern, args.noise_type),
                   clean_labels_known=y_true is not None,
                   **({"class_names": data.class_names} if data.class_names else {}))
    if data.provenance is not None:
        summary["data_provenance"] = data.provenance
    import keras

    summary["backend"] = keras.backend.backend()  # --backend / KERAS_BACKEND, as run
    if y_true is not None:
        setting = pattern if ratio is None else f"{pattern} e={ratio:g}"
        plots.plot_confusion_vs_transition(
            np.asarray(summary["confusion_matrix"]), summary["transition_matrix"],
            os.path.join(out, "confusion.png"),
            title=f"{data.name} {args.arch}, {setting}, seed {seed}: held-out acc "
                  f"{summary['noisy_accuracy']:.3f} (theory "
                  f"{summary['theory']['accuracy']:.3f})")
        est = summary["noise_estimates"]
        cl = est["cl_noise_matrix"]
        plots.plot_noise_matrices(
            [("empirical T", est["empirical_T"]), ("held-out confusion M", est["confusion"])]
            + ([("confident learning P(noisy | true)", cl)] if cl is not None else []),
            os.path.join(out, "noise_matrices.png"),
            title=f"{data.name} {args.arch}, {setting}, seed {seed}: noise "
                  f"{est['actual']:.3f}, CV estimate {est['held_out_formula']:.3f}"
                  + (f", confident learning's {est['confident_learning']:.3f}"
                     if cl is not None else ""))
    utils.write_json(os.path.join(out, "summary.json"), summary)  # last: marks the run done
    return summary


def main(args):
    thread_record = flags.start_framework(args)  # threads, --backend, --precision

    from . import training  # Keras-based: after load_backend()

    printer = print
    strategy = devices.run_strategy(args.devices, batch_size=args.batch_size, printer=printer)
    data = flags.load_training_data(args, printer)
    settings, T = flags.noise_plan(args, data, printer)
    if data.provenance is not None:
        printer(describe_provenance(data.provenance))
    runs = [(seed, pattern, ratio, run_dir(args, data.name, pattern, ratio, seed))
            for seed in args.seed for pattern, ratio in settings]
    # --task / --num_tasks (or a SLURM array task): this call's part of the grid (grid.py)
    grid_runs = [{"seed": r[0], "pattern": r[1], "ratio": r[2], "run_dir": r[3]} for r in runs]
    selected, listed = grid.plan_task(args, grid_runs, printer)
    if args.list_runs:
        return listed
    runs = [runs[k] for k in selected]
    todo, points = utils.plan_runs([r[-1] for r in runs], skip_existing=args.skip_existing,
                                   overwrite=args.overwrite, resume=args.resume,
                                   printer=printer)
    flags.check_resume(args, [(r[-1], {"seed": r[0], "pattern": r[1], "ratio": r[2]})
                              for r in runs], threads=thread_record,
                       allow_none=grid.is_task(args))
    todo = [runs[k] for k in todo]
    locks.check_unlocked([r[-1] for r in todo])  # before anything is trained

    model = initial = current_seed = None
    with preemption.installed():  # SIGTERM / SIGUSR1: stop after an epoch's checkpoint
        for k, (seed, pattern, ratio, out) in enumerate(todo, 1):
            if seed != current_seed:
                utils.set_random_seed(seed)  # same init for every ratio of a seed
                model = training.build_classifier(args.arch, data, strategy, lr=args.lr)
                initial, current_seed = model.get_weights(), seed
            with locks.RunLock(out, printer=printer):  # one process per run directory
                points.append(_run_locked(args, data, model, initial, pattern, ratio, seed,
                                          out, printer, T, k=k, n=len(todo),
                                          threads=thread_record))
    if grid.is_task(args):  # the figure shows every finished point of the grid, not the task's
        points = [utils.read_json(os.path.join(r["run_dir"], "summary.json"))
                  for r in grid_runs if grid.run_status(r["run_dir"]) == "finished"]

    sweep = [p for p in points if p.get("ratio") is not None]  # the figure needs a ratio
    if sweep:
        base = os.path.join(args.results_dir, data.name, f"noisy_cv_{args.arch}")
        keys = ("pattern", "ratio", "seed", "noisy_accuracy", "label_precision",
                "label_recall", "test_accuracy", "theory")
        utils.write_json(base + ".json", [{k: p.get(k) for k in keys} for p in sweep])
        plots.plot_theory_sweep(sweep, base + ".png", num_classes=data.num_classes,
                                title=f"{data.name}, {args.arch}, {args.epochs} epochs")
        printer(f"figure: {base}.png")
    return points


def _run_locked(args, data, model, initial, pattern, ratio, seed, out, printer, T, *, k, n, threads=None):
    """One run of the grid loop, its lock held: directory, config (kept when resuming),
    training, the summary line."""
    resuming = args.resume and os.path.isfile(os.path.join(out, "config.json"))
    utils.prepare_run_dir(out, overwrite=args.overwrite, resume=args.resume)
    if not resuming:
        utils.write_json(os.path.join(out, "config.json"), utils.run_config(
            args, run={"pattern": pattern, "ratio": ratio, "seed": seed,
                       "noise_type": noise.rule_pattern(pattern, args.noise_type)},
            n_train=int(len(data.y_train)), num_classes=data.num_classes,
            data_provenance=data.provenance, threads=threads,
            **flags.dataset_extras(data, out)))
    setting = pattern if ratio is None else f"{pattern} e={ratio:g}"
    printer(f"[{k}/{n}] {data.name} {args.arch} {setting} seed {seed} -> {out}")
    s = run_one(args, data, model, initial, pattern, ratio, seed, out, printer, T=T,
                resume=resuming)
    f = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731  (no clean labels)
    printer(f"  held-out noisy acc {f(s['noisy_accuracy'])} (theory "
            f"{f(s['theory']['accuracy'])}), LP {f(s['label_precision'])} "
            f"({f(s['theory']['label_precision'])}), LR {f(s['label_recall'])} "
            f"({f(s['theory']['label_recall'])}), estimated noise "
            f"{f(s['estimated_noise_ratio'])}, clean test acc {f(s['test_accuracy'])}"
            + (f", top-5 {f(s['test_top5_accuracy'])}" if "test_top5_accuracy" in s
               else ""))
    return s


def entry_point():
    """The console command (``pip install .``): parse, run, exit with the status."""
    sys.exit(utils.cli(main, parse_args()))


if __name__ == "__main__":
    entry_point()
