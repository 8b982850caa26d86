"""Training one network: the authors' compile settings, learning-rate schedules with Adam
resets, per-epoch checkpoints and held-out monitoring, and ``train_and_predict``, the
"train on one part, predict the other" routine that noisy_cv.py and every INCV run share.
"""

import os
import re
import time

import keras
import numpy as np

from . import devices, metrics, preemption, utils
from .pipelines import epoch_callbacks, make_train_dataset
from .progress import Progress

# The authors passed epsilon=1e-8 to every Adam (INCV.py, INCV_main.py, Verify_Theory.py), the
# Keras 2 default; Keras 3's default is 1e-7.
ADAM_EPSILON = 1e-8


def adam(lr):
    """Adam with learning rate ``lr`` and the authors' epsilon (:data:`ADAM_EPSILON`)."""
    return keras.optimizers.Adam(learning_rate=lr, epsilon=ADAM_EPSILON)


class PiecewiseLR:
    """lr(epoch) = base * factor_k for the last boundary_k with epoch > boundary_k.

    Boundaries are given for ``paper_epochs`` and scale with the run's ``epochs`` so that a
    short CPU run keeps the schedule's shape; at the paper's epochs they are exact.
    ``epoch`` is 0-based, as in the authors' Keras ``lr_schedule(epoch)``.
    """

    def __init__(self, base, boundaries, factors, *, paper_epochs, epochs):
        if len(boundaries) != len(factors):
            raise ValueError("boundaries and factors must have the same length")
        self.base = float(base)
        self.boundaries = [b * epochs / paper_epochs for b in boundaries]
        self.factors = list(factors)

    def __call__(self, epoch, lr=None):
        factor = 1.0
        for boundary, f in zip(self.boundaries, self.factors):
            if epoch > boundary:
                factor = f
        return self.base * factor


def reset_optimizer(optimizer):
    """Zero an optimizer's slots and step count, as a fresh one would start (keeps lr).
    A ``LossScaleOptimizer`` (mixed_float16) keeps its loss scale; its inner one is reset."""
    optimizer = getattr(optimizer, "inner_optimizer", optimizer)
    for v in optimizer.variables:
        if "learning_rate" not in v.path:
            v.assign(keras.ops.zeros(v.shape, v.dtype))


class EpochSchedule(keras.callbacks.Callback):
    """Set each optimizer's learning rate from ``schedule(epoch)`` at every epoch start and,
    with ``reset_on_drop``, zero the optimizers' state whenever the rate changes: the
    authors re-compiled at each drop, which gave a fresh Adam. ``on_epoch`` (optional)
    is called with the epoch too (e.g. to update Co-teaching's forget rate)."""

    def __init__(self, schedule, optimizers, *, reset_on_drop=True, on_epoch=None):
        super().__init__()
        self.schedule, self.optimizers = schedule, list(optimizers)
        self.reset_on_drop, self.on_epoch = reset_on_drop, on_epoch

    def on_epoch_begin(self, epoch, logs=None):
        lr = self.schedule(epoch)
        changed = epoch > 0 and lr != self.schedule(epoch - 1)
        for opt in self.optimizers:
            opt.learning_rate.assign(lr)
            if changed and self.reset_on_drop:
                reset_optimizer(opt)
        if self.on_epoch is not None:
            self.on_epoch(epoch)


class EpochCheckpoint(keras.callbacks.Callback):
    """After each epoch atomically save the model's weights, its optimizers' state and the
    number of finished epochs to ``path`` (an .npz), so a killed run can ``--resume``.

    Put it last among the callbacks: once it has saved, the epoch's log line and
    checkpoint agree, so a stop requested by SIGTERM / SIGUSR1 (preemption.py) is honoured
    there (:class:`preemption.Preempted`)."""

    def __init__(self, path, optimizers):
        super().__init__()
        self.path, self.optimizers = path, list(optimizers)

    def on_epoch_end(self, epoch, logs=None):
        arrays = {f"w{i}": w for i, w in enumerate(self.model.get_weights())}
        for k, opt in enumerate(self.optimizers):
            arrays.update({f"o{k}_{i}": keras.ops.convert_to_numpy(v)
                           for i, v in enumerate(opt.variables)})
        utils.save_npz(self.path, epochs_done=np.int64(epoch + 1), **arrays)
        preemption.check(f" after epoch {epoch + 1}, checkpoint {self.path} written")


class StopAtEpochEnd(keras.callbacks.Callback):
    """Honour a stop requested by SIGTERM / SIGUSR1 at the end of an epoch (put it last), in
    training runs without a checkpoint of their own (INCV's runs: a resumed INCV redoes the
    iteration in progress from its saved state)."""

    def on_epoch_end(self, epoch, logs=None):
        preemption.check(f" after epoch {epoch + 1}")


def restore_checkpoint(path, model, optimizers):
    """Load an :class:`EpochCheckpoint` file into ``model`` and its (built) optimizers;
    returns the number of finished epochs."""
    with np.load(path) as f:
        model.set_weights([f[f"w{i}"] for i in range(len(model.get_weights()))])
        for k, opt in enumerate(optimizers):
            for i, v in enumerate(opt.variables):
                v.assign(f[f"o{k}_{i}"])
        return int(f["epochs_done"])


class TrainDiagnostics(keras.callbacks.Callback):
    """The authors' end-of-epoch tracking: loss and accuracy w.r.t. noisy labels of each
    network on a fixed random subset (<= 1000) of its training samples, split into
    samples whose label is clean / noisy. Tracking only, never used for training."""

    def __init__(self, nets, x, y_noisy, clean, *, names=("model1", "model2")):
        super().__init__()
        self.nets, self.x, self.y, self.clean, self.names = nets, x, y_noisy, clean, names

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for net, name in zip(self.nets, self.names):
            probs = net.predict(self.x, batch_size=1024, verbose=0)
            ce, hit = metrics.cross_entropy(probs, self.y), probs.argmax(1) == self.y
            for part, mask in (("mix", slice(None)), ("clean", self.clean),
                               ("noisy", ~self.clean)):
                n = len(ce[mask])
                logs[f"train_loss_{part}_{name}"] = float(ce[mask].mean()) if n else float("nan")
                logs[f"train_acc_{part}_{name}"] = float(hit[mask].mean()) if n else float("nan")


class HeldOutMonitor(keras.callbacks.Callback):
    """The authors' held-out callback: after each epoch predict the held-out part and log
    accuracy w.r.t. its noisy labels, split into samples whose label is clean / noisy.

    With ``keep_best`` it also keeps (in memory) the weights of the epoch with the best
    held-out noisy accuracy and restores them when training ends (the authors'
    ModelCheckpoint on ``val_acc``: it saved on their Keras 2.1.6; from Keras 2.3 on, where
    the key is ``val_accuracy``, it skips saving with a warning), together
    with the optimizer's state of that epoch, as their ``load_model`` restored it (which
    matters only when the next run carries the state over: ``--incv_optimizer carry``).
    ``best_by="loss"`` keeps the epoch of the lowest held-out cross-entropy instead
    (loss-correction's ModelCheckpoint on ``val_loss``: F-correction's networks).
    """

    def __init__(self, x, y_noisy, y_true=None, *, batch_size=1024, keep_best=False,
                 optimizer=None, best_by="accuracy"):
        super().__init__()
        if best_by not in ("accuracy", "loss"):
            raise ValueError(f"best_by must be 'accuracy' or 'loss', got {best_by!r}")
        self.x, self.y_noisy, self.batch_size = x, y_noisy, batch_size
        self.clean = None if y_true is None else (y_true == y_noisy)
        self.keep_best, self.best_by = keep_best, best_by
        self.best, self.best_epoch, self.best_weights = -np.inf, None, None
        # Whose state is kept with the best weights: the model's own optimizer by default;
        # a network of PairedNetworks has none, its pair passes that network's.
        self._optimizer = optimizer

    @property
    def optimizer(self):
        return self._optimizer or self.model.optimizer

    def on_epoch_end(self, epoch, logs=None):
        probs = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        hit = probs.argmax(1) == self.y_noisy
        acc = float(hit.mean())
        if logs is not None:
            logs["val_noisy_accuracy"] = acc
            if self.clean is not None:
                logs["val_acc_clean_labels"] = float(hit[self.clean].mean()) \
                    if self.clean.any() else float("nan")
                logs["val_acc_noisy_labels"] = float(hit[~self.clean].mean()) \
                    if (~self.clean).any() else float("nan")
        # the score to maximise: accuracy, or minus the mean cross-entropy
        score = acc if self.best_by == "accuracy" else \
            -float(metrics.cross_entropy(probs, self.y_noisy).mean())
        if self.best_by == "loss" and logs is not None:
            logs["val_noisy_loss"] = -score
        if self.keep_best and score > self.best:
            self.best, self.best_epoch = score, epoch
            self.best_weights = self.model.get_weights()
            self.best_optimizer = [keras.ops.convert_to_numpy(v)
                                   for v in self.optimizer.variables]

    def on_train_end(self, logs=None):
        if self.keep_best and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            for v, value in zip(self.optimizer.variables, self.best_optimizer):
                if "learning_rate" not in v.path:  # the schedule sets it every epoch
                    v.assign(value)


class JsonlLogger(keras.callbacks.Callback):
    """Append one JSON line per epoch (epoch, lr, seconds, every logged metric) to ``path``
    (strict JSON: a NaN metric is written as null); optionally echo a one-line summary
    with the epoch count, elapsed time and an estimate of what remains through ``printer``.
    ``epochs``: the run's last epoch when one run spans several ``fit`` calls (default:
    ``fit``'s)."""

    def __init__(self, path, *, extra=None, printer=None, optimizer=None, epochs=None):
        super().__init__()
        self.path, self.extra, self.printer = path, dict(extra or {}), printer
        self.optimizer = optimizer  # whose lr is logged; default: the model's
        self.epochs, self.progress = epochs, Progress()

    def on_epoch_begin(self, epoch, logs=None):
        self._t0 = time.time()
        if self.progress.t0 is None:  # the clock starts with the first epoch of this process
            self.progress.mark(0)

    def on_epoch_end(self, epoch, logs=None):
        row = {**self.extra, "epoch": epoch + 1,
               "lr": float(keras.ops.convert_to_numpy(
                   (self.optimizer or self.model.optimizer).learning_rate)),
               "seconds": round(time.time() - self._t0, 3)}
        # Keras' LearningRateScheduler also logs "learning_rate": already in "lr".
        row.update({k: float(v) for k, v in (logs or {}).items() if k != "learning_rate"})
        if self.path:
            with open(self.path, "a") as f:
                f.write(utils.jsonl_line(row))
        if self.printer:
            total = self.epochs or self.params.get("epochs") or epoch + 1
            metrics_ = " ".join(f"{k}={v:.4g}" for k, v in row.items()
                                if isinstance(v, float) and k not in ("lr", "seconds"))
            # elapsed including this epoch; what remains from the epochs finished so far
            self.printer(f"  {self.extra.get('run', 'epoch')} {epoch + 1}/{total}: "
                         f"{metrics_} ({self.progress.mark(total - epoch - 1)})")


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """End the run with :class:`utils.TrainingDiverged` when an epoch's training loss
    (any logged ``loss*``) is NaN or infinite: the run is then not reported as finished
    (no summary.json), unlike Keras' TerminateOnNaN, which stops training quietly."""

    def __init__(self, where=""):
        super().__init__()
        self.where = where

    def on_epoch_end(self, epoch, logs=None):
        bad = {k: v for k, v in (logs or {}).items()
               if k.startswith("loss") and not np.isfinite(float(v))}
        if bad:
            shown = ", ".join(f"{k}={float(v)}" for k, v in bad.items())
            raise utils.TrainingDiverged(
                f"training diverged{self.where}: {shown} at epoch {epoch + 1}; no summary "
                "written. Lower --lr, or check the data for extreme values")


class TestTopK(keras.callbacks.Callback):
    """Top-k accuracy of each network on the test set, logged as ``test_top{k}_accuracy_<name>``
    (the paper reports top-5 on mini-WebVision).

    It needs an inference pass over the test set of its own, which costs as much as the
    per-epoch test evaluation itself, so with ``epochs`` given it runs after the last epoch
    only (the summary's value); without, after every epoch.
    """

    def __init__(self, nets, x, y, *, k=5, names=("model1", "model2"), epochs=None):
        super().__init__()
        self.nets, self.x, self.y, self.k, self.names = nets, x, np.asarray(y), k, names
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if logs is None or (self.epochs is not None and epoch + 1 < self.epochs):
            return
        for net, name in zip(self.nets, self.names):
            probs = net.predict(self.x, batch_size=1024, verbose=0)
            logs[f"test_top{self.k}_accuracy_{name}"] = metrics.top_k_accuracy(
                probs, self.y, self.k)


class DropCleanSplit(keras.callbacks.Callback):
    """Labels as given without clean labels: drop the logged clean / noisy splits (they
    would compare the given labels with themselves)."""

    def on_epoch_end(self, epoch, logs=None):
        for key in [k for k in (logs or {}) if re.search(r"(^|_)(clean|noisy)(_|\d|$)", k)]:
            del logs[key]


def own_data_callbacks(nets, data, *, names=("model1", "model2"), epochs=None):
    """Callbacks a dataset needs beyond the paper's CIFAR setting: top-5 test accuracy when
    there are more than 5 classes (after the last of ``epochs`` only, see :class:`TestTopK`);
    no clean / noisy split when clean labels are unknown."""
    cbs = []
    if data.num_classes > 5:
        cbs.append(TestTopK(nets, data.x_test, data.y_test, k=5, names=names, epochs=epochs))
    if not data.clean_known:
        cbs.append(DropCleanSplit())
    return cbs


def compile_classifier(model, *, lr=1e-3, steps_per_execution=1, jit_compile="auto"):
    """Adam + sparse cross-entropy on softmax outputs + accuracy, as the authors compiled.

    ``steps_per_execution`` > 1 runs that many steps per call of the compiled function
    (less Python per step; callbacks then see logs every that many batches).
    ``jit_compile``: Keras' "auto" leaves XLA off on a CPU (it is ~2x slower there).
    """
    model.compile(optimizer=adam(lr),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution, jit_compile=jit_compile)
    return model


def build_classifier(arch, data, strategy, *, lr=1e-3):
    """Network ``arch`` for ``data``, compiled as the authors did (:func:`compile_classifier`),
    on a ``tf.distribute`` strategy (``devices.device_strategy``)."""
    from . import models

    with strategy.scope():
        net = models.build_model(arch, data.input_shape, data.num_classes)
        devices.sync_batchnorm(net, strategy)
        return compile_classifier(net, lr=lr)


def train_and_predict(model, initial_weights, x_fit, y_fit, x_held, y_held, *,
                      epochs, batch_size, schedule, augment="none", seed=0, keep_best=False,
                      best_by="accuracy",
                      y_held_true=None, log_path=None, log_extra=None, verbose=1,
                      printer=None, callbacks=(), reset_optimizer_state=True,
                      checkpoint=None, resume=False):
    """Train on one part from ``initial_weights``, then predict the held-out part.

    The routine behind noisy cross-validation (noisy_cv.py) and every INCV training run.

    Parameters
    ----------
    model : keras.Model
        Compiled classifier (softmax output). Its weights are overwritten with
        ``initial_weights`` and its optimizer state is reset, so one compiled model serves
        many runs without re-tracing.
    x_fit, y_fit : (n, h, w, ch) float32, (n,) int
        Training part (noisy labels).
    x_held, y_held : (m, h, w, ch) float32, (m,) int
        Held-out part and its noisy labels (monitored each epoch).
    schedule : callable epoch -> lr
        E.g. a :class:`PiecewiseLR`.
    keep_best : bool
        Restore the epoch with the best held-out noisy accuracy (INCV's checkpoint rule).
    best_by : {"accuracy", "loss"}
        With ``keep_best``: the highest held-out noisy accuracy, or the lowest held-out
        cross-entropy (:class:`HeldOutMonitor`).
    y_held_true : (m,) int, optional
        True labels, for tracking accuracy on clean / noisy held-out samples only.
    reset_optimizer_state : bool
        Zero the optimizer's state first (default). False starts from the state the
        optimizer holds: after an earlier call, that of its final (or, with ``keep_best``, its
        best) epoch, as the authors' INCV runs did after ``load_model``.
    checkpoint : str, optional
        Path of a per-epoch :class:`EpochCheckpoint` (.npz) of the model and its optimizer;
        with ``resume`` and the file present, training continues after its last epoch (the
        log's later lines are dropped), ending as the uninterrupted run would.
        Not with ``keep_best`` (the best epoch's weights are not checkpointed).

    Returns
    -------
    probs : (m, c) float32
        Held-out softmax outputs of the final (or best) weights.
    info : dict
        ``history`` (per-epoch logs), ``best_epoch`` (1-based, or None).
    """
    if checkpoint is not None and keep_best:
        raise ValueError("train_and_predict: a checkpoint cannot keep the best epoch")
    model.set_weights(initial_weights)
    if reset_optimizer_state:
        reset_optimizer(model.optimizer)
    start = 0
    if checkpoint is not None:
        model.optimizer.build(model.trainable_variables)  # its variables, to restore / save
        if resume and os.path.isfile(checkpoint):
            start = restore_checkpoint(checkpoint, model, [model.optimizer])
            if printer:
                printer(f"  resuming after epoch {start} ({checkpoint})")
        if resume:
            _truncate_log(log_path, log_extra, start)
    monitor = HeldOutMonitor(x_held, y_held, y_held_true, keep_best=keep_best, best_by=best_by)
    cbs = [keras.callbacks.LearningRateScheduler(schedule), monitor,
           JsonlLogger(log_path, extra=log_extra, printer=printer, epochs=epochs),
           StopOnNonFiniteLoss(f" (log: {log_path})" if log_path else ""), *callbacks,
           EpochCheckpoint(checkpoint, [model.optimizer]) if checkpoint is not None
           else StopAtEpochEnd()]
    ds = make_train_dataset(x_fit, y_fit, batch_size=batch_size, augment=augment, seed=seed,
                            first_epoch=start)
    history = model.fit(ds, epochs=epochs, initial_epoch=start,
                        callbacks=[*cbs, *epoch_callbacks(ds)],
                        verbose=verbose, shuffle=False)
    probs = model.predict(x_held, batch_size=1024, verbose=0)
    best = monitor.best_epoch + 1 if keep_best and monitor.best_epoch is not None else None
    return probs, {"history": history.history, "best_epoch": best}


def _truncate_log(path, extra, epochs_done):
    """Drop the lines of ``path`` (JSON lines) that belong to this run (every key of
    ``extra`` matches) and come after epoch ``epochs_done``: a run killed after its log
    line but before its checkpoint logs that epoch again when it resumes."""
    if not path or not os.path.isfile(path):
        return
    extra = extra or {}
    rows = [r for r in utils.read_jsonl(path)
            if not (all(r.get(k) == v for k, v in extra.items()) and r["epoch"] > epochs_done)]
    with utils.atomic_write(path) as f:
        f.writelines(utils.jsonl_line(r) for r in rows)


def train_folds(model, initial_weights, x, y, *, folds, x_test=None, log_extra=None,
                checkpoint_dir=None, resume=False, **train_kwargs):
    """Cross-validation folds, each trained from the same ``initial_weights``.

    The one place that trains several folds (noisy_cv.py ``--folds 2``): a version that
    trains the folds side by side can replace this function without touching its callers.

    Parameters
    ----------
    model : keras.Model
        Compiled classifier (see :func:`train_and_predict`).
    x, y : (n, h, w, ch) float32, (n,) int
        The whole training set and its noisy labels.
    folds : list of (fit_idx, held_idx)
        Index arrays into ``x``: train on ``fit_idx``, predict ``held_idx``.
    x_test : (m, h, w, ch) float32, optional
        Also predicted by each fold's final (or best) network.
    log_extra : dict, optional
        Added to every log line, with ``fold`` (1-based).
    checkpoint_dir : str, optional
        Checkpoint each fold's epochs there (``checkpoint.npz``, ``checkpoint_fold2.npz``)
        and keep each finished fold's predictions (``fold<k>.npz``); with ``resume``, finished
        folds are read back and the unfinished one continues after its last epoch.
    **train_kwargs
        Passed to :func:`train_and_predict` (epochs, batch_size, schedule, ...); a
        ``y_true`` (n,) array is split into each fold's ``y_held_true``.

    Returns
    -------
    list of dict, one per fold
        ``probs`` (len(held_idx), c) out-of-sample probabilities, ``test_probs`` (m, c)
        or None, ``info`` (see :func:`train_and_predict`).
    """
    y_true = train_kwargs.pop("y_true", None)
    results = []
    for k, (fit, held) in enumerate(folds, 1):
        ckpt = done = None
        if checkpoint_dir is not None:
            ckpt = os.path.join(checkpoint_dir,
                                "checkpoint.npz" if k == 1 else f"checkpoint_fold{k}.npz")
            done = os.path.join(checkpoint_dir, f"fold{k}.npz")
            if resume and os.path.isfile(done):  # finished before the interruption
                with np.load(done) as f:
                    results.append({"probs": f["probs"], "info": {"resumed": True},
                                    "test_probs": f["test_probs"] if "test_probs" in f
                                    else None})
                continue
        probs, info = train_and_predict(
            model, initial_weights, x[fit], y[fit], x[held], y[held],
            y_held_true=None if y_true is None else y_true[held],
            log_extra={**(log_extra or {}), "fold": k}, checkpoint=ckpt, resume=resume,
            **train_kwargs)
        test_probs = None if x_test is None else model.predict(x_test, batch_size=1024,
                                                                 verbose=0)
        if done is not None:
            utils.save_npz(done, probs=probs,
                           **({} if test_probs is None else {"test_probs": test_probs}))
        results.append({"probs": probs, "test_probs": test_probs, "info": info})
    return results
