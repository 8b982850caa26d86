"""Modified Co-teaching (arXiv:1905.05040, sec. 4, Algorithm 2): two networks trained on the
selected set S, each on the small-loss samples its peer picked, joined by batches from the
candidate set C after a warm-up; also the plain Co-teaching (Han et al. 2018) and standard
baselines, which share the same training loop.

:class:`CoTeaching` is the algorithm as one ``keras.Model`` with a fused training step;
:func:`train_two_networks` runs it (or one network for the standard baseline) with the
authors' schedule, per-epoch test accuracy, diagnostics and a resumable checkpoint.
"""

import dataclasses
import os

import keras
import numpy as np

from . import devices, models, noise, training, utils
from .algorithms.family import TwoNetworks, correct
from .backend_steps import Positions, small_loss_mask
from .pipelines import (
    epoch_callbacks,
    make_coteaching_dataset,
    make_train_dataset,
    resolve_augmentation,
)

PAPER_EPOCHS = 200          # Co-teaching / standard training
# Co-teaching: x0.1 at epochs 80, 120, 160, then x0.5 at 180 (0-based epoch == 80 in the
# authors' loop, i.e. epoch > 79 in PiecewiseLR's terms).
COT_BOUNDARIES, COT_FACTORS = (79, 119, 159, 179), (0.1, 0.01, 0.001, 0.0005)
# How each step picks its small-loss samples (``--selection``): "fused" from the training-mode
# pass over the whole batch (one forward pass per network), "authors" as the authors'
# ``predict()`` then ``train_on_batch(picked)`` (see CoTeaching).
SELECTIONS = ("fused", "authors")
# JAX / PyTorch: the keep count of every S count b_S below this is tabulated (KeepTableRate);
# a larger S part of one batch is refused.
KEEP_TABLE_SIZE = 8193


class KeepTableRate:
    """``CoTeaching.forget_rate`` on JAX and PyTorch: ``assign(r)`` sets the rate variable
    and the table ``keep[b_S] = clip(round(b_S * (1 - r)), min(1, b_S), b_S)``, computed in
    Python's float64 with round-half-to-even, as the TensorFlow step computes it in-graph."""

    def __init__(self, rate, table):
        self.rate, self.table = rate, table

    def assign(self, r):
        r = float(keras.ops.convert_to_numpy(r))
        n = np.arange(KEEP_TABLE_SIZE, dtype=np.float64)
        keep = np.round(n * (1.0 - r))  # numpy rounds half to even, as Python's round
        keep = np.clip(keep, np.minimum(1, n), n).astype(np.int32)
        self.rate.assign(r)
        self.table.assign(keep)

    def numpy(self):
        return keras.ops.convert_to_numpy(self.rate)

    def __float__(self):
        return float(self.numpy())

# Modified Co-teaching (Chen et al., ICML 2019, arXiv:1905.05040 sec. 4) as one Keras model.
#
# :class:`CoTeaching` wraps two networks with softmax outputs and trains both in a single
# compiled training step (TensorFlow backend: ``tf.GradientTape`` inside the ``tf.function``
# that ``fit`` builds; no Python-side ``predict()`` and no numpy in the step).
#
# Algorithm, per mini-batch ``(x, y)`` of ``b`` samples whose first part comes from the selected
# set S (``from_s == 1``) and, after warm-up, whose other part comes from the candidate set C
# (``from_s == 0``):
#
# 1. ``b_S = sum(from_s)`` and ``keep = round(b_S * (1 - forget_rate))`` with banker's rounding
#    (as Python's ``round``), clipped to ``[1, b]`` (0 when ``b_S`` is 0: a batch without S samples
#    picks none, only the regularisation acts). ``forget_rate`` is a model variable that the
#    training script assigns every epoch (``e_S * min(1, epoch / Tk)``), so the step is traced once.
# 2. One training-mode forward pass of each network over the *whole* batch gives per-sample
#    cross-entropies ``ce1``, ``ce2`` w.r.t. the noisy labels.
# 3. Each network picks its ``keep`` smallest-loss samples of the whole batch (S and C together,
#    as the authors do after warm-up): ``top_k(-ce, keep)``.
# 4. The exchange: network 1 is updated on the mean ``ce1`` over the samples *network 2* picked,
#    network 2 on the mean ``ce2`` over the samples *network 1* picked (plus each network's own
#    regularisation losses). The picks are integer indices, hence constants for the gradient.
#    Each network has its own optimizer.
#
# Cross-entropy: ``keras.losses.sparse_categorical_crossentropy`` on the probabilities, i.e. the
# same loss as ``compile(loss="sparse_categorical_crossentropy")``: when the output comes from a
# softmax op Keras uses its logits directly (exact, no clipping); otherwise it clips the
# probabilities to ``[1e-7, 1 - 1e-7]``. The authors' ``log(p + 1e-8)`` is not used.
#
# Deviation from the authors' code: they called ``predict()`` (inference mode) on the batch to
# pick samples, then ``train_on_batch`` on the picked subset only, so BatchNorm used moving
# statistics for the selection and batch statistics of the picked subset for the update. Here the
# selection uses the training-mode outputs of the same forward pass over the whole batch and
# only the picked samples are back-propagated (as the official Co-teaching code of Han et al.
# does); BatchNorm batch statistics, and the moving averages, therefore come from the whole batch.
# ``CoTeaching(..., selection="authors")`` (``--selection authors``) does as the authors did,
# inside the same compiled step: an inference-mode pass over the whole batch for the picks,
# then a training-mode pass of each network over its peer's picks only.
#
# The ``clean`` input flag (whether the noisy label is correct) is used only for the
# ``kept_clean1`` / ``kept_clean2`` tracking metrics; it never reaches a loss or a selection.
#
# Several devices (``tf.distribute.MirroredStrategy``, ``--devices all``; build and compile under
# ``strategy.scope()``): ``fit`` splits each global batch into contiguous shares, one per replica,
# and ``train_step`` runs on each share. Per replica r: ``keep_r = round(b_S_r * (1 - r))`` from
# the S samples of *its* share (clipped to ``[min(1, b_S_r), b_r]``: a share without S samples
# keeps none), and each network picks its ``keep_r`` smallest-loss samples *of that share*. The
# optimizers sum the replicas' gradients (all-reduce) and apply one identical update. Keras
# scales each replica's loss by ``1 / num_replicas_in_sync``
# (``keras.src.losses.loss.scale_loss_for_distribution``), i.e. averages per-replica means; here
# that would weight picks unequally, since the S part of a batch comes first (the first
# replicas get S samples only, the last ones the C part) and the ``keep_r`` differ. So each
# replica's exchange loss is its *sum* over its picks divided by the step's total
# ``K = sum_r keep_r`` (one all-reduce): the summed gradient is that of the mean over all K
# picks, as on one device; the regularisation losses (the same on every replica) are scaled by
# ``1 / num_replicas_in_sync`` as Keras does. Consequences: with ``forget_rate`` 0 and an all-S
# batch the step is the single-device step (even split or not); otherwise the selection is made
# per replica, not over the whole batch, and ``K`` differs from the single-device ``keep`` by
# rounding only: at most ``(R + 1) // 2`` samples for R replicas (1 on 2 GPUs), plus 1 per replica
# whose S share is so small that the clip to 1 applies. The metrics aggregate over all replicas
# (sums of totals and counts); ``keep`` logs ``K`` per step.


class CoTeaching(TwoNetworks):
    """Two networks trained with the Co-teaching exchange in one fused training step.

    Parameters
    ----------
    net1, net2 : keras.Model
        Two distinct, built networks mapping ``(b, h, w, ch)`` float32 images to class
        probabilities ``(b, num_classes)`` (softmax output), e.g. from ``models.build_model``.
        They must not share variables.
    selection : {"fused", "authors"}
        ``"fused"`` (default): picks from the training-mode pass over the whole batch, and only
        the picked samples are back-propagated (BatchNorm batch statistics and moving averages
        from the whole batch). ``"authors"``: the authors' ``predict()`` then
        ``train_on_batch(picked)`` inside the one compiled step: the picks come from an
        inference-mode pass (``training=False``, BatchNorm moving statistics) over the whole
        batch, then each network runs a training-mode pass over the samples its *peer* picked
        only, so its BatchNorm batch statistics, and its moving averages, come from that
        subset. The keep count is at least 1 (the authors' ``train_on_batch`` would fail on an
        empty pick). One device only. The training metrics ``acc1``/``acc2`` then come from
        the inference-mode pass.
    **kwargs
        Passed to ``keras.Model`` (e.g. ``name``).

    Attributes
    ----------
    net1, net2 : keras.Model
        The wrapped networks (``call``/``predict`` use ``net1``).
    forget_rate : keras.Variable
        Non-trainable scalar, float64 (so that ``keep`` matches Python's
        ``round(b_S * (1 - r))`` even at exact ties, which a float32 ``r`` would miss, e.g.
        ``15 * (1 - 0.1)``), initial 0. Assign it each epoch: ``model.forget_rate.assign(r)``.
    optimizer1, optimizer2 : keras.optimizers.Optimizer
        Set by :meth:`compile`, already built on ``net1`` / ``net2`` trainable variables.

    Notes
    -----
    Training inputs (``fit``/``train_on_batch``): ``x`` is a dict
    ``{"image": (b, h, w, ch) float32, "from_s": (b,) float32 in {0, 1},
    "clean": (b,) float32 in {0, 1}}`` and ``y`` is ``(b,)`` (or ``(b, 1)``) integer noisy labels.
    ``from_s`` may be omitted (all samples then count as S); ``clean`` may be omitted (the
    ``kept_clean*`` metrics then stay at 0). A plain image tensor is accepted as ``x`` too (all S,
    no clean flags). Evaluation inputs: ``x`` is an image tensor or the same dict.

    Training metrics (reset every epoch): ``loss1``, ``loss2`` (exchange losses without
    regularisation, averaged over all picked samples of the epoch), ``acc1``, ``acc2`` (accuracy
    w.r.t. the noisy labels over the S samples of the epoch), ``keep`` (mean keep count per step),
    ``kept_clean1``, ``kept_clean2`` (fraction of clean samples among those net 1 / net 2 picked).
    Test metrics: ``accuracy1``, ``accuracy2`` (logged as ``val_accuracy1`` / ``val_accuracy2``
    by ``fit(validation_data=...)``).

    Several devices (``tf.distribute.MirroredStrategy``, TensorFlow only; build and compile
    inside ``strategy.scope()``): each replica picks within its own share of the batch; the
    one explanation of that step is the comment block above this class.
    """

    def __init__(self, net1, net2, *, selection="fused", **kwargs):
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
        backend = keras.backend.backend()
        if selection == "authors" and backend != "tensorflow":
            raise ValueError(f"selection='authors' (--selection authors) runs on the "
                             f"TensorFlow backend only (its picked-subset passes have a "
                             f"data-dependent size), not on {backend}: use selection='fused'")
        super().__init__(net1, net2, **kwargs)
        self.selection = selection
        # A variable, not a Python float: assigning it does not retrace the step.
        self._keep_table = None
        if backend == "tensorflow":
            self.forget_rate = self.add_weight(
                shape=(), initializer="zeros", dtype="float64", trainable=False,
                name="forget_rate")
        else:
            # JAX computes in float32 (no float64 unless enabled for the whole process),
            # which misses Python's round(b_S * (1 - r)) at exact ties, and a traced step
            # cannot call Python. So the keep count of every b_S is tabulated in Python
            # (float64, as on TensorFlow) whenever the rate is assigned, and the step looks
            # its b_S up: the same counts, on every backend.
            rate = self.add_weight(shape=(), initializer="zeros", dtype="float32",
                                   trainable=False, name="forget_rate")
            table = self.add_weight(shape=(KEEP_TABLE_SIZE,), dtype="int32",
                                    initializer="zeros", trainable=False, name="keep_table")
            self._keep_table = table
            self.forget_rate = KeepTableRate(rate, table)
            self.forget_rate.assign(0.0)
        mean = keras.metrics.Mean
        self.keep_tracker = mean(name="keep")
        self.kept_clean1_tracker = mean(name="kept_clean1")
        self.kept_clean2_tracker = mean(name="kept_clean2")
        self._train_trackers += [self.keep_tracker, self.kept_clean1_tracker,
                                 self.kept_clean2_tracker]

    def compile(self, optimizer1, optimizer2, **kwargs):
        """Configure training with one optimizer per network (``TwoNetworks.compile``).

        ``jit_compile`` defaults to False on TensorFlow: the keep count is data-dependent,
        which XLA's ``top_k`` cannot handle. ``self.optimizer`` stays None (no third,
        unused optimizer), so callbacks that act on ``model.optimizer``
        (``LearningRateScheduler``, ``ReduceLROnPlateau``) do not apply; change
        ``optimizer1/2.learning_rate`` directly.
        """
        super().compile(optimizer1, optimizer2, **kwargs)

    def _tf_train_step(self, data):
        """One Co-teaching step on a batch (TensorFlow); see the module docstring.

        Parameters
        ----------
        data : tuple
            ``(x, y)``: ``x`` the input dict (see class Notes), ``y`` ``(b,)`` int noisy labels.
            A sample-weight element, if any, is ignored.

        Returns
        -------
        dict
            Current values of the training metrics (running means over the epoch, over all
            replicas).

        Notes
        -----
        Under ``tf.distribute`` this runs once per replica on its share of the batch (see the
        class Notes): ``b``, ``b_S``, ``keep`` and the picks are the replica's own.
        """
        import tensorflow as tf

        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        image = self._image(x)
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        b = tf.shape(y)[0]
        if isinstance(x, dict) and "from_s" in x:
            from_s = tf.reshape(tf.cast(x["from_s"], tf.float32), [-1])
        else:
            from_s = tf.ones([b], tf.float32)
        clean = None
        if isinstance(x, dict) and "clean" in x:
            clean = tf.reshape(tf.cast(x["clean"], tf.float32), [-1])

        # keep = round(b_S * (1 - r)) from the S part only; float64 and tf.round (half to even)
        # reproduce Python's round() on the same numbers. At least one pick when there are S
        # samples; none for a batch (or replica share) without any, or an empty share.
        b_s = tf.reduce_sum(tf.cast(from_s, tf.float64))
        keep = tf.cast(tf.round(b_s * (1.0 - tf.cast(self.forget_rate, tf.float64))), tf.int32)
        keep = tf.clip_by_value(keep, tf.minimum(1, tf.cast(b_s, tf.int32)), b)
        n_pick = tf.cast(keep, tf.float32)
        # Picks of the whole step: under tf.distribute, the sum of the replicas' keep counts.
        n_step = n_pick
        if replicas > 1:
            n_step = tf.distribute.get_replica_context().all_reduce(
                tf.distribute.ReduceOp.SUM, n_pick)

        if self.selection == "authors":
            if replicas > 1:
                raise ValueError("selection='authors' (--selection authors) runs on one device "
                                 "only: use --selection fused with --devices all")
            return self._authors_step(image, y, from_s, clean, tf.maximum(keep, 1))

        vars1 = self.net1.trainable_variables
        vars2 = self.net2.trainable_variables
        with tf.GradientTape() as tape:
            # One training-mode pass per network over the whole batch (S and C parts).
            p1 = self.net1(image, training=True)
            p2 = self.net2(image, training=True)
            ce1 = keras.losses.sparse_categorical_crossentropy(y, p1)
            ce2 = keras.losses.sparse_categorical_crossentropy(y, p2)
            # Small-loss picks over the whole batch. Integer indices of stopped losses: the
            # selection is a constant for the gradient.
            _, pick1 = tf.math.top_k(-tf.stop_gradient(ce1), k=keep)
            _, pick2 = tf.math.top_k(-tf.stop_gradient(ce2), k=keep)
            pick1 = tf.stop_gradient(pick1)
            pick2 = tf.stop_gradient(pick2)
            # The exchange: each network learns from the samples its peer picked (mean over the
            # picks; 0 when there are none).
            sum1 = tf.reduce_sum(tf.gather(ce1, pick2))
            sum2 = tf.reduce_sum(tf.gather(ce2, pick1))
            loss1 = tf.math.divide_no_nan(sum1, n_pick)
            loss2 = tf.math.divide_no_nan(sum2, n_pick)
            reg1, reg2 = self._reg_loss(self.net1), self._reg_loss(self.net2)
            if replicas == 1:
                # total1 = loss1 + reg1 depends only on net1's variables and total2 only on
                # net2's, so the gradient of their sum w.r.t. each net is that net's own
                # gradient: one backward pass. scale_loss: identity unless an optimizer is
                # a LossScaleOptimizer (mixed_float16), which scales its network's part.
                total = (self.optimizer1.scale_loss(loss1 + reg1)
                         + self.optimizer2.scale_loss(loss2 + reg2))
            else:
                # each replica's exchange sum over the step's total keep count, the
                # regularisation scaled by 1 / replicas (see the comment block above the class)
                total = (self.optimizer1.scale_loss(tf.math.divide_no_nan(sum1, n_step)
                                                    + reg1 * (1.0 / replicas))
                         + self.optimizer2.scale_loss(tf.math.divide_no_nan(sum2, n_step)
                                                      + reg2 * (1.0 / replicas)))
        grads = tape.gradient(total, vars1 + vars2)
        self.optimizer1.apply_gradients(zip(grads[: len(vars1)], vars1))
        self.optimizer2.apply_gradients(zip(grads[len(vars1):], vars2))

        self.loss1_tracker.update_state(loss1, sample_weight=n_pick)
        self.loss2_tracker.update_state(loss2, sample_weight=n_pick)
        # Training accuracy w.r.t. the noisy labels on the S part (weights 0 drop C samples).
        self.acc1_tracker.update_state(correct(y, p1), sample_weight=from_s)
        self.acc2_tracker.update_state(correct(y, p2), sample_weight=from_s)
        self.keep_tracker.update_state(n_step)  # under tf.distribute: the sum over replicas
        if clean is not None:
            # Tracking only: per-sample means over all picks of the epoch.
            self.kept_clean1_tracker.update_state(tf.gather(clean, pick1))
            self.kept_clean2_tracker.update_state(tf.gather(clean, pick2))
        return self.results(self._train_trackers)

    # --- JAX and PyTorch: the same step in keras.ops (TwoNetworks' steps) --------------------
    # The picks: each network's `keep` smallest losses, as a mask from the loss ranking (a
    # traced JAX step cannot take a data-dependent top_k size); ties go to the lower index,
    # as tf.math.top_k breaks them, so the picks are the TensorFlow step's.

    def pair_losses(self, y, p1, p2, from_s):
        """The exchange: ``(loss1, loss2, (m1, m2, n_pick))``, each network's mean loss over
        the samples its peer picked (``keep`` from the tabulated forget rate)."""
        return self._exchange(y, p1, p2, self._neutral_keep(self._keep_table, from_s))

    @staticmethod
    def _neutral_keep(table, from_s):
        """keep = round(b_S (1 - r)) clipped to [min(1, b_S), b_S], looked up by b_S."""
        ops = keras.ops
        b_s = ops.cast(ops.round(ops.sum(from_s)), "int32")
        return ops.take(table, ops.minimum(b_s, KEEP_TABLE_SIZE - 1))

    @staticmethod
    def _exchange(y, p1, p2, keep):
        """Exchange losses (mean over the peer's picks) and ``(m1, m2, n_pick)``."""
        ops = keras.ops
        ce1 = keras.losses.sparse_categorical_crossentropy(y, p1)
        ce2 = keras.losses.sparse_categorical_crossentropy(y, p2)
        m1 = small_loss_mask(ops.stop_gradient(ce1), keep)
        m2 = small_loss_mask(ops.stop_gradient(ce2), keep)
        n_pick = ops.cast(keep, "float32")
        loss1 = ops.divide_no_nan(ops.sum(ops.where(m2, ce1, 0.0)), n_pick)
        loss2 = ops.divide_no_nan(ops.sum(ops.where(m1, ce2, 0.0)), n_pick)
        return loss1, loss2, (m1, m2, n_pick)

    def track(self, y, p1, p2, from_s, clean, loss1, loss2, aux):
        """Update the training trackers as the TensorFlow step does."""
        m1, m2, n_pick = aux
        self.loss1_tracker.update_state(loss1, sample_weight=n_pick)
        self.loss2_tracker.update_state(loss2, sample_weight=n_pick)
        self.acc1_tracker.update_state(correct(y, p1), sample_weight=from_s)
        self.acc2_tracker.update_state(correct(y, p2), sample_weight=from_s)
        self.keep_tracker.update_state(n_pick)
        if clean is not None:  # per-sample means over the picks
            self.kept_clean1_tracker.update_state(clean, sample_weight=keras.ops.cast(
                m1, "float32"))
            self.kept_clean2_tracker.update_state(clean, sample_weight=keras.ops.cast(
                m2, "float32"))
        return {m.name: m.result() for m in self._train_trackers}

    def _positions(self):
        """Where each network's variables sit in this model's state lists (JAX)."""
        if self._pos is None:
            self._pos = Positions(self, (self.net1, self.net2), table=self._keep_table)
        return self._pos

    def _authors_step(self, image, y, from_s, clean, keep):
        """The authors' step (selection="authors"): picks from an inference-mode pass, then
        each network trained on its peer's picks as ``train_on_batch(picked)`` would be."""
        import tensorflow as tf

        # Their predict(): BatchNorm uses the moving statistics, nothing is updated.
        q1 = self.net1(image, training=False)
        q2 = self.net2(image, training=False)
        _, pick1 = tf.math.top_k(-keras.losses.sparse_categorical_crossentropy(y, q1), k=keep)
        _, pick2 = tf.math.top_k(-keras.losses.sparse_categorical_crossentropy(y, q2), k=keep)
        n_pick = tf.cast(keep, tf.float32)
        totals = []
        # Their train_on_batch on the peer's picks: a training-mode pass over the subset only
        # (BatchNorm batch statistics of the subset; its moving averages updated from them).
        for net, opt, picks in ((self.net1, self.optimizer1, pick2),
                                (self.net2, self.optimizer2, pick1)):
            x_p, y_p = tf.gather(image, picks), tf.gather(y, picks)
            with tf.GradientTape() as tape:
                ce = keras.losses.sparse_categorical_crossentropy(y_p, net(x_p, training=True))
                loss = tf.reduce_mean(ce)
                total = loss + self._reg_loss(net)
            variables = net.trainable_variables
            opt.apply_gradients(zip(tape.gradient(total, variables), variables))
            totals.append(loss)
        self.loss1_tracker.update_state(totals[0], sample_weight=n_pick)
        self.loss2_tracker.update_state(totals[1], sample_weight=n_pick)
        self.acc1_tracker.update_state(correct(y, q1), sample_weight=from_s)
        self.acc2_tracker.update_state(correct(y, q2), sample_weight=from_s)
        self.keep_tracker.update_state(n_pick)
        if clean is not None:
            self.kept_clean1_tracker.update_state(tf.gather(clean, pick1))
            self.kept_clean2_tracker.update_state(tf.gather(clean, pick2))
        return self.results(self._train_trackers)

    @staticmethod
    def results(trackers):
        """``{name: result}`` of ``Mean`` trackers, over all replicas under tf.distribute.

        Each replica updates its own copy of a metric's ``total`` and ``count``; Keras averages
        the replicas' returned values, which for weighted means is not the mean over all
        samples. So the replicas' totals and counts are summed first (one all-reduce).
        """
        if keras.backend.backend() != "tensorflow":
            return TwoNetworks.results(trackers)
        import tensorflow as tf

        ctx = tf.distribute.get_replica_context()
        if ctx is None or ctx.num_replicas_in_sync == 1:
            return {m.name: m.result() for m in trackers}
        local = tf.stack([tf.stack([tf.cast(m.total, tf.float32), tf.cast(m.count, tf.float32)])
                          for m in trackers])
        summed = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
        values = tf.math.divide_no_nan(summed[:, 0], summed[:, 1])
        return {m.name: values[i] for i, m in enumerate(trackers)}

    @staticmethod
    def _reg_loss(net):
        """Sum of the network's regularisation losses (0 if it has none)."""
        import tensorflow as tf

        losses = net.losses
        if not losses:
            return tf.constant(0.0, tf.float32)
        return tf.add_n([tf.cast(v, tf.float32) for v in losses])


@dataclasses.dataclass(frozen=True)
class CoTeachingConfig:
    """How the modified Co-teaching and its baselines train (arXiv:1905.05040, sec. 4,
    Algorithm 2; the authors' INCV_main.py).

    Attributes
    ----------
    arch : str
        ``models.build_model`` name of the networks (the authors': "resnet32").
    epochs : int
        Epochs (the paper: 200); the lr drops, the warm-up and Tk scale with it.
    lr, batch_size
        Adam's learning rate (1e-3) and the batch size of the S part (128).
    tk : float
        Co-teaching's Tk on the paper's 200-epoch scale (10): the epochs over which the
        forget rate ramps up (:func:`forget_rate_at`).
    augment : {"auto", "standard", "shift", "none"}
        ``pipelines.resolve_augmentation`` kind.
    selection : {"fused", "authors"}
        How each step picks its small-loss samples (:data:`SELECTIONS`, :class:`CoTeaching`).
    keep_optimizer_state : bool
        Keep Adam's state at the lr drops (the authors re-compiled: a fresh Adam).
    devices : str
        ``devices.device_strategy`` spec.
    verbose : int
        Keras' verbosity; with 0 or 2 the per-epoch lines are printed.
    resume : bool
        Continue from ``checkpoint.npz`` in the run directory, if there is one.
    """

    arch: str = "resnet32"
    epochs: int = PAPER_EPOCHS
    lr: float = 1e-3
    batch_size: int = 128
    tk: float = 10.0
    augment: str = "auto"
    selection: str = "fused"
    keep_optimizer_state: bool = False
    devices: str = "default"
    verbose: int = 1
    resume: bool = False


def plan(eval_ratio, *, noise_type, num_classes, epochs):
    """The modified Co-teaching's settings from a selector's noise estimate e (sec. 4).

    Parameters
    ----------
    eval_ratio : float
        The selector's estimated noise ratio e of the whole training set.
    noise_type : {"sym", "asym"}
        The rules to follow.
    num_classes : int
    epochs : int
        The run's epochs (the warm-up scales with it).

    Returns
    -------
    dict
        ``forget_rate``: e_S, the expected noise ratio of the selected set S, as the
        authors' INCV_main.py (``noise.expected_noise_of_selected``); ``warmup``: the last
        0-based epoch of the S-only warm-up (:func:`warmup_epochs`).
    """
    return {"forget_rate": noise.expected_noise_of_selected(eval_ratio, noise_type,
                                                            num_classes),
            "warmup": warmup_epochs(noise_type, eval_ratio, epochs)}


def warmup_epochs(pattern, eval_ratio, epochs):
    """Last 0-based epoch of the modified Co-teaching's warm-up (S-only batches).

    Section 4 (Algorithm 2) of arXiv:1905.05040 as the authors ran it: 40 of 200 epochs, or 80
    for asymmetric noise or an estimated noise ratio ``eval_ratio`` above 0.6, scaled to
    ``epochs`` (the run's --epochs).
    """
    paper = 80 if (pattern == "asym" or eval_ratio > 0.6) else 40
    return int(round(paper * epochs / PAPER_EPOCHS))


def c_batch_size(n_s, n_c, batch_size):
    """Size of the C batch that joins each S batch after warm-up.

    ``min(int(|C| * b / |S|), b // 2)`` (the authors' ``min(int(|C| * 128 / |S|), 64)``), so that
    one pass over S also draws about one pass over C; 0 when S is empty.
    """
    if n_s == 0:
        return 0
    return min(int(n_c * batch_size / n_s), batch_size // 2)


def forget_rate_at(epoch, *, forget_rate, tk, epochs):
    """Co-teaching's forget rate at 0-based ``epoch``: ``forget_rate * min(1, epoch / Tk)``.

    ``tk`` is Tk on the paper's 200-epoch scale (--tk, 10 in the paper); it scales with the
    run's ``epochs`` as the lr drops do.
    """
    tk = max(1e-9, tk * epochs / PAPER_EPOCHS)
    return forget_rate * min(1.0, epoch / tk)


def train_two_networks(config, data, y_noisy, s_idx, c_idx, *, seed, forget_rate, warmup,
                       out, printer=print, standard=False, method=None):
    """Co-teaching (two nets) or standard training (one net) with per-epoch test accuracy,
    diagnostics, the lr schedule with optional Adam resets, and a resumable checkpoint.

    Parameters
    ----------
    config : CoTeachingConfig
    data : data.Data
        Images and clean labels (``data.y_train``: tracking only), and the test set.
    y_noisy : (n,) int
        The training labels the networks learn from.
    s_idx, c_idx : int arrays
        The selected set S and the candidate set C (for the baselines S is all n, C empty).
    seed : int
    forget_rate : float
        The forget rate the ramp climbs to (e_S for the modified Co-teaching, see
        :func:`plan`; the estimated noise ratio for plain Co-teaching; unused by standard
        training).
    warmup : int
        Last 0-based epoch whose batches come from S alone; C batches
        (:func:`c_batch_size`) join the S batches after it.
    out : str
        Run directory: log.jsonl (one JSON line per epoch) and checkpoint.npz.
    printer : callable
        Where the per-epoch lines go (with ``config.verbose`` 0 or 2).
    standard : bool
        One network with plain cross-entropy on S (the standard baseline).
    method : algorithms.family.Method, optional
        Another method of Table 1 (``algorithms/``): its model, optimizers, callbacks and
        per-epoch hook replace Co-teaching's; one-network methods train on S as the
        standard baseline does, two-network ones on S's batches as Co-teaching does.

    Returns
    -------
    list of dict
        The per-epoch log rows.
    """
    clean = data.y_train == y_noisy
    schedule = training.PiecewiseLR(config.lr, COT_BOUNDARIES, COT_FACTORS,
                                 paper_epochs=PAPER_EPOCHS, epochs=config.epochs)
    utils.set_random_seed(seed)
    strategy = devices.device_strategy(config.devices)
    with strategy.scope():  # --devices: build, compile and make the optimizers on them
        if standard:
            model = training.build_classifier(config.arch, data, strategy, lr=config.lr)
            model.optimizer.build(model.trainable_variables)  # so --resume can restore it
            nets, optimizers, on_epoch = [model], [model.optimizer], None
        elif method is not None:
            nets = [models.build_model(config.arch, data.input_shape, data.num_classes)
                    for _ in range(method.networks)]
            model = method.build(nets, config.lr)
            optimizers = method.optimizers(model)
            on_epoch = None if method.on_epoch is None else (
                lambda epoch: method.on_epoch(model, epoch))
        else:
            nets = [models.build_model(config.arch, data.input_shape, data.num_classes)
                    for _ in range(2)]
            for net in nets:
                devices.sync_batchnorm(net, strategy)
            model = CoTeaching(*nets, selection=config.selection)
            optimizers = [training.adam(config.lr), training.adam(config.lr)]
            model.compile(optimizer1=optimizers[0], optimizer2=optimizers[1])
    one_net = standard or (method is not None and method.networks == 1)
    if not standard and method is None:
        def on_epoch(epoch):  # Co-teaching's gradual schedule, 0-based epoch as the authors
            model.forget_rate.assign(forget_rate_at(epoch, forget_rate=forget_rate, tk=config.tk,
                                                    epochs=config.epochs))

    ckpt, log = os.path.join(out, "checkpoint.npz"), os.path.join(out, "log.jsonl")
    start = 0
    if config.resume and os.path.isfile(ckpt):
        start = training.restore_checkpoint(ckpt, model, optimizers)
        rows = [r for r in utils.read_jsonl(log) if r["epoch"] <= start]
        with utils.atomic_write(log) as f:
            f.writelines(utils.jsonl_line(r) for r in rows)
        printer(f"  resuming after epoch {start}")
    elif os.path.exists(log):
        os.remove(log)

    diag_idx = utils.rng_for(seed, "diagnostics").permutation(s_idx)[:1000]
    callbacks = [
        training.EpochSchedule(schedule, optimizers, reset_on_drop=not config.keep_optimizer_state,
                            on_epoch=on_epoch),
        training.TrainDiagnostics(nets, data.x_train[diag_idx], y_noisy[diag_idx],
                               clean[diag_idx], names=("model1", "model2")[:len(nets)]),
        *([] if method is None else method.callbacks(model, nets)),
        _TestAccuracyNames(one_net),
        training.JsonlLogger(log, printer=printer if config.verbose != 1 else None,
                          optimizer=optimizers[0], epochs=config.epochs),
        training.StopOnNonFiniteLoss(f" (log: {log})"),
        training.EpochCheckpoint(ckpt, optimizers)]
    # before JsonlLogger, which writes the logs these callbacks complete
    at = next(i for i, c in enumerate(callbacks) if isinstance(c, training.JsonlLogger))
    callbacks[at:at] = training.own_data_callbacks(nets, data, epochs=config.epochs,
                                                   names=("model1", "model2")[:len(nets)])
    aug = resolve_augmentation(config.augment, data.name)
    test = (data.x_test, data.y_test)
    # Each phase's pipeline counts its epochs from the phase's start: a run resumed inside a
    # phase skips the epochs done, so it sees the batches the uninterrupted run saw.
    if one_net:
        phases = [(lambda skip: make_train_dataset(
            data.x_train[s_idx], y_noisy[s_idx], batch_size=config.batch_size, augment=aug,
            seed=seed, first_epoch=skip), 0, config.epochs)]
    else:
        c_batch = c_batch_size(len(s_idx), len(c_idx), config.batch_size)

        def make(cb):
            return lambda skip: make_coteaching_dataset(
                data.x_train, y_noisy, clean, s_idx, c_idx, batch_size=config.batch_size,
                c_batch_size=cb, augment=aug, seed=seed, first_epoch=skip)

        # Batches come from S alone for 0-based epochs <= warmup, then S joined by C.
        if c_batch > 0 and warmup + 1 < config.epochs:
            phases = [(make(0), 0, warmup + 1), (make(c_batch), warmup + 1, config.epochs)]
        else:
            phases = [(make(0), 0, config.epochs)]
    for make_phase, begin, end in phases:
        if start < end:
            ds = make_phase(start - begin)
            model.fit(ds, epochs=end, initial_epoch=start, validation_data=test,
                      validation_batch_size=1024, callbacks=[*callbacks, *epoch_callbacks(ds)],
                      verbose=config.verbose, shuffle=False)
            start = end
    return utils.read_jsonl(log)


class _TestAccuracyNames(keras.callbacks.Callback):
    """Give every method the same log keys: test_accuracy_model1 (and _model2 when two
    networks train); drop a rule's training-only metrics from the validation keys."""

    def __init__(self, one_network):
        super().__init__()
        self.standard = one_network

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        for name in getattr(self.model, "rule_metric_names", ()):
            logs.pop(f"val_{name}", None)  # a training-only metric, reset by the evaluation
        if self.standard:
            logs["test_accuracy_model1"] = logs.get("val_accuracy")
        else:
            logs["test_accuracy_model1"] = logs.get("val_accuracy1")
            logs["test_accuracy_model2"] = logs.get("val_accuracy2")
