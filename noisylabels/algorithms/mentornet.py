"""MentorNet PD, the predefined curriculum (Jiang et al., ICML 2018), Table 1's fourth row;
and the self-paced variant the Co-teaching papers compared against.

PD, per step t of S (google/mentornet ``cifar_train_mentornet.py``; ``utils.py``
``mentornet``, ``probabilistic_sample``; the curriculum of ``training_mentornet/models.py``
``vstar_mentornet_pd``):

1. training progress e = floor(100 t / S), a percentage, not an epoch;
2. per-sample cross-entropy l_i of the training-mode pass;
3. q = the batch's p-percentile of l, TF's 'nearest' on a descending sort
   (:func:`batch_percentile`); lambda <- d lambda + (1 - d) q, from 0, before use;
4. v_i = 1 (e <= 18), 1[l_i - lambda <= 0] (18 < e < 90), clip(1 - (l_i - lambda) / gamma,
   0, 1) with gamma 1 (e >= 90) (:func:`curriculum_weights`: the curriculum the released
   MentorNet was trained to output, used directly; the TF1 checkpoint is not loaded);
5. example dropout: a uniformly random floor(B (1 - r_e)) samples keep their v, the rest 0;
6. loss = sum_i v_i l_i / B + (sum_i v_i / B) * the L2 penalties.

Self-paced (``--mentornet_variant self_paced``; bhanML/Co-teaching ``loss.py`` without the
exchange): the floor((1 - tau_t) B) smallest losses of the batch, their mean; tau_t ramps
to the noise rate as Co-teaching's forget rate does.
"""

import keras
import numpy as np

from ..backend_steps import small_loss_mask
from . import dropout_table
from .family import Rule, one_network, sparse_ce

BURN_IN, HARD_UNTIL = 18, 90  # vstar_mentornet_pd: v = 1 for e <= 18; 1[delta <= 0] below 90
GAMMA = 1.0                   # mentornet_pd1_g_1
# floor(x + eps): B (1 - r) in float32 can fall just below an integer the reference's
# float64 int() reaches (0.6 * 5 -> 2.9999998 on some backends).
FLOOR_EPS = 1e-4


def batch_percentile(loss, p):
    """TF's ``percentile(loss, 100 p)`` with 'nearest' interpolation: the descending-sorted
    value at index round((B - 1)(1 - p)), half to even (numpy's 'nearest' differs at
    half-ties, e.g. B = 128, p = 0.5)."""
    ops = keras.ops
    b = ops.shape(loss)[0]
    desc = ops.flip(ops.sort(loss), axis=0)
    idx = ops.cast(ops.round(ops.cast(b - 1, "float32") * (1.0 - p)), "int32")
    return ops.take(desc, idx)


def curriculum_weights(delta, epoch_pct):
    """MentorNet PD's v* for ``delta = l - lambda`` (b,) at progress ``epoch_pct``."""
    ops = keras.ops
    e = ops.cast(epoch_pct, "float32")
    hard = ops.cast(ops.less_equal(delta, 0.0), "float32")
    soft = ops.clip(1.0 - delta / GAMMA, 0.0, 1.0)
    return ops.where(e <= BURN_IN, ops.ones_like(delta), ops.where(e < HARD_UNTIL, hard, soft))


def keep_count(b, rate):
    """floor(b (1 - rate)), int32 (b and rate tensors or numbers)."""
    ops = keras.ops
    return ops.cast(ops.floor(ops.cast(b, "float32") * (1.0 - rate) + FLOOR_EPS), "int32")


def mentornet_pd_loss(ce, lam, epoch_pct, keep_mask, *, p, decay):
    """One step of MentorNet PD: ``(loss, reg_scale, new_lambda, v)``.

    Parameters
    ----------
    ce : (b,) float
        Per-sample cross-entropy (the gradient flows through it; v is a constant).
    lam : scalar
        The moving percentile before this step.
    epoch_pct : int scalar
        Training progress in percent.
    keep_mask : (b,) float
        The example dropout's kept samples (1) (all ones: no dropout).
    """
    ops = keras.ops
    l = ops.stop_gradient(ce)
    new_lam = decay * lam + (1.0 - decay) * batch_percentile(l, p)
    v = ops.stop_gradient(curriculum_weights(l - new_lam, epoch_pct) * keep_mask)
    b = ops.cast(ops.shape(ce)[0], "float32")
    return ops.sum(v * ce) / b, ops.sum(v) / b, new_lam, v


class MentorNetPD(Rule):
    """MentorNet PD's state: ``mn_lambda`` (the moving percentile), ``mn_step`` (the step
    t), the dropout table, and the dropout's random stream; S the run's total steps."""

    metrics = ("weight",)

    def __init__(self, *, total_steps, p, decay, dropout, seed):
        self.total_steps, self.p, self.decay = int(total_steps), float(p), float(decay)
        self.dropout, self.seed = dropout_table(dropout), int(seed)

    def build(self, model):
        model.mn_lambda = model.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="mentornet_lambda")
        model.mn_step = model.add_weight(shape=(), initializer="zeros", dtype="int32",
                                         trainable=False, name="mentornet_step")
        model.mn_dropout = model.add_weight(shape=(100,), initializer="zeros",
                                            trainable=False, name="mentornet_dropout")
        model.mn_dropout.assign(self.dropout)
        model.add_seed_state(self.seed)

    def loss(self, model, y, probs, training):
        ops = keras.ops
        ce = sparse_ce(y, probs)
        if not training:
            return ops.mean(ce), 1.0
        step = model.mn_step
        pct = ops.minimum(ops.floor_divide(100 * step, self.total_steps), 99)
        b = ops.shape(ce)[0]
        u = keras.random.uniform((b,), seed=model.rule_seed)
        keep = small_loss_mask(u, keep_count(b, ops.take(model.mn_dropout, pct)))
        loss, scale, lam, v = mentornet_pd_loss(ce, model.mn_lambda, pct,
                                                ops.cast(keep, "float32"), p=self.p,
                                                decay=self.decay)
        model.mn_lambda.assign(lam)
        step.assign(step + 1)
        model.tracker("weight").update_state(v)
        return loss, scale


class SelfPaced(Rule):
    """The small-loss variant: keep floor((1 - tau) B) smallest losses, their mean;
    ``sp_forget`` (tau) assigned every epoch."""

    metrics = ("weight",)

    def build(self, model):
        model.sp_forget = model.add_weight(shape=(), initializer="zeros", trainable=False,
                                           name="selfpaced_forget_rate")

    def loss(self, model, y, probs, training):
        ops = keras.ops
        ce = sparse_ce(y, probs)
        if not training:
            return ops.mean(ce), 1.0
        k = keep_count(ops.shape(ce)[0], model.sp_forget)
        v = ops.cast(small_loss_mask(ops.stop_gradient(ce), k), "float32")
        model.tracker("weight").update_state(v)
        return ops.divide_no_nan(ops.sum(v * ce), ops.cast(k, "float32")), 1.0


def prepare(ctx):
    """MentorNet's :class:`~.family.Method` (PD or self-paced)."""
    from .. import coteaching

    args, cfg = ctx.args, ctx.config
    if args.mentornet_variant == "self_paced":
        forget = ctx.forget_rate()
        ctx.summary["forget_rate"] = forget

        def on_epoch(model, epoch):
            model.sp_forget.assign(coteaching.forget_rate_at(
                epoch, forget_rate=forget, tk=cfg.tk, epochs=cfg.epochs))

        return one_network(SelfPaced(), on_epoch=on_epoch)
    steps = cfg.epochs * -(-len(ctx.y_noisy) // cfg.batch_size)
    ctx.summary["mentornet"] = {"variant": "pd", "total_steps": steps,
                                "percentile": args.mentornet_percentile,
                                "decay": args.mentornet_decay,
                                "dropout": args.mentornet_dropout}
    return one_network(MentorNetPD(total_steps=steps, p=args.mentornet_percentile,
                                   decay=args.mentornet_decay, dropout=args.mentornet_dropout,
                                   seed=ctx.seed))
