"""INCV's two runs of an iteration side by side: two independent networks in one compiled
training step (:class:`PairedNetworks`), and ``train_pair_and_predict``, the side-by-side
counterpart of ``training.train_and_predict``.
"""

import keras

from .backend_steps import (
    Positions,
    check_two_networks,
    dispatch_train_step,
    merge,
    set_optimizer_pair,
    stateless_metrics,
)
from .pipelines import epoch_callbacks, make_paired_dataset
from .training import (
    EpochSchedule,
    HeldOutMonitor,
    JsonlLogger,
    StopAtEpochEnd,
    StopOnNonFiniteLoss,
    adam,
    reset_optimizer,
)


class PairedNetworks(keras.Model):
    """Two independent networks trained side by side in one compiled training step.

    INCV trains, in every iteration, two networks from the same initial weights on
    S + C1 and S + C2 (arXiv:1905.05040, Algorithm 1). They share nothing, so they can
    run in one step (noisy_cv.py's ``--folds 2`` trains its folds one after the other,
    ``training.train_folds``): each network takes its own
    half's batch, its own loss (the authors' sparse cross-entropy on the softmax output,
    plus its L2 penalties) and its own optimizer; nothing passes between them. The result
    is the two sequential runs' up to float rounding order (tests/test_paired.py); one
    step keeps both cores of a small CPU busy (one network's ``fit`` keeps ~1.5 busy) and
    halves the kernel launches per image on a GPU, where a ResNet-32 step at batch 128 is
    launch-bound.

    Parameters
    ----------
    net1, net2 : keras.Model
        Two distinct built networks, softmax outputs; they must not share variables.

    Notes
    -----
    Training data (``fit``): ``((x1, x2), (y1, y2))`` batches, e.g. from
    ``pipelines.make_paired_dataset``; the two batches may differ in size. Logged metrics:
    ``loss1``, ``accuracy1``, ``loss2``, ``accuracy2`` (as ``compile_classifier``'s
    ``loss`` / ``accuracy``, per network). ``call``/``predict`` use ``net1``; predict each
    network with ``net1.predict`` / ``net2.predict``. Under a ``mixed_float16`` policy each
    optimizer is wrapped in a ``LossScaleOptimizer`` as ``keras.Model.compile`` does.
    One device only (no ``tf.distribute`` replicas): each step is small enough that its two
    networks are the parallelism. Runs on every Keras backend (one ``train_step`` per
    backend, as keras.io's guides write them; JAX's is stateless).
    """

    def __init__(self, net1, net2, **kwargs):
        super().__init__(**kwargs)
        check_two_networks(net1, net2)
        self.net1, self.net2 = net1, net2
        self.optimizer1 = self.optimizer2 = None
        self._loss_fn = keras.losses.SparseCategoricalCrossentropy()
        self._trackers = [keras.metrics.Mean(name=n)
                          for n in ("loss1", "accuracy1", "loss2", "accuracy2")]
        self.built = True  # the networks are built; the optimizers are built in compile

    @property
    def metrics(self):
        return list(self._trackers)

    def compile(self, optimizer1, optimizer2, **kwargs):
        """One optimizer per network (two instances); ``kwargs`` go to ``Model.compile``
        (e.g. ``steps_per_execution``; ``jit_compile`` defaults to False, which is
        faster on a CPU)."""
        backend = keras.backend.backend()
        if backend == "tensorflow":
            kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        if backend == "tensorflow" and self.distribute_strategy.num_replicas_in_sync > 1:
            raise ValueError("PairedNetworks trains on one device: with several replicas "
                             "(--devices all) train the two runs one after the other "
                             "(--incv_parallel sequential)")
        set_optimizer_pair(self, optimizer1, optimizer2, (self.net1, self.net2))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        return None  # networks and optimizers are built already

    def call(self, x, training=False):
        return self.net1(x, training=training)

    def _loss(self, net, y, probs):
        """``compile_classifier``'s loss: mean sparse cross-entropy + the L2 penalties."""
        loss = self._loss_fn(y, keras.ops.cast(probs, "float32"))
        for reg in net.losses:
            loss = loss + keras.ops.cast(reg, "float32")
        return loss

    def train_step(self, *args):
        """Both networks' steps: ``train_step(data)`` on TensorFlow and PyTorch,
        ``train_step(state, data)`` returning ``(logs, state)`` on JAX."""
        return dispatch_train_step(self, *args)

    def _track(self, ys, ps, losses):
        """Update the trackers (any backend; stateful) and return the logs."""
        ops = keras.ops
        for k, (y, p, loss) in enumerate(zip(ys, ps, losses)):
            y = ops.reshape(ops.cast(y, "int32"), (-1,))
            self._trackers[2 * k].update_state(loss, sample_weight=ops.shape(y)[0])
            hit = ops.equal(ops.cast(ops.argmax(p, axis=-1), "int32"), y)
            self._trackers[2 * k + 1].update_state(ops.cast(hit, "float32"))
        return {m.name: m.result() for m in self._trackers}

    def _torch_train_step(self, data):
        """PyTorch (keras.io, "Customizing what happens in fit() with PyTorch")."""
        import torch

        (x1, x2), (y1, y2), _ = keras.utils.unpack_x_y_sample_weight(data)
        nets, opts = (self.net1, self.net2), (self.optimizer1, self.optimizer2)
        self.zero_grad()
        p1 = self.net1(x1, training=True)
        p2 = self.net2(x2, training=True)
        loss1, loss2 = self._loss(nets[0], y1, p1), self._loss(nets[1], y2, p2)
        (opts[0].scale_loss(loss1) + opts[1].scale_loss(loss2)).backward()
        with torch.no_grad():
            for net, opt in zip(nets, opts):
                variables = net.trainable_variables
                opt.apply([v.value.grad for v in variables], variables)
        return self._track((y1, y2), (p1, p2), (loss1, loss2))

    def _jax_train_step(self, state, data):
        """JAX (keras.io, "Customizing what happens in fit() with JAX"): stateless, the
        state split per network, each network's gradient from one value_and_grad."""
        import jax

        tv, ntv, ov, mv = state
        if getattr(self, "_pos", None) is None:
            self._pos = Positions(self, (self.net1, self.net2))
        pos = self._pos
        (x1, x2), (y1, y2), _ = keras.utils.unpack_x_y_sample_weight(data)
        n_o1 = len(self.optimizer1.variables)
        ov1, ov2 = list(ov[:n_o1]), list(ov[n_o1:])
        ntv1, ntv2 = pos.take(ntv, pos.nt1), pos.take(ntv, pos.nt2)
        mapping = (list(zip(self.optimizer1.variables, ov1))
                   + list(zip(self.optimizer2.variables, ov2)))

        def loss_fn(tv1, tv2):
            out = []
            for net, tvk, ntvk, x, y in ((self.net1, tv1, ntv1, x1, y1),
                                         (self.net2, tv2, ntv2, x2, y2)):
                p, new, losses = net.stateless_call(tvk, ntvk, x, training=True,
                                                    return_losses=True)
                loss = self._loss_fn(y, keras.ops.cast(p, "float32"))
                for reg in losses:
                    loss = loss + keras.ops.cast(reg, "float32")
                out.append((p, new, loss))
            with keras.StatelessScope(state_mapping=mapping):
                total = (self.optimizer1.scale_loss(out[0][2])
                         + self.optimizer2.scale_loss(out[1][2]))
            return total, out

        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (_, out), (g1, g2) = grad_fn(pos.take(tv, pos.t1), pos.take(tv, pos.t2))
        tv1, ov1 = self.optimizer1.stateless_apply(ov1, g1, pos.take(tv, pos.t1))
        tv2, ov2 = self.optimizer2.stateless_apply(ov2, g2, pos.take(tv, pos.t2))
        tv = merge(tv, (pos.t1, tv1), (pos.t2, tv2))
        ntv = merge(ntv, (pos.nt1, out[0][1]), (pos.nt2, out[1][1]))
        logs, mv = stateless_metrics(self, mv, lambda: self._track(
            (y1, y2), (out[0][0], out[1][0]), (out[0][2], out[1][2])))
        return logs, (tv, ntv, list(ov1) + list(ov2), mv)

    def _tf_train_step(self, data):
        import tensorflow as tf

        (x1, x2), (y1, y2), _ = keras.utils.unpack_x_y_sample_weight(data)
        nets, opts = (self.net1, self.net2), (self.optimizer1, self.optimizer2)
        with tf.GradientTape() as tape:
            p1 = self.net1(x1, training=True)
            p2 = self.net2(x2, training=True)
            loss1, loss2 = self._loss(nets[0], y1, p1), self._loss(nets[1], y2, p2)
            # loss1 depends on net1's variables only and loss2 on net2's: the gradient of
            # the sum w.r.t. each network is that network's own, in one backward pass.
            total = opts[0].scale_loss(loss1) + opts[1].scale_loss(loss2)
        vars1, vars2 = nets[0].trainable_variables, nets[1].trainable_variables
        grads = tape.gradient(total, vars1 + vars2)
        opts[0].apply_gradients(zip(grads[:len(vars1)], vars1))
        opts[1].apply_gradients(zip(grads[len(vars1):], vars2))
        for tracker, value, y, p in ((self._trackers[0], loss1, y1, p1),
                                     (self._trackers[2], loss2, y2, p2)):
            n = tf.shape(y)[0]
            tracker.update_state(value, sample_weight=n)
        for tracker, y, p in ((self._trackers[1], y1, p1), (self._trackers[3], y2, p2)):
            hit = tf.equal(tf.argmax(p, -1, output_type=tf.int32),
                           tf.reshape(tf.cast(y, tf.int32), [-1]))
            tracker.update_state(tf.cast(hit, tf.float32))
        return {m.name: m.result() for m in self._trackers}


class _PairedRunLogs(keras.callbacks.Callback):
    """Per network of a :class:`PairedNetworks`: its own held-out monitor (and best
    checkpoint) and its own log rows, as :func:`train_and_predict` keeps for one run."""

    def __init__(self, nets, monitors, loggers):
        super().__init__()
        self.nets, self.monitors, self.loggers = nets, monitors, loggers
        for net, *cbs in zip(nets, monitors, loggers):
            for cb in cbs:
                cb.set_model(net)

    def set_params(self, params):
        super().set_params(params)
        for cb in (*self.monitors, *self.loggers):
            cb.set_params(params)

    def on_epoch_begin(self, epoch, logs=None):
        for cb in self.loggers:
            cb.on_epoch_begin(epoch)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        for k, (monitor, logger) in enumerate(zip(self.monitors, self.loggers), 1):
            own = {name: logs[f"{name}{k}"] for name in ("loss", "accuracy")
                   if f"{name}{k}" in logs}
            monitor.on_epoch_end(epoch, own)
            logger.on_epoch_end(epoch, own)

    def on_train_end(self, logs=None):
        for monitor in self.monitors:
            monitor.on_train_end()


def build_paired_classifiers(arch, data, *, lr=1e-3):
    """Two ``arch`` networks for ``data`` in a compiled :class:`PairedNetworks` (Adam
    ``lr`` each, as the authors compiled every network)."""
    from . import models

    nets = [models.build_model(arch, data.input_shape, data.num_classes)
            for _ in range(2)]
    pair = PairedNetworks(*nets)
    pair.compile(optimizer1=adam(lr), optimizer2=adam(lr))
    return pair


def train_pair_and_predict(pair, initial_weights, parts, *, epochs, batch_size, schedule,
                           augment="none", seed=0, keep_best=False, log_path=None,
                           log_extras=(None, None), verbose=1, printer=None, callbacks=()):
    """:func:`train_and_predict` for two runs at once, side by side in one compiled step.

    Parameters
    ----------
    pair : PairedNetworks
        Compiled. Both networks are set to ``initial_weights`` and both optimizers reset.
    initial_weights : list of arrays
        One network's weights (``get_weights()``), the start of both runs (INCV's rule).
    parts : two tuples ``(x_fit, y_fit, x_held, y_held, y_held_true)``
        Each run's training part, held-out part, its noisy labels and (optional, tracking
        only) true labels; shapes as in :func:`train_and_predict`.
    schedule, epochs, batch_size, augment, seed, keep_best
        As in :func:`train_and_predict`, for both runs. An epoch is
        ``ceil(max(n1, n2) / batch_size)`` steps (see ``pipelines.make_paired_dataset``):
        with equal training sizes each run sees the batches its sequential run sees.
    log_path, log_extras
        One JSON line per epoch and run (each run with its own ``log_extras[k]``, e.g.
        ``{"run": tag}``), as the sequential runs write them.

    Returns
    -------
    probs : tuple of two (m_k, c) float32
        Each run's held-out softmax outputs of its final (or, with ``keep_best``, best)
        weights.
    infos : tuple of two dicts
        ``history`` (per-epoch logs of the pair) and ``best_epoch`` (1-based, or None).

    Notes
    -----
    Exact equality with two sequential runs needs the same data order and augmentation
    draws. The order is the same (same pipeline, same seed). The augmentation layers draw
    from a seed generator in ``tf.data`` map calls that run in parallel, so their random
    stream is not reproducible call for call even for one sequential run; the equality
    test therefore runs without augmentation.
    """

    for net in (pair.net1, pair.net2):
        net.set_weights(initial_weights)
    opts = [pair.optimizer1, pair.optimizer2]
    for opt in opts:
        reset_optimizer(opt)
    monitors = [HeldOutMonitor(p[2], p[3], p[4], keep_best=keep_best, optimizer=opt)
                for p, opt in zip(parts, opts)]
    loggers = [JsonlLogger(log_path, extra=extra, printer=printer, optimizer=opt)
               for extra, opt in zip(log_extras, opts)]
    cbs = [EpochSchedule(schedule, opts, reset_on_drop=False),
           _PairedRunLogs([pair.net1, pair.net2], monitors, loggers),
           StopOnNonFiniteLoss(f" (log: {log_path})" if log_path else ""), *callbacks,
           StopAtEpochEnd()]  # last: a SIGTERM stops the pair after the epoch's logs
    ds = make_paired_dataset(parts[0][0], parts[0][1], parts[1][0], parts[1][1],
                             batch_size=batch_size, augment=augment, seed=seed)
    history = pair.fit(ds, epochs=epochs, callbacks=[*cbs, *epoch_callbacks(ds)],
                       verbose=verbose, shuffle=False)
    probs = tuple(net.predict(p[2], batch_size=1024, verbose=0)
                  for net, p in zip((pair.net1, pair.net2), parts))
    infos = tuple({"history": history.history,
                   "best_epoch": m.best_epoch + 1 if keep_best and m.best_epoch is not None
                   else None} for m in monitors)
    return probs, infos
