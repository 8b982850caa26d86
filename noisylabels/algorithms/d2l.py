"""D2L, dimensionality-driven learning (Ma et al., ICML 2018), Table 1's fifth row, as its
2018 code ran it (xingjunm/dimensionality-driven-learning at 87e9cdf: ``callback_util.py``
``D2LCallback``, ``util.py`` ``mle_batch``, ``loss.py`` ``lid_paced_loss``; later versions
replaced the loss with SCE).

At the start of every epoch e: the LID of the penultimate features (the 64-d pooled output
of ResNet-32) of 1,280 random training images, 10 batches of 128, each point against its own
batch (:func:`lid_mle`, k = 20), their mean appended to the history L. Once
len(L) > init_epoch + w, the turning point is the first epoch whose LID exceeds the mean of
the w before it by more than 2 (population) standard deviations (:func:`is_turning_point`);
from then on, every epoch, alpha = exp(-(e / E) L[-1] / min(L)) (:func:`alpha_at`) and the
loss bootstraps its targets (:func:`d2l_loss`):

    before: -sum_k clip(y_k, 0.01/9, 0.99) log p_k
    after:  -sum_k (alpha y_k + (1 - alpha) onehot(argmax p)_k) log p_k

with p clipped to [1e-7, 1 - 1e-7] (the reference clips it after the turning point; before
it, it takes log p unclipped: clipped here too, so that a probability that underflows to 0
cannot make the loss infinite; no other value changes). alpha and the
history are model variables (assigned between epochs: no re-compilation, so JAX's traced
step reads the new value), saved with every checkpoint. At the turning point the reference
"rolls back" by loading the checkpoint it wrote at the end of the previous epoch, i.e. the
current weights (a no-op); ``--d2l_rollback real`` (default) goes back to the weights of the
epoch before the jump, as the paper intends.
"""

import os

import keras
import numpy as np

from .. import utils
from .family import PROB_CLIP, Rule, one_network

K_NEIGHBOURS, LID_SAMPLES, LID_BATCH = 20, 1280, 128
TARGET_LOW, TARGET_HIGH = 0.01 / 9, 0.99  # the reference's literal clip of the targets


def lid_mle(batch, *, k=K_NEIGHBOURS):
    """(n,) maximum-likelihood LID of each point of ``batch`` (n, d) against the others of the
    same batch (``mle_batch``): with r_1 <= ... <= r_k its k = min(k, n - 1) nearest
    distances, ``-k / sum_j log(r_j / r_k + 1e-8)``."""
    x = np.asarray(batch, np.float64)
    k = min(k, len(x) - 1)
    d = np.sqrt(np.maximum(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1), 0.0))
    r = np.sort(d, axis=1)[:, 1:k + 1]
    return -k / np.sum(np.log(r / r[:, -1:] + 1e-8), axis=1)


def mean_lid(features, *, batch=LID_BATCH, k=K_NEIGHBOURS):
    """The mean LID over ``features`` (n, d), each point against its own batch of ``batch``
    (a last batch of one point, which has no neighbour, joins the batch before it)."""
    starts = list(range(0, len(features), batch))
    if len(starts) > 1 and len(features) - starts[-1] < 2:
        starts.pop()
    ends = starts[1:] + [len(features)]
    return float(np.mean(np.concatenate([lid_mle(features[a:b], k=k)
                                         for a, b in zip(starts, ends)])))


def is_turning_point(history, *, init_epoch, window):
    """True when ``history[-1]`` exceeds the mean of the ``window`` values before it by more
    than 2 population standard deviations, once ``len(history) > init_epoch + window``."""
    L = np.asarray(history, np.float64)
    if len(L) <= init_epoch + window:
        return False
    W = L[-window - 1:-1]
    return bool(L[-1] - W.mean() > 2.0 * W.std())


def alpha_at(history, epoch, epochs):
    """``exp(-(epoch / epochs) * history[-1] / min(history))``."""
    L = np.asarray(history, np.float64)
    return float(np.exp(-(epoch / epochs) * L[-1] / L.min()))


def d2l_loss(y, probs, alpha, turned):
    """(b,) D2L's loss: clipped targets before the turning point (``turned`` 0), targets
    bootstrapped with weight ``alpha`` on the label after it (``turned`` 1)."""
    ops = keras.ops
    c = ops.shape(probs)[-1]
    onehot = ops.one_hot(y, c, dtype="float32")
    p = ops.clip(ops.cast(probs, "float32"), PROB_CLIP, 1.0 - PROB_CLIP)
    pred = ops.stop_gradient(ops.one_hot(ops.argmax(probs, axis=-1), c, dtype="float32"))
    target = ops.where(ops.greater(turned, 0.5), alpha * onehot + (1.0 - alpha) * pred,
                       ops.clip(onehot, TARGET_LOW, TARGET_HIGH))
    return -ops.sum(target * ops.log(p), axis=-1)


class D2LRule(Rule):
    """D2L's state on the model: ``d2l_alpha``, ``d2l_turned`` (0 / 1), ``d2l_lids`` (the
    history, one slot per epoch), ``d2l_count`` (its length). The turning epoch is read from
    the epoch log (``d2l_turned``), its one record."""

    def __init__(self, epochs):
        self.epochs = int(epochs)

    def build(self, model):
        def var(name, shape=(), dtype="float32", init="zeros"):
            return model.add_weight(shape=shape, initializer=init, dtype=dtype,
                                    trainable=False, name=name)

        model.d2l_alpha = var("d2l_alpha", init="ones")
        model.d2l_turned = var("d2l_turned")
        model.d2l_lids = var("d2l_lids", shape=(self.epochs + 1,))
        model.d2l_count = var("d2l_count", dtype="int32")

    def loss(self, model, y, probs, training):
        return keras.ops.mean(d2l_loss(y, probs, model.d2l_alpha, model.d2l_turned)), 1.0


class D2LCallback(keras.callbacks.Callback):
    """Every epoch start: LID, the turning point, the rollback and alpha (the module
    docstring); logs ``lid``, ``d2l_alpha`` and ``d2l_turned`` at the epoch's end. The
    weights a real rollback returns to are kept in ``rollback_path`` (resumable)."""

    def __init__(self, net, x, *, seed, epochs, init_epoch, window, rollback, rollback_path):
        super().__init__()
        self.features = keras.Model(net.inputs, net.get_layer("predictions").input)
        self.net, self.x, self.seed, self.epochs = net, x, seed, epochs
        self.init_epoch, self.window = init_epoch, window
        self.rollback, self.rollback_path = rollback, rollback_path

    def on_epoch_begin(self, epoch, logs=None):
        m = self.model
        rng = utils.rng_for(self.seed, f"d2l-lid-{epoch}")
        pick = np.sort(rng.choice(len(self.x), min(LID_SAMPLES, len(self.x)), replace=False))
        lid = mean_lid(self.features.predict(self.x[pick], batch_size=1024, verbose=0))
        n = int(keras.ops.convert_to_numpy(m.d2l_count))
        lids = np.asarray(keras.ops.convert_to_numpy(m.d2l_lids), np.float64)
        if not lid > 0 and n:  # the reference keeps the previous value
            lid = lids[n - 1]
        lids[n] = lid
        history = lids[:n + 1]
        m.d2l_lids.assign(lids.astype(np.float32))
        m.d2l_count.assign(n + 1)
        turned = float(keras.ops.convert_to_numpy(m.d2l_turned)) > 0.5
        if not turned and is_turning_point(history, init_epoch=self.init_epoch,
                                           window=self.window):
            turned = True
            m.d2l_turned.assign(1.0)
            if self.rollback == "real" and os.path.isfile(self.rollback_path):
                with np.load(self.rollback_path) as f:
                    self.net.set_weights([f[f"w{i}"] for i in range(len(f.files))])
        elif not turned and self.rollback == "real":
            utils.save_npz(self.rollback_path, **{f"w{i}": w for i, w in
                                                  enumerate(self.net.get_weights())})
        if turned:
            m.d2l_alpha.assign(alpha_at(history, epoch, self.epochs))
        self.lid = lid

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["lid"] = self.lid
            logs["d2l_alpha"] = float(keras.ops.convert_to_numpy(self.model.d2l_alpha))
            logs["d2l_turned"] = float(keras.ops.convert_to_numpy(self.model.d2l_turned))


def prepare(ctx):
    """D2L's :class:`~.family.Method`; the init epoch scales with ``--epochs`` (40 of 200)."""
    from .. import coteaching

    args, cfg = ctx.args, ctx.config
    init = int(round(args.d2l_init_epoch * cfg.epochs / coteaching.PAPER_EPOCHS))
    ctx.summary["d2l"] = {"init_epoch": init, "window": args.d2l_window,
                          "rollback": args.d2l_rollback}

    def callbacks(model, nets):
        return [D2LCallback(nets[0], ctx.data.x_train, seed=ctx.seed, epochs=cfg.epochs,
                            init_epoch=init, window=args.d2l_window,
                            rollback=args.d2l_rollback,
                            rollback_path=os.path.join(ctx.out, "d2l_rollback.npz"))]

    def summarize(rows):
        turned = [r["epoch"] for r in rows if r.get("d2l_turned")]
        # The turning epoch as the reference counts it (len(L) - 2): the epochs trained by
        # the weights before the jump. Row epoch k (1-based) began with LID L[k - 1].
        return {"d2l_turning_epoch": (turned[0] - 2) if turned else None,
                "d2l_final_alpha": rows[-1].get("d2l_alpha") if rows else None}

    return one_network(D2LRule(cfg.epochs), callbacks=callbacks, summarize=summarize)
