"""INCV, Iterative Noisy Cross-Validation (arXiv:1905.05040, sec. 3, Algorithm 1): the
selection itself (:func:`incv_select`, independent of how a network is trained), its
resumable state, the authors' per-sample CSV, and the training runs it calls.
"""

import csv
import dataclasses
import os

import keras
import numpy as np

from . import devices, metrics, noise, paired, training, utils
from .data import split_halves, to_unit_float
from .pipelines import resolve_augmentation
from .progress import Progress, incv_pair_line, incv_run_line

PAPER_INCV_EPOCHS = 50      # each INCV training run
# Adam state at the start of each INCV run (--incv_optimizer): "fresh" zeroed; "carry" the state
# the previous run ended with (of its best epoch with keep_best), as the authors' load_model
# restored it with the checkpoint and only the weights were reset.
INCV_OPTIMIZERS = ("fresh", "carry")
# INCV runs: Adam 1e-3, x0.5 after epoch 20, x0.25 after 30, x0.1 after 40 (of 50).
INCV_BOUNDARIES, INCV_FACTORS = (20, 30, 40), (0.5, 0.25, 0.1)


@dataclasses.dataclass(frozen=True)
class INCVConfig:
    """How INCV trains its networks (arXiv:1905.05040, Algorithm 1; the authors' INCV.py).

    Attributes
    ----------
    arch : str
        ``models.build_model`` name (the authors': "resnet32").
    epochs : int
        Epochs of each training run (the paper: 50; the lr drops scale with it).
    iterations : int
        INCV iterations (the paper: 4).
    lr, batch_size
        Adam's learning rate and the batch size.
    augment : {"auto", "standard", "shift", "none"}
        ``pipelines.resolve_augmentation`` kind ("auto": none for 8x8 digits, else the
        authors' shift + flip).
    optimizer : {"fresh", "carry"}
        Adam's state at the start of each run (:data:`INCV_OPTIMIZERS`).
    parallel : {"pair", "sequential"}
        An iteration's two runs side by side in one training step, or one after the other.
    devices : str
        ``devices.device_strategy`` spec ("default" or "all").
    verbose : int
        Keras' verbosity (0, 1, 2); with 0 or 2 the per-epoch lines are printed.
    """

    arch: str = "resnet32"
    epochs: int = PAPER_INCV_EPOCHS
    iterations: int = 4
    lr: float = 1e-3
    batch_size: int = 128
    augment: str = "auto"
    optimizer: str = "fresh"
    parallel: str = "pair"
    devices: str = "default"
    verbose: int = 1


def k_best_for(pattern, eval_ratio):
    """Iterations (from the first) that keep the best-validation checkpoint (the authors'
    INCV.py)."""
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
    """Iterative Noisy Cross-Validation (arXiv:1905.05040, Algorithm 1).

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
        halves = split_halves(np.flatnonzero(st["candidate"]),
                              rng=utils.rng_for(seed, f"incv-iteration-{k}"))
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


def write_cleaned_set(path, *, index, given_label, selected, candidate, heldout_loss=None,
                      path_column=None, class_names=None):
    """The selection as a user applies it to their own data, one row per training sample.

    Columns: ``index`` (the sample's position in the dataset as given, also under
    ``--n_train``), ``given_label`` (the label the selection judged), ``status``
    (``selected``: trust it, the set S; ``candidate``: undecided, the set C; ``removed``:
    dropped as a large-loss sample) and ``heldout_loss`` (cross-entropy of the given label
    the last time the sample was predicted by a network that did not train on it; empty
    where never computed). For an image folder two more columns: ``path`` (the file,
    relative to DIR/train) after ``index`` and ``given_class`` (the label's class name)
    after ``given_label``.

    Parameters
    ----------
    index, given_label : (n,) int
    selected, candidate : (n,) bool
    heldout_loss : (n,) float, optional
    path_column : (n,) str, optional
    class_names : list of str, optional
    """
    n = len(index)
    loss = np.full(n, np.nan) if heldout_loss is None else np.asarray(heldout_loss, float)
    status = np.where(selected, "selected", np.where(candidate, "candidate", "removed"))
    files = [None] * n if path_column is None else list(path_column)
    with utils.atomic_write(path) as f:
        w = csv.writer(f)
        w.writerow(["index"] + (["path"] if path_column is not None else []) + ["given_label"]
                   + (["given_class"] if class_names else []) + ["status", "heldout_loss"])
        for i, p, y, s, ce in zip(index, files, given_label, status, loss):
            w.writerow([int(i)] + ([p] if path_column is not None else []) + [int(y)]
                       + ([class_names[int(y)]] if class_names else [])
                       + [s, "" if np.isnan(ce) else f"{ce:.6g}"])


def read_incv_csv(path, y_true, *, num_classes=None):
    """Read a saved selection; checks it belongs to this training set and selects samples.

    Raises FileNotFoundError / ValueError naming ``--incv_results`` and the file: missing,
    a directory, unreadable, malformed (columns, values), made for another training set,
    or selecting no sample.
    """
    if os.path.isdir(path):
        raise ValueError(f"--incv_results '{path}' is a directory: give the "
                         "<dataset>_<pattern><ratio>_INCV_results.csv file inside a run of "
                         "incv_train.py --method incv")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--incv_results file '{path}' does not exist")
    need = {"y", "y_noisy", "select", "candidate", "eval_ratio"}
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        if not rows or not need <= set(rows[0]):
            raise ValueError(f"needs the columns {sorted(need)} and one row per sample")
        y = np.array([int(r["y"]) for r in rows])
        y_noisy = np.array([int(r["y_noisy"]) for r in rows])
        flags = {}
        for k in ("select", "candidate"):
            values = {r[k] for r in rows}
            if not values <= {"True", "False"}:
                raise ValueError(f"column {k} must hold True / False, found "
                                 f"{sorted(values - {'True', 'False'})[:3]}")
            flags[k] = np.array([r[k] == "True" for r in rows])
        eval_ratio = float(rows[0]["eval_ratio"])
    except (ValueError, TypeError, UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"--incv_results '{path}' is not an INCV selection written by "
                         f"incv_train.py ({err})") from None
    if len(y) != len(y_true) or (y != y_true).any():
        raise ValueError(f"--incv_results '{path}' was made for another training set "
                         f"({len(y)} rows vs {len(y_true)} samples, or other labels): use the "
                         "same --dataset, --n_train and --seed")
    if num_classes is not None and (y_noisy.min() < 0 or y_noisy.max() >= num_classes):
        raise ValueError(f"--incv_results '{path}': y_noisy holds labels outside 0.."
                         f"{num_classes - 1}: the file was edited or made for other data")
    if (flags["select"] & flags["candidate"]).any() or not flags["select"].any():
        raise ValueError(f"--incv_results '{path}' selects "
                         + ("no sample" if not flags["select"].any() else
                            "samples that are also candidates")
                         + ": rerun the selection (incv_train.py --incv_only)")
    return (y_noisy, {"selected": flags["select"], "candidate": flags["candidate"],
                      "eval_ratio": eval_ratio, "iterations": []})


def make_incv_train_fn(config, data, y_noisy, *, seed, out, printer, runs_done=0):
    """INCV's training runs: one compiled ResNet, reset to the same initial weights each run.

    ``config`` (:class:`INCVConfig`): ``optimizer`` "carry" starts each run from the optimizer
    state the previous run ended with; the state after each run is saved to
    ``incv_optimizer.npz`` in ``out`` (the one before it kept as ``incv_optimizer_prev.npz``)
    so that a resumed INCV, ``runs_done`` runs in, carries on from the right one.
    """
    carry = config.optimizer == "carry"
    utils.set_random_seed(seed)
    model = training.build_classifier(config.arch, data, devices.device_strategy(config.devices),
                                      lr=config.lr)
    initial = model.get_weights()
    schedule = training.PiecewiseLR(config.lr, INCV_BOUNDARIES, INCV_FACTORS,
                                 paper_epochs=PAPER_INCV_EPOCHS, epochs=config.epochs)
    aug = resolve_augmentation(config.augment, data.name)
    state_path = os.path.join(out, "incv_optimizer.npz")
    prev_path = os.path.join(out, "incv_optimizer_prev.npz")
    runs = [runs_done]
    if carry and runs_done:
        _load_optimizer_state(model.optimizer, (state_path, prev_path), runs_done)
    progress = Progress()

    def train_fn(train_idx, held_idx, keep_best, tag):
        printer("  " + incv_run_line(tag, iterations=config.iterations,
                                           n_train=len(train_idx), n_held=len(held_idx),
                                           keep_best=keep_best, progress=progress))
        probs, info = training.train_and_predict(
            model, initial, data.x_train[train_idx], y_noisy[train_idx],
            data.x_train[held_idx], y_noisy[held_idx], epochs=config.epochs,
            batch_size=config.batch_size, schedule=schedule, augment=aug, seed=seed,
            keep_best=keep_best,
            y_held_true=None if data.y_clean is None else data.y_clean[held_idx],
            log_path=os.path.join(out, "incv_log.jsonl"), log_extra={"run": tag},
            verbose=config.verbose, printer=printer if config.verbose != 1 else None,
            reset_optimizer_state=not (carry and runs[0] > 0))
        runs[0] += 1
        if carry:
            if os.path.isfile(state_path):
                os.replace(state_path, prev_path)
            utils.save_npz(state_path, runs_done=np.int64(runs[0]), **{
                f"v{i}": keras.ops.convert_to_numpy(v)
                for i, v in enumerate(model.optimizer.variables)})
        return probs

    return train_fn


def _load_optimizer_state(optimizer, paths, runs_done):
    """Restore the optimizer state saved after run ``runs_done`` (resuming ``carry``)."""
    for path in paths:
        if os.path.isfile(path):
            with np.load(path) as f:
                if int(f["runs_done"]) == runs_done:
                    for i, v in enumerate(optimizer.variables):
                        v.assign(f[f"v{i}"])
                    return
    raise ValueError(f"--resume with --incv_optimizer carry: no saved optimizer state after "
                     f"INCV run {runs_done} in {os.path.dirname(paths[0])}: start that run "
                     "again with --overwrite")


def clean_labels(x, y_noisy, *, build_model, num_classes=None, noise_type="sym", epochs=50,
                 batch_size=128, seed=0, iterations=4, y_true=None, lr=1e-3, augment="none",
                 verbose=0):
    """Run INCV on arrays with your own Keras model; no flags, no files.

    Parameters
    ----------
    x : (n, h, w[, ch]) uint8 (divided by 255) or float32 in [0, 1]
        Training images.
    y_noisy : (n,) int
        The labels as given.
    build_model : callable (input_shape, num_classes) -> keras.Model
        A fresh classifier with a softmax output. Compiled with Adam(``lr``) and sparse
        cross-entropy when it comes uncompiled. Built once: every INCV run starts from its
        initial weights.
    num_classes : int, optional
        Default ``y_noisy.max() + 1``.
    noise_type : {"sym", "asym"}
        The rules INCV follows (large-loss removal and k_best for "sym", as the authors).
    epochs : int
        Epochs of each INCV training run (the paper: 50; the lr drops scale with it).
    batch_size, seed, iterations, lr, verbose
        As the flags of incv_train.py; ``augment`` one of pipelines.AUGMENTATIONS but "auto".
    y_true : (n,) int, optional
        Clean labels, if known: only for label precision / recall per iteration.

    Returns
    -------
    dict
        ``selected``, ``candidate``, ``removed``: sorted index arrays (positions in ``x``);
        ``status`` (n,) str; ``heldout_loss`` (n,) float (NaN where never predicted);
        ``estimated_noise_ratio``; ``iterations`` (one record per iteration).
    """
    x = to_unit_float(np.asarray(x))  # as the loaders: (n, h, w) gains a channel, uint8 / 255
    y = noise._check_labels(y_noisy, "y_noisy")
    if x.ndim != 4 or len(x) != len(y):
        raise ValueError(f"x must be (n, h, w[, ch]) images, one per label: got shape {x.shape} "
                         f"for {len(y)} labels")
    if noise_type not in noise.PATTERNS:
        raise ValueError(f"noise_type must be one of {noise.PATTERNS}, got {noise_type!r}")
    c = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.min() < 0 or y.max() >= c:
        raise ValueError(f"y_noisy must be in [0, {c}) (num_classes), got {y.min()}..{y.max()}")
    if y_true is not None:
        y_true = noise._check_labels(y_true, "y_true")
    utils.set_random_seed(seed)
    model = build_model(tuple(x.shape[1:]), c)
    if getattr(model, "optimizer", None) is None:
        training.compile_classifier(model, lr=lr)
    initial = model.get_weights()
    schedule = training.PiecewiseLR(lr, INCV_BOUNDARIES, INCV_FACTORS,
                                    paper_epochs=PAPER_INCV_EPOCHS, epochs=epochs)

    def train_fn(train_idx, held_idx, keep_best, tag):
        probs, _ = training.train_and_predict(
            model, initial, x[train_idx], y[train_idx], x[held_idx], y[held_idx],
            epochs=epochs, batch_size=batch_size, schedule=schedule, augment=augment,
            seed=seed, keep_best=keep_best,
            y_held_true=None if y_true is None else y_true[held_idx], verbose=verbose)
        return probs

    st = incv_select(y, num_classes=c, pattern=noise_type, train_fn=train_fn, seed=seed,
                     iterations=iterations, y_true=y_true)
    removed = ~st["selected"] & ~st["candidate"]
    return {"selected": np.flatnonzero(st["selected"]),
            "candidate": np.flatnonzero(st["candidate"]),
            "removed": np.flatnonzero(removed),
            "status": np.where(st["selected"], "selected",
                               np.where(st["candidate"], "candidate", "removed")),
            "heldout_loss": st["heldout_loss"], "estimated_noise_ratio": st["eval_ratio"],
            "iterations": st["iterations"]}


def make_incv_train_pair_fn(config, data, y_noisy, *, seed, out, printer):
    """INCV's two runs of an iteration side by side (``paired.PairedNetworks``), both
    from the same initial weights, which are those :func:`make_incv_train_fn` uses for the
    same seed. The ``train_pair_fn`` of :func:`incv_select`."""
    utils.set_random_seed(seed)
    initial = models_initial_weights(config.arch, data)
    pair = paired.build_paired_classifiers(config.arch, data, lr=config.lr)
    schedule = training.PiecewiseLR(config.lr, INCV_BOUNDARIES, INCV_FACTORS,
                                    paper_epochs=PAPER_INCV_EPOCHS, epochs=config.epochs)
    aug = resolve_augmentation(config.augment, data.name)
    progress = Progress()

    def train_pair_fn(run1, run2, keep_best, tags):
        printer("  " + incv_pair_line(tags, iterations=config.iterations,
                                      n_train=(len(run1[0]), len(run2[0])),
                                      n_held=(len(run1[1]), len(run2[1])),
                                      keep_best=keep_best, progress=progress))
        # clean labels for tracking only, as the sequential runs: none when unknown
        parts = [(data.x_train[t], y_noisy[t], data.x_train[h], y_noisy[h],
                  None if data.y_clean is None else data.y_clean[h]) for t, h in (run1, run2)]
        probs, _ = paired.train_pair_and_predict(
            pair, initial, parts, epochs=config.epochs, batch_size=config.batch_size,
            schedule=schedule, augment=aug, seed=seed, keep_best=keep_best,
            log_path=os.path.join(out, "incv_log.jsonl"),
            log_extras=[{"run": tag} for tag in tags], verbose=config.verbose,
            printer=printer if config.verbose != 1 else None)
        return probs

    return train_pair_fn


def models_initial_weights(arch, data):
    """The initial weights :func:`make_incv_train_fn`'s network gets after
    ``keras.utils.set_random_seed(seed)``: one ``arch`` network built right after it."""
    from . import models

    return models.build_model(arch, data.input_shape, data.num_classes).get_weights()


def training_fns(config, data, y_noisy, *, seed, out, printer, runs_done=0):
    """The training runs :func:`incv_select` calls, as its keyword arguments.

    ``config.parallel`` "pair": an iteration's two runs side by side in one training step
    (``train_pair_fn``); "sequential": one after the other (``train_fn``). Sequential also
    under a multi-replica ``devices``, which the paired step does not split across replicas,
    and under ``optimizer`` "carry", where each run starts from the previous run's Adam state
    (a chain that two simultaneous runs cannot follow).
    """
    if config.parallel == "pair" and config.optimizer == "fresh" and \
            devices.device_strategy(config.devices).num_replicas_in_sync == 1:
        return {"train_pair_fn": make_incv_train_pair_fn(config, data, y_noisy, seed=seed,
                                                         out=out, printer=printer)}
    return {"train_fn": make_incv_train_fn(config, data, y_noisy, seed=seed, out=out,
                                           printer=printer, runs_done=runs_done)}
