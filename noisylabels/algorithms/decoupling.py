"""Decoupling, "update by disagreement" (Malach & Shalev-Shwartz, NeurIPS 2017), Table 1's
second row.

Two independently initialised networks see the same batch; both are updated on the samples
whose predicted classes differ, the mask taken from the same training-mode pass
(emalach/UpdateByDisagreement ``train.py``, ``loss``):

    m_i = stop_gradient(argmax p1_i != argmax p2_i)
    L_k = sum_i m_i * CE_k,i / max(rho * B, sum_i m_i),  k = 1, 2

with the floor rho * B (``min_batch_size`` 0.1): fewer than rho * B disagreements are divided
by rho * B, none give a data loss of 0, not NaN (later codebases divide by the count and get
NaN). No warm-up (the reference's ``init_iter`` 0) and no exchange (unlike Co-teaching).
"""

import keras

from .family import TwoNetworks, correct, sparse_ce, two_networks


def disagreement_mask(p1, p2):
    """(b,) float32, 1 where the two networks' predicted classes differ (a constant)."""
    ops = keras.ops
    m = ops.not_equal(ops.argmax(p1, axis=-1), ops.argmax(p2, axis=-1))
    return ops.stop_gradient(ops.cast(m, "float32"))


def decoupling_loss(ce, mask, *, min_batch):
    """``sum(mask * ce) / max(min_batch * B, sum(mask))`` for one network.

    Parameters
    ----------
    ce : (b,) float
        The network's per-sample cross-entropy.
    mask : (b,) float
        :func:`disagreement_mask`.
    min_batch : float
        The floor rho (0.1).
    """
    ops = keras.ops
    b = ops.cast(ops.shape(ce)[0], "float32")
    return ops.sum(mask * ce) / ops.maximum(min_batch * b, ops.sum(mask))


class Decoupling(TwoNetworks):
    """Both networks updated on their disagreements (see the module docstring).

    Parameters
    ----------
    net1, net2 : keras.Model
        Two distinct, independently initialised networks (softmax outputs).
    min_batch : float
        The floor rho of the loss's denominator (0.1).

    Notes
    -----
    Training metrics: ``loss1``, ``loss2`` (data losses), ``acc1``, ``acc2`` (accuracy w.r.t.
    the noisy labels), ``disagree`` (fraction of the batch updated on), ``disagree_clean``
    (fraction of clean labels among those samples; tracking only).
    """

    def __init__(self, net1, net2, *, min_batch=0.1, **kwargs):
        super().__init__(net1, net2, **kwargs)
        if not 0.0 < min_batch <= 1.0:  # 0: a batch without disagreements gives 0 / 0
            raise ValueError(f"min_batch must be in (0, 1], got {min_batch}")
        self.min_batch = float(min_batch)
        self.disagree_tracker = keras.metrics.Mean(name="disagree")
        self.disagree_clean_tracker = keras.metrics.Mean(name="disagree_clean")
        self._train_trackers += [self.disagree_tracker, self.disagree_clean_tracker]

    def pair_losses(self, y, p1, p2, from_s):
        mask = disagreement_mask(p1, p2)
        return (decoupling_loss(sparse_ce(y, p1), mask, min_batch=self.min_batch),
                decoupling_loss(sparse_ce(y, p2), mask, min_batch=self.min_batch), mask)

    def track(self, y, p1, p2, from_s, clean, loss1, loss2, mask):
        self.loss1_tracker.update_state(loss1)
        self.loss2_tracker.update_state(loss2)
        self.acc1_tracker.update_state(correct(y, p1))
        self.acc2_tracker.update_state(correct(y, p2))
        self.disagree_tracker.update_state(mask)
        if clean is not None:
            self.disagree_clean_tracker.update_state(clean, sample_weight=mask)
        return self.results(self._train_trackers)


def prepare(ctx):
    """Decoupling's :class:`~.family.Method`: nothing to prepare."""
    return two_networks(Decoupling, min_batch=ctx.args.decoupling_min_batch)
