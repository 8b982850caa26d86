"""What the methods of Table 1 share: one network trained with a pluggable per-sample rule
(:class:`RuleNetwork`), two networks trained in one step with a pluggable pick
(:class:`TwoNetworks`: Co-teaching and Decoupling), and :class:`Method`, what a method hands
the shared training loop (``coteaching.train_two_networks``).

:class:`RuleNetwork` overrides ``compute_loss`` only, as keras.io's "Customizing what happens
in fit()" guides do, so Keras' own ``train_step`` runs it on TensorFlow, JAX and PyTorch, with
mixed precision's loss scaling. A rule's state (MentorNet's moving percentile, D2L's alpha,
F-correction's T) is non-trainable model variables: assigned between epochs by callbacks, or
inside ``compute_loss``, which Keras' JAX trainer carries through its stateless step
(``Trainer.stateless_compute_loss`` returns the updated non-trainable variables), and saved
with the weights by every checkpoint.

:class:`TwoNetworks` holds two networks, two optimizers and one training step per backend
(TensorFlow: ``tf.GradientTape``; JAX: stateless, ``jax.value_and_grad`` per network;
PyTorch: one ``backward``), all around one method-specific ``pair_losses``.

Nothing here imports a backend at module level.
"""

import dataclasses
from typing import Callable, Optional

import keras

from .. import devices
from ..backend_steps import (
    Positions,
    check_two_networks,
    dispatch_train_step,
    merge,
    set_optimizer_pair,
    stateless_metrics,
)


# Keras 2's epsilon: the references' losses clip probabilities to [eps, 1 - eps]
PROB_CLIP = 1e-7


def sparse_ce(y, probs):
    """(b,) cross-entropy of softmax outputs ``probs`` (b, c) w.r.t. int labels ``y`` (b,),
    as ``compile(loss="sparse_categorical_crossentropy")`` computes it."""
    return keras.losses.sparse_categorical_crossentropy(y, keras.ops.cast(probs, "float32"))


def reg_sum(losses):
    """The sum of a network's regularisation losses, float32 (0 when there are none)."""
    total = keras.ops.zeros((), "float32")
    for v in losses:
        total = total + keras.ops.cast(v, "float32")
    return total


class Rule:
    """A one-network method's rule: its state and its loss (subclass it).

    ``build(model)`` creates the rule's state on the model (``model.add_weight(...,
    trainable=False)``, ``keras.metrics.Mean`` trackers), ``loss(model, y, probs, training)``
    returns ``(data_loss, reg_scale)``: the batch's data loss (a scalar from per-sample
    terms) and the factor of the network's L2 penalties (1 for every method but MentorNet,
    which scales them by sum(v) / B as its reference code does). ``training`` is False in
    evaluation, where the rule must not change its state.
    """

    metrics = ()

    def build(self, model):
        pass

    def loss(self, model, y, probs, training):
        raise NotImplementedError


class RuleNetwork(keras.Model):
    """One network trained with a pluggable :class:`Rule`, through Keras' own training step.

    Parameters
    ----------
    net : keras.Model
        A built network mapping images to class probabilities (softmax output).
    rule : Rule
        The method's loss and state.

    Notes
    -----
    Compile it as ``training.compile_classifier`` does, without a loss:
    ``model.compile(optimizer=training.adam(lr), metrics=["accuracy"])``. Every variable
    of the rule belongs to this model, so ``get_weights`` / ``set_weights`` (the per-epoch
    checkpoint) hold them.
    """

    def __init__(self, net, rule, **kwargs):
        super().__init__(**kwargs)
        self.net, self.rule = net, rule
        self._rule_trackers = [keras.metrics.Mean(name=n) for n in rule.metrics]
        self.rule_seed = None
        rule.build(self)
        self.built = True

    def add_seed_state(self, seed):
        """Give the rule a random stream, ``self.rule_seed`` (a ``keras.random.SeedGenerator``
        for ``keras.random`` calls in the loss). Its state is part of :meth:`get_weights`,
        so a checkpoint resumes the same stream (Keras' own ``weights`` leave seeds out)."""
        self.rule_seed = keras.random.SeedGenerator(int(seed), name="rule_seed")

    def get_weights(self):
        weights = super().get_weights()
        if self.rule_seed is not None:
            weights.append(keras.ops.convert_to_numpy(self.rule_seed.state))
        return weights

    def set_weights(self, weights):
        weights = list(weights)
        if self.rule_seed is not None:
            self.rule_seed.state.assign(weights.pop())
        super().set_weights(weights)

    @property
    def rule_metric_names(self):
        """The rule's training metrics (their evaluation values mean nothing: dropped from
        the epoch's logs by the training loop)."""
        return tuple(self.rule.metrics)

    def tracker(self, name):
        """The rule's ``keras.metrics.Mean`` named ``name`` (updated in training only)."""
        return next(m for m in self._rule_trackers if m.name == name)

    def call(self, x, training=False):
        return self.net(x, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        y = keras.ops.reshape(keras.ops.cast(y, "int32"), (-1,))
        data_loss, reg_scale = self.rule.loss(self, y, keras.ops.cast(y_pred, "float32"),
                                              training)
        # self.losses: the network's L2 penalties of this forward pass (on JAX, those the
        # stateless pass returned).
        return data_loss + reg_scale * reg_sum(self.losses)


class TwoNetworks(keras.Model):
    """Two networks, two optimizers, one training step per backend around ``pair_losses``.

    Parameters
    ----------
    net1, net2 : keras.Model
        Two distinct built networks (softmax outputs) that share no variables.

    Notes
    -----
    Training inputs: ``x`` an image batch or the dict ``{"image", "from_s", "clean"}`` of
    ``pipelines.make_coteaching_dataset`` (``clean``: tracking only), ``y`` int labels.
    Subclasses define ``pair_losses(y, p1, p2, from_s)`` -> ``(loss1, loss2, aux)``: each
    network's data loss from the training-mode probabilities of both, in ``keras.ops``
    (reading the subclass's own state variables is allowed: on JAX they are mapped to the
    step's state) and ``track(y, p1, p2, from_s, clean, loss1, loss2, aux)``, which updates
    ``_train_trackers`` and returns the logs. Each network's L2 penalties are added to its
    loss here. Test metrics: ``accuracy1``, ``accuracy2``.
    """

    def __init__(self, net1, net2, **kwargs):
        super().__init__(**kwargs)
        check_two_networks(net1, net2)
        self.net1, self.net2 = net1, net2
        self.optimizer1 = self.optimizer2 = None
        mean = keras.metrics.Mean
        self.loss1_tracker, self.loss2_tracker = mean(name="loss1"), mean(name="loss2")
        self.acc1_tracker, self.acc2_tracker = mean(name="acc1"), mean(name="acc2")
        self.test_acc1_tracker = mean(name="accuracy1")
        self.test_acc2_tracker = mean(name="accuracy2")
        self._train_trackers = [self.loss1_tracker, self.loss2_tracker, self.acc1_tracker,
                                self.acc2_tracker]
        self._test_trackers = [self.test_acc1_tracker, self.test_acc2_tracker]
        self._pos = None
        self.built = True  # the networks are built; compile builds the optimizers

    @property
    def metrics(self):
        """All trackers, so that Keras resets them at the start of each epoch / evaluate."""
        return self._train_trackers + self._test_trackers

    def compile(self, optimizer1, optimizer2, **kwargs):
        """One optimizer per network (two instances, built here so that a checkpoint can be
        restored before training); ``kwargs`` go to ``keras.Model.compile``
        (``jit_compile`` defaults to False on TensorFlow). Under ``mixed_float16`` each
        optimizer is wrapped in a ``LossScaleOptimizer`` as ``keras.Model.compile`` does.
        ``self.optimizer`` stays None (on JAX: both optimizers' variables, for the trainer).
        """
        backend = keras.backend.backend()
        if backend == "tensorflow":
            kwargs.setdefault("jit_compile", False)
        super().compile(optimizer=None, **kwargs)
        strategy = self.distribute_strategy if backend == "tensorflow" else devices.OneDevice()
        with strategy.scope():  # the optimizer slots must be mirrored like the weights
            for opt in (optimizer1, optimizer2):
                # Keras' TF optimizers remember the strategy they were created under.
                created = getattr(opt, "_distribution_strategy", strategy)
                if created is not strategy:
                    raise ValueError(
                        "the optimizers must be created under the same strategy.scope() as "
                        "the model (tf.distribute): create them inside the scope")
            set_optimizer_pair(self, optimizer1, optimizer2, (self.net1, self.net2))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Nothing to build: the networks are built and ``compile`` builds the optimizers.
        (Keras' TensorFlow trainer would, under tf.distribute, average the first batch
        across the replicas just to learn its shapes, which fails on uneven splits.)"""
        return None

    @staticmethod
    def _image(x):
        return x["image"] if isinstance(x, dict) else x

    def call(self, x, training=False):
        """Net 1's class probabilities for an image batch or input dict."""
        return self.net1(self._image(x), training=training)

    def train_step(self, *args):
        """``train_step(data)`` on TensorFlow and PyTorch, ``train_step(state, data)``
        returning ``(logs, state)`` on JAX."""
        return dispatch_train_step(self, *args)

    def pair_losses(self, y, p1, p2, from_s):
        raise NotImplementedError

    def track(self, y, p1, p2, from_s, clean, loss1, loss2, aux):
        raise NotImplementedError

    def _inputs(self, x, y):
        """``(image, y (b,) int32, from_s (b,) float32, clean (b,) float32 or None)``."""
        ops = keras.ops
        image = self._image(x)
        y = ops.reshape(ops.cast(y, "int32"), (-1,))
        if isinstance(x, dict) and "from_s" in x:
            from_s = ops.reshape(ops.cast(x["from_s"], "float32"), (-1,))
        else:
            from_s = ops.ones((ops.shape(y)[0],), "float32")
        clean = None
        if isinstance(x, dict) and "clean" in x:
            clean = ops.reshape(ops.cast(x["clean"], "float32"), (-1,))
        return image, y, from_s, clean

    def _totals(self, loss1, loss2, losses1, losses2):
        """Both networks' scaled losses summed: loss1 + reg1 depends on net1's variables
        only and loss2 + reg2 on net2's, so one backward pass gives each its own gradient;
        ``scale_loss`` is the identity unless an optimizer scales (mixed_float16)."""
        return (self.optimizer1.scale_loss(loss1 + reg_sum(losses1))
                + self.optimizer2.scale_loss(loss2 + reg_sum(losses2)))

    def _tf_train_step(self, data):
        """The step on TensorFlow (one device): ``tf.GradientTape``."""
        import tensorflow as tf

        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError(f"{type(self).__name__} trains on one device: use --devices "
                             "default")
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        image, y, from_s, clean = self._inputs(x, y)
        vars1, vars2 = self.net1.trainable_variables, self.net2.trainable_variables
        with tf.GradientTape() as tape:
            p1 = self.net1(image, training=True)
            p2 = self.net2(image, training=True)
            loss1, loss2, aux = self.pair_losses(y, p1, p2, from_s)
            total = self._totals(loss1, loss2, self.net1.losses, self.net2.losses)
        grads = tape.gradient(total, vars1 + vars2)
        self.optimizer1.apply_gradients(zip(grads[: len(vars1)], vars1))
        self.optimizer2.apply_gradients(zip(grads[len(vars1):], vars2))
        return self.track(y, p1, p2, from_s, clean, loss1, loss2, aux)

    def _torch_train_step(self, data):
        """The step on PyTorch (keras.io, "Customizing what happens in fit() with
        PyTorch"): one forward pass per network, one backward pass, two optimizers."""
        import torch

        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        image, y, from_s, clean = self._inputs(x, y)
        self.zero_grad()
        p1 = self.net1(image, training=True)
        p2 = self.net2(image, training=True)
        loss1, loss2, aux = self.pair_losses(y, p1, p2, from_s)
        self._totals(loss1, loss2, self.net1.losses, self.net2.losses).backward()
        with torch.no_grad():
            for net, opt in ((self.net1, self.optimizer1), (self.net2, self.optimizer2)):
                variables = net.trainable_variables
                opt.apply([v.value.grad for v in variables], variables)
        return self.track(y, p1, p2, from_s, clean, loss1, loss2, aux)

    def _jax_train_step(self, state, data):
        """The step on JAX (keras.io, "Customizing what happens in fit() with JAX"):
        stateless; the state is split per network (variables, BatchNorm statistics and
        optimizer slots), each network's gradient from one ``jax.value_and_grad``; the
        model's own non-trainable variables (a method's state) read from the step's state."""
        import jax

        tv, ntv, ov, mv = state
        pos = self._positions()
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        image, y, from_s, clean = self._inputs(x, y)
        ntv1, ntv2 = pos.take(ntv, pos.nt1), pos.take(ntv, pos.nt2)
        n_o1 = len(self.optimizer1.variables)
        ov1, ov2 = list(ov[:n_o1]), list(ov[n_o1:])
        mapping = (list(zip(self.optimizer1.variables, ov1))
                   + list(zip(self.optimizer2.variables, ov2))
                   + list(zip(self.non_trainable_variables, ntv)))

        def loss_fn(tv1, tv2):
            p1, new1, losses1 = self.net1.stateless_call(tv1, ntv1, image, training=True,
                                                         return_losses=True)
            p2, new2, losses2 = self.net2.stateless_call(tv2, ntv2, image, training=True,
                                                         return_losses=True)
            with keras.StatelessScope(state_mapping=mapping):
                loss1, loss2, aux = self.pair_losses(y, p1, p2, from_s)
                total = self._totals(loss1, loss2, losses1, losses2)
            return total, (p1, p2, new1, new2, loss1, loss2, aux)

        grad_fn = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)
        (_, (p1, p2, new1, new2, loss1, loss2, aux)), (g1, g2) = grad_fn(
            pos.take(tv, pos.t1), pos.take(tv, pos.t2))
        tv1, ov1 = self.optimizer1.stateless_apply(ov1, g1, pos.take(tv, pos.t1))
        tv2, ov2 = self.optimizer2.stateless_apply(ov2, g2, pos.take(tv, pos.t2))
        tv = merge(tv, (pos.t1, tv1), (pos.t2, tv2))
        ntv = merge(ntv, (pos.nt1, new1), (pos.nt2, new2))
        logs, mv = stateless_metrics(self, mv, lambda: self.track(
            y, p1, p2, from_s, clean, loss1, loss2, aux))
        return logs, (tv, ntv, list(ov1) + list(ov2), mv)

    def _positions(self):
        """Where each network's variables sit in this model's state lists (JAX)."""
        if self._pos is None:
            self._pos = Positions(self, (self.net1, self.net2))
        return self._pos

    def test_step(self, *args):
        """Accuracy of both networks (inference mode): ``test_step(data)`` on TensorFlow
        and PyTorch, ``test_step(state, data)`` returning ``(logs, state)`` on JAX."""
        if keras.backend.backend() == "jax":
            tv, ntv, mv = args[0]
            logs, mv = stateless_metrics(self, mv, lambda: self._test(args[1]),
                                         variables=(tv, ntv))
            return logs, (tv, ntv, mv)
        return self._test(args[0])

    def _test(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        image = self._image(x)
        y = keras.ops.reshape(keras.ops.cast(y, "int32"), (-1,))
        for net, tracker in ((self.net1, self.test_acc1_tracker),
                             (self.net2, self.test_acc2_tracker)):
            tracker.update_state(correct(y, net(image, training=False)),
                                 sample_weight=sample_weight)
        return self.results(self._test_trackers)

    @staticmethod
    def results(trackers):
        """``{name: result}`` of ``Mean`` trackers."""
        return {m.name: m.result() for m in trackers}


def correct(y, probs):
    """(b,) float32, 1 where argmax(probs) == y."""
    ops = keras.ops
    return ops.cast(ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int32"), y), "float32")


@dataclasses.dataclass
class Method:
    """What a method hands the shared training loop (``coteaching.train_two_networks``).

    Attributes
    ----------
    networks : int
        1 (a :class:`RuleNetwork`) or 2 (a :class:`TwoNetworks`).
    build : callable
        ``build(nets, lr)`` -> the compiled model over the freshly built ``nets``.
    optimizers : callable
        ``optimizers(model)`` -> its optimizers, in checkpoint order.
    callbacks : callable
        ``callbacks(model, nets)`` -> the method's per-epoch callbacks (before the logger).
    on_epoch : callable, optional
        ``on_epoch(model, epoch)`` at every epoch start (after the lr is set).
    train_idx : (m,) int array, optional
        The training samples (default: all); F-correction holds out a validation split.
    summarize : callable, optional
        ``summarize(rows)`` -> the method's entries of summary.json from the epoch log.
    """

    networks: int
    build: Callable
    optimizers: Callable
    callbacks: Callable = lambda model, nets: []
    on_epoch: Optional[Callable] = None
    train_idx: object = None
    summarize: Optional[Callable] = None


def one_network(rule, *, callbacks=None, on_epoch=None, train_idx=None, summarize=None):
    """The :class:`Method` of a one-network rule: a :class:`RuleNetwork` compiled with the
    authors' Adam and accuracy."""
    from .. import training

    def build(nets, lr):
        model = RuleNetwork(nets[0], rule)
        model.compile(optimizer=training.adam(lr), metrics=["accuracy"])
        model.optimizer.build(model.trainable_variables)  # so --resume can restore it
        return model

    return Method(networks=1, build=build, optimizers=lambda model: [model.optimizer],
                  callbacks=callbacks or (lambda model, nets: []), on_epoch=on_epoch,
                  train_idx=train_idx, summarize=summarize)


def two_networks(model_cls, **model_kwargs):
    """The :class:`Method` of a :class:`TwoNetworks` subclass, each network with the
    authors' Adam."""
    from .. import training

    def build(nets, lr):
        model = model_cls(*nets, **model_kwargs)
        model.compile(optimizer1=training.adam(lr), optimizer2=training.adam(lr))
        return model

    return Method(networks=2, build=build,
                  optimizers=lambda model: [model.optimizer1, model.optimizer2])
