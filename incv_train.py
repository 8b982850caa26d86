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

Just clean a dataset (selection only), or reuse a selection::

    python incv_train.py --dataset cifar10 --incv_only
    python incv_train.py --dataset cifar10 --incv_results results/.../cifar10_sym0.5_INCV_results.csv

Outputs per run: <results_dir>/<dataset>/<pattern>/<ratio>/<method>/seed<k>/ with
config.json, log.jsonl (one line per epoch), summary.json, the authors' per-sample CSV
(INCV), incv.png (LP/LR of S per iteration) and test_accuracy.png (every method found for
the same setting overlaid). A killed run continues with --resume.
"""

import argparse
import csv
import glob
import json
import os
import sys
import time

import numpy as np

# oneDNN kernels: TensorFlow turns them on by default only on AVX-512 CPUs, yet they train
# 1.4-1.5x faster on AVX2 CPUs too (tests/benchmark.py --onednn off); only float rounding
# order changes. Must be set before TensorFlow loads; an explicit setting wins.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

import keras  # noqa: E402

import models  # noqa: E402
import noise  # noqa: E402
import utils  # noqa: E402

METHODS = ("incv", "coteaching", "standard")
PAPER_EPOCHS = 200          # Co-teaching / standard training
PAPER_INCV_EPOCHS = 50      # each INCV training run
# INCV runs: Adam 1e-3, x0.5 after epoch 20, x0.25 after 30, x0.1 after 40 (of 50).
INCV_BOUNDARIES, INCV_FACTORS = (20, 30, 40), (0.5, 0.25, 0.1)
# Co-teaching: x0.1 at epochs 80, 120, 160, then x0.5 at 180 (0-based epoch == 80 in the
# authors' loop, i.e. epoch > 79 in PiecewiseLR's terms).
COT_BOUNDARIES, COT_FACTORS = (79, 119, 159, 179), (0.1, 0.01, 0.001, 0.0005)


# --------------------------------------------------------------------------- INCV

def k_best_for(pattern, eval_ratio):
    """Iterations (from the first) that keep the best-validation checkpoint (PAPER.md sec 3)."""
    if pattern == "asym" or eval_ratio > 0.6:
        return 1
    return 2 if eval_ratio > 0.3 else 4


def largest_loss(idx, losses, count):
    """The ``count`` samples of ``idx`` with the largest loss (none when count is 0; the
    authors' ``argsort(...)[-0:]`` took the whole half in that case)."""
    count = min(int(count), len(idx))
    return idx[np.argsort(losses, kind="stable")[len(idx) - count:]] if count else idx[:0]


def incv_select(y_noisy, *, num_classes, pattern, train_fn, seed, iterations=4, state=None,
                y_true=None, on_iteration=None):
    """Iterative Noisy Cross-Validation (PAPER.md section 3).

    Parameters
    ----------
    y_noisy : (n,) int
        Noisy labels of the whole training set.
    train_fn : callable (train_idx, held_idx, keep_best, tag) -> (len(held_idx), c) probs
        Trains from the same initial weights on ``train_idx`` and predicts ``held_idx``.
    seed : int
        Seeds each iteration's split of C into halves.
    state : dict, optional
        A state returned by an earlier (interrupted) call, to continue from.
    y_true : (n,) int, optional
        For tracking only: label precision / recall of S after each iteration.
    on_iteration : callable(state), optional
        Called after each iteration (e.g. to save the state for --resume).

    Returns
    -------
    dict
        ``selected`` and ``candidate`` (n,) bool masks, ``eval_ratio`` (estimated noise
        ratio), ``remove_ratio``, ``k_best``, ``iterations`` (one record per iteration).
    """
    n = len(y_noisy)
    st = state or {"selected": np.zeros(n, bool), "candidate": np.ones(n, bool),
                   "eval_ratio": None, "remove_ratio": None, "k_best": None,
                   "iterations": []}
    for k in range(len(st["iterations"]) + 1, iterations + 1):
        cand = np.flatnonzero(st["candidate"])
        utils.rng_for(seed, f"incv-iteration-{k}").shuffle(cand)
        halves = (cand[: len(cand) // 2], cand[len(cand) // 2:])
        s_idx = np.flatnonzero(st["selected"])
        keep_best = st["k_best"] is None or k <= st["k_best"]
        picked, removed = [], []
        for h, (train_half, held) in enumerate(((halves[0], halves[1]),
                                                (halves[1], halves[0]))):
            probs = train_fn(np.concatenate([s_idx, train_half]), held, keep_best,
                             f"iteration{k}-half{h + 1}")
            hit = probs.argmax(1) == y_noisy[held]
            if st["eval_ratio"] is None:  # iteration 1, first half: estimate e once
                e = noise.estimate_noise_ratio(min(1.0, hit.sum() / (n / 2)), num_classes)
                st["eval_ratio"] = e
                st["remove_ratio"] = min(2.0, e / (1 - e)) if e < 1 else 2.0
                st["k_best"] = k_best_for(pattern, e)
            picked.append(held[hit])
            removed.append(largest_loss(held, utils.cross_entropy(probs, y_noisy[held]),
                                        st["remove_ratio"] * hit.sum()))
        new = np.concatenate(picked)
        st["selected"][new] = True
        st["candidate"][new] = False
        n_removed = 0
        if pattern == "sym":  # the authors removed the large-loss samples for sym only
            drop = np.concatenate(removed)
            n_removed = int(st["candidate"][drop].sum())
            st["candidate"][drop] = False
        record = {"iteration": k, "selected": int(st["selected"].sum()),
                  "candidates": int(st["candidate"].sum()), "removed": n_removed,
                  "keep_best": bool(keep_best)}
        if y_true is not None:
            m = utils.selection_metrics(y_true, y_noisy, st["selected"])
            record.update(label_precision=m["label_precision"],
                          label_recall=m["label_recall"])
        st["iterations"].append(record)
        if on_iteration is not None:
            on_iteration(st)
    return st


def save_incv_state(path, st):
    utils.save_npz(path, selected=st["selected"], candidate=st["candidate"],
                   eval_ratio=np.float64(st["eval_ratio"]),
                   remove_ratio=np.float64(st["remove_ratio"]), k_best=np.int64(st["k_best"]))
    utils.write_json(path + ".json", st["iterations"])


def load_incv_state(path):
    with np.load(path) as f:
        st = {"selected": f["selected"], "candidate": f["candidate"],
              "eval_ratio": float(f["eval_ratio"]), "remove_ratio": float(f["remove_ratio"]),
              "k_best": int(f["k_best"])}
    st["iterations"] = utils.read_json(path + ".json")
    return st


def write_incv_csv(path, y_true, y_noisy, st):
    """The authors' per-sample output: y, y_noisy, select, candidate, eval_ratio."""
    with utils.atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(["y", "y_noisy", "select", "candidate", "eval_ratio"])
        for row in zip(y_true, y_noisy, st["selected"], st["candidate"]):
            w.writerow([int(row[0]), int(row[1]), bool(row[2]), bool(row[3]),
                        st["eval_ratio"]])


def read_incv_csv(path, y_true):
    """Read a saved selection; checks it belongs to this training set."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--incv_results file '{path}' does not exist")
    with open(path) as f:
        rows = list(csv.DictReader(f))
    need = {"y", "y_noisy", "select", "candidate", "eval_ratio"}
    if not rows or not need <= set(rows[0]):
        raise ValueError(f"--incv_results '{path}' needs the columns {sorted(need)}")
    y = np.array([int(r["y"]) for r in rows])
    if len(y) != len(y_true) or (y != y_true).any():
        raise ValueError(f"--incv_results '{path}' was made for another training set "
                         f"({len(y)} rows vs {len(y_true)} samples, or other labels): use the "
                         "same --dataset, --n_train and --seed")
    flag = lambda k: np.array([r[k] == "True" for r in rows])  # noqa: E731
    return (np.array([int(r["y_noisy"]) for r in rows]),
            {"selected": flag("select"), "candidate": flag("candidate"),
             "eval_ratio": float(rows[0]["eval_ratio"]), "iterations": []})


# --------------------------------------------------------------------------- training

def epochs_scaled(paper_value, args):
    """An epoch count of the paper's 200-epoch schedule, scaled to --epochs."""
    return int(round(paper_value * args.epochs / PAPER_EPOCHS))


def train_two_networks(args, data, y_noisy, s_idx, c_idx, *, seed, forget_rate, warmup, out,
                       printer, standard=False):
    """Co-teaching (two nets) or standard training (one net) with per-epoch test accuracy,
    diagnostics, the lr schedule with optional Adam resets, and a resumable checkpoint.

    Returns the per-epoch log rows.
    """
    clean = data.y_train == y_noisy
    schedule = utils.PiecewiseLR(args.lr, COT_BOUNDARIES, COT_FACTORS,
                                 paper_epochs=PAPER_EPOCHS, epochs=args.epochs)
    keras.utils.set_random_seed(seed)
    strategy = utils.device_strategy(args.devices)
    with strategy.scope():  # --devices: build, compile and make the optimizers on them
        if standard:
            model = utils.build_classifier(args, data, strategy)
            model.optimizer.build(model.trainable_variables)  # so --resume can restore it
            nets, optimizers, on_epoch = [model], [model.optimizer], None
        else:
            nets = [models.build_model(args.arch, data.input_shape, data.num_classes)
                    for _ in range(2)]
            for net in nets:
                utils.sync_batchnorm(net, strategy)
            model = models.CoTeaching(*nets)
            optimizers = [keras.optimizers.Adam(args.lr), keras.optimizers.Adam(args.lr)]
            model.compile(optimizer1=optimizers[0], optimizer2=optimizers[1])
    if not standard:
        tk = max(1e-9, args.tk * args.epochs / PAPER_EPOCHS)

        def on_epoch(epoch):  # Co-teaching's gradual schedule, 0-based epoch as the authors
            model.forget_rate.assign(forget_rate * min(1.0, epoch / tk))

    ckpt, log = os.path.join(out, "checkpoint.npz"), os.path.join(out, "log.jsonl")
    start = 0
    if args.resume and os.path.isfile(ckpt):
        start = utils.restore_checkpoint(ckpt, model, optimizers)
        rows = [r for r in _read_log(log) if r["epoch"] <= start]
        with utils.atomic_write(log) as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        printer(f"  resuming after epoch {start}")
    elif os.path.exists(log):
        os.remove(log)

    diag_idx = utils.rng_for(seed, "diagnostics").permutation(s_idx)[:1000]
    callbacks = [
        utils.EpochSchedule(schedule, optimizers, reset_on_drop=not args.keep_optimizer_state,
                            on_epoch=on_epoch),
        utils.TrainDiagnostics(nets, data.x_train[diag_idx], y_noisy[diag_idx],
                               clean[diag_idx], names=("model1", "model2")[:len(nets)]),
        _TestAccuracyNames(standard),
        utils.JsonlLogger(log, printer=printer if args.verbose != 1 else None,
                          optimizer=optimizers[0]),
        utils.EpochCheckpoint(ckpt, optimizers)]
    aug = utils.resolve_augmentation(args.augment, data.name)
    test = (data.x_test, data.y_test)
    if standard:
        ds = utils.make_train_dataset(data.x_train[s_idx], y_noisy[s_idx],
                                      batch_size=args.batch_size, augment=aug,
                                      seed=seed)
        phases = [(ds, args.epochs)]
    else:
        c_batch = 0 if len(s_idx) == 0 else min(int(len(c_idx) * args.batch_size / len(s_idx)),
                                                args.batch_size // 2)
        make = lambda cb: utils.make_coteaching_dataset(  # noqa: E731
            data.x_train, y_noisy, clean, s_idx, c_idx, batch_size=args.batch_size,
            c_batch_size=cb, augment=aug, seed=seed)
        # Batches come from S alone for 0-based epochs <= warmup, then S joined by C.
        if c_batch > 0 and warmup + 1 < args.epochs:
            phases = [(make(0), warmup + 1), (make(c_batch), args.epochs)]
        else:
            phases = [(make(0), args.epochs)]
    for ds, end in phases:
        if start < end:
            model.fit(ds, epochs=end, initial_epoch=start, validation_data=test,
                      validation_batch_size=1024, callbacks=callbacks, verbose=args.verbose,
                      shuffle=False)
            start = end
    return _read_log(log)


class _TestAccuracyNames(keras.callbacks.Callback):
    """Give every method the same log keys: test_accuracy_model1 (and _model2)."""

    def __init__(self, standard):
        super().__init__()
        self.standard = standard

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if self.standard:
            logs["test_accuracy_model1"] = logs.get("val_accuracy")
        else:
            logs["test_accuracy_model1"] = logs.get("val_accuracy1")
            logs["test_accuracy_model2"] = logs.get("val_accuracy2")


def _read_log(path):
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# --------------------------------------------------------------------------- runs

def make_incv_train_fn(args, data, y_noisy, *, seed, out, printer):
    """INCV's training runs: one compiled ResNet, reset to the same initial weights each run."""
    keras.utils.set_random_seed(seed)
    model = utils.build_classifier(args, data, utils.device_strategy(args.devices))
    initial = model.get_weights()
    schedule = utils.PiecewiseLR(args.lr, INCV_BOUNDARIES, INCV_FACTORS,
                                 paper_epochs=PAPER_INCV_EPOCHS, epochs=args.incv_epochs)
    aug = utils.resolve_augmentation(args.augment, data.name)

    def train_fn(train_idx, held_idx, keep_best, tag):
        printer(f"  INCV {tag}: train on {len(train_idx)}, predict {len(held_idx)}"
                f"{' (best checkpoint)' if keep_best else ''}")
        probs, info = utils.train_and_predict(
            model, initial, data.x_train[train_idx], y_noisy[train_idx],
            data.x_train[held_idx], y_noisy[held_idx], epochs=args.incv_epochs,
            batch_size=args.batch_size, schedule=schedule, augment=aug, seed=seed,
            keep_best=keep_best, y_held_true=data.y_train[held_idx],
            log_path=os.path.join(out, "incv_log.jsonl"), log_extra={"run": tag},
            verbose=args.verbose, printer=printer if args.verbose != 1 else None)
        return probs

    return train_fn


def plot_incv(records, path, title):
    plt = utils._pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.5), constrained_layout=True)
    it = [r["iteration"] for r in records]
    ax.plot(it, [r["label_precision"] for r in records], "o-", label="label precision")
    ax.plot(it, [r["label_recall"] for r in records], "s-", label="label recall")
    ax.set(xlabel="INCV iteration", xticks=it, ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    utils.save_figure(fig, path)


def plot_test_curves(setting_dir, seed, path, title):
    """Test accuracy per epoch of every method found under one setting (same seed)."""
    plt = utils._pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for k, log in enumerate(sorted(glob.glob(os.path.join(setting_dir, "*", f"seed{seed}",
                                                          "log.jsonl")))):
        rows = _read_log(log)
        method = log.split(os.sep)[-3]
        for key, style in (("test_accuracy_model1", "-"), ("test_accuracy_model2", "--")):
            pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=f"C{k}",
                        label=f"{method} ({key.rsplit('_', 1)[1]})")
    ax.set(xlabel="epoch", ylabel="clean test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    utils.save_figure(fig, path)


def run_one(args, data, method, pattern, ratio, seed, out, printer):
    t0 = time.time()
    summary = {"dataset": data.name, "method": method, "pattern": pattern, "ratio": ratio,
               "seed": seed, "arch": args.arch, "epochs": args.epochs,
               "n_train": int(len(data.y_train))}
    if args.incv_results and method == "incv":
        y_noisy, st = read_incv_csv(args.incv_results, data.y_train)
    else:
        y_noisy = noise.add_noise(data.y_train, pattern, ratio, num_classes=data.num_classes,
                                  seed=utils.rng_for(seed, "noise"))
        st = None
    summary["actual_noise_ratio"] = noise.actual_noise_ratio(data.y_train, y_noisy)
    utils.save_npz(os.path.join(out, "labels.npz"), y_true=data.y_train, y_noisy=y_noisy)
    n = len(y_noisy)
    s_idx, c_idx = np.arange(n), np.arange(0)

    if method == "incv":
        state_path = os.path.join(out, "incv_state.npz")
        if st is None:
            if args.resume and os.path.isfile(state_path):
                st = load_incv_state(state_path)
                printer(f"  resuming INCV after iteration {len(st['iterations'])}")
            st = incv_select(
                y_noisy, num_classes=data.num_classes, pattern=pattern, seed=seed,
                iterations=args.incv_iterations, state=st, y_true=data.y_train,
                train_fn=make_incv_train_fn(args, data, y_noisy, seed=seed, out=out,
                                            printer=printer),
                on_iteration=lambda s: (save_incv_state(state_path, s), printer(
                    f"  INCV iteration {s['iterations'][-1]['iteration']}: "
                    f"{s['iterations'][-1]}")))
            csv_name = f"{data.name}_{pattern}{ratio:g}_INCV_results.csv"
            write_incv_csv(os.path.join(out, csv_name), data.y_train, y_noisy, st)
            if st["iterations"]:
                plot_incv(st["iterations"], os.path.join(out, "incv.png"),
                          f"INCV on {data.name}, {pattern} {ratio:g}")
        sel = utils.selection_metrics(data.y_train, y_noisy, st["selected"])
        summary.update(estimated_noise_ratio=st["eval_ratio"], incv=st["iterations"],
                       selection={**sel, "candidates": int(st["candidate"].sum())})
        s_idx, c_idx = np.flatnonzero(st["selected"]), np.flatnonzero(st["candidate"])
        e = st["eval_ratio"]
        forget = noise.expected_noise_of_selected(e, pattern, data.num_classes)
        warmup = epochs_scaled(80 if (pattern == "asym" or e > 0.6) else 40, args)
        summary.update(expected_noise_of_selected=forget, warmup_epochs=warmup)
        if args.incv_only:
            summary["seconds"] = round(time.time() - t0, 1)
            return summary
    elif method == "coteaching":
        if args.forget_rate is not None:
            forget = args.forget_rate
        else:  # estimate e as INCV's first step does: train on one half, predict the other
            half, held = utils.split_halves(n, rng=utils.rng_for(seed, "split"))
            probs = make_incv_train_fn(args, data, y_noisy, seed=seed, out=out, printer=printer)(
                half, held, True, "noise-estimate")
            forget = noise.estimate_noise_ratio((probs.argmax(1) == y_noisy[held]).mean(),
                                                data.num_classes)
            summary["estimated_noise_ratio"] = forget
        warmup = 0
    else:
        forget, warmup = 0.0, 0
    summary["forget_rate"] = forget

    rows = train_two_networks(args, data, y_noisy, s_idx, c_idx, seed=seed, forget_rate=forget,
                              warmup=warmup, out=out, printer=printer,
                              standard=(method == "standard"))
    last = rows[-1]
    accs = [r[k] for r in rows for k in ("test_accuracy_model1", "test_accuracy_model2")
            if r.get(k) is not None]
    summary["test_accuracy"] = {"model1": last.get("test_accuracy_model1"),
                                "model2": last.get("test_accuracy_model2"),
                                "best": max(accs) if accs else None}
    summary["seconds"] = round(time.time() - t0, 1)
    plot_test_curves(os.path.dirname(os.path.dirname(out)), seed,
                     os.path.join(out, "test_accuracy.png"),
                     f"{data.name}, {pattern} {ratio:g}, seed {seed}")
    return summary


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    utils.add_run_arguments(p, arch="resnet32",
                            arch_help="network for INCV and for training (the authors': "
                                      "ResNet-32)",
                            batch_help="batch size (of the S part in Co-teaching)")
    p.add_argument("--method", type=str, nargs="+", default=["incv"], choices=METHODS,
                   help="incv = INCV + modified Co-teaching; coteaching = Han et al. 2018 on "
                        "the whole noisy set; standard = cross-entropy training")
    p.add_argument("--epochs", type=int, default=PAPER_EPOCHS,
                   help="Co-teaching / standard epochs (lr drops, warm-up and Tk scale with it)")
    p.add_argument("--incv_epochs", type=int, default=PAPER_INCV_EPOCHS,
                   help="epochs of each INCV training run (its lr drops scale with it)")
    p.add_argument("--incv_iterations", type=int, default=4, help="INCV iterations")
    p.add_argument("--tk", type=float, default=10.0,
                   help="Co-teaching's Tk: epochs (of 200) over which the forget rate ramps up")
    p.add_argument("--forget_rate", type=float, default=None,
                   help="--method coteaching: forget rate (default: estimated noise ratio)")
    p.add_argument("--keep_optimizer_state", action="store_true",
                   help="keep Adam's state at lr drops (the authors re-compiled: a fresh Adam)")
    p.add_argument("--incv_only", action="store_true",
                   help="stop after INCV selection (write the CSV; no Co-teaching)")
    p.add_argument("--incv_results", type=str, default=None,
                   help="CSV of an earlier INCV selection: skip INCV and train on it")
    p.add_argument("--resume", action="store_true",
                   help="continue unfinished runs from their last INCV iteration / epoch")
    args = p.parse_args(argv)
    utils.check_run_arguments(p, args, positive=("epochs", "incv_epochs", "incv_iterations",
                                                  "batch_size"))
    if args.forget_rate is not None and not 0.0 <= args.forget_rate < 1.0:
        p.error(f"--forget_rate must be in [0, 1), got {args.forget_rate}")
    if args.overwrite and args.resume:
        p.error("--overwrite and --resume contradict each other: choose one")
    if args.incv_only and args.incv_results:
        p.error("--incv_only and --incv_results contradict each other: choose one")
    return args


def run_dir(args, dataset, pattern, ratio, method, seed):
    return os.path.join(args.results_dir, dataset, pattern, f"{ratio:g}", method, f"seed{seed}")


def main(args):
    printer = print
    utils.run_strategy(args, printer)  # checks --devices; runs build their models on it
    data = utils.load_training_data(args, printer)
    runs = [(seed, pattern, ratio, method, run_dir(args, data.name, pattern, ratio, method, seed))
            for seed in args.seed for pattern in args.noise_pattern
            for ratio in args.noisy_ratio for method in args.method]
    todo, summaries = utils.plan_runs([r[-1] for r in runs], skip_existing=args.skip_existing,
                                      overwrite=args.overwrite, resume=args.resume,
                                      printer=printer)
    todo = [runs[k] for k in todo]
    for k, (seed, pattern, ratio, method, out) in enumerate(todo, 1):
        resuming = args.resume and os.path.isfile(os.path.join(out, "config.json"))
        utils.prepare_run_dir(out, overwrite=args.overwrite, resume=args.resume)
        if not resuming:
            utils.write_json(os.path.join(out, "config.json"), utils.run_config(
                args, run={"method": method, "pattern": pattern, "ratio": ratio, "seed": seed},
                n_train=int(len(data.y_train)), num_classes=data.num_classes))
        printer(f"[{k}/{len(todo)}] {method} on {data.name} {pattern} e={ratio:g} seed {seed}"
                f" -> {out}")
        summary = run_one(args, data, method, pattern, ratio, seed, out, printer)
        utils.write_json(os.path.join(out, "summary.json"), summary)
        acc = summary.get("test_accuracy", {})
        printer(f"  done in {summary['seconds']:.0f}s: estimated noise "
                f"{summary.get('estimated_noise_ratio')}, test accuracy {acc}")
        summaries.append(summary)
    return summaries


if __name__ == "__main__":
    sys.exit(utils.cli(main, parse_args()))
