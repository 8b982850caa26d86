"""F-correction, the forward loss with an estimated T (Patrini et al., CVPR 2017), Table 1's
first row.

Three stages, as giorgiop/loss-correction runs them (``experiment.py``, ``models.py``):

A. a network trained with plain cross-entropy on the noisy labels, a noisy validation split
   (the first 10% of a permutation) held out, its weights of the lowest validation loss
   kept (a network that has memorised its labels gives a T collapsing towards I);
B. T estimated from its softmax outputs P on every training image (``NoiseEstimator``):
   for each class i the sample x_i at the 97th percentile ("higher" interpolation) of
   P[:, i], after every entry at or above it is removed, and T[i, :] = P[x_i, :], rows
   normalised (:func:`estimate_transition`);
C. a fresh network trained with the forward loss ``-log((clip(p) T)_y)``
   (:func:`forward_loss`; ``loss.py`` ``robust('forward')``), the same split held out.

``--fcorrection_T true`` uses the known T (an oracle ablation), ``ncv`` the paper's own noisy
cross-validation: the noise ratio e from stage A's held-out accuracy w.r.t. the noisy labels
through the paper's formula, put into the declared pattern (:func:`ncv_transition`).
"""

import os

import keras
import numpy as np

from .. import metrics, noise, utils
from .family import PROB_CLIP, Rule, one_network


def forward_loss(y, probs, T):
    """(b,) forward-corrected cross-entropy ``-log((clip(p) T)_y)``.

    Parameters
    ----------
    y : (b,) int
        Noisy labels.
    probs : (b, c) float
        Softmax outputs.
    T : (c, c) float
        Rows = true class, columns = noisy class, row-stochastic.
    """
    ops = keras.ops
    p = ops.clip(ops.cast(probs, "float32"), PROB_CLIP, 1.0 - PROB_CLIP)
    q = ops.matmul(p, ops.cast(T, "float32"))
    q_y = ops.sum(q * ops.one_hot(y, ops.shape(q)[-1], dtype="float32"), axis=-1)
    # A pair-flip T has zeros; clipped p keeps q_y > 0 unless a whole column is zero.
    return -ops.log(ops.clip(q_y, PROB_CLIP, 1.0))


def estimate_transition(probs, *, percentile=97.0):
    """Patrini et al.'s estimator of T from softmax outputs (``NoiseEstimator.fit``).

    Parameters
    ----------
    probs : (n, c) float
        A network's probabilities on the training images.
    percentile : float
        The outlier filter: per class, every entry at or above this percentile of
        ``probs[:, i]`` ("higher" interpolation) is dropped before the argmax; 100 gives
        the plain argmax.

    Returns
    -------
    (c, c) float64, rows normalised.

    Notes
    -----
    The reference zeroes the filtered entries in ``probs`` itself (a numpy view), so later
    rows can read zeros; this works on a copy per class (the effect is negligible).
    """
    P = np.asarray(probs, np.float64)
    c = P.shape[1]
    T = np.empty((c, c))
    for i in range(c):
        col = P[:, i].copy()
        if percentile < 100:
            thr = np.percentile(col, percentile, method="higher")
            col[col >= thr] = 0.0
        T[i] = P[int(np.argmax(col))]
    return T / T.sum(axis=1, keepdims=True)


def pair_noise_ratio(accuracy):
    """Invert the pair-flip accuracy formula ``a = (1-e)^2 + e^2`` for e in [0, 0.5]."""
    a = float(accuracy)
    return 0.5 if a <= 0.5 else (1.0 - np.sqrt(2.0 * a - 1.0)) / 2.0


def ncv_transition(accuracy, *, pattern, num_classes):
    """T from a held-out accuracy w.r.t. the noisy labels (the paper, sec. 2), no clean labels.

    The accuracy gives e through ``(1-e)^2 + e^2/(c-1)`` (sym) or ``(1-e)^2 + e^2`` (pair
    flip); e goes into the declared pattern's T. Returns ``(e, T)``. (The held-out confusion
    matrix against the noisy labels would be T^T diag(prior) T, not T.)
    """
    if pattern == "sym":
        e = noise.estimate_noise_ratio(accuracy, num_classes)
    else:
        e = pair_noise_ratio(accuracy)
    return e, noise.transition_matrix(pattern, e, num_classes)


class ForwardRule(Rule):
    """The forward loss with T held in a non-trainable model variable ``fc_T``."""

    def __init__(self, T):
        self.T = np.asarray(T, np.float32)

    def build(self, model):
        c = self.T.shape[0]
        model.fc_T = model.add_weight(shape=(c, c), initializer="zeros", trainable=False,
                                      name="transition")
        model.fc_T.assign(self.T)

    def loss(self, model, y, probs, training):
        return keras.ops.mean(forward_loss(y, probs, model.fc_T)), 1.0


class ValidationLoss(keras.callbacks.Callback):
    """Log ``val_noisy_loss``: the stage's loss on the held-out noisy validation split after
    every epoch (the reference keeps the epoch with the lowest)."""

    def __init__(self, x, y, T):
        super().__init__()
        self.x, self.y, self.T = x, np.asarray(y), np.asarray(T, np.float64)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        p = np.clip(self.model.predict(self.x, batch_size=1024, verbose=0), PROB_CLIP,
                    1 - PROB_CLIP)
        q = (p.astype(np.float64) @ self.T)[np.arange(len(self.y)), self.y]
        logs["val_noisy_loss"] = float(-np.log(np.clip(q, PROB_CLIP, 1.0)).mean())


def split(n, *, fraction, seed):
    """``(train_idx, val_idx)``: the first ``fraction`` of a seeded permutation held out."""
    perm = utils.rng_for(seed, "fcorrection-split").permutation(n)
    n_val = int(round(fraction * n))
    if not 1 <= n_val < n:
        raise ValueError(f"--fcorrection_val_split {fraction:g} of {n} training images holds "
                         f"out {n_val}: choose a split that keeps at least one image on each "
                         "side")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def stage_a(ctx, train_idx, val_idx):
    """Stage A: the cross-entropy network of the lowest noisy-validation loss; returns its
    probabilities on every training image and its held-out accuracy w.r.t. the noisy
    labels, logged to ``stage_a_log.jsonl``."""
    from .. import coteaching, training
    from ..pipelines import resolve_augmentation

    cfg, data, y = ctx.config, ctx.data, ctx.y_noisy
    utils.set_random_seed(ctx.seed + 1)  # not the stage C network's initialisation
    model = training.build_classifier(cfg.arch, data, ctx.strategy, lr=cfg.lr)
    schedule = training.PiecewiseLR(cfg.lr, coteaching.COT_BOUNDARIES, coteaching.COT_FACTORS,
                                    paper_epochs=coteaching.PAPER_EPOCHS, epochs=cfg.epochs)
    log = os.path.join(ctx.out, "stage_a_log.jsonl")
    if os.path.exists(log):
        os.remove(log)
    ctx.printer(f"  F-correction stage A: cross-entropy on {len(train_idx)} images, "
                f"{len(val_idx)} held out")
    held, info = training.train_and_predict(
        model, model.get_weights(), data.x_train[train_idx], y[train_idx],
        data.x_train[val_idx], y[val_idx], epochs=cfg.epochs, batch_size=cfg.batch_size,
        schedule=schedule, augment=resolve_augmentation(cfg.augment, data.name),
        seed=ctx.seed, keep_best=True, best_by="loss", log_path=log,
        log_extra={"run": "fcorrection_stage_a"}, verbose=cfg.verbose,
        printer=ctx.printer if cfg.verbose != 1 else None,
        # the shared protocol's fresh Adam at each learning-rate drop, as stage C
        callbacks=[training.EpochSchedule(schedule, [model.optimizer],
                                          reset_on_drop=not cfg.keep_optimizer_state)])
    probs = model.predict(data.x_train, batch_size=1024, verbose=0)
    return probs, float((held.argmax(1) == y[val_idx]).mean()), info["best_epoch"]


def prepare(ctx):
    """Stages A and B (or the known T), and stage C's :class:`~.family.Method`; writes
    ``transition_matrix.npz`` (``estimated``: the T trained with; ``true`` where known) and
    the summary's T error. A resumed run reads T back instead of redoing stage A."""
    args, data, summary = ctx.args, ctx.data, ctx.summary
    c = data.num_classes
    train_idx, val_idx = split(len(ctx.y_noisy), fraction=args.fcorrection_val_split,
                               seed=ctx.seed)
    true_T = ctx.true_T
    if true_T is None and ctx.y_true is not None:
        # labels as given with clean ones: rows = clean class, row-normalised counts
        true_T = metrics.normalized_confusion(ctx.y_true, ctx.y_noisy, c)
    path = os.path.join(ctx.out, "transition_matrix.npz")
    info = {"fcorrection_T": args.fcorrection_T, "validation_size": int(len(val_idx))}
    if args.resume and os.path.isfile(path):
        with np.load(path) as f:
            T = f["estimated"]
        info.update(utils.read_json(path + ".json"))
        ctx.printer(f"  F-correction: T read back from {path}")
    elif args.fcorrection_T == "true":
        T = true_T
    else:
        probs, held_acc, best = stage_a(ctx, train_idx, val_idx)
        info.update(stage_a_best_epoch=best, stage_a_val_noisy_accuracy=held_acc)
        if args.fcorrection_T == "estimated":
            T = estimate_transition(probs, percentile=args.fcorrection_percentile)
        else:
            e, T = ncv_transition(held_acc, pattern=ctx.rules, num_classes=c)
            info["ncv_noise_ratio"] = e
    T = np.asarray(T, np.float64)
    info["condition_number"] = float(np.linalg.cond(T))
    if true_T is not None:
        info["mean_abs_error"] = float(np.abs(T - true_T).mean())
    utils.save_npz(path, estimated=T, **({} if true_T is None else {"true": true_T}))
    utils.write_json(path + ".json", info)
    summary["fcorrection"] = info
    err = f", mean |T - T_true| {info['mean_abs_error']:.4f}" if "mean_abs_error" in info else ""
    ctx.printer(f"  F-correction: T {args.fcorrection_T}{err}")
    return one_network(
        ForwardRule(T), train_idx=train_idx,
        callbacks=lambda model, nets: [ValidationLoss(data.x_train[val_idx],
                                                      ctx.y_noisy[val_idx], T)],
        summarize=lambda rows: best_validation_epoch(rows))


def best_validation_epoch(rows):
    """The reference's checkpoint rule beside the final epoch: the epoch of the lowest
    noisy-validation loss and its test accuracy (labelled as such in the summary)."""
    scored = [r for r in rows if r.get("val_noisy_loss") is not None]
    if not scored:
        return {}
    best = min(scored, key=lambda r: r["val_noisy_loss"])
    return {"lowest_val_loss_epoch": {"epoch": best["epoch"],
                                      "val_noisy_loss": best["val_noisy_loss"],
                                      "test_accuracy": best.get("test_accuracy_model1")}}
