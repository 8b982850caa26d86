"""INCV, Iterative Noisy Cross-Validation (arXiv:1905.05040, sec. 3, Algorithm 1): the
selection itself (:func:`incv_select`, independent of how a network is trained), its
resumable state, the authors' per-sample CSV, and the training runs it calls.
"""

import csv
import os

import numpy as np

import keras

import devices
import metrics
import noise
import training
import utils
from data import resolve_augmentation

PAPER_INCV_EPOCHS = 50      # each INCV training run
# INCV runs: Adam 1e-3, x0.5 after epoch 20, x0.25 after 30, x0.1 after 40 (of 50).
INCV_BOUNDARIES, INCV_FACTORS = (20, 30, 40), (0.5, 0.25, 0.1)


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


def incv_select(y_noisy, *, num_classes, pattern, train_fn=None, seed, iterations=4,
                state=None, y_true=None, on_iteration=None, train_pair_fn=None):
    """Iterative Noisy Cross-Validation (PAPER.md section 3).

    Parameters
    ----------
    y_noisy : (n,) int
        Noisy labels of the whole training set.
    train_fn : callable (train_idx, held_idx, keep_best, tag) -> (len(held_idx), c) probs
        Trains from the same initial weights on ``train_idx`` and predicts ``held_idx``.
    train_pair_fn : callable ((train1, held1), (train2, held2), keep_best, (tag1, tag2))
        -> (probs1, probs2), optional
        Both runs of an iteration at once (e.g. side by side in one training step); used
        instead of ``train_fn`` when given. One of the two is required.
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
        ratio), ``remove_ratio``, ``k_best``, ``iterations`` (one record per iteration),
        ``heldout_loss`` (n,) float: each sample's cross-entropy w.r.t. its noisy label the
        last time it was predicted held-out (NaN if never), ``oos_probs`` (n, c) float32:
        iteration 1's held-out probabilities, which cover every sample once, each predicted
        by the run that did not train on it (out-of-sample).
    """
    if train_fn is None and train_pair_fn is None:
        raise ValueError("incv_select needs train_fn or train_pair_fn")
    n = len(y_noisy)
    st = state or {"selected": np.zeros(n, bool), "candidate": np.ones(n, bool),
                   "eval_ratio": None, "remove_ratio": None, "k_best": None,
                   "iterations": [], "heldout_loss": np.full(n, np.nan),
                   "oos_probs": None}
    for k in range(len(st["iterations"]) + 1, iterations + 1):
        cand = np.flatnonzero(st["candidate"])
        utils.rng_for(seed, f"incv-iteration-{k}").shuffle(cand)
        halves = (cand[: len(cand) // 2], cand[len(cand) // 2:])
        s_idx = np.flatnonzero(st["selected"])
        keep_best = st["k_best"] is None or k <= st["k_best"]
        picked, removed = [], []
        runs = [(np.concatenate([s_idx, train_half]), held)
                for train_half, held in ((halves[0], halves[1]), (halves[1], halves[0]))]
        tags = [f"iteration{k}-half{h + 1}" for h in range(2)]
        # keep_best is fixed for the iteration, so both runs can train at once.
        paired = None if train_pair_fn is None else train_pair_fn(*runs, keep_best, tags)
        for h, (train_idx, held) in enumerate(runs):
            probs = paired[h] if paired is not None else train_fn(train_idx, held, keep_best,
                                                                  tags[h])
            hit = probs.argmax(1) == y_noisy[held]
            loss = metrics.cross_entropy(probs, y_noisy[held])
            st["heldout_loss"][held] = loss
            if k == 1:
                if st["oos_probs"] is None:
                    st["oos_probs"] = np.full((n, probs.shape[1]), np.nan, np.float32)
                st["oos_probs"][held] = probs
            if st["eval_ratio"] is None:  # iteration 1, first half: estimate e once
                e = noise.estimate_noise_ratio(min(1.0, hit.sum() / (n / 2)), num_classes)
                st["eval_ratio"] = e
                st["remove_ratio"] = min(2.0, e / (1 - e)) if e < 1 else 2.0
                st["k_best"] = k_best_for(pattern, e)
            picked.append(held[hit])
            removed.append(largest_loss(held, loss, st["remove_ratio"] * hit.sum()))
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
            m = metrics.selection_metrics(y_true, y_noisy, st["selected"])
            record.update(label_precision=m["label_precision"],
                          label_recall=m["label_recall"])
        st["iterations"].append(record)
        if on_iteration is not None:
            on_iteration(st)
    return st


def save_incv_state(path, st):
    utils.save_npz(path, selected=st["selected"], candidate=st["candidate"],
                   eval_ratio=np.float64(st["eval_ratio"]),
                   remove_ratio=np.float64(st["remove_ratio"]), k_best=np.int64(st["k_best"]),
                   heldout_loss=st["heldout_loss"], oos_probs=st["oos_probs"])
    utils.write_json(path + ".json", st["iterations"])


def load_incv_state(path):
    with np.load(path) as f:
        st = {"selected": f["selected"], "candidate": f["candidate"],
              "eval_ratio": float(f["eval_ratio"]), "remove_ratio": float(f["remove_ratio"]),
              "k_best": int(f["k_best"]), "heldout_loss": f["heldout_loss"],
              "oos_probs": f["oos_probs"]}
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


def write_cleaned_set(path, *, index, given_label, selected, candidate, heldout_loss=None):
    """The selection as a user applies it to their own data, one row per training sample.

    Columns: ``index`` (the sample's position in the dataset as given, also under
    ``--n_train``), ``given_label`` (the label the selection judged), ``status``
    (``selected``: trust it, the set S; ``candidate``: undecided, the set C; ``removed``:
    dropped as a large-loss sample) and ``heldout_loss`` (cross-entropy of the given label
    the last time the sample was predicted by a network that did not train on it; empty
    where never computed).

    Parameters
    ----------
    index, given_label : (n,) int
    selected, candidate : (n,) bool
    heldout_loss : (n,) float, optional
    """
    n = len(index)
    loss = np.full(n, np.nan) if heldout_loss is None else np.asarray(heldout_loss, float)
    status = np.where(selected, "selected", np.where(candidate, "candidate", "removed"))
    with utils.atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(["index", "given_label", "status", "heldout_loss"])
        for i, y, s, ce in zip(index, given_label, status, loss):
            w.writerow([int(i), int(y), s, "" if np.isnan(ce) else f"{ce:.6g}"])


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


def make_incv_train_fn(args, data, y_noisy, *, seed, out, printer):
    """INCV's training runs: one compiled ResNet, reset to the same initial weights each run."""
    keras.utils.set_random_seed(seed)
    model = training.build_classifier(args, data, devices.device_strategy(args.devices))
    initial = model.get_weights()
    schedule = training.PiecewiseLR(args.lr, INCV_BOUNDARIES, INCV_FACTORS,
                                 paper_epochs=PAPER_INCV_EPOCHS, epochs=args.incv_epochs)
    aug = resolve_augmentation(args.augment, data.name)

    def train_fn(train_idx, held_idx, keep_best, tag):
        printer(f"  INCV {tag}: train on {len(train_idx)}, predict {len(held_idx)}"
                f"{' (best checkpoint)' if keep_best else ''}")
        probs, info = training.train_and_predict(
            model, initial, data.x_train[train_idx], y_noisy[train_idx],
            data.x_train[held_idx], y_noisy[held_idx], epochs=args.incv_epochs,
            batch_size=args.batch_size, schedule=schedule, augment=aug, seed=seed,
            keep_best=keep_best, y_held_true=data.y_train[held_idx],
            log_path=os.path.join(out, "incv_log.jsonl"), log_extra={"run": tag},
            verbose=args.verbose, printer=printer if args.verbose != 1 else None)
        return probs

    return train_fn


def make_incv_train_pair_fn(args, data, y_noisy, *, seed, out, printer):
    """INCV's two runs of an iteration side by side (``training.PairedNetworks``), both
    from the same initial weights, which are those :func:`make_incv_train_fn` uses for the
    same seed. The ``train_pair_fn`` of :func:`incv_select`."""
    keras.utils.set_random_seed(seed)
    initial = models_initial_weights(args, data)
    pair = training.build_paired_classifiers(args, data)
    schedule = training.PiecewiseLR(args.lr, INCV_BOUNDARIES, INCV_FACTORS,
                                    paper_epochs=PAPER_INCV_EPOCHS, epochs=args.incv_epochs)
    aug = resolve_augmentation(args.augment, data.name)

    def train_pair_fn(run1, run2, keep_best, tags):
        parts = []
        for (train_idx, held_idx), tag in zip((run1, run2), tags):
            printer(f"  INCV {tag}: train on {len(train_idx)}, predict {len(held_idx)}"
                    f"{' (best checkpoint)' if keep_best else ''} (side by side)")
            parts.append((data.x_train[train_idx], y_noisy[train_idx], data.x_train[held_idx],
                          y_noisy[held_idx], data.y_train[held_idx]))
        probs, _ = training.train_pair_and_predict(
            pair, initial, parts, epochs=args.incv_epochs, batch_size=args.batch_size,
            schedule=schedule, augment=aug, seed=seed, keep_best=keep_best,
            log_path=os.path.join(out, "incv_log.jsonl"),
            log_extras=[{"run": tag} for tag in tags], verbose=args.verbose,
            printer=printer if args.verbose != 1 else None)
        return probs

    return train_pair_fn


def models_initial_weights(args, data):
    """The initial weights :func:`make_incv_train_fn`'s network gets after
    ``keras.utils.set_random_seed(seed)``: one ``--arch`` network built right after it."""
    import models

    return models.build_model(args.arch, data.input_shape, data.num_classes).get_weights()
